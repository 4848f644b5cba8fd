//! End-to-end tests of the `tiergate` binary live in `tests/tests/`. This library holds
//! what they share.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Path of the `tiergate` binary of this workspace's target directory (same profile as
/// the running test). The first call in a test process runs `cargo build` for it, so a
/// stale binary from an earlier build is never used (a no-op when it is up to date).
pub fn tiergate_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/<test> → target/<profile>/tiergate
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("test executable lives in target/<profile>/deps");
            let bin = profile_dir.join(format!("tiergate{}", std::env::consts::EXE_SUFFIX));
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--quiet", "-p", "control", "--bin", "tiergate"]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build");
            assert!(status.success(), "cargo build of tiergate failed");
            bin
        })
        .clone()
}

/// A `tiergate` command ready to run.
pub fn tiergate() -> Command {
    Command::new(tiergate_bin())
}

/// A fresh empty directory under the system temp dir, unique to this process and `name`.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tiergate-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}
