//! Sets the `tiergate_shared` cfg when the workspace's `shared/data` directory is found,
//! so the tests that need it run; without it they are listed as ignored, with the reason
//! (see `pcap::shared`, which this script includes).
//!
//! With the `afxdp` feature on Linux it also compiles the flow-offload XDP program
//! (`src/port/afxdp/offload.bpf.c`) with `clang -target bpf` into `OUT_DIR`, where
//! the port embeds it (clang is needed for the feature anyway: xsk-rs builds libxdp
//! with it). `CLANG` names another compiler.

#[allow(dead_code)]
#[path = "../pcap/src/shared.rs"]
mod shared;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=../pcap/src/shared.rs");
    shared::build_script(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|o| o == "linux");
    if linux && std::env::var_os("CARGO_FEATURE_AFXDP").is_some() {
        build_offload_program();
    }
}

fn build_offload_program() {
    let src = "src/port/afxdp/offload.bpf.c";
    println!("cargo::rerun-if-changed={src}");
    println!("cargo::rerun-if-env-changed=CLANG");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"))
        .join("offload.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = std::process::Command::new(&clang)
        .args([
            "-O2", "-g", "-target", "bpf", "-Wall", "-Werror", "-c", src, "-o",
        ])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} failed to compile {src}: {s}"),
        Err(e) => panic!(
            "cannot run {clang} to compile {src} ({e}): the afxdp feature needs clang \
             (or build with --no-default-features)"
        ),
    }
}
