//! Slurm, for real: `virb-host slurm submit` against the single-node Slurm that
//! `scripts/slurm-local.sh up` starts on localhost (`scripts/test.sh` does, and sets
//! `VIRB_REQUIRE_SLURM=1`). A 4-task array gives the results of a local run; an array killed
//! mid-way and resubmitted completes without redoing what was finished.
use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};
use virb_tests::{read_json, resnet18_weights, Env, IMAGE_SIZE};

/// Whether a Slurm cluster answers; with `VIRB_REQUIRE_SLURM=1`, one must.
fn slurm_up() -> bool {
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%t"])
        .output()
        .is_ok_and(|o| {
            let state = String::from_utf8_lossy(&o.stdout).to_string();
            // idle, or mix/alloc while another test's tasks run.
            o.status.success() && ["idle", "mix", "alloc"].iter().any(|s| state.contains(s))
        });
    if !up {
        assert!(
            std::env::var("VIRB_REQUIRE_SLURM").as_deref() != Ok("1"),
            "VIRB_REQUIRE_SLURM=1 but no Slurm answers (sinfo); run scripts/slurm-local.sh up and source its env.sh"
        );
        eprintln!("SKIPPED: no Slurm cluster (scripts/slurm-local.sh up starts one; scripts/test.sh does)");
    }
    up
}

fn setup(env: &Env, long_epochs: u32) {
    env.fixture("CalTech-101", 3, 6, 4, IMAGE_SIZE);
    env.fixture("Pets", 3, 6, 4, IMAGE_SIZE);
    let w = resnet18_weights().display().to_string();
    env.write(
        "experiments.yaml",
        &format!("a:\n  weights: '{w}'\n  encoder: resnet18\nb:\n  weights: '{w}'\n  encoder: resnet18\n"),
    );
    let job = |name: &str, task: &str, epochs: u32| {
        format!("{name}:\n  task: {task}\n  training_configs:\n    c1: {{optimizer: adam, lr: 0.001}}\n    c2: {{optimizer: adam, lr: 0.01}}\n  num_epochs: {epochs}\n  batch_size: 8\n  image_size: {IMAGE_SIZE}\n")
    };
    env.write(
        "virb.yaml",
        &(job("CalTech", "CalTech-101", 3) + &job("Pets", "Pets", long_epochs)),
    );
}

const RUN: [&str; 10] = [
    "--experiment-list",
    "experiments.yaml",
    "--virb-configs",
    "virb.yaml",
    "--data-root",
    "data",
    "--out",
    "out",
    "--threads",
    "1",
];

