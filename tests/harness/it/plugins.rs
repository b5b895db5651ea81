//! Plugin discovery, version checks, and misbehaving plugins.
use std::fs;
use virb_tests::{host_next_bin, plugin_lib, read_json, weights, Env, OWN_PLUGINS};

#[test]
fn incompatible_and_foreign_files_are_rejected_briefly_while_others_load() {
    let env = Env::with_plugins(&[OWN_PLUGINS[0], OWN_PLUGINS[1], "virb-test-future-api"]);
    fs::write(env.plugins.join("notes.so"), "not a library").unwrap();
    fs::copy(
        plugin_lib("virb-test-misbehaving"),
        env.plugins.join("libvirb_test_misbehaving.so"),
    )
    .unwrap();
    let out = env.host(&["plugins"]);
    assert!(out.ok(), "{}", out.stderr);
    let text = &out.stdout;
    assert!(text.contains("loaded (3):"), "{text}");
    assert!(text.contains("tasks: CIFAR-100, CalTech-101,"), "{text}");
    assert!(text.contains("encoders: resnet50"), "{text}");
    assert!(text.contains("tasks: PanickingTask, FailingTask"), "{text}");
    assert!(text.contains("rejected (2):"), "{text}");
    assert!(
        text.contains("libvirb_test_future_api.so: virb-test-future-api 0.1.0 was built for plugin-api 1.0.0; this virb-host accepts plugin-api 0.3.x"),
        "{text}"
    );
    assert!(
        text.contains("help: rebuild virb-test-future-api against virb-plugin-api 0.3.0, or use a virb-host built for plugin-api 1.0.0"),
        "{text}"
    );
    assert!(
        text.contains("notes.so: the file is not a shared library (no ELF header)"),
        "{text}"
    );
    // Short: no abi_stable layout dump.
    assert!(
        text.lines().count() < 25,
        "{} lines:\n{text}",
        text.lines().count()
    );

    // A run still works with the rejected file present, and warns about it in one line.
    env.caltech_fixture(3, 4, 2);
    env.caltech_configs(weights(), 1);
    let run = env.run();
    assert!(run.ok(), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.stderr
            .matches("libvirb_test_future_api.so rejected")
            .count(),
        1,
        "{}",
        run.stderr
    );
}

#[test]
fn plugins_dir_from_environment_and_listing_commands() {
    let env = Env::new();
    let out = std::process::Command::new(virb_tests::host_bin())
        .arg("tasks")
        .env("VIRB_PLUGINS_DIR", &env.plugins)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("CalTech-101  [classification]"), "{stdout}");
    assert!(
        stdout.contains("data:   <data-root>/caltech-101"),
        "{stdout}"
    );
    assert!(stdout.contains("metric: top1_accuracy"), "{stdout}");
    let enc = env.host(&["encoders"]);
    assert!(
        enc.stdout.contains("resnet50") && enc.stdout.contains("block4[2048]"),
        "{}",
        enc.stdout
    );
}

#[test]
fn panicking_or_failing_plugin_fails_only_its_job() {
    let env = Env::with_plugins(&[OWN_PLUGINS[0], OWN_PLUGINS[1], "virb-test-misbehaving"]);
    env.caltech_fixture(3, 4, 2);
    env.write(
        "experiments.yaml",
        &format!("probe: '{}'\n", weights().display()),
    );
    let job = |name: &str, task: &str| {
        format!("{name}:\n  task: {task}\n  training_configs:\n    a:\n      optimizer: adam\n      lr: 0.001\n  num_epochs: 2\n  batch_size: 4\n  image_size: 64\n")
    };
    env.write(
        "virb.yaml",
        &(job("Panicky", "PanickingTask")
            + &job("Failing", "FailingTask")
            + &job("Good", "CalTech-101")),
    );
    let out = env.run();
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("job `Panicky`: plugin panicked: fixture panic while decoding sample 3"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("job `Failing`, config `a`: fixture error from FailingTask's loss"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("Good") && l.contains("top1_accuracy")),
        "{}",
        out.stdout
    );
    let results = env.results();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(read_json(&results[0])["job"], "Good");
    assert!(!env.path("out/probe/Panicky-a").exists());
}

/// The versioning rule of plugin-api's docs: a host built against a later patch (0.3.1, with a
/// capability 0.3.0 lacks) loads plugins built against 0.3.0, asks them for the capability, falls
/// back when they do not offer it, and runs their jobs.
#[test]
fn a_host_one_patch_later_loads_and_runs_plugins_built_against_the_earlier_one() {
    let env = Env::with_plugins(&[OWN_PLUGINS[0], OWN_PLUGINS[1]]);
    let next = |args: &[&str]| {
        let out = std::process::Command::new(host_next_bin())
            .arg("--plugins-dir")
            .arg(&env.plugins)
            .args(args)
            .current_dir(env.dir.path())
            .env("NO_COLOR", "1")
            .env("VIRB_FEATURE_CACHE", env.dir.path().join("cache"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = next(&["devices"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("plugin-api 0.3.1"), "{stdout}");
    let (ok, stdout, stderr) = next(&["plugins"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("loaded (2):"), "{stdout}");
    assert!(stdout.contains("rejected (0):"), "{stdout}");
    let (ok, stdout, stderr) = next(&["tasks"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(
            "describe: not offered by virb-task-classification (built for plugin-api 0.3.0)"
        ),
        "{stdout}"
    );
    env.caltech_fixture(3, 4, 2);
    env.caltech_configs(weights(), 2);
    let (ok, stdout, stderr) = next(&[
        "run",
        "--experiment-list",
        "experiments.yaml",
        "--virb-configs",
        "virb.yaml",
        "--data-root",
        "data",
        "--out",
        "out",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let r = read_json(&env.path("out/probe/CalTech-101-adam-0.001/results.json"));
    assert_eq!(r["status"], "ok");
    assert_eq!(r["versions"]["plugin_api"], "0.3.1");
    assert!(r["test_metrics"]["top1_accuracy"].as_f64().is_some(), "{r}");
}
