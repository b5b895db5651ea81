//! Scale: the plan printed before any work, every problem of the run listed at once (and
//! `--keep-going`), several workers on one `--out` (two CPU workers equal one; two independent
//! processes do each unit once and encode a shared split once; a killed worker's claim is taken
//! over), out-of-memory retried at half the batch, and devices that do not exist.
use std::{collections::BTreeMap, process::Stdio, time::Duration};
use virb_tests::{experiment_list, read_json, resnet18_weights, Env, IMAGE_SIZE};

/// Two experiments of one ResNet-18 weights file (so their splits share cache entries).
fn experiments(env: &Env, extra: &str) {
    let w = resnet18_weights().display().to_string();
    env.write(
        "experiments.yaml",
        &format!("a:\n  weights: '{w}'\n  encoder: resnet18\nb:\n  weights: '{w}'\n  encoder: resnet18\n{extra}"),
    );
}

fn job(name: &str, task: &str, configs: &[&str], epochs: u32) -> String {
    let cfgs: String = configs
        .iter()
        .enumerate()
        .map(|(i, c)| format!("    {c}: {{optimizer: adam, lr: 0.00{}}}\n", i + 1))
        .collect();
    format!("{name}:\n  task: {task}\n  training_configs:\n{cfgs}  num_epochs: {epochs}\n  batch_size: 8\n  image_size: {IMAGE_SIZE}\n")
}

/// `experiment/job` -> how many times a worker claimed it, from the workers' messages.
fn claims(stderr: &str) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for line in stderr.lines() {
        if let Some((before, _)) = line.split_once(": claimed by worker") {
            let unit = before.rsplit(' ').next().unwrap_or(before).to_string();
            *n.entry(unit).or_insert(0) += 1;
        }
    }
    n
}

/// `folder -> (test metrics, each run's head SHA-256)` of every results.json under out/ (the
/// config hashes differ between two folders: they include the data root).
fn metrics(env: &Env) -> BTreeMap<String, serde_json::Value> {
    env.results()
        .into_iter()
        .map(|p| {
            let r = read_json(&p);
            let dir = p.parent().unwrap();
            let key = dir
                .strip_prefix(env.path("out"))
                .unwrap()
                .display()
                .to_string();
            let heads: Vec<serde_json::Value> = r["runs"]
                .as_array()
                .map(|runs| runs.iter().map(|run| run["head_sha256"].clone()).collect())
                .unwrap_or_default();
            (
                key,
                serde_json::json!([r["test_metrics"], heads, r["head_sha256"]]),
            )
        })
        .collect()
}

