//! Unit tests of site-file loading, merging and error reporting.
use super::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, text).expect("write");
    path
}

const FULL: &str = r#"
[paths]
data_root = "/datasets"
cache_dir = "scratch/virb"
plugins_dir = ["/opt/virb/plugins", "more"]
out = "out"
[run]
devices = "all"
[slurm]
partition = "gpu"
account = "lab"
gres = "gpu:1"
time = "12:00:00"
cpus_per_task = 8
mem = "64G"
extra_args = ["--qos=high"]
"#;

#[test]
fn reads_every_key_and_resolves_relative_paths_against_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "proj/virb.toml", FULL);
    let site = load_from(std::slice::from_ref(&file)).expect("load");
    let from = Source::File(file.clone());
    let folder = dir.path().join("proj");
    assert_eq!(
        site.data_root.as_ref().map(|s| (&s.value, &s.source)),
        Some((&PathBuf::from("/datasets"), &from))
    );
    assert_eq!(
        site.cache_dir.as_ref().map(|s| &s.value),
        Some(&folder.join("scratch/virb"))
    );
    assert_eq!(
        site.plugins_dir.as_ref().map(|s| s.value.clone()),
        Some(vec![
            PathBuf::from("/opt/virb/plugins"),
            folder.join("more")
        ])
    );
    assert_eq!(
        site.out.as_ref().map(|s| &s.value),
        Some(&folder.join("out"))
    );
    assert_eq!(site.devices.as_ref().map(|s| s.value.as_str()), Some("all"));
    assert_eq!(
        site.partition.as_ref().map(|s| s.value.as_str()),
        Some("gpu")
    );
    assert_eq!(site.account.as_ref().map(|s| s.value.as_str()), Some("lab"));
    assert_eq!(site.gres.as_ref().map(|s| s.value.as_str()), Some("gpu:1"));
    assert_eq!(
        site.time.as_ref().map(|s| s.value.as_str()),
        Some("12:00:00")
    );
    assert_eq!(site.cpus_per_task.as_ref().map(|s| s.value), Some(8));
    assert_eq!(site.mem.as_ref().map(|s| s.value.as_str()), Some("64G"));
    assert_eq!(
        site.extra_args.as_ref().map(|s| s.value.clone()),
        Some(vec!["--qos=high".to_string()])
    );
    assert_eq!(site.files, vec![(file, true)]);
}

#[test]
fn the_first_file_wins_key_by_key_and_missing_files_are_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let project = write(dir.path(), "virb.toml", "[slurm]\naccount = \"proj\"\n");
    let user = write(
        dir.path(),
        "user/config.toml",
        "[slurm]\naccount = \"me\"\npartition = \"gpu\"\n[paths]\ndata_root = \"d\"\n",
    );
    let missing = dir.path().join("nope.toml");
    let site = load_from(&[missing.clone(), project.clone(), user.clone()]).expect("load");
    assert_eq!(
        site.account,
        Some(Setting {
            value: "proj".into(),
            source: Source::File(project.clone())
        })
    );
    assert_eq!(
        site.partition,
        Some(Setting {
            value: "gpu".into(),
            source: Source::File(user.clone())
        })
    );
    assert_eq!(
        site.data_root.as_ref().map(|s| s.value.clone()),
        Some(dir.path().join("user/d"))
    );
    assert_eq!(site.mem, None);
    assert_eq!(
        site.files,
        vec![(missing, false), (project, true), (user, true)]
    );
}

#[test]
fn flags_win_over_files() {
    let file_value = Some(Setting {
        value: "gpu".to_string(),
        source: Source::File("x".into()),
    });
    assert_eq!(
        pick(Some("cpu".to_string()), &file_value),
        Some(Setting {
            value: "cpu".into(),
            source: Source::Flag
        })
    );
    assert_eq!(pick(None, &file_value), file_value);
    assert_eq!(pick::<String>(None, &None), None);
}

