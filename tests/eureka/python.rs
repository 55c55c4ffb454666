//! Where the tests find PyPI's `py-eureka-client`: the virtual environment `scripts/setup`
//! makes under `.tools/pyeureka`. A test that uses it is skipped only on a machine whose
//! Python cannot make a virtual environment at all (no `python3`, or no `venv`/`ensurepip`,
//! when `scripts/setup` says so too); anywhere else a missing environment is a failure that
//! names the fix, so CI never skips the real client silently.

use std::path::PathBuf;

/// The environment's interpreter, or `Err` with the reason the test is skipped.
///
/// # Panics
/// When this machine's Python could make the environment but it is missing.
pub fn py_eureka_client() -> Result<PathBuf, String> {
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/pyeureka/bin/python");
    if python.is_file() {
        return Ok(python);
    }
    let usable = std::process::Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .is_ok_and(|o| o.status.success());
    if usable {
        panic!(
            "{} is missing: run scripts/setup (it installs py-eureka-client in a virtual environment)",
            python.display()
        );
    }
    Err("python3 with venv and ensurepip is not installed".to_owned())
}
