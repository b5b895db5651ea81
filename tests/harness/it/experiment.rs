//! The experiment machinery: schedulers against PyTorch's, seeds and repeats, validation and
//! selection, TensorBoard files read by TensorBoard, resume after SIGKILL, the feature cache,
//! divergence.
use std::{fs, path::Path, process::Command, time::Duration};
use virb_tests::{python, read_json, read_tensorboard, root, weights, Env};

/// A CalTech-101 fixture (4 classes, 12 train and 8 test images each) and the experiment list.
fn env() -> Env {
    let env = Env::new();
    env.caltech_fixture(4, 12, 8);
    env.write(
        "experiments.yaml",
        &format!("probe: '{}'\n", weights().display()),
    );
    env
}

fn job(configs: &str, extra: &str) -> String {
    format!(
        "CalTech-101:\n  task: CalTech-101\n  training_configs:\n{configs}  batch_size: 8\n  image_size: {}\n{extra}",
        virb_tests::IMAGE_SIZE
    )
}

fn result(env: &Env, config: &str) -> serde_json::Value {
    read_json(&env.path(&format!("out/probe/CalTech-101-{config}/results.json")))
}

fn ok(out: &virb_tests::Output) {
    assert!(out.ok(), "run failed:\n{}\n{}", out.stdout, out.stderr);
}

fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// `[[step, value], ...]` of one tag of one TensorBoard run.
fn series(tb: &serde_json::Value, run: &str, tag: &str) -> Vec<(i64, f64)> {
    tb[run][tag]
        .as_array()
        .unwrap_or_else(|| panic!("no {tag} in {run}: {tb}"))
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap_or(f64::NAN)))
        .collect()
}

#[test]
fn schedules_match_pytorch_step_for_step_and_tensorboard_reads_them() {
    let env = env();
    let configs = "    step:\n      optimizer: sgd\n      lr: 0.1\n      momentum: 0.9\n      scheduler: {type: StepLR, step_size: 2, gamma: 0.5}\n    onecycle:\n      optimizer: sgd\n      lr: 0.05\n      scheduler: {type: OneCycle, pct_start: 0.25}\n    poly:\n      optimizer: adam\n      lr: 0.001\n      scheduler: {type: Poly, exponent: 0.9}\n    constant:\n      optimizer: adam\n      lr: 0.001\n";
    env.write(
        "virb.yaml",
        &job(configs, "  num_epochs: 7\n  validation_fraction: 0.25\n"),
    );
    ok(&env.run());
    // 48 training images, 12 held out: 36 train, 5 steps of 8 per epoch.
    let (epochs, steps) = (7usize, 5usize);
    let spec = serde_json::json!({
        "epochs": epochs, "steps_per_epoch": steps,
        "configs": {
            "step": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "scheduler": {"type": "StepLR", "step_size": 2, "gamma": 0.5}},
            "onecycle": {"optimizer": "sgd", "lr": 0.05, "scheduler": {"type": "OneCycle", "pct_start": 0.25}},
            "poly": {"optimizer": "adam", "lr": 0.001, "scheduler": {"type": "Poly", "exponent": 0.9}},
            "constant": {"optimizer": "adam", "lr": 0.001},
        }
    });
    let out = Command::new(python())
        .arg(root().join("scripts/py/lr_schedules.py"))
        .arg(spec.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let torch: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tb = read_tensorboard(&env.path("out"));
    for cfg in ["step", "onecycle", "poly", "constant"] {
        let run = format!("probe/CalTech-101-{cfg}/seed-0");
        let lrs = series(&tb, &run, "batch/lr");
        let expected = f64s(&torch[cfg]["lr"]);
        assert_eq!(
            lrs.len(),
            epochs * steps,
            "{cfg}: one lr per optimiser step"
        );
        for (i, ((step, lr), want)) in lrs.iter().zip(&expected).enumerate() {
            assert_eq!(*step, i as i64);
            // TensorBoard stores float32.
            assert!(
                (lr - want).abs() <= 1e-6 * want.abs() + 1e-12,
                "{cfg}: step {i}: virb lr {lr}, PyTorch {want}\nvirb: {lrs:?}\ntorch: {expected:?}"
            );
        }
        if cfg == "onecycle" {
            let moms = series(&tb, &run, "batch/momentum");
            let want = f64s(&torch[cfg]["momentum"]);
            assert_eq!(moms.len(), want.len());
            for ((_, m), w) in moms.iter().zip(&want) {
                assert!(
                    (m - w).abs() < 1e-6,
                    "momentum {m} vs {w}: {moms:?} {want:?}"
                );
            }
        }
        // Per-epoch curves, exact counts; the last train loss is the one in results.json.
        let loss = series(&tb, &run, "train/loss");
        assert_eq!(
            loss.iter().map(|p| p.0).collect::<Vec<_>>(),
            (1..=epochs as i64).collect::<Vec<_>>()
        );
        assert_eq!(series(&tb, &run, "val/top1_accuracy").len(), epochs);
        assert_eq!(series(&tb, &run, "train/lr").len(), epochs);
        let r = result(&env, cfg);
        let last = r["runs"][0]["train_loss"].as_f64().unwrap();
        assert!((loss[epochs - 1].1 - last).abs() <= 1e-6 * last.abs() + 1e-7);
        let test = series(&tb, &run, "test/top1_accuracy");
        assert_eq!(test.len(), 1);
        assert_eq!(
            test[0].1 as f32,
            r["test_metrics"]["top1_accuracy"].as_f64().unwrap() as f32
        );
        assert_eq!(r["runs"][0]["steps"], (epochs * steps) as u64);
    }
}

