//! Imagenetv2 evaluates the ImageNet heads trained earlier for the same encoder, without
//! training; without such a head the error says which job to run first.
use virb_tests::{read_json, weights, Env, IMAGE_SIZE};

fn fixtures(env: &Env) {
    for task in ["Imagenet", "Imagenetv2"] {
        let out = env.host(&[
            "fixtures",
            task,
            "data",
            "--classes",
            "4",
            "--train-per-class",
            "10",
            "--test-per-class",
            "6",
            "--image-size",
            &IMAGE_SIZE.to_string(),
        ]);
        assert!(out.ok(), "{task}: {}", out.stderr);
    }
    env.write(
        "experiments.yaml",
        &format!("probe: '{}'\n", weights().display()),
    );
}

const IMAGENET_V2_JOB: &str = "Imagenetv2:\n  task: Imagenetv2\n  task_head_weights_path: \"out/%s/Imagenet*/model_head.pt\"\n  batch_size: 16\n  image_size: 64\n";

#[test]
fn imagenetv2_evaluates_the_imagenet_heads_of_the_same_experiment() {
    let env = Env::new();
    fixtures(&env);
    // The eval-only job is listed first; it still runs after the training job.
    env.write(
        "virb.yaml",
        &format!("{IMAGENET_V2_JOB}Imagenet:\n  task: Imagenet\n  training_configs:\n    adam-0.001: {{optimizer: adam, lr: 0.001}}\n    sgd-0.1: {{optimizer: sgd, lr: 0.1, momentum: 0.9}}\n  num_epochs: 20\n  batch_size: 8\n  image_size: {IMAGE_SIZE}\n"),
    );
    let out = env.run();
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    for cfg in ["adam-0.001", "sgd-0.1"] {
        let r = read_json(&env.path(&format!("out/probe/Imagenetv2-{cfg}/results.json")));
        assert_eq!(r["task"]["name"], "Imagenetv2");
        assert_eq!(r["epochs"], 0);
        assert_eq!(r["train_size"], 0);
        assert_eq!(r["test_size"], 24);
        assert!(
            r["evaluated_head"]
                .as_str()
                .unwrap()
                .ends_with(&format!("Imagenet-{cfg}")),
            "{}",
            r["evaluated_head"]
        );
        let source = read_json(&env.path(&format!("out/probe/Imagenet-{cfg}/results.json")));
        assert_eq!(r["head_sha256"], source["head_sha256"]);
        assert_eq!(r["hyperparameters"], source["hyperparameters"]);
        let acc = r["test_metrics"]["top1_accuracy"].as_f64().unwrap();
        assert!(
            acc >= 0.9,
            "{cfg}: Imagenetv2 accuracy {acc} with the Imagenet head (chance 0.25)"
        );
    }
    // No head was written for the eval-only results.
    assert!(!env
        .path("out/probe/Imagenetv2-adam-0.001/seed-0/head.safetensors")
        .exists());
}

#[test]
fn imagenetv2_without_an_imagenet_head_says_which_job_to_run() {
    let env = Env::new();
    fixtures(&env);
    env.write("virb.yaml", IMAGENET_V2_JOB);
    let out = env.run();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("Imagenetv2: no trained Imagenet head for experiment `probe` in out/probe; run a job with `task: Imagenet` for this experiment first"),
        "{}",
        out.stderr
    );
    assert!(env.results().is_empty());
    // Training configs on an eval-only task are a configuration error.
    env.write(
        "virb.yaml",
        "Imagenetv2:\n  task: Imagenetv2\n  training_configs:\n    a: {optimizer: adam, lr: 0.1}\n",
    );
    let out = env.run();
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("virb.yaml:3: job `Imagenetv2`: `training_configs`: the task is eval-only"),
        "{}",
        out.stderr
    );
}

#[test]
fn imagenetv2_with_shuffled_labels_scores_near_chance() {
    let env = Env::new();
    fixtures(&env);
    env.write(
        "virb.yaml",
        &format!("Imagenet:\n  task: Imagenet\n  training_configs:\n    adam-0.001: {{optimizer: adam, lr: 0.001}}\n  num_epochs: 20\n  batch_size: 8\n  image_size: {IMAGE_SIZE}\n{IMAGENET_V2_JOB}"),
    );
    // Move every ImageNetV2 image into a class folder chosen at random.
    let root = env.path("data/imagenetv2");
    let mut files: Vec<_> = (0..4)
        .flat_map(|c| {
            std::fs::read_dir(root.join(c.to_string()))
                .unwrap()
                .flatten()
                .map(|e| e.path())
        })
        .collect();
    files.sort();
    let mut state: u64 = 17;
    for (i, f) in files.iter().enumerate() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let class = (state >> 33) % 4;
        std::fs::rename(
            f,
            root.join(class.to_string())
                .join(format!("shuffled_{i:03}.jpeg")),
        )
        .unwrap();
    }
    let out = env.run();
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    let acc = read_json(&env.path("out/probe/Imagenetv2-adam-0.001/results.json"))["test_metrics"]
        ["top1_accuracy"]
        .as_f64()
        .unwrap();
    assert!(
        acc <= 0.55,
        "Imagenetv2 accuracy {acc} with shuffled labels (chance 0.25)"
    );
}

#[test]
fn virb_imagenetv2_yaml_runs_unchanged_and_max_epochs_caps_a_full_config() {
    let env = Env::new();
    fixtures(&env);
    // ViRB's imagenet job with its 100 epochs, cut short for a smoke test.
    env.write(
        "imagenet.yaml",
        &format!("Imagenet:\n  task: Imagenet\n  training_configs:\n    adam-0.001: {{optimizer: adam, lr: 0.001}}\n  num_epochs: 100\n  batch_size: 8\n  image_size: {IMAGE_SIZE}\n"),
    );
    let out = env.host(&[
        "run",
        "--experiment-list",
        "experiments.yaml",
        "--virb-configs",
        "imagenet.yaml",
        "--data-root",
        "data",
        "--out",
        "out",
        "--max-epochs",
        "2",
    ]);
    assert!(out.ok(), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("note: --max-epochs 2: Imagenet train for 2 epoch(s) only"),
        "{}",
        out.stderr
    );
    let r = read_json(&env.path("out/probe/Imagenet-adam-0.001/results.json"));
    assert_eq!(r["epochs"], 2);
    // ViRB's imagenetv2.yaml, verbatim: a top-level `batch_size` (an indentation slip).
    env.write(
        "imagenetv2.yaml",
        "Imagenetv2:\n  task: \"Imagenetv2\"\n  task_head_weights_path: \"out/%s/Imagenet*/model_head.pt\"\nbatch_size: 32\n",
    );
    let out = env.host(&[
        "run",
        "--experiment-list",
        "experiments.yaml",
        "--virb-configs",
        "imagenetv2.yaml",
        "--data-root",
        "data",
        "--out",
        "out",
    ]);
    assert!(out.ok(), "{}", out.stderr);
    assert!(
        out.stderr.contains("note: imagenetv2.yaml:4: top-level `batch_size: 32` is not a job; it is the default of every job that does not set `batch_size` (Imagenetv2)"),
        "{}",
        out.stderr
    );
    assert!(env
        .path("out/probe/Imagenetv2-adam-0.001/results.json")
        .is_file());
}
