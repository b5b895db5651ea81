//! KineticsActionPrediction: 6 frames per video, each encoded once; an MLP over the 6
//! embeddings learns the action, not shuffled labels; short videos are skipped.
use std::fs;
use virb_tests::{read_json, weights, Env, IMAGE_SIZE};

fn setup(env: &Env) {
    let out = env.host(&[
        "fixtures",
        "KineticsActionPrediction",
        "data",
        "--classes",
        "4",
        "--train-per-class",
        "8",
        "--test-per-class",
        "5",
        "--image-size",
        &IMAGE_SIZE.to_string(),
    ]);
    assert!(out.ok(), "{}", out.stderr);
    env.write(
        "experiments.yaml",
        &format!("probe: '{}'\n", weights().display()),
    );
    env.write("virb.yaml", &format!("KineticsActionPrediction:\n  task: KineticsActionPrediction\n  pre_encode: true\n  training_configs:\n    adam-0.0003:\n      optimizer: adam\n      lr: 0.0003\n  num_epochs: 30\n  batch_size: 8\n  image_size: {IMAGE_SIZE}\n"));
}

fn accuracy(env: &Env) -> serde_json::Value {
    let out = env.run();
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    read_json(&env.path("out/probe/KineticsActionPrediction-adam-0.0003/results.json"))
}

#[test]
fn kinetics_learns_from_six_frames_and_skips_short_videos() {
    let env = Env::new();
    setup(&env);
    // A test video with only 5 frames is skipped.
    let dir = env.path("data/kinetics400/validate/a0");
    let mut victim: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    victim.sort();
    for f in &victim[5..8] {
        fs::remove_file(f).unwrap();
    }
    let r = accuracy(&env);
    assert_eq!(r["test_size"], 19);
    assert_eq!(r["num_outputs"], 4);
    let acc = r["test_metrics"]["top1_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.8, "accuracy {acc} (chance 0.25)");
    let head = tch::Tensor::read_safetensors(
        env.path("out/probe/KineticsActionPrediction-adam-0.0003/seed-0/head.safetensors"),
    )
    .unwrap();
    assert!(head
        .iter()
        .any(|(n, t)| n == "head.0.weight" && t.size() == vec![512, 6 * 2048]));
}

#[test]
fn kinetics_does_not_learn_shuffled_labels() {
    let env = Env::new();
    setup(&env);
    let path = env.path("data/kinetics400/annotations/train.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let labels = [
        "abseiling",
        "air drumming",
        "answering questions",
        "applauding",
    ];
    let mut state: u64 = 21;
    for (_, v) in json.as_object_mut().unwrap() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v["annotations"]["label"] = labels[(state >> 33) as usize % 4].into();
    }
    fs::write(&path, json.to_string()).unwrap();
    let acc = accuracy(&env)["test_metrics"]["top1_accuracy"]
        .as_f64()
        .unwrap();
    assert!(
        acc <= 0.6,
        "accuracy {acc} with shuffled labels (chance 0.25)"
    );
}
