//! Hardening: names never escape `--out`, no two results share a folder, a bad plugin file or an
//! absurd label never kills the process, and resume trusts only what it has verified. Each case
//! asserts the message and that nothing was written anywhere but where it should be.
use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};
use virb_tests::{plugin_lib, read_json, weights, Env, IMAGE_SIZE};

/// Every file under `dir`, except the plugin folder and the feature cache (which virb may create).
fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if rel.starts_with("plugins") || rel.starts_with("cache") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            }
            found.insert(rel);
        }
    }
    found
}

/// A YAML double-quoted scalar (JSON's escapes are YAML's).
fn quoted(name: &str) -> String {
    serde_json::to_string(name).unwrap()
}

const JOB: &str = "  task: CalTech-101\n  training_configs:\n    adam: {optimizer: adam, lr: 0.001}\n  num_epochs: 1\n";

/// Runs with `--out a/b/out`, so that `../../x` below an experiment folder would land in `a/x`,
/// inside the test folder where it can be looked for.
fn run_nested(env: &Env) -> virb_tests::Output {
    env.host(&[
        "run",
        "--experiment-list",
        "experiments.yaml",
        "--virb-configs",
        "virb.yaml",
        "--data-root",
        "data",
        "--out",
        "a/b/out",
    ])
}

/// The bad names of the issue: relative escapes, absolute paths, empty, `..`, hidden, control
/// characters, and names too long for the file system.
fn bad_names(env: &Env) -> Vec<(String, &'static str)> {
    let elsewhere = env.path("elsewhere/x").display().to_string();
    vec![
        (
            "../../x".into(),
            "contains `/`: a name is one folder name, not a path",
        ),
        ("../../../../x".into(), "contains `/`"),
        (elsewhere, "contains `/`"),
        ("..".into(), "would name the folder itself or its parent"),
        ("".into(), "name is empty"),
        ("a\\b".into(), "contains `\\`"),
        (".hidden".into(), "starts with `.`"),
        ("new\nline".into(), "contains the control character U+000A"),
        ("x".repeat(300), "is 300 bytes long"),
    ]
}

fn assert_refused(env: &Env, before: &BTreeSet<PathBuf>, expect: &[&str]) {
    let out = run_nested(env);
    assert_eq!(out.code, 2, "{expect:?}: {}", out.stderr);
    for e in expect {
        assert!(out.stderr.contains(e), "want `{e}` in:\n{}", out.stderr);
    }
    assert_eq!(
        &files_under(env.dir.path()),
        before,
        "{expect:?}: something was written"
    );
    assert!(!env.path("elsewhere").exists() && !env.path("a").exists());
}

#[test]
fn unsafe_experiment_names_are_refused_with_the_line() {
    let env = Env::new();
    env.write("virb.yaml", &format!("CalTech-101:\n{JOB}"));
    for (name, why) in bad_names(&env) {
        let w = weights().display().to_string();
        env.write(
            "experiments.yaml",
            &format!("ok: '{w}'\n{}: '{w}'\n", quoted(&name)),
        );
        let before = files_under(env.dir.path());
        assert_refused(
            &env,
            &before,
            &["error: experiments.yaml:2: the experiment name", why],
        );
    }
}

#[test]
fn unsafe_job_names_are_refused_with_the_line() {
    let env = Env::new();
    env.write(
        "experiments.yaml",
        &format!("probe: '{}'\n", weights().display()),
    );
    for (name, why) in bad_names(&env) {
        env.write("virb.yaml", &format!("ok:\n{JOB}{}:\n{JOB}", quoted(&name)));
        let before = files_under(env.dir.path());
        assert_refused(&env, &before, &["error: virb.yaml:6: the job name", why]);
    }
    // A job name that fits alone but not with the selection file's suffix.
    env.write("virb.yaml", &format!("{}:\n{JOB}", "j".repeat(230)));
    let before = files_under(env.dir.path());
    assert_refused(
        &env,
        &before,
        &["virb.yaml:1: the job name is 230 bytes long, which makes the file name `.jjjj"],
    );
}

