//! Where the reference data lives.
//!
//! Two places:
//!
//! - **Fixtures** vendored in the repository under `tests/data/` ([`fixtures`]): the
//!   BSD-licensed real captures and the ClassBench 1K sets with their traces and
//!   first-match oracles. The correctness tests read these on every `cargo test`, so a
//!   fresh clone tests what CI tests.
//! - The workspace's **`shared/data/`** directory beside the checkout ([`find`],
//!   [`data_dir`]): the ClassBench 10K sets, the GPL-3.0 tcpreplay capture and the
//!   benchmark inputs, which the repository does not contain. [`find`] looks in
//!   `$TIERGATE_SHARED_DIR/data/<sub>` first (an empty value counts as unset), then in
//!   `<ancestor>/shared/data/<sub>` for every ancestor of the given start directory.
//!
//! Tests that need `shared/` are marked
//! `#[cfg_attr(not(tiergate_shared), ignore = "needs shared/ data: set TIERGATE_SHARED_DIR")]`:
//! the build script of their crate runs [`build_script`], which sets the `tiergate_shared`
//! cfg when the data is found, so without it `cargo test` lists them as *ignored* with
//! that reason instead of passing them silently. `TIERGATE_REQUIRE_SHARED` (CI sets it
//! whenever the data is present) sets the cfg regardless, and [`data_dir`] then panics
//! when the data is missing, so a misplaced data set fails instead of skipping.

use std::path::{Path, PathBuf};

/// Environment variable naming the `shared/` directory.
pub const DIR_VAR: &str = "TIERGATE_SHARED_DIR";
/// Environment variable that turns "data not found" into a failure.
pub const REQUIRE_VAR: &str = "TIERGATE_REQUIRE_SHARED";
/// The cfg [`build_script`] sets when `shared/data` is found (or required).
pub const CFG: &str = "tiergate_shared";

/// The vendored fixtures directory `tests/data/<sub>` of this repository (`pcap`,
/// `classbench`). It always exists in a checkout.
pub fn fixtures(sub: &str) -> PathBuf {
    // Every crate of the workspace sits one level below its root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(sub)
}

/// Finds `shared/data/<sub>` (e.g. `classbench`, `pcap`) from `start` (usually
/// `env!("CARGO_MANIFEST_DIR")`), without side effects.
pub fn find(start: &Path, sub: &str) -> Option<PathBuf> {
    if let Some(d) = std::env::var_os(DIR_VAR).filter(|d| !d.is_empty()) {
        let p = PathBuf::from(d).join("data").join(sub);
        return p.is_dir().then_some(p);
    }
    start
        .ancestors()
        .map(|a| a.join("shared/data").join(sub))
        .find(|d| d.is_dir())
}

/// Like [`find`], for tests marked with the `tiergate_shared` cfg: when the data is
/// missing, prints `skipped: <what>: ...` on stderr and returns `None`, or panics if
/// `TIERGATE_REQUIRE_SHARED` is set. `what` names the test(s) that need the data.
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

/// For the build script of a crate whose tests need `shared/data` (it includes this
/// file with `#[path]`): prints the cargo directives that set the `tiergate_shared` cfg
/// when `shared/data/classbench` and `shared/data/pcap` are found from `manifest_dir`
/// (or `TIERGATE_REQUIRE_SHARED` is set), and that rerun the script when either
/// variable changes or the found directories change.
pub fn build_script(manifest_dir: &Path) {
    println!("cargo::rustc-check-cfg=cfg({CFG})");
    println!("cargo::rerun-if-env-changed={DIR_VAR}");
    println!("cargo::rerun-if-env-changed={REQUIRE_VAR}");
    let found: Vec<PathBuf> = ["classbench", "pcap"]
        .iter()
        .filter_map(|sub| find(manifest_dir, sub))
        .collect();
    for d in &found {
        // Only existing paths: a missing one would rerun the script on every build.
        println!("cargo::rerun-if-changed={}", d.display());
    }
    if found.len() == 2 || std::env::var_os(REQUIRE_VAR).is_some() {
        println!("cargo::rustc-cfg={CFG}");
    }
}
