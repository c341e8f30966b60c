//! What a state-store failure means for the operator: the kind of problem
//! (read-only, cannot open, disk full, not a database or corrupt) read from
//! the SQLite or I/O error, and the one-line fix appended to
//! [`super::StoreError`]'s message.

use std::path::Path;

use rusqlite::ErrorCode;

/// What is wrong with the state store, as far as the error tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Problem {
    /// The file, its directory or the filesystem is read-only.
    ReadOnly,
    /// The file cannot be opened (permissions, missing directory, a
    /// directory where the WAL files cannot be created).
    CannotOpen,
    /// No space left on the device.
    DiskFull,
    /// Not a SQLite database, or a damaged one.
    Corrupt,
    /// Another I/O error (a failing disk, or full: SQLite does not say).
    Io,
}

/// The problem behind `e`, if it is one the operator has to fix.
pub(crate) fn problem(e: &(dyn std::error::Error + 'static)) -> Option<Problem> {
    if let Some(e) = e.downcast_ref::<rusqlite::Error>() {
        return match e.sqlite_error_code()? {
            ErrorCode::ReadOnly => Some(Problem::ReadOnly),
            ErrorCode::CannotOpen | ErrorCode::PermissionDenied => Some(Problem::CannotOpen),
            ErrorCode::DiskFull => Some(Problem::DiskFull),
            ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => Some(Problem::Corrupt),
            ErrorCode::SystemIoFailure => Some(Problem::Io),
            _ => None,
        };
    }
    if let Some(e) = e.downcast_ref::<std::io::Error>() {
        return match e.kind() {
            std::io::ErrorKind::ReadOnlyFilesystem => Some(Problem::ReadOnly),
            std::io::ErrorKind::PermissionDenied => Some(Problem::CannotOpen),
            std::io::ErrorKind::StorageFull => Some(Problem::DiskFull),
            _ => None,
        };
    }
    None
}

/// `; <what it means and what to do>` for a store error on the database
/// file `path`, or `""` when there is nothing to add.
pub(crate) fn hint(e: &(dyn std::error::Error + Send + Sync + 'static), path: &str) -> String {
    let e: &(dyn std::error::Error + 'static) = e;
    let Some(p) = problem(e) else {
        return String::new();
    };
    let resume = "nothing is lost: the next start resumes from the last saved checkpoint";
    match p {
        Problem::ReadOnly => format!(
            "; the state store is read-only (read-only file, directory or filesystem): make the state directory and its files writable by the user pikachu runs as, or mount it read-write ({resume})"
        ),
        Problem::CannotOpen => format!(
            "; check that the state directory exists and that the user pikachu runs as may read, write and create files in it (permission denied, or a read-only filesystem) ({resume})"
        ),
        Problem::DiskFull => format!(
            "; the disk is full: free space on the filesystem of the state directory, then start pikachu again ({resume})"
        ),
        Problem::Io => format!(
            "; a disk I/O error: check the disk (free space with `df`, errors in the kernel log) ({resume})"
        ),
        Problem::Corrupt => format!(
            "; the file is not a SQLite database, or is corrupt: restore it from a backup, or move it away \
             (`mv {path} {path}.broken`, with its -wal and -shm files) and choose where to resume with \
             `pikachu position set FILE:POS -config …` before the next start (the checkpoint and the dead letters \
             it held are lost with it; see docs/operations.md)"
        ),
    }
}

/// `e` with a disk I/O error that is really a full disk said so: SQLite
/// reports a full disk while it creates its `-shm`/`-wal` files as a plain
/// "disk I/O error" (a write into the database itself is `SQLITE_FULL`).
/// Only on the error path: writes a probe file next to the database.
pub(crate) fn refine(mut e: super::StoreError, dir: &Path) -> super::StoreError {
    let source: &(dyn std::error::Error + 'static) = e.source.as_ref();
    if problem(source) == Some(Problem::Io) && disk_full(dir) {
        let said = e.source.to_string();
        e.source = Box::new(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!("{said} (no space left on the device)"),
        ));
    }
    e
}

/// Writing 64 KiB into `dir` fails for lack of space.
fn disk_full(dir: &Path) -> bool {
    use std::io::Write;
    let probe = dir.join(format!(".pikachu-space-probe-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|mut f| f.write_all(&[0u8; 64 * 1024]).and_then(|()| f.sync_all()));
    let _ = std::fs::remove_file(&probe);
    matches!(written, Err(e) if e.kind() == std::io::ErrorKind::StorageFull)
}

/// `e` is SQLite's "unable to open the database file".
pub(crate) fn is_cannot_open(e: &super::StoreError) -> bool {
    let e: &(dyn std::error::Error + 'static) = e.source.as_ref();
    problem(e) == Some(Problem::CannotOpen)
}

/// `dir` is on a read-only filesystem (creating a file there says so).
pub(crate) fn read_only_fs(dir: &Path) -> bool {
    let probe = dir.join(format!(".pikachu-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            false
        }
        Err(e) => e.kind() == std::io::ErrorKind::ReadOnlyFilesystem,
    }
}

/// `file:<path>?immutable=1`, the path percent-encoded.
pub(crate) fn immutable_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(b) {
            uri.push(char::from(*b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn problems_from_sqlite_and_io_errors() {
        use rusqlite::ffi;
        let p = |e: &(dyn std::error::Error + 'static)| problem(e);
        assert_eq!(p(&sqlite(ffi::SQLITE_READONLY)), Some(Problem::ReadOnly));
        assert_eq!(p(&sqlite(ffi::SQLITE_CANTOPEN)), Some(Problem::CannotOpen));
        assert_eq!(p(&sqlite(ffi::SQLITE_FULL)), Some(Problem::DiskFull));
        assert_eq!(p(&sqlite(ffi::SQLITE_NOTADB)), Some(Problem::Corrupt));
        assert_eq!(p(&sqlite(ffi::SQLITE_CORRUPT)), Some(Problem::Corrupt));
        assert_eq!(p(&sqlite(ffi::SQLITE_IOERR)), Some(Problem::Io));
        assert_eq!(p(&sqlite(ffi::SQLITE_CONSTRAINT)), None);
        let io = |k| std::io::Error::from(k);
        assert_eq!(
            p(&io(std::io::ErrorKind::ReadOnlyFilesystem)),
            Some(Problem::ReadOnly)
        );
        assert_eq!(
            p(&io(std::io::ErrorKind::StorageFull)),
            Some(Problem::DiskFull)
        );
        assert_eq!(p(&io(std::io::ErrorKind::NotFound)), None);
    }

    #[test]
    fn hints_say_what_to_do() {
        use rusqlite::ffi;
        let h = |code| hint(&sqlite(code), "data/pikachu.db");
        assert!(h(ffi::SQLITE_READONLY).contains("writable"));
        assert!(h(ffi::SQLITE_FULL).contains("disk is full"));
        let corrupt = h(ffi::SQLITE_NOTADB);
        assert!(
            corrupt.contains("mv data/pikachu.db data/pikachu.db.broken"),
            "{corrupt}"
        );
        assert!(corrupt.contains("pikachu position set"), "{corrupt}");
        assert_eq!(h(ffi::SQLITE_CONSTRAINT), "");
    }

    #[test]
    fn immutable_uris_escape_the_path() {
        assert_eq!(
            immutable_uri(Path::new("/a b/x?y#%.db")),
            "file:/a%20b/x%3Fy%23%25.db?immutable=1"
        );
    }
}
