//! A small tmpfs mounted for one test: a filesystem that can be made
//! read-only or filled up, for the state-store error tests. Mounting needs
//! root with CAP_SYS_ADMIN (as in CI's container); elsewhere
//! [`TmpFs::mount`] returns `None` and the test says it did not run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs, unmounted on drop.
pub struct TmpFs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl TmpFs {
    /// Mounts a tmpfs of `size` (`mount -o size=…`, e.g. `1m`) on a new
    /// temp dir; `None` if this process may not mount.
    pub fn mount(size: &str) -> Option<TmpFs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(TmpFs { _dir: dir, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remounts it read-only (`true`) or read-write.
    pub fn set_read_only(&self, read_only: bool) {
        let mode = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        let o = Command::new("mount")
            .args(["-o", mode])
            .arg(&self.path)
            .output()
            .expect("mount -o remount");
        assert!(o.status.success(), "mount -o {mode}: {o:?}");
    }

    /// Fills it up with a file `fill` (written until there is no space left).
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path.join("fill")).expect("fill file");
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
    }

    /// Removes what [`TmpFs::fill`] wrote.
    pub fn unfill(&self) {
        std::fs::remove_file(self.path.join("fill")).expect("remove the fill file");
    }
}

impl Drop for TmpFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}
