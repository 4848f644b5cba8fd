//! Where the reference data lives: the ClassBench sets and traces and the real captures
//! of the workspace's `shared/data/` directory, which tests and benchmarks read but the
//! repository does not contain.
//!
//! [`data_dir`] looks in `$TIERGATE_SHARED_DIR/data/<sub>` first, then in
//! `<ancestor>/shared/data/<sub>` for every ancestor of the given start directory (a
//! checkout with `shared/` beside it). When the data is not found, a test that needs it
//! is skipped with a message on stderr — unless `TIERGATE_REQUIRE_SHARED` is set (CI
//! sets it whenever the data is present), in which case a missing directory is a
//! failure, so a misplaced data set cannot silently turn tests into no-ops.

use std::path::{Path, PathBuf};

/// Environment variable naming the `shared/` directory.
pub const DIR_VAR: &str = "TIERGATE_SHARED_DIR";
/// Environment variable that turns "data not found" into a panic.
pub const REQUIRE_VAR: &str = "TIERGATE_REQUIRE_SHARED";

/// Finds `shared/data/<sub>` (e.g. `classbench`, `pcap`) from `start` (usually
/// `env!("CARGO_MANIFEST_DIR")`), without side effects.
pub fn find(start: &Path, sub: &str) -> Option<PathBuf> {
    if let Some(d) = std::env::var_os(DIR_VAR) {
        let p = PathBuf::from(d).join("data").join(sub);
        return p.is_dir().then_some(p);
    }
    start
        .ancestors()
        .map(|a| a.join("shared/data").join(sub))
        .find(|d| d.is_dir())
}

/// Like [`find`], for tests: when the data is missing, prints `skipped: <what>: ...` on
/// stderr and returns `None`, or panics if `TIERGATE_REQUIRE_SHARED` is set. `what`
/// names the test(s) that need the data.
pub fn data_dir(start: &Path, sub: &str, what: &str) -> Option<PathBuf> {
    let found = find(start, sub);
    if found.is_none() {
        let msg = format!(
            "shared/data/{sub} not found from {} (set {DIR_VAR})",
            start.display()
        );
        if std::env::var_os(REQUIRE_VAR).is_some() {
            panic!("{what}: {msg}, and {REQUIRE_VAR} is set");
        }
        eprintln!("skipped: {what}: {msg}");
    }
    found
}
