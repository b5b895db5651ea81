//! The demo pipeline learns on generated CalTech-101 data, and does not on shuffled labels.
use std::fs;
use virb_tests::{read_json, weights, Env};

/// Moves every training image into a category chosen at random (seeded), rewriting the split
/// list: the labels become noise while the images and the test split stay the same.
fn shuffle_train_labels(env: &Env) {
    let dir = env.path("data/caltech-101");
    let list_path = dir.join("caltech101_train.json");
    let list: Vec<String> = serde_json::from_str(&fs::read_to_string(&list_path).unwrap()).unwrap();
    let categories: Vec<String> = {
        let mut c: Vec<String> = list
            .iter()
            .map(|e| e.split('/').next().unwrap().to_string())
            .collect();
        c.sort();
        c.dedup();
        c
    };
    let mut state: u64 = 12345;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut new_list = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let target = &categories[next() % categories.len()];
        let rel = format!("{target}/shuffled_{i:04}.jpg");
        fs::rename(dir.join(entry), dir.join(&rel)).unwrap();
        new_list.push(rel);
    }
    fs::write(&list_path, serde_json::to_string(&new_list).unwrap()).unwrap();
}

fn accuracy(env: &Env) -> f64 {
    let out = env.run();
    assert!(out.ok(), "run failed:\n{}\n{}", out.stdout, out.stderr);
    let results = env.results();
    assert_eq!(results.len(), 1, "{results:?}");
    read_json(&results[0])["test_metrics"]["top1_accuracy"]
        .as_f64()
        .unwrap()
}

#[test]
fn probe_learns_generated_caltech_and_writes_complete_results() {
    let env = Env::new();
    env.caltech_fixture(4, 10, 12);
    env.caltech_configs(weights(), 25);
    let out = env.run();
    assert!(out.ok(), "run failed:\n{}\n{}", out.stdout, out.stderr);
    // The final table names the result.
    assert!(
        out.stdout.contains("probe") && out.stdout.contains("top1_accuracy"),
        "{}",
        out.stdout
    );
    // Progress goes to stderr.
    assert!(
        out.stderr.contains("encode train: done, 40"),
        "{}",
        out.stderr
    );
    let dir = env.path("out/probe/CalTech-101-adam-0.001");
    let r = read_json(&dir.join("results.json"));
    let acc = r["test_metrics"]["top1_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.9, "accuracy {acc} on separable data (chance 0.25)");
    assert_eq!(r["schema"], "virb.results/2");
    assert_eq!(r["test_size"], 48);
    assert_eq!(r["train_size"], 40);
    assert_eq!(r["num_outputs"], 4);
    assert_eq!(r["epochs"], 25);
    assert_eq!(r["encoder"]["name"], "resnet50");
    assert_eq!(r["encoder"]["weights_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(r["task"]["name"], "CalTech-101");
    assert_eq!(r["hyperparameters"]["optimizer"], "adam");
    assert_eq!(r["hyperparameters"]["image_size"], 64);
    assert_eq!(r["device"], "cpu");
    assert_eq!(r["test_accuracy"], r["test_metrics"]["top1_accuracy"]);
    for t in ["decode", "encode", "train", "eval"] {
        assert!(r["timings_s"][t].as_f64().unwrap() >= 0.0, "{t}");
    }
    // The head is saved beside it, in safetensors, with ViRB's key names.
    assert_eq!(r["head_file"], "seed-0/head.safetensors");
    assert_eq!(r["head_sha256"].as_str().unwrap().len(), 64);
    let head = tch::Tensor::read_safetensors(dir.join("seed-0/head.safetensors")).unwrap();
    let shapes: Vec<(String, Vec<i64>)> = head.iter().map(|(n, t)| (n.clone(), t.size())).collect();
    assert!(
        shapes.contains(&("head.weight".to_string(), vec![4, 2048])),
        "{shapes:?}"
    );
    assert!(
        shapes.contains(&("head.bias".to_string(), vec![4])),
        "{shapes:?}"
    );
    // No temporary files are left behind.
    let leftovers: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn probe_does_not_learn_shuffled_labels() {
    let env = Env::new();
    env.caltech_fixture(4, 10, 12);
    shuffle_train_labels(&env);
    env.caltech_configs(weights(), 25);
    let acc = accuracy(&env);
    assert!(
        acc <= 0.55,
        "accuracy {acc} with shuffled training labels (chance 0.25)"
    );
}

#[test]
fn training_configs_share_one_encoding_and_each_get_results() {
    let env = Env::new();
    env.caltech_fixture(3, 6, 4);
    env.write(
        "experiments.yaml",
        &format!(
            "a: '{}'\nb: '{}'\n",
            weights().display(),
            weights().display()
        ),
    );
    env.write(
        "virb.yaml",
        "CalTech-101:\n  task: CalTech-101\n  training_configs:\n    adam-0.001:\n      optimizer: adam\n      lr: 0.001\n    sgd-0.01-StepLR:\n      optimizer: sgd\n      lr: 0.01\n      momentum: 0.9\n      scheduler:\n        type: StepLR\n        step_size: 2\n        gamma: 0.5\n  num_epochs: 4\n  batch_size: 8\n  image_size: 64\n",
    );
    let out = env.run();
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(env.results().len(), 4);
    // The train split is encoded once, whatever the number of configs; experiment `b` has the
    // same weights, so it reads `a`'s features from the cache.
    assert_eq!(
        out.stderr.matches("encode train: done").count(),
        1,
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stderr.matches("from the feature cache").count(),
        2,
        "{}",
        out.stderr
    );
    let r = read_json(&env.path("out/b/CalTech-101-sgd-0.01-StepLR/results.json"));
    assert!(
        (r["runs"][0]["final_lr"].as_f64().unwrap() - 0.005).abs() < 1e-12,
        "StepLR stepped: {}",
        r["runs"][0]["final_lr"]
    );
}