#[test]
fn unsafe_config_names_are_refused_with_the_line() {
    let env = Env::new();
    env.write(
        "experiments.yaml",
        &format!("probe: '{}'\n", weights().display()),
    );
    for (name, why) in bad_names(&env) {
        env.write(
            "virb.yaml",
            &format!(
                "J:\n  task: CalTech-101\n  training_configs:\n    ok: {{optimizer: adam, lr: 0.1}}\n    {}: {{optimizer: adam, lr: 0.1}}\n  num_epochs: 1\n",
                quoted(&name)
            ),
        );
        let before = files_under(env.dir.path());
        assert_refused(
            &env,
            &before,
            &["error: virb.yaml:5: job `J`: the training config name", why],
        );
    }
    // Each name fits, but `<job>-<config>` does not.
    env.write(
        "virb.yaml",
        &format!(
            "CalTech-101:\n  task: CalTech-101\n  training_configs:\n    {}: {{optimizer: adam, lr: 0.1}}\n  num_epochs: 1\n",
            "c".repeat(250)
        ),
    );
    let before = files_under(env.dir.path());
    let expect = format!(
        "virb.yaml:4: job `CalTech-101`, config `{}…`: the result folder name `<job>-<config>` is 262 bytes, longer than the file system's limit of 255 bytes",
        "c".repeat(40)
    );
    assert_refused(&env, &before, &[&expect]);
}

#[test]
fn two_results_that_would_share_a_folder_are_refused_before_any_work() {
    let env = Env::new();
    env.write(
        "experiments.yaml",
        &format!("probe: '{}'\n", weights().display()),
    );
    env.write(
        "virb.yaml",
        "J:\n  task: CalTech-101\n  training_configs:\n    a-b: {optimizer: adam, lr: 0.1}\n  num_epochs: 1\nJ-a:\n  task: CalTech-101\n  training_configs:\n    b: {optimizer: adam, lr: 0.1}\n  num_epochs: 1\n",
    );
    let before = files_under(env.dir.path());
    assert_refused(&env, &before, &["error: virb.yaml:9: job `J`, config `a-b` and job `J-a`, config `b` would both write `J-a-b` in each experiment's folder, the second overwriting the first; rename one of them"]);
    // Two Imagenet jobs with the same config name would share the Imagenetv2 job's folder.
    env.write(
        "virb.yaml",
        "ImA:\n  task: Imagenet\n  training_configs:\n    adam: {optimizer: adam, lr: 0.1}\n  num_epochs: 1\nImB:\n  task: Imagenet\n  training_configs:\n    adam: {optimizer: adam, lr: 0.1}\n  num_epochs: 1\nV2:\n  task: Imagenetv2\n",
    );
    assert_refused(&env, &before, &["error: virb.yaml:11: job `V2`: evaluates the heads of jobs `ImA` and `ImB`, which both have a config `adam`: both results would be written to `V2-adam`; rename one of the configs"]);
}

#[test]
fn duplicate_names_are_refused_with_both_lines() {
    let env = Env::new();
    let w = weights().display().to_string();
    env.write(
        "experiments.yaml",
        &format!("a: '{w}'\nb: '{w}'\na: '{w}'\n"),
    );
    env.write("virb.yaml", &format!("CalTech-101:\n{JOB}"));
    let before = files_under(env.dir.path());
    assert_refused(&env, &before, &["error: experiments.yaml:3: experiment `a` is given twice (lines 1 and 3); YAML would keep only the last one, so rename or remove one"]);
    env.write("experiments.yaml", &format!("a: '{w}'\n"));
    env.write("virb.yaml", &format!("J:\n{JOB}K:\n{JOB}J:\n{JOB}"));
    assert_refused(
        &env,
        &before,
        &["error: virb.yaml:11: job `J` is given twice (lines 1 and 11)"],
    );
    env.write(
        "virb.yaml",
        "J:\n  task: CalTech-101\n  training_configs:\n    adam: {optimizer: adam, lr: 0.1}\n    sgd: {optimizer: sgd, lr: 0.1}\n    adam: {optimizer: adam, lr: 0.01}\n  num_epochs: 1\n",
    );
    assert_refused(
        &env,
        &before,
        &["error: virb.yaml:6: training config `adam` of job `J` is given twice (lines 4 and 6)"],
    );
    env.write(
        "virb.yaml",
        "J:\n  task: CalTech-101\n  training_configs:\n    adam:\n      optimizer: adam\n      lr: 0.1\n      lr: 0.01\n  num_epochs: 1\n",
    );
    assert_refused(&env, &before, &["error: virb.yaml:7: key `training_configs.adam.lr` of job `J` is given twice (lines 6 and 7)"]);
}

