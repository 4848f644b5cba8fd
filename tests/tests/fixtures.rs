//! The repository's fixtures (`tests/data/`) are byte-for-byte copies of files of the
//! workspace's `shared/data/`, as their READMEs say.

use std::path::Path;

#[test]
#[cfg_attr(
    not(tiergate_shared),
    ignore = "needs shared/ data: set TIERGATE_SHARED_DIR"
)]
fn vendored_fixtures_are_copies_of_the_shared_data() {
    for sub in ["pcap", "classbench"] {
        let Some(shared) = pcap::shared::data_dir(
            Path::new(env!("CARGO_MANIFEST_DIR")),
            sub,
            "fixture comparison",
        ) else {
            return;
        };
        let dir = pcap::shared::fixtures(sub);
        let mut compared = 0;
        for e in std::fs::read_dir(&dir).expect("tests/data") {
            let path = e.expect("entry").path();
            let name = path.file_name().expect("name");
            if name == "README.md" {
                continue;
            }
            let ours = std::fs::read(&path).expect("fixture");
            let theirs = std::fs::read(shared.join(name))
                .unwrap_or_else(|e| panic!("{}: {e}", shared.join(name).display()));
            assert!(
                ours == theirs,
                "{} differs from shared/data",
                path.display()
            );
            compared += 1;
        }
        assert!(compared >= 6, "{}: {compared} files", dir.display());
    }
}
