//! `tiergate eval --compiled` (lowering + classifier) prints exactly what `tiergate
//! eval` (the reference evaluator) prints, for every command the examples' READMEs
//! document, as a table and as JSON.

use std::path::PathBuf;

use tests::tiergate;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The arguments after `tiergate eval` of every documented example command.
fn documented_commands() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let Ok(readme) = std::fs::read_to_string(dir.join("README.md")) else {
            continue;
        };
        for line in readme.lines() {
            if let Some(rest) = line.strip_prefix("tiergate eval ") {
                out.push(rest.split_whitespace().map(str::to_string).collect());
            }
        }
    }
    out
}

fn run(args: &[String], extra: &[&str]) -> (Option<i32>, String, String) {
    let out = tiergate()
        .current_dir(root())
        .arg("eval")
        .args(args)
        .args(extra)
        .output()
        .expect("run tiergate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn compiled_path_prints_the_same_report_for_every_documented_example() {
    let commands = documented_commands();
    assert!(
        commands.len() >= 10,
        "found only {} commands",
        commands.len()
    );
    for args in &commands {
        for output in [&["-o", "json"][..], &["-o", "table"][..]] {
            let reference = run(args, output);
            let compiled = run(args, &[output, &["--compiled"][..]].concat());
            assert_eq!(
                reference.0,
                Some(0),
                "tiergate eval {args:?}: {}",
                reference.2
            );
            assert_eq!(
                compiled,
                reference,
                "tiergate eval {} {} --compiled",
                args.join(" "),
                output.join(" ")
            );
        }
    }
}
