//! Fine-tuning (`train_encoder: true`) trains the encoder through the plugin boundary: on weights
//! whose frozen embedding is useless, the frozen probe stays near chance while fine-tuning
//! learns, and the saved encoder differs from the original weights.
use std::collections::HashMap;
use virb_tests::{degraded_weights, read_json, Env, IMAGE_SIZE};

fn job(name: &str, train_encoder: bool) -> String {
    format!(
        "{name}:\n  task: CalTech-101\n  training_configs:\n    adam:\n      optimizer: adam\n      lr: 0.0003\n  num_epochs: 8\n  batch_size: 8\n  image_size: {IMAGE_SIZE}\n  train_encoder: {train_encoder}\n"
    )
}

#[test]
fn fine_tuning_changes_the_encoder_and_beats_the_frozen_probe() {
    let env = Env::new();
    env.caltech_fixture(4, 10, 8);
    env.write(
        "experiments.yaml",
        &format!("probe: '{}'\n", degraded_weights().display()),
    );
    env.write(
        "virb.yaml",
        &format!("{}{}", job("frozen", false), job("tuned", true)),
    );
    let out = env.run();
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    let acc = |job: &str| {
        read_json(&env.path(&format!("out/probe/{job}-adam/results.json")))["test_metrics"]
            ["top1_accuracy"]
            .as_f64()
            .unwrap()
    };
    let (frozen, tuned) = (acc("frozen"), acc("tuned"));
    assert!(frozen <= 0.45, "frozen probe {frozen} (chance 0.25)");
    assert!(tuned >= 0.8, "fine-tuned {tuned} (frozen {frozen})");
    let r = read_json(&env.path("out/probe/tuned-adam/results.json"));
    assert_eq!(r["train_encoder"], true);
    assert_eq!(r["hyperparameters"]["train_encoder"], true);
    // The tuned encoder was saved, and training moved its weights.
    let tuned_state: HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(env.path("out/probe/tuned-adam/seed-0/encoder.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let original: HashMap<String, tch::Tensor> = virb_checkpoint::load(degraded_weights())
        .unwrap()
        .tensors
        .into_iter()
        .collect();
    let mut moved = 0;
    for name in [
        "conv1.weight",
        "layer4.2.bn3.weight",
        "layer1.0.conv1.weight",
    ] {
        let a = &tuned_state[name];
        let b = &original[name];
        let diff = f64::try_from((a - b).abs().max()).unwrap();
        if diff > 1e-5 {
            moved += 1;
        }
    }
    assert_eq!(moved, 3, "fine-tuning left encoder weights unchanged");
    // Features of a tuned encoder are never cached.
    assert!(
        out.stderr.matches("encode train: done").count() == 1,
        "only the frozen job encodes the train split: {}",
        out.stderr
    );
}
