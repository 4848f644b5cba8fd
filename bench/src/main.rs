//! The `bench` harness: one line per measured run (see BENCHMARKS.md).

fn main() {
    eprintln!("bench: no harnesses yet");
    std::process::exit(2);
}
