//! The exclusive lock on a state directory: at most one process at a time
//! runs the pipeline or changes the checkpoint of a `state_dir` (two
//! `pikachu run` on one state directory would deliver every change twice
//! and overwrite each other's checkpoint).
//!
//! The lock is an OS advisory lock (`flock` on Unix, through the `fs4`
//! crate: the API of `std::fs::File::try_lock`, which needs a newer Rust
//! than ours) on `<state_dir>/pikachu.lock`: the kernel releases it when the process
//! ends, however it ends, so a SIGKILL or a crash never leaves a stale lock
//! behind. The file holds the holder's pid and command, as text, only for
//! the message the next process prints; it is left in place at exit
//! (removing it would let two processes lock two different files).
//!
//! Who takes it: `pikachu run` (also with `--reset-position`),
//! `pikachu position set|reset`. Who does not: the commands that only read
//! (`dlq list|show`, `position show`), and `dlq replay|purge` and
//! `pikachu replay`, which only add or remove dead letters (SQLite
//! serialises those writes) and may run next to `pikachu run`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// File name of the lock inside `state_dir`.
pub(crate) const LOCK_FILE: &str = "pikachu.lock";

/// How long to wait for a holder that has just taken the lock to write its pid.
const PID_WAIT: Duration = Duration::from_millis(500);

/// Holds the state directory's lock until dropped (or the process ends).
#[derive(Debug)]
pub struct StateLock {
    /// The open, locked file; closing it releases the lock.
    _file: File,
    /// `<state_dir>/pikachu.lock`.
    path: PathBuf,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it (exit 2: a usage error, nothing is broken).
    #[error(
        "the state directory {} is in use by another pikachu process ({}): two processes on one \
         state directory would deliver every change twice and overwrite each other's checkpoint; \
         stop that process first, or give this one another `state_dir`",
        dir.display(),
        holder.as_deref().unwrap_or("pid unknown")
    )]
    Held {
        /// The state directory.
        dir: PathBuf,
        /// `pid 1234, pikachu run`, as the holder wrote it.
        holder: Option<String>,
    },
    /// The lock file cannot be created or locked (exit 1).
    #[error(
        "cannot lock the state directory {} ({}): {source}; {}",
        dir.display(),
        path.display(),
        fix(source)
    )]
    Io {
        /// The state directory.
        dir: PathBuf,
        /// The lock file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

impl LockError {
    /// The process exit code: 2 when another process holds the lock, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            LockError::Held { .. } => 2,
            LockError::Io { .. } => 1,
        }
    }
}

fn fix(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied => {
            "this command writes the checkpoint there: make the directory writable by the user pikachu \
             runs as (or mount it read-write); the commands that only read (`dlq list`, `position show`) \
             work without it"
        }
        std::io::ErrorKind::StorageFull => "the disk is full: free space on it",
        _ => "check that `state_dir` is a directory pikachu can write to",
    }
}

impl StateLock {
    /// Takes the lock of `state_dir` (created if missing) for `command`
    /// (e.g. `pikachu run`), without waiting.
    pub fn acquire(state_dir: &Path, command: &str) -> Result<StateLock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            dir: state_dir.to_path_buf(),
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    dir: state_dir.to_path_buf(),
                    holder: read_holder(&mut file),
                })
            }
            Err(fs4::TryLockError::Error(e)) => return Err(io(e)),
        }
        let text = format!("pid {}, {command}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()))
            .map_err(io)?;
        Ok(StateLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The holder's `pid N, command` line; it may still be writing it.
fn read_holder(file: &mut File) -> Option<String> {
    let deadline = Instant::now() + PID_WAIT;
    loop {
        let mut text = String::new();
        let read = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_string(&mut text));
        let line = text.lines().next().unwrap_or("").trim().to_string();
        if read.is_ok() && line.starts_with("pid ") {
            return Some(line);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10)); // poll interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let first = StateLock::acquire(&state, "pikachu run").expect("first");
        assert_eq!(first.path(), state.join(LOCK_FILE));
        let e = StateLock::acquire(&state, "pikachu position set").expect_err("held");
        let msg = e.to_string();
        assert_eq!(e.exit_code(), 2);
        let want = format!("pid {}, pikachu run", std::process::id());
        assert!(msg.contains(&want), "{msg}");
        assert!(msg.contains(&state.display().to_string()), "{msg}");
        drop(first);
        let again = StateLock::acquire(&state, "pikachu run").expect("free again");
        drop(again);
    }
}
