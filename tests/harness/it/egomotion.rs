//! Egomotion from two frames (THORActionPrediction, nuScenesActionPrediction): each sample's two
//! frames are encoded once and an MLP over both embeddings learns the motion; shuffled labels are
//! not learnt.
use std::fs;
use virb_tests::{read_json, weights, Env, IMAGE_SIZE};

const TASKS: [(&str, u32); 2] = [("THORActionPrediction", 5), ("nuScenesActionPrediction", 4)];

fn setup(env: &Env) {
    for (task, classes) in TASKS {
        let out = env.host(&[
            "fixtures",
            task,
            "data",
            "--classes",
            &classes.to_string(),
            "--train-per-class",
            "16",
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
    let jobs: String = TASKS
        .iter()
        .map(|(task, _)| format!("{task}:\n  task: {task}\n  training_configs:\n    adam:\n      optimizer: adam\n      lr: 0.001\n  num_epochs: 30\n  batch_size: 8\n  image_size: {IMAGE_SIZE}\n"))
        .collect();
    env.write("virb.yaml", &jobs);
}

fn accuracies(env: &Env) -> Vec<(&'static str, u32, f64)> {
    let out = env.run();
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    TASKS
        .iter()
        .map(|(task, classes)| {
            let r = read_json(&env.path(&format!("out/probe/{task}-adam/results.json")));
            assert_eq!(r["test_size"], 6 * classes, "{task}");
            assert_eq!(r["num_outputs"], *classes, "{task}");
            (
                *task,
                *classes,
                r["test_metrics"]["top1_accuracy"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn egomotion_tasks_learn_from_frame_pairs() {
    let env = Env::new();
    setup(&env);
    for (task, classes, acc) in accuracies(&env) {
        let chance = 1.0 / classes as f64;
        assert!(
            acc >= chance + 0.45,
            "{task}: accuracy {acc} (chance {chance:.2})"
        );
    }
    // The head is the two-frame MLP with ViRB's key names.
    let head = tch::Tensor::read_safetensors(
        env.path("out/probe/THORActionPrediction-adam/seed-0/head.safetensors"),
    )
    .unwrap();
    let shapes: Vec<(String, Vec<i64>)> = head.iter().map(|(n, t)| (n.clone(), t.size())).collect();
    assert!(
        shapes.contains(&("head.0.weight".to_string(), vec![512, 4096])),
        "{shapes:?}"
    );
    assert!(
        shapes.contains(&("head.2.weight".to_string(), vec![5, 512])),
        "{shapes:?}"
    );
}

#[test]
fn egomotion_tasks_do_not_learn_shuffled_labels() {
    let env = Env::new();
    setup(&env);
    let mut state: u64 = 9;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let path = env.path("data/thor_action_prediction/train_labels.txt");
    let actions = [
        "MoveAhead",
        "RotateLeft",
        "RotateRight",
        "LookUp",
        "LookDown",
    ];
    let text: String = fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| {
            format!(
                "{} {}\n",
                l.rsplit_once(' ').unwrap().0,
                actions[next() % 5]
            )
        })
        .collect();
    fs::write(&path, text).unwrap();
    let path = env.path("data/nuScenes/nuScenes_train.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let labels = ["forward", "left", "right", "stop"];
    for e in json.as_array_mut().unwrap() {
        e["label"] = labels[next() % 4].into();
    }
    fs::write(&path, json.to_string()).unwrap();
    for (task, classes, acc) in accuracies(&env) {
        let chance = 1.0 / classes as f64;
        assert!(
            acc <= chance + 0.3,
            "{task}: accuracy {acc} with shuffled labels (chance {chance:.2})"
        );
    }
}

#[test]
fn unknown_action_names_the_line() {
    let env = Env::new();
    setup(&env);
    let path = env.path("data/thor_action_prediction/val_labels.txt");
    let text = fs::read_to_string(&path)
        .unwrap()
        .replacen("MoveAhead", "Jump", 1);
    fs::write(&path, text).unwrap();
    let out = env.run();
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("THORActionPrediction: data/thor_action_prediction/val_labels.txt:1: unknown action \"Jump\"; expected one of MoveAhead, RotateLeft, RotateRight, LookUp, LookDown"),
        "{}",
        out.stderr
    );
    assert!(!env.path("out/probe/THORActionPrediction-adam").exists());
}