#[test]
fn a_truncated_plugin_is_rejected_and_the_others_load() {
    let env = Env::new();
    let whole = fs::read(plugin_lib("virb-task-counting")).unwrap();
    // Cut early (inside the loaded segments), half way, and just before the end (the section
    // header table).
    for cut in [whole.len() / 10, whole.len() / 2, whole.len() - 100] {
        let file = env.plugins.join("libtruncated.so");
        fs::write(&file, &whole[..cut]).unwrap();
        let out = env.host(&["plugins"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            out.stdout
                .contains(&format!("loaded ({}):", virb_tests::OWN_PLUGINS.len())),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout
                .contains("libtruncated.so: the file is truncated or damaged: "),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout
                .contains("help: replace the file with a complete build"),
            "{}",
            out.stdout
        );
        let tasks = env.host(&["tasks"]);
        assert_eq!(tasks.code, 0, "{}", tasks.stderr);
        assert!(tasks.stdout.contains("CalTech-101"), "{}", tasks.stdout);
        assert!(
            tasks
                .stderr
                .contains("libtruncated.so rejected: the file is truncated"),
            "{}",
            tasks.stderr
        );
    }
    fs::write(env.plugins.join("libempty.so"), b"").unwrap();
    let out = env.host(&["plugins"]);
    assert!(
        out.stdout
            .contains("libempty.so: the file is empty, not a shared library"),
        "{}",
        out.stdout
    );
}

#[test]
fn an_absurd_counting_label_is_named_before_any_head_is_built() {
    let env = Env::new();
    env.fixture("THORNumSteps", 3, 2, 1, 32);
    let labels = env.path("data/thor_num_steps/train_labels.txt");
    let text = fs::read_to_string(&labels).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let (key, _) = lines[4].rsplit_once(' ').unwrap();
    lines[4] = format!("{key} 999999999");
    fs::write(&labels, lines.join("\n") + "\n").unwrap();
    env.write(
        "experiments.yaml",
        &format!("probe: '{}'\n", weights().display()),
    );
    env.write("virb.yaml", "THORNumSteps:\n  task: THORNumSteps\n  training_configs:\n    a: {optimizer: adam, lr: 0.001}\n  num_epochs: 1\n  image_size: 32\n");
    let out = env.run();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("THORNumSteps: label 999999999 (data/thor_num_steps/train_labels.txt:5) would make a 1000000000-way classifier, but THORNumSteps allows at most 1000 classes (labels 0 to 999); found 4 distinct values: 0-2, 999999999"),
        "{}",
        out.stderr
    );
    assert!(env.results().is_empty());
}

#[test]
fn a_bad_out_folder_fails_before_any_work() {
    let env = Env::new();
    env.caltech_fixture(2, 2, 1);
    env.caltech_configs(weights(), 1);
    env.write("out", "a file where the output folder should be\n");
    let out = env.run();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "error: --out out: is a file, not a folder; give a folder (it is created if missing)"
        ),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("encode"),
        "worked before failing: {}",
        out.stderr
    );
}

