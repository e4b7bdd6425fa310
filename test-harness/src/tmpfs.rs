//! A small tmpfs mounted for one test: a disk that can be filled and freed on
//! demand. Needs root (`mount`); unmounted when dropped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` on a fresh directory. Err says why not (not
    /// root, no `mount`): the caller skips with that message.
    pub fn mount(bytes: u64) -> Result<Tmpfs, String> {
        let dir = tempfile::Builder::new().prefix("mqseal-tmpfs-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system: writes a filler file until the disk refuses more
    /// (ENOSPC), down to single bytes. Returns the filler's path.
    pub fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("create filler");
        for chunk in [1 << 16, 1 << 12, 1] {
            let bytes = vec![0x5a; chunk];
            while file.write_all(&bytes).is_ok() {}
        }
        path
    }

    /// Frees what [`Tmpfs::fill`] took.
    pub fn free(&self, filler: &Path) {
        std::fs::remove_file(filler).expect("remove filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Whoever used it (a broker) has stopped by now; lazily, in case a file is still open.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