fn submit(env: &Env, extra: &[&str]) -> Vec<String> {
    let out = env.host(&[&["slurm", "submit"][..], &RUN, extra].concat());
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    let ids = out
        .stdout
        .split("job array(s) ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or_else(|| panic!("no job ids in: {}", out.stdout));
    ids.split(", ").map(str::to_string).collect()
}

/// Waits until Slurm holds none of `ids`; returns `slurm status`.
fn wait(env: &Env, ids: &[String]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let q = Command::new("squeue")
            .args(["-h", "-j", &ids.join(","), "-o", "%i"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&q.stdout).trim().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "jobs {ids:?} still queued after 300 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let status = env.host(&["slurm", "status", "--out", "out"]);
    assert!(status.ok(), "{}", status.stderr);
    status.stdout
}

/// folder -> (test metrics, each run's head SHA-256).
fn results(env: &Env) -> BTreeMap<String, serde_json::Value> {
    env.results()
        .into_iter()
        .map(|p| {
            let r = read_json(&p);
            let key = p
                .parent()
                .unwrap()
                .strip_prefix(env.path("out"))
                .unwrap()
                .display()
                .to_string();
            let heads: Vec<serde_json::Value> = r["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["head_sha256"].clone())
                .collect();
            (key, serde_json::json!([r["test_metrics"], heads]))
        })
        .collect()
}

fn logs(env: &Env) -> String {
    let mut text = String::new();
    for sub in std::fs::read_dir(env.path("out/.slurm")).unwrap().flatten() {
        for log in std::fs::read_dir(sub.path().join("logs"))
            .unwrap()
            .flatten()
        {
            text += &std::fs::read_to_string(log.path()).unwrap();
        }
    }
    text
}

#[test]
fn a_four_task_array_gives_the_results_of_a_local_run() {
    if !slurm_up() {
        return;
    }
    let (local, cluster) = (Env::new(), Env::new());
    setup(&local, 3);
    setup(&cluster, 3);
    let out = local.host(&[&["run"][..], &RUN].concat());
    assert!(out.ok(), "{}", out.stderr);
    let ids = submit(&cluster, &[]);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let status = wait(&cluster, &ids);
    assert!(
        status.contains("4 done, 0 running, 0 failed, 0 pending"),
        "{status}\n{}",
        logs(&cluster)
    );
    let units = std::fs::read_dir(cluster.path("out/.slurm"))
        .unwrap()
        .count();
    assert_eq!(units, 1);
    let (l, c) = (results(&local), results(&cluster));
    assert_eq!(l.len(), 8, "{l:?}");
    assert_eq!(l, c);
    // One array task per (experiment, job), each claiming its own.
    let log = logs(&cluster);
    for unit in ["a/CalTech", "a/Pets", "b/CalTech", "b/Pets"] {
        assert_eq!(
            log.matches(&format!("{unit}: claimed by worker")).count(),
            1,
            "{unit}:\n{log}"
        );
    }
    // Resubmitting a finished run submits nothing.
    let again = cluster.host(&[&["slurm", "submit"][..], &RUN].concat());
    assert!(
        again.ok() && again.stdout.contains("nothing to submit: every selected"),
        "{}\n{}",
        again.stdout,
        again.stderr
    );
}

#[test]
fn a_task_killed_mid_way_and_resubmitted_completes_without_duplicates() {
    if !slurm_up() {
        return;
    }
    let env = Env::new();
    // a/Pets trains long enough to be killed mid-way; the CalTech units finish before.
    setup(&env, 3000);
    let only = [
        "--checkpoint-every",
        "0",
        "--only",
        "a/Pets",
        "--only",
        "*/CalTech",
    ];
    let ids = submit(&env, &only);
    let claim = env.path("out/a/.claims/Pets.claim");
    let quick: Vec<std::path::PathBuf> = [
        "a/CalTech-c1",
        "a/CalTech-c2",
        "b/CalTech-c1",
        "b/CalTech-c2",
    ]
    .iter()
    .map(|d| env.path(&format!("out/{d}/results.json")))
    .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while !(claim.exists()
        && env.path("out/a/.checkpoints").exists()
        && quick.iter().all(|p| p.exists()))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no claim of a/Pets, or CalTech not done:\n{}",
            logs(&env)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mtimes: Vec<_> = quick
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    let cancel = Command::new("scancel").args(&ids).status().unwrap();
    assert!(cancel.success());
    wait(&env, &ids);
    assert!(
        !env.path("out/a/Pets-c1/results.json").exists()
            || !env.path("out/b/Pets-c1/results.json").exists()
    );
    // Resubmitted: only the unfinished units go to Slurm; the killed worker's claim is taken over.
    let ids2 = submit(&env, &only);
    let status = wait(&env, &ids2);
    assert!(
        status.contains("0 running, 0 failed, 0 pending"),
        "{status}\n{}",
        logs(&env)
    );
    let sub: serde_json::Value = {
        let mut subs: Vec<_> = std::fs::read_dir(env.path("out/.slurm"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        subs.sort();
        read_json(&subs.last().unwrap().join("submission.json"))
    };
    assert_eq!(sub["units"].as_array().unwrap().len(), 1, "{sub}");
    assert_eq!(env.results().len(), 6);
    for (p, t) in quick.iter().zip(&mtimes) {
        assert_eq!(
            std::fs::metadata(p).unwrap().modified().unwrap(),
            *t,
            "{} rewritten",
            p.display()
        );
    }
    for c in ["c1", "c2"] {
        let r = read_json(&env.path(&format!("out/a/Pets-{c}/results.json")));
        assert_eq!(r["runs"].as_array().unwrap().len(), 1, "{r}");
        assert_eq!(r["epochs"], 3000);
    }
    // The resubmitted worker resumed the killed one's training from its checkpoint.
    assert!(
        logs(&env).contains("resumed from the checkpoint after epoch"),
        "{}",
        logs(&env)
    );
    assert!(!claim.exists());
}

#[test]
fn a_missing_or_failing_sbatch_is_a_clear_error() {
    let env = Env::new();
    setup(&env, 1);
    let missing = Command::new(virb_tests::host_bin())
        .arg("--plugins-dir")
        .arg(&env.plugins)
        .args(["slurm", "submit"])
        .args(RUN)
        .current_dir(env.dir.path())
        .env("VIRB_FEATURE_CACHE", env.path("cache"))
        .env("XDG_CONFIG_HOME", env.path(".config"))
        .env("VIRB_SBATCH", "/nonexistent/sbatch")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/sbatch"), "{err}");
    let failing = env.write(
        "fake-sbatch",
        "#!/bin/sh\necho 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n",
    );
    let mut perm = std::fs::metadata(&failing).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&failing, perm).unwrap();
    let out = Command::new(virb_tests::host_bin())
        .arg("--plugins-dir")
        .arg(&env.plugins)
        .args(["slurm", "submit", "--partition", "nope"])
        .args(RUN)
        .current_dir(env.dir.path())
        .env("VIRB_FEATURE_CACHE", env.path("cache"))
        .env("XDG_CONFIG_HOME", env.path(".config"))
        .env("VIRB_SBATCH", &failing)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("invalid partition specified: nope"), "{err}");
    assert!(
        !Path::new(&env.path("out/.slurm")).exists()
            || std::fs::read_dir(env.path("out/.slurm")).unwrap().count() == 0
    );
}

#[test]
fn eval_only_units_run_in_a_second_array_after_the_heads_they_evaluate() {
    if !slurm_up() {
        return;
    }
    let env = Env::new();
    for task in ["Imagenet", "Imagenetv2"] {
        env.fixture(task, 3, 6, 4, IMAGE_SIZE);
    }
    let w = resnet18_weights().display().to_string();
    env.write(
        "experiments.yaml",
        &format!("a:\n  weights: '{w}'\n  encoder: resnet18\n"),
    );
    env.write(
        "virb.yaml",
        &format!("V2:\n  task: Imagenetv2\n  batch_size: 8\n  image_size: {IMAGE_SIZE}\nImagenet:\n  task: Imagenet\n  training_configs:\n    c1: {{optimizer: adam, lr: 0.001}}\n  num_epochs: 20\n  batch_size: 8\n  image_size: {IMAGE_SIZE}\n"),
    );
    let ids = submit(&env, &[]);
    assert_eq!(
        ids.len(),
        2,
        "a training array and an eval-only array: {ids:?}"
    );
    let status = wait(&env, &ids);
    assert!(
        status.contains("2 done, 0 running, 0 failed, 0 pending"),
        "{status}\n{}",
        logs(&env)
    );
    let v2 = read_json(&env.path("out/a/V2-c1/results.json"));
    let source = read_json(&env.path("out/a/Imagenet-c1/results.json"));
    assert_eq!(v2["head_sha256"], source["head_sha256"], "{v2}");
    assert!(
        !logs(&env).contains("no trained Imagenet head"),
        "{}",
        logs(&env)
    );
}
