//! Test initramfs images, built by `vm-images/build-initramfs.sh`.
//!
//! The script is the one implementation of the image layout (busybox, `/modules/`,
//! `/bin/`, the `/init` that runs the test script and prints `PTNET-EXIT=`); this module
//! only gathers the arguments and runs it.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

/// Environment variable naming `build-initramfs.sh` (default: the one in this checkout).
pub const ENV_INITRAMFS_SCRIPT: &str = "PTNET_INITRAMFS_SCRIPT";

/// Errors while building an initramfs.
#[derive(Debug, Error)]
pub enum InitramfsError {
    /// The test script could not be written next to the image.
    #[error("cannot write test script {path}")]
    WriteScript {
        /// Where it was to be written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The builder script could not be run.
    #[error("cannot run {script}")]
    Spawn {
        /// The builder script.
        script: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The builder script failed.
    #[error("{script} failed ({status}):\n{stderr}")]
    Failed {
        /// The builder script.
        script: PathBuf,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// The test script an image runs.
#[derive(Clone, Debug)]
enum TestScript {
    Text(String),
    File(PathBuf),
}

/// What goes into a test initramfs.
#[derive(Clone, Debug)]
pub struct Initramfs {
    builder: PathBuf,
    script: TestScript,
    modules: Vec<PathBuf>,
    bins: Vec<PathBuf>,
    files: Vec<(PathBuf, String)>,
}

impl Initramfs {
    /// An image that runs `script` (shell text, run with `sh -e` in the guest).
    pub fn new(script: impl Into<String>) -> Self {
        Self::with_script(TestScript::Text(script.into()))
    }

    /// An image that runs the shell script in the file `path`.
    pub fn from_script_file(path: impl Into<PathBuf>) -> Self {
        Self::with_script(TestScript::File(path.into()))
    }

    fn with_script(script: TestScript) -> Self {
        Self {
            builder: builder_script(),
            script,
            modules: Vec::new(),
            bins: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Uses another `build-initramfs.sh`.
    pub fn builder(mut self, path: impl Into<PathBuf>) -> Self {
        self.builder = path.into();
        self
    }

    /// Adds a kernel module; it lands in `/modules/`.
    pub fn module(mut self, ko: impl Into<PathBuf>) -> Self {
        self.modules.push(ko.into());
        self
    }

    /// Adds a (static) binary; it lands in `/bin/`.
    pub fn bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.bins.push(path.into());
        self
    }

    /// Adds a file at the absolute path `dest` in the image.
    pub fn file(mut self, src: impl Into<PathBuf>, dest: impl Into<String>) -> Self {
        self.files.push((src.into(), dest.into()));
        self
    }

    /// The arguments for the builder script, writing `out`.
    fn args(&self, out: &Path, script: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--out".into(), out.into(), "--script".into()];
        args.push(script.into());
        for m in &self.modules {
            args.push("--module".into());
            args.push(m.into());
        }
        for b in &self.bins {
            args.push("--bin".into());
            args.push(b.into());
        }
        for (src, dest) in &self.files {
            let mut spec = src.clone().into_os_string();
            spec.push(":");
            spec.push(dest);
            args.push("--file".into());
            args.push(spec);
        }
        args
    }

    /// Builds the image at `out` and returns its path. A test script given as text is
    /// written next to it as `<out>.test.sh`.
    pub fn build(&self, out: &Path) -> Result<PathBuf, InitramfsError> {
        let script = match &self.script {
            TestScript::File(path) => path.clone(),
            TestScript::Text(text) => {
                let mut path = out.as_os_str().to_owned();
                path.push(".test.sh");
                let path = PathBuf::from(path);
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::create_dir_all(dir).map_err(|source| InitramfsError::WriteScript {
                        path: path.clone(),
                        source,
                    })?;
                }
                fs::write(&path, text).map_err(|source| InitramfsError::WriteScript {
                    path: path.clone(),
                    source,
                })?;
                path
            }
        };
        let output = Command::new(&self.builder)
            .args(self.args(out, &script))
            .output()
            .map_err(|source| InitramfsError::Spawn {
                script: self.builder.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(InitramfsError::Failed {
                script: self.builder.clone(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr)
                    .trim_end()
                    .to_owned(),
            });
        }
        Ok(out.to_owned())
    }
}

/// `build-initramfs.sh`: `PTNET_INITRAMFS_SCRIPT` if set, else the one in the checkout
/// this crate was built from.
pub fn builder_script() -> PathBuf {
    match std::env::var_os(ENV_INITRAMFS_SCRIPT) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../vm-images/build-initramfs.sh"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_gets_every_module_binary_and_file_in_order() {
        let image = Initramfs::new("true")
            .module("/m/a.ko")
            .module("/m/b.ko")
            .bin("/b/tool")
            .file("/etc/x.conf", "/etc/x.conf");
        let args: Vec<String> = image
            .args(Path::new("/o/i.gz"), Path::new("/o/i.gz.test.sh"))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "--out",
                "/o/i.gz",
                "--script",
                "/o/i.gz.test.sh",
                "--module",
                "/m/a.ko",
                "--module",
                "/m/b.ko",
                "--bin",
                "/b/tool",
                "--file",
                "/etc/x.conf:/etc/x.conf",
            ]
        );
    }

    #[test]
    fn default_builder_is_the_checkouts_build_initramfs_script() {
        if std::env::var_os(ENV_INITRAMFS_SCRIPT).is_none() {
            assert!(builder_script().ends_with("vm-images/build-initramfs.sh"));
            assert!(builder_script().is_file());
        }
    }

    #[test]
    fn failing_builder_reports_its_stderr() {
        let dir = crate::ScratchDir::new("initramfs-fail").unwrap();
        let err = Initramfs::new("true")
            .builder("/bin/false")
            .build(&dir.path().join("i.gz"))
            .unwrap_err();
        assert!(matches!(err, InitramfsError::Failed { .. }), "{err}");
    }
}
