//! Sets the `tiergate_shared` cfg when the workspace's `shared/data` directory is found,
//! so the tests that need it run; without it they are listed as ignored, with the reason
//! (see `pcap::shared`, which this script includes).

#[allow(dead_code)]
#[path = "../pcap/src/shared.rs"]
mod shared;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=../pcap/src/shared.rs");
    shared::build_script(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
}