#[test]
fn plan_lists_every_config_and_all_problems_before_any_work() {
    let env = Env::new();
    env.fixture("CalTech-101", 3, 6, 4, IMAGE_SIZE);
    experiments(
        &env,
        "gone:\n  weights: /nonexistent/weights.pt\n  encoder: resnet18\n",
    );
    // Pets has no data folder.
    env.write(
        "virb.yaml",
        &(job("CalTech", "CalTech-101", &["c1", "c2"], 1) + &job("Pets", "Pets", &["p1"], 1)),
    );
    let args = [
        "--experiment-list",
        "experiments.yaml",
        "--virb-configs",
        "virb.yaml",
        "--data-root",
        "data",
        "--out",
        "out",
    ];
    let plan = env.host(&[&["plan"][..], &args].concat());
    assert_eq!(plan.code, 1, "{}\n{}", plan.stdout, plan.stderr);
    // One line per (experiment, job, config): what happens, and the samples of each split.
    for exp in ["a", "b"] {
        for cfg in ["c1", "c2"] {
            let row: Vec<&str> = plan
                .stdout
                .lines()
                .filter(|l| l.split_whitespace().take(3).eq([exp, "CalTech", cfg]))
                .collect();
            assert_eq!(row.len(), 1, "{exp}/{cfg}:\n{}", plan.stdout);
            assert!(
                row[0].contains("encode, train")
                    && row[0].contains("18 (encode")
                    && row[0].contains("12 (encode"),
                "{}",
                row[0]
            );
        }
    }
    let weights_size =
        std::fs::metadata(resnet18_weights()).unwrap().len() as f64 / (1 << 20) as f64;
    assert!(
        plan.stdout.contains(&format!("{weights_size:.1} MiB")),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("feature cache: about"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("problems (3):"), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("/nonexistent/weights.pt not found"),
        "{}",
        plan.stdout
    );
    // run: every problem at once, nothing started.
    let run = env.run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("3 problem(s) found before any work"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("experiment `gone`"), "{}", run.stderr);
    assert!(
        run.stderr.contains("experiment `a`, job `Pets`")
            && run.stderr.contains("experiment `b`, job `Pets`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--keep-going"), "{}", run.stderr);
    assert!(env.results().is_empty());
    // A misspelt --only selects nothing: an error, not an empty run.
    let typo = env.run_with(&["--only", "a/Caltech"]);
    assert_eq!(typo.code, 2, "{}", typo.stderr);
    assert!(typo.stderr.contains("--only a/Caltech: no (experiment, job) matches; experiments: a, b, gone; jobs: CalTech, Pets"), "{}", typo.stderr);
    // --keep-going runs the rest.
    let run = env.run_with(&["--keep-going"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(env.results().len(), 4, "{:?}", env.results());
    let plan = env.host(&[&["plan"][..], &args].concat());
    let done = plan
        .stdout
        .lines()
        .filter(|l| l.contains("done (skipped)") && l.contains("(cached)"))
        .count();
    assert_eq!(done, 4, "{}", plan.stdout);
}

#[test]
fn two_cpu_workers_do_each_unit_once_and_equal_one_worker() {
    let make = || {
        let env = Env::new();
        env.fixture("CalTech-101", 3, 6, 4, IMAGE_SIZE);
        for task in ["Imagenet", "Imagenetv2"] {
            env.fixture(task, 3, 6, 4, IMAGE_SIZE);
        }
        experiments(&env, "");
        let v2 = format!("V2:\n  task: Imagenetv2\n  batch_size: 8\n  image_size: {IMAGE_SIZE}\n");
        env.write(
            "virb.yaml",
            &(v2 + &job("CalTech", "CalTech-101", &["c1", "c2"], 3)
                + &job("Imagenet", "Imagenet", &["i1", "i2"], 4)),
        );
        env
    };
    let (one, two) = (make(), make());
    let r1 = one.run_with(&["--devices", "cpu", "--threads", "1"]);
    assert!(r1.ok(), "{}", r1.stderr);
    let r2 = two.run_with(&["--devices", "cpu,cpu", "--threads", "1"]);
    assert!(r2.ok(), "{}\n{}", r2.stdout, r2.stderr);
    assert!(r2.stderr.contains("2 worker(s) started"), "{}", r2.stderr);
    let n = claims(&r2.stderr);
    let units: Vec<String> = ["a", "b"]
        .iter()
        .flat_map(|e| ["CalTech", "Imagenet", "V2"].map(|j| format!("{e}/{j}")))
        .collect();
    for u in &units {
        assert_eq!(
            n.get(u),
            Some(&1),
            "{u} claimed {:?} times:\n{}",
            n.get(u),
            r2.stderr
        );
    }
    // Both workers worked.
    for w in ["[worker 0 cpu]", "[worker 1 cpu]"] {
        assert!(
            r2.stderr
                .lines()
                .any(|l| l.starts_with(w) && l.contains("claimed by worker")),
            "{w}:\n{}",
            r2.stderr
        );
    }
    let (m1, m2) = (metrics(&one), metrics(&two));
    assert_eq!(m1.len(), 12, "{m1:?}");
    assert_eq!(m1, m2);
    // The eval-only job waited for the heads it evaluates.
    let v2 = read_json(&two.path("out/a/V2-i1/results.json"));
    assert!(
        v2["test_metrics"]["top1_accuracy"].as_f64().unwrap() > 0.5,
        "{v2}"
    );
    // The table of the run lists every config.
    assert_eq!(
        r2.stdout
            .lines()
            .filter(|l| l.contains("top1_accuracy"))
            .count(),
        12,
        "{}",
        r2.stdout
    );
}

#[test]
fn two_processes_on_one_out_share_the_work_and_encode_a_split_once() {
    let env = Env::new();
    env.fixture("CalTech-101", 3, 20, 10, IMAGE_SIZE);
    experiments(&env, "");
    env.write("virb.yaml", &job("CalTech", "CalTech-101", &["c1"], 2));
    let start = || {
        env.run_command(&["--threads", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (p, q) = (start(), start());
    let (p, q) = (p.wait_with_output().unwrap(), q.wait_with_output().unwrap());
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        p.status.success() && q.status.success(),
        "{}\n---\n{}",
        err(&p),
        err(&q)
    );
    let both = err(&p) + &err(&q);
    let n = claims(&both);
    assert_eq!(
        (n.get("a/CalTech"), n.get("b/CalTech")),
        (Some(&1), Some(&1)),
        "{both}"
    );
    // a and b share the weights: their splits are one cache entry each, encoded once.
    let encoded = both
        .lines()
        .filter(|l| l.contains("CalTech: encode train: done"))
        .count();
    assert_eq!(encoded, 1, "{both}");
    assert_eq!(env.results().len(), 2);
    // No temporary files left in out/.
    let mut stack = vec![env.path("out")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains(".tmp-"),
                "left behind: {}",
                e.path().display()
            );
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
}

#[test]
fn a_killed_workers_unit_is_taken_over_and_finished_once() {
    let env = Env::new();
    env.fixture("CalTech-101", 3, 6, 4, IMAGE_SIZE);
    env.write(
        "experiments.yaml",
        &experiment_list(resnet18_weights(), "resnet18").replace("probe:", "a:"),
    );
    env.write(
        "virb.yaml",
        &job("CalTech", "CalTech-101", &["c1", "c2"], 400),
    );
    let mut child = env
        .run_command(&["--threads", "1", "--checkpoint-every", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let claim = env.path("out/a/.claims/CalTech.claim");
    let seed_ckpt = env.path("out/a/.checkpoints");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !(claim.exists() && seed_ckpt.exists()) {
        assert!(
            std::time::Instant::now() < deadline,
            "no claim and checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(claim.exists(), "the dead worker's claim stays behind");
    // A new worker takes the dead worker's claim over at once (same machine, pid gone) and
    // resumes from its checkpoint.
    let out = env.run_with(&["--threads", "1"]);
    assert!(out.ok(), "{}", out.stderr);
    assert_eq!(
        claims(&out.stderr).get("a/CalTech"),
        Some(&1),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("held by worker"), "{}", out.stderr);
    assert!(!claim.exists(), "the claim is released");
    assert_eq!(env.results().len(), 2);
    for cfg in ["c1", "c2"] {
        let r = read_json(&env.path(&format!("out/a/CalTech-{cfg}/results.json")));
        assert_eq!(r["runs"].as_array().unwrap().len(), 1, "{r}");
    }
}

#[test]
fn out_of_memory_is_retried_at_half_the_batch_then_fails_clearly() {
    let env = Env::new();
    env.fixture("CalTech-101", 3, 6, 4, IMAGE_SIZE);
    env.write(
        "experiments.yaml",
        &experiment_list(resnet18_weights(), "resnet18").replace("probe:", "a:"),
    );
    env.write("virb.yaml", &job("CalTech", "CalTech-101", &["c1"], 1));
    let run = |limit: &str| {
        let out = env
            .run_command(&["--threads", "1", "--force"])
            .env("VIRB_FAULT_OOM_ABOVE_BATCH", limit)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run("4");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("out of memory on cpu at batch size 8; retrying at 4"),
        "{err}"
    );
    let r = read_json(&env.path("out/a/CalTech-c1/results.json"));
    assert_eq!(r["hyperparameters"]["batch_size"], 4, "{r}");
    let (code, err) = run("1");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("out of memory on cpu at batch size 8 and again at 4: lower batch_size"),
        "{err}"
    );
}

#[test]
fn devices_that_do_not_exist_are_refused_with_the_valid_names() {
    let env = Env::new();
    env.fixture("CalTech-101", 3, 6, 4, IMAGE_SIZE);
    experiments(&env, "");
    env.write("virb.yaml", &job("CalTech", "CalTech-101", &["c1"], 1));
    let out = env.run_with(&["--devices", "cuda:3"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("cuda:3"), "{}", out.stderr);
    let out = env.run_with(&["--devices", "gpu:0"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("gpu:0") && out.stderr.contains("cpu"),
        "{}",
        out.stderr
    );
    assert!(env.results().is_empty());
}

#[test]
fn bf16_inference_is_an_encoder_option_with_its_own_cache_entry_and_close_numbers() {
    let env = Env::new();
    env.fixture("CalTech-101", 3, 8, 6, IMAGE_SIZE);
    let w = resnet18_weights().display().to_string();
    env.write(
        "experiments.yaml",
        &format!("f32:\n  weights: '{w}'\n  encoder: resnet18\nb16:\n  weights: '{w}'\n  encoder: resnet18\n  options: {{precision: bf16}}\nbad:\n  weights: '{w}'\n  encoder: resnet18\n  options: {{precision: fp8}}\n"),
    );
    env.write("virb.yaml", &job("CalTech", "CalTech-101", &["c1"], 30));
    let out = env.run();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown precision `fp8`")
            && out.stderr.contains("fp32`, `bf16` or `fp16"),
        "{}",
        out.stderr
    );
    let r = |e: &str| read_json(&env.path(&format!("out/{e}/CalTech-c1/results.json")));
    let (f, b) = (r("f32"), r("b16"));
    assert_eq!(b["encoder"]["options"]["precision"], "bf16", "{b}");
    let acc = |v: &serde_json::Value| v["test_metrics"]["top1_accuracy"].as_f64().unwrap();
    assert!(
        acc(&f) > 0.8 && (acc(&f) - acc(&b)).abs() <= 0.12,
        "fp32 {} bf16 {}",
        acc(&f),
        acc(&b)
    );
    // Two cache entries per split (train, test): the precision is part of the key.
    let files = std::fs::read_dir(env.path("cache"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".vfc"))
        .count();
    assert_eq!(files, 4);
}

#[test]
fn a_large_split_is_encoded_in_shards_an_idle_worker_helps_with_and_the_bits_are_the_same() {
    let env = Env::new();
    // Enough work (18 shards at 96 px) that the idle worker, which must first load the
    // encoder, gets to some of them even on a loaded machine.
    env.fixture("CalTech-101", 3, 48, 6, IMAGE_SIZE);
    env.write(
        "experiments.yaml",
        &experiment_list(resnet18_weights(), "resnet18").replace("probe:", "a:"),
    );
    env.write(
        "virb.yaml",
        &job("CalTech", "CalTech-101", &["c1"], 3).replace("image_size: 64", "image_size: 96"),
    );
    let run = |out: &str, extra: &[&str]| {
        let base = [
            "run",
            "--experiment-list",
            "experiments.yaml",
            "--virb-configs",
            "virb.yaml",
            "--data-root",
            "data",
            "--threads",
            "1",
        ];
        let dirs = ["--out", out, "--cache-dir", &format!("cache-{out}")];
        let o = env.host(&[&base[..], &dirs, extra].concat());
        assert!(o.ok(), "{}", o.stderr);
        o
    };
    run("one", &["--devices", "cpu"]);
    let r2 = run("two", &["--devices", "cpu,cpu", "--shard-samples", "8"]);
    assert!(
        r2.stderr.contains("144 samples in 18 shards of 8"),
        "{}",
        r2.stderr
    );
    // The worker without a unit of its own encoded shards of the other's split.
    let helped = r2
        .stderr
        .lines()
        .filter(|l| l.contains("(helping) shard") && l.contains("done"))
        .count();
    assert!(helped >= 1, "{}", r2.stderr);
    // The joined split is the unsharded one, byte for byte; no shard or request is left.
    let files = |dir: &str| {
        let mut f: Vec<(String, Vec<u8>)> = std::fs::read_dir(env.path(dir))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".vfc"))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        f.sort();
        f
    };
    let (f1, f2) = (files("cache-one"), files("cache-two"));
    assert_eq!(f1.len(), 2);
    assert!(
        f1 == f2,
        "cache files differ: {:?} vs {:?}",
        f1.iter().map(|x| &x.0).collect::<Vec<_>>(),
        f2.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    assert_eq!(
        std::fs::read_dir(env.path("two/.virb/shards"))
            .unwrap()
            .count(),
        0
    );
    let head = |out: &str| {
        read_json(&env.path(&format!("{out}/a/CalTech-c1/results.json")))["head_sha256"].clone()
    };
    assert_eq!(head("one"), head("two"));
}

#[test]
fn a_claim_from_another_machine_is_waited_for_then_taken_over_when_its_lease_expires() {
    let env = Env::new();
    env.fixture("CalTech-101", 3, 6, 4, IMAGE_SIZE);
    env.write(
        "experiments.yaml",
        &experiment_list(resnet18_weights(), "resnet18").replace("probe:", "a:"),
    );
    env.write("virb.yaml", &job("CalTech", "CalTech-101", &["c1"], 1));
    // A worker on another machine holds a/CalTech: its heartbeat (the file's mtime) stops
    // when it dies; this machine cannot see its process.
    let claim = env.write(
        "out/a/.claims/CalTech.claim",
        r#"{"worker":"node7:4242:00000000deadbeef","host":"node7","node":"other-boot","pid":4242,"what":"a/CalTech","acquired_unix":1,"token":"0123456789abcdef0123456789abcdef"}"#,
    );
    let child = env
        .run_command(&["--threads", "1", "--lease", "6"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Alive for now: keep its heartbeat going for 3 s; the worker waits.
    let mut last_beat = std::time::Instant::now();
    for _ in 0..10 {
        std::fs::File::options()
            .write(true)
            .open(&claim)
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        last_beat = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            env.results().is_empty(),
            "ran while another machine held the unit"
        );
    }
    // Then it dies: after the 6-s lease the claim is taken over and the unit done once.
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Taken over (and then done) no sooner than a lease after the last heartbeat.
    assert!(
        last_beat.elapsed() >= Duration::from_secs(6),
        "took over before the lease ran out"
    );
    assert!(
        err.contains("held by worker node7:4242:00000000deadbeef on node7"),
        "{err}"
    );
    assert_eq!(claims(&err).get("a/CalTech"), Some(&1), "{err}");
    assert_eq!(env.results().len(), 1);
    assert!(!claim.exists());
}
