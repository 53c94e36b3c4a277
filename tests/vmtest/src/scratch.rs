//! A private scratch directory, removed when dropped (unless asked to keep it).
//!
//! Tests put console logs and initramfs images here. The workspace has no `tempfile`
//! dependency and this needs very little of it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A directory of its own under a parent (the system's temp dir by default).
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    keep: bool,
}

impl ScratchDir {
    /// A new empty directory `<temp>/ptnet-<label>-<pid>-<n>`.
    pub fn new(label: &str) -> io::Result<Self> {
        Self::new_in(&std::env::temp_dir(), label)
    }

    /// A new empty directory `<parent>/ptnet-<label>-<pid>-<n>`.
    pub fn new_in(parent: &Path, label: &str) -> io::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        fs::create_dir_all(parent)?;
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!("ptnet-{label}-{}-{n}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Self { path, keep: false }),
                // Left behind by an earlier process with the same PID: take the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory and its files after drop (for logs someone should read).
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        self.path.clone()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_dirs_are_distinct_and_removed_on_drop() {
        let a = ScratchDir::new("scratch-test").unwrap();
        let b = ScratchDir::new("scratch-test").unwrap();
        assert_ne!(a.path(), b.path());
        fs::write(a.path().join("f"), b"x").unwrap();
        let pa = a.path().to_owned();
        drop(a);
        assert!(!pa.exists());
        let kept = b.keep();
        assert!(kept.is_dir());
        fs::remove_dir_all(kept).unwrap();
    }
}
