//! Unit tests of rerun stamps: freshness against each kind of change, hidden entries, limits, keys.
#![allow(clippy::unwrap_used, clippy::type_complexity)]

use super::*;

fn stamp_of(inputs: Inputs, key: &str) -> Stamp {
    Stamp {
        format: FORMAT,
        key: key.into(),
        written_unix_s: 0,
        out: PathBuf::from("out"),
        entries: inputs.into_entries(),
        stdout: "table\n".into(),
    }
}

#[test]
fn a_stamp_is_fresh_until_anything_it_lists_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let stamps = tmp.path().join("stamps");
    let data = tmp.path().join("data");
    fs::create_dir_all(data.join("a/b")).unwrap();
    fs::write(data.join("a/split.json"), "[1]").unwrap();
    fs::write(data.join("a/b/deep.jpg"), "x").unwrap();
    let config = tmp.path().join("virb.yaml");
    fs::write(&config, "a: 1").unwrap();
    let site = tmp.path().join("virb.toml");
    let snapshot = || {
        let mut i = Inputs::default();
        i.path(&config);
        i.path(&site);
        i.tree(&data, 2, 100, true).unwrap();
        i
    };
    write_in(&stamps, &stamp_of(snapshot(), "k")).unwrap();
    let fresh = fresh_in(&stamps, "k").expect("nothing changed");
    assert_eq!(fresh.stdout, "table\n");
    assert!(fresh_in(&stamps, "other").is_none(), "another key");

    // Each change alone makes it stale; restoring the snapshot makes it fresh again.
    let changes: Vec<(&str, Box<dyn Fn()>)> = vec![
        (
            "config rewritten",
            Box::new(|| fs::write(&config, "a: 2").unwrap()),
        ),
        (
            "site file created",
            Box::new(|| fs::write(&site, "").unwrap()),
        ),
        (
            "split file rewritten",
            Box::new(|| fs::write(data.join("a/split.json"), "[2]").unwrap()),
        ),
        (
            "file added two levels down",
            Box::new(|| fs::write(data.join("a/b/new.jpg"), "y").unwrap()),
        ),
        (
            "folder removed",
            Box::new(|| fs::remove_dir_all(data.join("a/b")).unwrap()),
        ),
    ];
    for (what, change) in changes {
        change();
        assert!(fresh_in(&stamps, "k").is_none(), "{what}: still fresh");
        write_in(&stamps, &stamp_of(snapshot(), "k")).unwrap();
        assert!(
            fresh_in(&stamps, "k").is_some(),
            "{what}: new stamp not fresh"
        );
    }
}

#[test]
fn hidden_entries_are_skipped_and_a_limit_is_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    fs::create_dir_all(out.join(".claims")).unwrap();
    fs::write(out.join(".claims/job.claim"), "x").unwrap();
    fs::write(out.join("results.json"), "{}").unwrap();
    let mut i = Inputs::default();
    i.tree(&out, usize::MAX, 10, true).unwrap();
    let paths: Vec<PathBuf> = i.into_entries().into_iter().map(|e| e.path).collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(paths
        .iter()
        .all(|p| !p.to_string_lossy().contains(".claims")));
    for n in 0..5 {
        fs::write(out.join(format!("f{n}")), "x").unwrap();
    }
    assert!(Inputs::default().tree(&out, usize::MAX, 3, true).is_err());
}

#[test]
fn the_key_depends_on_arguments_and_folder() {
    let a = key(&["run".into(), "--out".into(), "o".into()], Path::new("/x"));
    assert_eq!(
        a,
        key(&["run".into(), "--out".into(), "o".into()], Path::new("/x"))
    );
    assert_ne!(
        a,
        key(&["run".into(), "--out".into(), "p".into()], Path::new("/x"))
    );
    assert_ne!(
        a,
        key(&["run".into(), "--out".into(), "o".into()], Path::new("/y"))
    );
    // Arguments are length-prefixed: ["ab"] and ["a", "b"] differ.
    assert_ne!(
        key(&["ab".into()], Path::new("/")),
        key(&["a".into(), "b".into()], Path::new("/"))
    );
}

#[test]
fn a_corrupt_or_foreign_stamp_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("k.json"), "{not json").unwrap();
    assert!(fresh_in(tmp.path(), "k").is_none());
    let mut s = stamp_of(Inputs::default(), "k");
    s.format = FORMAT + 1;
    write_in(tmp.path(), &s).unwrap();
    assert!(fresh_in(tmp.path(), "k").is_none());
}
