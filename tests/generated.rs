//! The committed completions and man pages match the clap definitions.
//! Refresh them with `cargo run -- generate`.

use std::path::Path;

#[test]
fn completions_and_man_pages_are_current() {
    let dir = tempfile::tempdir().unwrap();
    let (comp, man) = (dir.path().join("completions"), dir.path().join("man"));
    ssechan::generate::write_all(&comp, &man).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (fresh, committed) in [(comp, root.join("completions")), (man, root.join("man"))] {
        let mut names: Vec<_> =
            std::fs::read_dir(&fresh).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert!(!names.is_empty());
        for name in names {
            let want = std::fs::read(fresh.join(&name)).unwrap();
            let have = std::fs::read(committed.join(&name)).unwrap_or_default();
            assert!(
                want == have,
                "{} is stale or missing: run `cargo run -- generate`",
                committed.join(&name).display()
            );
        }
    }
}