#[test]
fn resume_redoes_a_result_whose_head_is_missing_or_changed() {
    let env = Env::new();
    env.caltech_fixture(2, 3, 2);
    env.caltech_configs(weights(), 2);
    assert!(env.run().ok());
    let dir = env.path("out/probe/CalTech-101-adam-0.001");
    let head = dir.join("seed-0/head.safetensors");
    let sha = read_json(&dir.join("results.json"))["head_sha256"].clone();
    // Changed: one bit flipped.
    let mut bytes = fs::read(&head).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&head, &bytes).unwrap();
    let out = env.run();
    assert!(out.ok(), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "{}: its head {} was changed since it was written; redoing it",
            dir.join("results.json")
                .strip_prefix(env.dir.path())
                .unwrap()
                .display(),
            head.strip_prefix(env.dir.path()).unwrap().display()
        )),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("done earlier"), "{}", out.stdout);
    assert_eq!(
        read_json(&dir.join("results.json"))["head_sha256"],
        sha,
        "retrained head differs"
    );
    // Missing.
    fs::remove_file(&head).unwrap();
    let out = env.run();
    assert!(out.ok(), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("seed-0/head.safetensors is missing; redoing it"),
        "{}",
        out.stderr
    );
    assert!(head.is_file());
    // Intact: skipped.
    let out = env.run();
    assert!(out.stdout.contains("done earlier"), "{}", out.stdout);
}

/// A safetensors file with one int64 tensor named like a ResNet weight.
fn integer_safetensors(path: &Path) {
    let n = 64 * 3 * 7 * 7;
    let header = format!(
        "{{\"conv1.weight\":{{\"dtype\":\"I64\",\"shape\":[64,3,7,7],\"data_offsets\":[0,{}]}}}}",
        n * 8
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, n * 8));
    fs::write(path, bytes).unwrap();
}

#[test]
fn weights_that_are_a_folder_or_integers_say_what_they_are() {
    let env = Env::new();
    env.caltech_fixture(2, 2, 1);
    fs::create_dir_all(env.path("weights_dir")).unwrap();
    env.caltech_configs(&env.path("weights_dir"), 1);
    let out = env.run();
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("weights_dir is a folder, not a weights file"),
        "{}",
        out.stderr
    );
    let ints = env.path("ints.safetensors");
    integer_safetensors(&ints);
    env.caltech_configs(&ints, 1);
    let out = env.run();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "ints.safetensors: 1 tensor(s) are not floating point: `conv1.weight` is int64"
        ),
        "{}",
        out.stderr
    );
    assert!(env.results().is_empty());
}

#[test]
fn an_empty_class_folder_is_refused_by_name() {
    let env = Env::new();
    env.fixture("Eurosat", 3, 2, 1, 32);
    let eurosat = env.path("data/eurosat");
    let splits: Vec<PathBuf> = fs::read_dir(&eurosat)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    for split in &splits {
        fs::create_dir_all(split.join("ZZEmpty")).unwrap();
    }
    env.write(
        "experiments.yaml",
        &format!("probe: '{}'\n", weights().display()),
    );
    env.write("virb.yaml", "Eurosat:\n  task: Eurosat\n  training_configs:\n    a: {optimizer: adam, lr: 0.001}\n  num_epochs: 1\n  image_size: 32\n");
    let out = env.run();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("Eurosat: 1 class folder(s) with no *.jpg images: data/eurosat/"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("/ZZEmpty"), "{}", out.stderr);
    assert!(env.results().is_empty());
}

#[test]
fn numeric_flags_say_what_they_expect() {
    let env = Env::new();
    for (flag, value, expect) in [
        ("--threads", "-3", "invalid value '-3' for '--threads <THREADS>': expects a number of threads from 1 to 1024, got `-3`"),
        ("--threads", "0", "expects a number of threads from 1 to 1024, got `0`"),
        ("--checkpoint-every", "-1", "invalid value '-1' for '--checkpoint-every <SECONDS>': expects a number of seconds >= 0 (0: after every epoch), got `-1`"),
        ("--decode-workers", "-2", "expects a number of decoding threads from 1 to 1024, got `-2`"),
    ] {
        let out = env.run_with(&[flag, value]);
        assert_eq!(out.code, 2, "{flag} {value}");
        assert!(out.stderr.contains(expect), "{flag} {value}: {}", out.stderr);
    }
}