#[test]
fn same_seed_same_numbers_alone_or_in_a_grid_and_repeats_give_mean_and_std() {
    let a = "    a:\n      optimizer: sgd\n      lr: 0.05\n      momentum: 0.9\n";
    let b = "    b:\n      optimizer: adam\n      lr: 0.01\n";
    // `a` alone, seed 3.
    let alone = env();
    alone.write("virb.yaml", &job(a, "  num_epochs: 6\n  seed: 3\n"));
    ok(&alone.run());
    // `a` and `b` trained together in one pass, seeds 3, 4, 5.
    let grid = env();
    grid.write(
        "virb.yaml",
        &job(
            &format!("{a}{b}"),
            "  num_epochs: 6\n  seed: 3\n  repeats: 3\n",
        ),
    );
    ok(&grid.run());
    let r1 = result(&alone, "a");
    let r3 = result(&grid, "a");
    assert_eq!(r1["repeats"], 1);
    assert!(r1.get("test_metrics_std").is_none());
    assert_eq!(r3["repeats"], 3);
    let runs = r3["runs"].as_array().unwrap();
    assert_eq!(
        runs.iter()
            .map(|r| r["seed"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    // Seed 3 is bit-identical whether `a` trains alone or with `b`.
    for key in ["test_loss", "train_loss", "head_sha256", "test_metrics"] {
        assert_eq!(r1["runs"][0][key], runs[0][key], "{key}");
    }
    // Other seeds give other heads.
    assert_ne!(runs[0]["head_sha256"], runs[1]["head_sha256"]);
    // Mean and sample standard deviation over the three seeds.
    let losses: Vec<f64> = runs
        .iter()
        .map(|r| r["test_loss"].as_f64().unwrap())
        .collect();
    let mean = losses.iter().sum::<f64>() / 3.0;
    assert!((r3["test_loss"].as_f64().unwrap() - mean).abs() < 1e-12);
    let accs: Vec<f64> = runs
        .iter()
        .map(|r| r["test_metrics"]["top1_accuracy"].as_f64().unwrap())
        .collect();
    let m = accs.iter().sum::<f64>() / 3.0;
    let sd = (accs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 2.0).sqrt();
    assert!((r3["test_metrics"]["top1_accuracy"].as_f64().unwrap() - m).abs() < 1e-12);
    assert!((r3["test_metrics_std"]["top1_accuracy"].as_f64().unwrap() - sd).abs() < 1e-12);
    assert!(m > 0.8, "the probe learns: {accs:?}");
    // The same command again on the same machine: nothing left to do; with --force, the same
    // numbers.
    let again = grid.run();
    ok(&again);
    assert!(again.stdout.contains("done earlier"), "{}", again.stdout);
    assert!(!again.stderr.contains("encode"), "{}", again.stderr);
    ok(&grid.run_with(&["--force"]));
    let r3b = result(&grid, "a");
    let strip = |runs: &serde_json::Value| -> Vec<serde_json::Value> {
        runs.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.as_object_mut().unwrap().remove("train_s");
                r.as_object_mut().unwrap().remove("eval_s");
                r
            })
            .collect()
    };
    assert_eq!(strip(&r3["runs"]), strip(&r3b["runs"]));
    // Another learning rate for `b` only: `a` is skipped, `b` retrained from its features.
    let b2 = "    b:\n      optimizer: adam\n      lr: 0.02\n";
    grid.write(
        "virb.yaml",
        &job(
            &format!("{a}{b2}"),
            "  num_epochs: 6\n  seed: 3\n  repeats: 3\n",
        ),
    );
    let changed = grid.run();
    ok(&changed);
    assert!(
        changed
            .stdout
            .contains("done earlier: out/probe/CalTech-101-a/"),
        "{}",
        changed.stdout
    );
    assert!(
        !changed
            .stdout
            .contains("done earlier: out/probe/CalTech-101-b/"),
        "{}",
        changed.stdout
    );
    assert_eq!(result(&grid, "b")["hyperparameters"]["lr"], 0.02);
}

#[test]
fn validation_split_is_stratified_records_best_epoch_and_selects_without_test() {
    let env = env();
    let configs = "    good:\n      optimizer: adam\n      lr: 0.001\n    tiny-lr:\n      optimizer: sgd\n      lr: 0.000001\n";
    env.write(
        "virb.yaml",
        &job(configs, "  num_epochs: 8\n  validation_fraction: 0.25\n"),
    );
    let out = env.run();
    ok(&out);
    let good = result(&env, "good");
    let v = &good["validation"];
    assert_eq!(v["size"], 12, "3 of 12 per class: {v}");
    assert_eq!(v["stratified"], true);
    assert_eq!(good["train_size"], 36);
    let run = &good["runs"][0];
    let best = run["best_epoch"].as_u64().unwrap();
    assert!(best <= 7);
    assert_eq!(run["last_epoch"], 7);
    assert!(
        v["metrics"]["top1_accuracy"].as_f64().unwrap() >= 0.8,
        "{v}"
    );
    let sel = read_json(&env.path("out/probe/CalTech-101.selection.json"));
    assert_eq!(sel["selected_by"], "validation");
    assert_eq!(sel["selected_config"], "good");
    assert!(out.stdout.contains("good *"), "{}", out.stdout);
    // The tiny learning rate barely moves from chance on validation.
    let tiny = result(&env, "tiny-lr");
    assert!(
        tiny["validation"]["metrics"]["top1_accuracy"]
            .as_f64()
            .unwrap()
            < v["metrics"]["top1_accuracy"].as_f64().unwrap()
    );

    // Without a validation split, a grid can only be chosen on test, and the selection says so.
    let env2 = self::env();
    env2.write("virb.yaml", &job(configs, "  num_epochs: 2\n"));
    ok(&env2.run());
    let sel = read_json(&env2.path("out/probe/CalTech-101.selection.json"));
    assert_eq!(sel["selected_by"], "test", "{sel}");
}

#[test]
fn diverging_config_records_the_reason_and_the_others_finish() {
    let env = env();
    let configs = "    fine:\n      optimizer: adam\n      lr: 0.001\n    explodes:\n      optimizer: sgd\n      lr: 1.0e+300\n";
    env.write("virb.yaml", &job(configs, "  num_epochs: 4\n"));
    let out = env.run();
    ok(&out);
    let bad = result(&env, "explodes");
    assert_eq!(bad["status"], "diverged", "{bad}");
    let reason = bad["error"].as_str().unwrap();
    assert!(
        reason.contains("loss became") && reason.contains("lower the learning rate"),
        "{reason}"
    );
    assert!(out.stdout.contains("diverged"), "{}", out.stdout);
    assert_eq!(result(&env, "fine")["status"], "ok");
    assert!(
        result(&env, "fine")["test_metrics"]["top1_accuracy"]
            .as_f64()
            .unwrap()
            > 0.8
    );
}

fn cache_files(env: &Env) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(env.path("cache"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p: &std::path::PathBuf| p.extension().is_some_and(|e| e == "vfc"));
    files.sort();
    files
}

#[test]
fn feature_cache_is_reused_verified_and_rebuilt_when_corrupt() {
    let env = env();
    env.write(
        "virb.yaml",
        &job(
            "    a:\n      optimizer: adam\n      lr: 0.001\n",
            "  num_epochs: 3\n",
        ),
    );
    let first = env.run();
    ok(&first);
    assert!(first.stderr.contains("encode train"), "{}", first.stderr);
    let files = cache_files(&env);
    assert_eq!(files.len(), 2, "train and test: {files:?}");
    assert!(
        first.stderr.contains("feature cache: 2 files"),
        "{}",
        first.stderr
    );
    let reference = result(&env, "a");
    // A rerun reuses the features: no encoder is even loaded.
    let second = env.run_with(&["--force"]);
    ok(&second);
    assert!(
        !second.stderr.contains("loading encoder"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains("from the feature cache"),
        "{}",
        second.stderr
    );
    assert_eq!(
        result(&env, "a")["runs"][0]["head_sha256"],
        reference["runs"][0]["head_sha256"]
    );
    assert_eq!(result(&env, "a")["timings_s"]["from_cache"], true);
    // Truncated, and a flipped byte: detected, never used, re-encoded.
    for damage in ["truncate", "flip"] {
        for f in cache_files(&env) {
            let mut bytes = fs::read(&f).unwrap();
            if damage == "truncate" {
                bytes.truncate(bytes.len() - 100);
            } else {
                let i = bytes.len() - 50;
                bytes[i] ^= 0x10;
            }
            fs::write(&f, bytes).unwrap();
        }
        let out = env.run_with(&["--force"]);
        ok(&out);
        assert!(
            out.stderr.contains("re-encoding"),
            "{damage}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("encode train"),
            "{damage}: {}",
            out.stderr
        );
        assert_eq!(
            result(&env, "a")["runs"][0]["head_sha256"],
            reference["runs"][0]["head_sha256"],
            "{damage}"
        );
        assert_eq!(cache_files(&env).len(), 2);
    }
    // `virb-host cache` reports it, `--clear` empties it.
    let out = env.host(&["cache"]);
    assert!(
        out.ok() && out.stdout.contains("feature cache: 2 files"),
        "{}",
        out.stdout
    );
    let out = env.host(&["cache", "--clear"]);
    assert!(
        out.ok() && out.stdout.contains("removed 2 files"),
        "{}",
        out.stdout
    );
    assert!(cache_files(&env).is_empty());
    // --no-cache neither reads nor writes.
    fs::remove_dir_all(env.path("cache")).unwrap();
    let out = env.run_with(&["--force", "--no-cache"]);
    ok(&out);
    assert!(cache_files(&env).is_empty());
    assert!(out.stderr.contains("encode train"));
}

/// Every results.json under `out` parses and names its config hash: never a partial file.
fn assert_results_whole(env: &Env) {
    for r in env.results() {
        let text = fs::read_to_string(&r).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", r.display()));
        assert_eq!(v["schema"], "virb.results/2");
        assert!(v["config_hash"].is_string());
    }
}

#[test]
fn sigkill_at_any_point_loses_nothing_finished_and_resume_gives_the_same_numbers() {
    let configs = "    a:\n      optimizer: sgd\n      lr: 0.01\n      momentum: 0.9\n    b:\n      optimizer: adam\n      lr: 0.0005\n";
    let extra = "  num_epochs: 150\n  repeats: 2\n  validation_fraction: 0.25\n";
    // Uninterrupted.
    let reference = env();
    reference.write("virb.yaml", &job(configs, extra));
    let started = std::time::Instant::now();
    ok(&reference.run());
    // Kill points as fractions of the uninterrupted run, so that a fast machine still kills
    // runs mid-way (fixed delays let a fast machine finish first).
    let whole = started.elapsed().as_millis() as u64;
    // Killed (SIGKILL) at several points, then finished by the same command.
    let env = env();
    env.write("virb.yaml", &job(configs, extra));
    let mut kills = 0;
    for delay_ms in [12u64, 40, 25, 45, 30].map(|pct| (whole * pct / 100).max(300)) {
        let mut child = env
            .run_command(&["--checkpoint-every", "0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        assert_results_whole(&env);
    }
    assert!(kills >= 2, "the runs finished before they could be killed");
    let out = env.run_with(&["--checkpoint-every", "0"]);
    ok(&out);
    assert_results_whole(&env);
    for cfg in ["a", "b"] {
        let want = result(&reference, cfg);
        let got = result(&env, cfg);
        for (w, g) in want["runs"]
            .as_array()
            .unwrap()
            .iter()
            .zip(got["runs"].as_array().unwrap())
        {
            for key in [
                "head_sha256",
                "test_loss",
                "train_loss",
                "best_epoch",
                "val_metrics",
            ] {
                assert_eq!(w[key], g[key], "{cfg}: {key} after resuming");
            }
        }
    }
    assert!(!env.path("out/probe/.checkpoints").exists());
}

#[test]
fn bad_training_settings_are_refused_before_any_work() {
    let env = env();
    let cases = [
        ("    a: {optimizer: adamw, lr: 0.1}\n", "  num_epochs: 1\n", "unknown optimizer `adamw`"),
        ("    a: {optimizer: sgd, lr: 0.1, scheduler: {type: Cosine}}\n", "  num_epochs: 1\n", "unknown variant `Cosine`"),
        ("    a: {optimizer: sgd, lr: 0.1, scheduler: {type: StepLR, step_size: 2, gamma: 0.1, warmup: 3}}\n", "  num_epochs: 1\n", "unknown field `warmup`"),
        ("    a: {optimizer: sgd, lr: -0.1}\n", "  num_epochs: 1\n", "`training_configs.a.lr`: must be a positive number"),
        ("    a: {optimizer: sgd, lr: 0.1}\n", "  num_epochs: 0\n", "`num_epochs`: must be at least 1"),
        ("    a: {optimizer: sgd, lr: 0.1}\n", "  num_epochs: -3\n", "num_epochs"),
        ("    a: {optimizer: sgd, lr: 0.1}\n", "  num_epochs: 1\n  repeats: 0\n", "`repeats`: must be between 1 and 100"),
        ("    a: {optimizer: sgd, lr: 0.1}\n", "  num_epochs: 1\n  validation_fraction: 0.9\n", "`validation_fraction`: must be in (0, 0.5]"),
        ("    a: {optimizer: sgd, lr: 0.1}\n", "  num_epochs: 1\n  validation_fraction: 0\n", "`validation_fraction`: must be in (0, 0.5]"),
    ];
    for (configs, extra, wanted) in cases {
        // batch_size comes from `job`; check a zero one separately below.
        env.write("virb.yaml", &job(configs, extra));
        let out = env.run();
        assert_eq!(out.code, 2, "{wanted}: {}", out.stderr);
        assert!(
            out.stderr.contains("virb.yaml:"),
            "{wanted}: {}",
            out.stderr
        );
        assert!(out.stderr.contains(wanted), "{wanted}: {}", out.stderr);
        assert!(!env.path("out").exists(), "{wanted}: work started");
    }
    env.write(
        "virb.yaml",
        &job("    a: {optimizer: sgd, lr: 0.1}\n", "  num_epochs: 1\n")
            .replace("batch_size: 8", "batch_size: 0"),
    );
    let out = env.run();
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("job `CalTech-101`: `batch_size`: must be at least 1"),
        "{}",
        out.stderr
    );
}

#[test]
fn report_writes_tables_and_plots_from_results() {
    let env = env();
    env.write(
        "virb.yaml",
        &job(
            "    a:\n      optimizer: adam\n      lr: 0.001\n",
            "  num_epochs: 3\n  repeats: 2\n",
        ),
    );
    ok(&env.run());
    let out = env.host(&["report", "--out", "out"]);
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    let md = fs::read_to_string(env.path("out/report/results.md")).unwrap();
    assert!(
        md.contains("probe") && md.contains("CalTech-101") && md.contains('±'),
        "{md}"
    );
    let csv = fs::read_to_string(env.path("out/report/results.csv")).unwrap();
    assert!(csv.lines().count() >= 2, "{csv}");
    assert!(Path::new(&env.path("out/report/heatmap.png")).exists());
}

#[test]
fn a_grid_of_linear_heads_trained_stacked_gives_the_numbers_of_training_them_one_by_one() {
    // Four Adam heads (one with a Poly schedule, two with weight decay), three SGD heads with
    // momentum (one with StepLR, one OneCycle) and two plain SGD heads: four optimiser families.
    // Every head converges: one that oscillates (SGD at lr 0.05 with momentum 0.9 here, test loss
    // 0.42) amplifies the float rounding of a different summation order past 1e-4 in six epochs.
    let configs = "    adam-a: {optimizer: adam, lr: 0.001}\n    adam-b: {optimizer: adam, lr: 0.003, scheduler: {type: Poly, exponent: 0.9}}\n    adam-wd-a: {optimizer: adam, lr: 0.002, weight_decay: 0.01}\n    adam-wd-b: {optimizer: adam, lr: 0.0005, weight_decay: 0.001}\n    sgd-a: {optimizer: sgd, lr: 0.02, momentum: 0.9}\n    sgd-b: {optimizer: sgd, lr: 0.02, momentum: 0.8, scheduler: {type: StepLR, step_size: 2, gamma: 0.5}}\n    sgd-c: {optimizer: sgd, lr: 0.05, scheduler: {type: OneCycle, pct_start: 0.25}}\n    plain-a: {optimizer: sgd, lr: 0.1}\n    plain-b: {optimizer: sgd, lr: 0.05}\n";
    let text = job(configs, "  num_epochs: 6\n  validation_fraction: 0.25\n");
    // The grid run with `var=value` set; returns its folder and stderr.
    let run = |var: &str, value: &str| {
        let e = env();
        e.write("virb.yaml", &text);
        let out = e.run_command(&[]).env(var, value).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{var}={value}: {stderr}");
        (e, stderr)
    };
    let (stacked, stderr) = run("VIRB_STACK_HEADS", "1");
    assert!(
        stderr.contains("9 linear heads train stacked, in 4 group(s)"),
        "{stderr}"
    );
    let (alone, stderr) = run("VIRB_STACK_HEADS", "0");
    assert!(!stderr.contains("train stacked"), "{stderr}");
    // The stacked step's libtorch path (a GPU's) on the CPU too.
    let (libtorch, stderr) = run("VIRB_STACK_KERNELS", "libtorch");
    assert!(stderr.contains("9 linear heads train stacked"), "{stderr}");
    let close = |a: f64, b: f64, what: &str| {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs().max(b.abs()) + 1e-6,
            "{what}: stacked {a} vs one by one {b}"
        );
    };
    for stacked in [&stacked, &libtorch] {
        for cfg in [
            "adam-a",
            "adam-b",
            "adam-wd-a",
            "adam-wd-b",
            "sgd-a",
            "sgd-b",
            "sgd-c",
            "plain-a",
            "plain-b",
        ] {
            let (s, a) = (result(stacked, cfg), result(&alone, cfg));
            let (rs, ra) = (&s["runs"][0], &a["runs"][0]);
            assert_eq!(rs["steps"], ra["steps"], "{cfg}");
            close(
                rs["test_loss"].as_f64().unwrap(),
                ra["test_loss"].as_f64().unwrap(),
                cfg,
            );
            close(
                rs["train_loss"].as_f64().unwrap(),
                ra["train_loss"].as_f64().unwrap(),
                cfg,
            );
            assert_eq!(s["test_metrics"], a["test_metrics"], "{cfg}");
        }
        // Every epoch's training and validation loss (TensorBoard), which the selection reads.
        let (ts, ta) = (
            read_tensorboard(&stacked.path("out")),
            read_tensorboard(&alone.path("out")),
        );
        for cfg in ["adam-b", "adam-wd-a", "sgd-b", "sgd-c", "plain-b"] {
            let run = format!("probe/CalTech-101-{cfg}/seed-0");
            for tag in ["train/loss", "val/loss", "batch/lr"] {
                let (a, b) = (series(&ts, &run, tag), series(&ta, &run, tag));
                assert_eq!(a.len(), b.len(), "{cfg} {tag}");
                for ((_, x), (_, y)) in a.iter().zip(&b) {
                    close(*x, *y, &format!("{cfg} {tag}"));
                }
            }
        }
    }
    // The grid's selection picks the same config either way.
    let sel = |e: &Env| {
        read_json(&e.path("out/probe/CalTech-101.selection.json"))["selected_config"].clone()
    };
    assert_eq!(sel(&stacked), sel(&alone));
    assert_eq!(sel(&libtorch), sel(&alone));
}
