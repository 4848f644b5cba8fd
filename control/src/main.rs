//! The `tiergate` command. Argument parsing and subcommands live in `control::cli`.

use clap::Parser;

/// mimalloc instead of the C library's allocator: loading a large policy set builds
/// and frees millions of small values on several threads at once, where glibc's
/// allocator took about 40 % of the samples of `check` on 100 000 policies as JSON
/// Lists (BENCHMARKS.md, "Validation"). The packet path does not allocate.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    control::sys::restore_default_sigpipe();
    control::cli::run(control::cli::Cli::parse())
}
