//! The `tiergate` command.

fn main() {
    eprintln!("tiergate: no subcommands yet");
    std::process::exit(2);
}
