//! Counting and structure tasks (CLEVRNumObjects, CLEVRDist, THORNumSteps): each learns its
//! generated fixture far above chance, and not when the training labels are shuffled.
use std::fs;
use virb_tests::{read_json, weights, Env, IMAGE_SIZE};

/// CLEVRNumObjects and CLEVRDist share the CLEVR folder, so each gets a folder of its own.
const GROUPS: [&[&str]; 2] = [&["CLEVRNumObjects", "THORNumSteps"], &["CLEVRDist"]];

fn setup(env: &Env, tasks: &[&str]) {
    for task in tasks {
        let out = env.host(&[
            "fixtures",
            task,
            "data",
            "--classes",
            "4",
            "--train-per-class",
            "12",
            "--test-per-class",
            "8",
            "--image-size",
            &IMAGE_SIZE.to_string(),
        ]);
        assert!(out.ok(), "{task}: {}", out.stderr);
    }
    env.write(
        "experiments.yaml",
        &format!("probe: '{}'\n", weights().display()),
    );
    let jobs: String = tasks
        .iter()
        .map(|task| {
            format!("{task}:\n  task: {task}\n  training_configs:\n    adam:\n      optimizer: adam\n      lr: 0.001\n  num_epochs: 40\n  batch_size: 8\n  image_size: {IMAGE_SIZE}\n")
        })
        .collect();
    env.write("virb.yaml", &jobs);
}

/// Chance is 1/4 for every task: the fixtures use 4 balanced classes.
fn accuracies<'a>(env: &Env, tasks: &[&'a str]) -> Vec<(&'a str, f64)> {
    let out = env.run();
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    tasks
        .iter()
        .map(|task| {
            let r = read_json(&env.path(&format!("out/probe/{task}-adam/results.json")));
            assert_eq!(r["test_size"], 32, "{task}");
            (*task, r["test_metrics"]["top1_accuracy"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn counting_tasks_learn_their_fixtures() {
    for tasks in GROUPS {
        let env = Env::new();
        setup(&env, tasks);
        for (task, acc) in accuracies(&env, tasks) {
            assert!(acc >= 0.7, "{task}: accuracy {acc} (chance 0.25)");
        }
    }
}

/// A fixed pseudo-random permutation.
fn permute<T>(items: &mut [T], mut state: u64) {
    for i in (1..items.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        items.swap(i, (state >> 33) as usize % (i + 1));
    }
}

fn shuffle(env: &Env, tasks: &[&str]) {
    if tasks.iter().any(|t| t.starts_with("CLEVR")) {
        // The scenes' object lists move to other images.
        let path = env.path("data/CLEVR/scenes/CLEVR_train_scenes.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let scenes = json["scenes"].as_array_mut().unwrap();
        let mut objects: Vec<serde_json::Value> =
            scenes.iter().map(|s| s["objects"].clone()).collect();
        permute(&mut objects, 11);
        for (s, o) in scenes.iter_mut().zip(objects) {
            s["objects"] = o;
        }
        fs::write(&path, json.to_string()).unwrap();
    }
    if tasks.contains(&"THORNumSteps") {
        // The step counts move to other images.
        let path = env.path("data/thor_num_steps/train_labels.txt");
        let lines: Vec<String> = fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let (keys, mut steps): (Vec<&str>, Vec<&str>) =
            lines.iter().map(|l| l.rsplit_once(' ').unwrap()).unzip();
        permute(&mut steps, 5);
        let text: String = keys
            .iter()
            .zip(steps)
            .map(|(k, s)| format!("{k} {s}\n"))
            .collect();
        fs::write(&path, text).unwrap();
    }
}

#[test]
fn counting_tasks_do_not_learn_shuffled_labels() {
    for tasks in GROUPS {
        let env = Env::new();
        setup(&env, tasks);
        shuffle(&env, tasks);
        for (task, acc) in accuracies(&env, tasks) {
            assert!(
                acc <= 0.6,
                "{task}: accuracy {acc} with shuffled training labels (chance 0.25)"
            );
        }
    }
}

#[test]
fn counting_tasks_name_what_is_missing() {
    let env = Env::new();
    env.write(
        "experiments.yaml",
        &format!("probe: '{}'\n", weights().display()),
    );
    let out = env.host(&[
        "fixtures",
        "THORNumSteps",
        "data",
        "--classes",
        "2",
        "--train-per-class",
        "2",
        "--test-per-class",
        "1",
        "--image-size",
        "32",
    ]);
    assert!(out.ok());
    fs::write(
        env.path("data/thor_num_steps/val_labels.txt"),
        "val/scene_00/view_00000 1\nval/scene_00/nowhere 0\n",
    )
    .unwrap();
    env.write("virb.yaml", "THORNumSteps:\n  task: THORNumSteps\n  training_configs:\n    a: {optimizer: adam, lr: 0.001}\n  num_epochs: 1\n  image_size: 32\nCLEVRDist:\n  task: CLEVRDist\n  training_configs:\n    a: {optimizer: adam, lr: 0.001}\n  num_epochs: 1\n  image_size: 32\n");
    let out = env.run();
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("THORNumSteps: image data/thor_num_steps/val/scene_00/nowhere_rgb.jpg (line 2 of data/thor_num_steps/val_labels.txt) not found"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "CLEVRDist: cannot read scene file data/CLEVR/scenes/CLEVR_train_scenes.json"
        ),
        "{}",
        out.stderr
    );
    assert!(env.results().is_empty());
}