fn fixture(env: &Env, extra: &[&str]) -> virb_tests::Output {
    let mut args = vec!["fixtures", "CalTech-101", "data"];
    for (flag, value) in [("--train-per-class", "2"), ("--test-per-class", "1")] {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
    env.host(&args)
}

#[test]
fn fixtures_refuse_what_they_cannot_write_and_never_merge() {
    let env = Env::new();
    for (extra, expect) in [
        (&["--classes", "0"][..], "invalid value '0' for '--classes <CLASSES>': expects a number of classes of at least 2"),
        (&["--classes", "50"][..], "error: CalTech-101: the fixture generator writes 2 to 12 classes, not 50"),
        (&["--image-size", "0"][..], "invalid value '0' for '--image-size <IMAGE_SIZE>': expects an image side from 16 to 4096 pixels"),
        (&["--test-per-class", "0"][..], "expects a number of images per class of at least 1"),
        (&["--seed", "-4"][..], "expects a non-negative integer, got `-4`"),
    ] {
        let out = fixture(&env, extra);
        assert_eq!(out.code, 2, "{extra:?}: {}", out.stderr);
        assert!(out.stderr.contains(expect), "{extra:?}: {}", out.stderr);
        assert!(!env.path("data/caltech-101").exists(), "{extra:?} wrote files");
    }
    assert!(fixture(&env, &["--classes", "3"]).ok());
    let old = env.write("data/caltech-101/stale.txt", "from an earlier data set\n");
    let out = fixture(&env, &["--classes", "2"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("error: data/caltech-101 already exists and is not empty: the fixture's files would mix with the ones there; pass --force to replace the folder, or give another data root"),
        "{}",
        out.stderr
    );
    assert!(old.exists());
    let out = fixture(&env, &["--classes", "2", "--force"]);
    assert!(out.ok(), "{}", out.stderr);
    assert!(!old.exists(), "--force kept old files");
    let categories: Vec<_> = fs::read_dir(env.path("data/caltech-101"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert_eq!(categories.len(), 2, "old classes merged in");
}

#[test]
fn an_unwritable_checkpoint_is_a_warning_in_words() {
    let env = Env::new();
    env.caltech_fixture(2, 3, 2);
    env.caltech_configs(weights(), 3);
    // A file where the checkpoint folder goes (permissions do not stop root).
    env.write("out/probe/.checkpoints", "not a folder\n");
    let out = env.run_with(&["--checkpoint-every", "0"]);
    assert!(out.ok(), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("cannot write checkpoint in out/probe/.checkpoints/CalTech-101-seed-0: ")
            && out.stderr.contains("training goes on without checkpoints"),
        "{}",
        out.stderr
    );
    for debug in ["Os {", "kind:", "IoError"] {
        assert!(
            !out.stderr.contains(debug),
            "debug output `{debug}`: {}",
            out.stderr
        );
    }
    assert_eq!(env.results().len(), 1);
}

#[test]
fn two_heads_in_out_with_one_config_name_are_not_evaluated_into_one_folder() {
    let env = Env::new();
    for task in ["Imagenet", "Imagenetv2"] {
        env.fixture(task, 2, 3, 2, IMAGE_SIZE);
    }
    env.write(
        "experiments.yaml",
        &format!("probe: '{}'\n", weights().display()),
    );
    // Two Imagenet jobs with a config of the same name, from two files (one file is refused).
    for job in ["ImA", "ImB"] {
        env.write(
            "virb.yaml",
            &format!("{job}:\n  task: Imagenet\n  training_configs:\n    adam: {{optimizer: adam, lr: 0.001}}\n  num_epochs: 1\n  image_size: {IMAGE_SIZE}\n"),
        );
        let out = env.run();
        assert!(out.ok(), "{}", out.stderr);
    }
    env.write(
        "virb.yaml",
        &format!("V2:\n  task: Imagenetv2\n  image_size: {IMAGE_SIZE}\n"),
    );
    let out = env.run();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("have the same config name `adam`, so both results would be written to out/probe/V2-adam; rename one of the configs"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout.matches("FAILED").count(), 2, "{}", out.stdout);
    assert!(!env.path("out/probe/V2-adam").exists());
}
