//! Bad input gets a clear error naming what is at fault, and leaves no partial results.
use std::fs;
use virb_tests::{reference_dir, weights, Env};

fn assert_no_results(env: &Env) {
    assert!(
        env.results().is_empty(),
        "partial results: {:?}",
        env.results()
    );
}

#[test]
fn malformed_yaml_names_file_and_line() {
    let env = Env::new();
    env.caltech_configs(weights(), 1);
    env.write(
        "virb.yaml",
        "CalTech-101:\n  task: CalTech-101\n   training_configs: x\n  num_epochs: 1\n",
    );
    let out = env.run();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("error: virb.yaml:3:"), "{}", out.stderr);
    assert!(!env.path("out").exists());
}

#[test]
fn unknown_key_names_job_key_and_line() {
    let env = Env::new();
    env.caltech_configs(weights(), 1);
    env.write("virb.yaml", "CalTech-101:\n  task: CalTech-101\n  training_configs:\n    a:\n      optimizer: adam\n      lr: 0.1\n      betas: [0.9, 0.99]\n  num_epochs: 1\n");
    let out = env.run();
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("virb.yaml:7:"), "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown field `betas`"),
        "{}",
        out.stderr
    );
    let bad_lr = env.write("virb.yaml", "J:\n  task: CalTech-101\n  training_configs:\n    a:\n      optimizer: adam\n      lr: 0\n  num_epochs: 1\n");
    let _ = bad_lr;
    let out = env.run();
    assert!(
        out.stderr
            .contains("virb.yaml:6: job `J`: `training_configs.a.lr`: must be a positive number"),
        "{}",
        out.stderr
    );
    assert!(!env.path("out").exists());
}

#[test]
fn unknown_task_lists_known_tasks() {
    let env = Env::new();
    env.caltech_configs(weights(), 1);
    env.write("virb.yaml", "Imagenet:\n  task: Imagenett\n  training_configs:\n    a: {optimizer: adam, lr: 0.1}\n  num_epochs: 1\n");
    let out = env.run();
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains(
            "virb.yaml:2: job `Imagenet`: `task`: unknown task `Imagenett`; known tasks: "
        ),
        "{}",
        out.stderr
    );
    for known in [
        "CalTech-101",
        "Imagenet,",
        "CLEVRNumObjects",
        "KineticsActionPrediction",
    ] {
        assert!(out.stderr.contains(known), "{known}: {}", out.stderr);
    }
    assert!(!env.path("out").exists());
}

#[test]
fn missing_data_folder_names_expected_layout() {
    let env = Env::new();
    env.caltech_configs(weights(), 1);
    let out = env.run();
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("CalTech-101: data folder data/caltech-101 not found"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("caltech-101/<category>/*.jpg + caltech-101/caltech101_{train,test}.json"),
        "{}",
        out.stderr
    );
    assert_no_results(&env);
}

#[test]
fn missing_split_file_says_which_and_how_to_make_it() {
    let env = Env::new();
    env.caltech_fixture(2, 2, 1);
    env.caltech_configs(weights(), 1);
    fs::remove_file(env.path("data/caltech-101/caltech101_test.json")).unwrap();
    let out = env.run();
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("cannot read split file data/caltech-101/caltech101_test.json"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("help: write a JSON array of \"<category>/<file>.jpg\" paths"),
        "{}",
        out.stderr
    );
    assert_no_results(&env);
}

#[test]
fn corrupt_image_is_named() {
    let env = Env::new();
    env.caltech_fixture(2, 3, 2);
    env.caltech_configs(weights(), 1);
    fs::write(
        env.path("data/caltech-101/anchor/image_0002.jpg"),
        b"\xff\xd8\xff\xe0 truncated",
    )
    .ok();
    fs::write(
        env.path("data/caltech-101/accordion/image_0002.jpg"),
        b"\xff\xd8\xff\xe0 truncated",
    )
    .unwrap();
    let out = env.run();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("cannot decode image data/caltech-101/accordion/image_0002.jpg"),
        "{}",
        out.stderr
    );
    assert_no_results(&env);
}

fn run_with_weights(file: &std::path::Path) -> (Env, virb_tests::Output) {
    let env = Env::new();
    env.caltech_fixture(2, 2, 1);
    env.caltech_configs(file, 1);
    let out = env.run();
    (env, out)
}

#[test]
fn weights_with_missing_or_misshaped_tensor_are_named() {
    let (env, out) = run_with_weights(&reference_dir().join("missing.pt"));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("missing 1 tensor(s): `layer3.1.conv2.weight`"),
        "{}",
        out.stderr
    );
    assert_no_results(&env);
    let (env, out) = run_with_weights(&reference_dir().join("misshaped.pt"));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("`layer2.0.bn1.weight` has shape [7], expected [128]"),
        "{}",
        out.stderr
    );
    assert_no_results(&env);
}

#[test]
fn weights_that_are_not_a_checkpoint_are_refused() {
    let env = Env::new();
    let file = env.write("weights.pt", "this is not a checkpoint\n");
    env.caltech_fixture(2, 2, 1);
    env.caltech_configs(&file, 1);
    let out = env.run();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("weights.pt is not a checkpoint"),
        "{}",
        out.stderr
    );
    let missing = env.path("nowhere.pt");
    env.caltech_configs(&missing, 1);
    let out = env.run();
    assert!(
        out.stderr.contains("nowhere.pt not found"),
        "{}",
        out.stderr
    );
    assert_no_results(&env);
}
