//! What the VM test files share: their inputs from the environment and their work folders.

use std::path::PathBuf;

/// A required input from the environment, or a failure that says how to provide it (a VM
/// test never skips: ci/tier3-vm.sh builds every input and sets these variables).
pub fn required_path(var: &str, what: &str) -> PathBuf {
    let value = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!("{var} is not set: it must name {what}; run ci/tier3-vm.sh, which builds it")
        });
    let path = PathBuf::from(value);
    assert!(
        path.exists(),
        "{var}={} does not exist (it must name {what})",
        path.display()
    );
    path
}

/// A fresh folder for one test's images, sockets and logs, kept after the test so they can
/// be read after a failure: `target/tmp/vmtest/TEST` (cargo's `CARGO_TARGET_TMPDIR`, found
/// from the test executable in `target/<profile>/deps/`).
pub fn work_dir(test: &str) -> PathBuf {
    let target = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("tmp").join("vmtest").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test's work directory");
    // The daemon makes VMs' sockets here, and wants a directory only it may write.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the test's work directory");
    dir
}
