//! The outputs shown in the examples' READMEs are what `tiergate` prints: in
//! `examples/*/README.md`, a ` ```text ` block that follows a ` ```sh ` block is the
//! stdout of the first command of that `sh` block, run from the repository root.

use std::path::PathBuf;

use tests::tiergate;

/// (README, command, expected stdout) for every shown output.
fn shown_outputs() -> Vec<(PathBuf, String, String)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for d in dirs {
        let readme = d.join("README.md");
        let Ok(text) = std::fs::read_to_string(&readme) else {
            continue;
        };
        let mut last_command: Option<String> = None;
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let fence = line.trim_end();
            if fence != "```sh" && fence != "```text" {
                continue;
            }
            let block: Vec<&str> = lines
                .by_ref()
                .take_while(|l| l.trim_end() != "```")
                .collect();
            if fence == "```sh" {
                last_command = block.first().map(|c| c.to_string());
            } else if let Some(cmd) = last_command.take() {
                found.push((readme.clone(), cmd, block.join("\n")));
            }
        }
    }
    found
}

#[test]
fn outputs_shown_in_example_readmes_are_what_tiergate_prints() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let shown = shown_outputs();
    assert!(
        shown
            .iter()
            .any(|(r, _, _)| r.ends_with("k8s-default-deny/README.md")),
        "the k8s-default-deny README shows its trace: {shown:?}"
    );
    for (readme, cmd, want) in shown {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        assert_eq!(
            words.first(),
            Some(&"tiergate"),
            "{}: {cmd}",
            readme.display()
        );
        let out = tiergate()
            .args(&words[1..])
            .current_dir(&root)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{cmd}");
        let got = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            got.trim_end(),
            want.trim_end(),
            "{}: the output shown for `{cmd}` is not what it prints",
            readme.display()
        );
    }
}