#[test]
fn an_unknown_key_names_the_file_line_and_key_and_lists_the_known_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "virb.toml",
        "[paths]\ndata_root = \"/d\"\n\n[slurm]\npartition = \"gpu\"\nacount = \"lab\"\n",
    );
    let err = load_from(std::slice::from_ref(&file)).expect_err("typo must fail");
    match &err {
        SiteError::Invalid {
            path,
            line,
            key,
            message,
        } => {
            assert_eq!(path, &file);
            assert_eq!(*line, Some(6));
            assert_eq!(key.as_deref(), Some("slurm.acount"));
            assert!(message.contains("acount"), "{message}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}:6: key `slurm.acount`", file.display())),
        "{text}"
    );
    assert!(
        text.contains("slurm.account") && text.contains("paths.data_root"),
        "{text}"
    );
}

#[test]
fn an_unknown_section_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "virb.toml", "[path]\ndata_root = \"/d\"\n");
    let err = load_from(&[file])
        .expect_err("unknown section must fail")
        .to_string();
    assert!(err.contains(":1: key `path`"), "{err}");
}

#[test]
fn a_wrong_type_names_the_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "virb.toml",
        "[slurm]\npartition = \"gpu\"\ncpus_per_task = \"8\"\n",
    );
    let err = load_from(&[file])
        .expect_err("string for u32 must fail")
        .to_string();
    assert!(err.contains(":3: key `slurm.cpus_per_task`"), "{err}");
    assert!(err.contains("invalid type"), "{err}");
}

#[test]
fn invalid_toml_and_bad_values_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = write(dir.path(), "a.toml", "[slurm\npartition = 1\n");
    let err = load_from(std::slice::from_ref(&broken))
        .expect_err("broken TOML")
        .to_string();
    assert!(err.starts_with(&format!("{}:1", broken.display())), "{err}");
    let zero = write(dir.path(), "b.toml", "[slurm]\n\ncpus_per_task = 0\n");
    let err = load_from(&[zero]).expect_err("zero CPUs").to_string();
    assert!(
        err.contains(":3: key `slurm.cpus_per_task`: must be at least 1"),
        "{err}"
    );
    let empty = write(dir.path(), "c.toml", "[run]\ndevices = \" \"\n");
    let err = load_from(&[empty]).expect_err("empty devices").to_string();
    assert!(err.contains("key `run.devices`: is empty"), "{err}");
}

#[test]
fn an_unreadable_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A folder where the file should be: exists, cannot be read as a file (even as root).
    std::fs::create_dir(dir.path().join("virb.toml")).expect("mkdir");
    let err = load_from(&[dir.path().join("virb.toml")]).expect_err("a folder is not a file");
    assert!(matches!(err, SiteError::Read { .. }), "{err:?}");
    assert!(
        err.to_string().contains("cannot read the site config"),
        "{err}"
    );
}

#[test]
fn describe_lists_every_key_with_its_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "virb.toml",
        "[slurm]\npartition = \"gpu\"\ncpus_per_task = 4\n",
    );
    let mut site = load_from(&[file.clone(), dir.path().join("none.toml")]).expect("load");
    site.devices = pick(Some("cuda:1".to_string()), &site.devices);
    let lines = site.describe();
    assert_eq!(lines.len(), 2 + KNOWN_KEYS.len(), "{lines:#?}");
    assert_eq!(lines[0], format!("# {} (read)", file.display()));
    assert!(lines[1].ends_with("none.toml (not found)"), "{}", lines[1]);
    assert!(
        lines.contains(&format!("slurm.partition = gpu  (from {})", file.display())),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&format!(
            "slurm.cpus_per_task = 4  (from {})",
            file.display()
        )),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"run.devices = cuda:1  (from the command line)".to_string()),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"slurm.account = not set".to_string()),
        "{lines:#?}"
    );
    for key in KNOWN_KEYS {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{key} = "))),
            "{key} missing from {lines:#?}"
        );
    }
}

#[test]
fn standard_paths_follow_xdg() {
    let paths = standard_paths();
    assert_eq!(paths[0], PathBuf::from("virb.toml"));
    let expected = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x).join("virb/config.toml"),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".config/virb/config.toml")
        }
    };
    assert_eq!(paths.get(1), Some(&expected));
}
