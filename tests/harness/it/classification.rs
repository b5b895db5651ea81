//! The folder-per-class classification tasks (Imagenet, SUN397, Eurosat, dtd, Pets): each learns
//! its generated fixture, none learns shuffled labels, and splits with different classes are
//! refused.
use std::fs;
use virb_tests::{read_json, weights, Env, IMAGE_SIZE};

/// `(task, data folder, test split folder)`.
const TASKS: [(&str, &str, &str); 5] = [
    ("Imagenet", "imagenet", "val"),
    ("SUN397", "SUN397", "test"),
    ("Eurosat", "eurosat", "test"),
    ("dtd", "dtd", "test"),
    ("Pets", "pets", "test"),
];

fn setup(env: &Env) {
    for (task, _, _) in TASKS {
        let out = env.host(&[
            "fixtures",
            task,
            "data",
            "--classes",
            "4",
            "--train-per-class",
            "10",
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
    let jobs: String = TASKS
        .iter()
        .map(|(task, _, _)| {
            format!("{task}:\n  task: {task}\n  training_configs:\n    adam:\n      optimizer: adam\n      lr: 0.001\n  num_epochs: 25\n  batch_size: 8\n  image_size: {IMAGE_SIZE}\n")
        })
        .collect();
    env.write("virb.yaml", &jobs);
}

fn accuracies(env: &Env) -> Vec<(String, f64)> {
    let out = env.run();
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    TASKS
        .iter()
        .map(|(task, _, _)| {
            let r = read_json(&env.path(&format!("out/probe/{task}-adam/results.json")));
            assert_eq!(r["test_size"], 32, "{task}");
            (
                task.to_string(),
                r["test_metrics"]["top1_accuracy"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn folder_tasks_learn_their_fixtures() {
    let env = Env::new();
    setup(&env);
    for (task, acc) in accuracies(&env) {
        assert!(
            acc >= 0.9,
            "{task}: accuracy {acc} on separable data (chance 0.25)"
        );
    }
}

#[test]
fn folder_tasks_do_not_learn_shuffled_labels() {
    let env = Env::new();
    setup(&env);
    let mut state: u64 = 7;
    for (_, dir, _) in TASKS {
        let train = env.path(&format!("data/{dir}/train"));
        let mut classes: Vec<_> = fs::read_dir(&train)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        classes.sort();
        let mut files: Vec<_> = classes
            .iter()
            .flat_map(|c| fs::read_dir(c).unwrap().flatten().map(|e| e.path()))
            .collect();
        files.sort();
        for (i, f) in files.iter().enumerate() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let target = &classes[(state >> 33) as usize % classes.len()];
            let ext = f.extension().unwrap().to_string_lossy().into_owned();
            fs::rename(f, target.join(format!("shuffled_{i:04}.{ext}"))).unwrap();
        }
    }
    for (task, acc) in accuracies(&env) {
        assert!(
            acc <= 0.6,
            "{task}: accuracy {acc} with shuffled training labels (chance 0.25)"
        );
    }
}

#[test]
fn splits_with_different_classes_are_refused() {
    let env = Env::new();
    let out = env.host(&[
        "fixtures",
        "Eurosat",
        "data",
        "--classes",
        "3",
        "--train-per-class",
        "2",
        "--test-per-class",
        "1",
        "--image-size",
        "32",
    ]);
    assert!(out.ok(), "{}", out.stderr);
    fs::rename(
        env.path("data/eurosat/test/Forest"),
        env.path("data/eurosat/test/Forrest"),
    )
    .unwrap();
    env.write(
        "experiments.yaml",
        &format!("probe: '{}'\n", weights().display()),
    );
    env.write("virb.yaml", "Eurosat:\n  task: Eurosat\n  training_configs:\n    a: {optimizer: adam, lr: 0.001}\n  num_epochs: 1\n  image_size: 32\n");
    let out = env.run();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("Eurosat: train and test splits have different classes (only in train: [Forest]; only in test: [Forrest])"),
        "{}",
        out.stderr
    );
    assert!(env.results().is_empty());
    // A missing split folder names it and the layout.
    fs::remove_dir_all(env.path("data/eurosat/test")).unwrap();
    let out = env.run();
    assert!(
        out.stderr
            .contains("Eurosat: test split folder data/eurosat/test not found"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("eurosat/{train,test}/<class>/*.jpg"),
        "{}",
        out.stderr
    );
}

fn python(code: &str, args: &[&std::path::Path]) -> String {
    let out = std::process::Command::new(virb_tests::python())
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cifar_env() -> Env {
    let env = Env::new();
    let out = env.host(&[
        "fixtures",
        "CIFAR-100",
        "data",
        "--classes",
        "4",
        "--train-per-class",
        "10",
        "--test-per-class",
        "8",
    ]);
    assert!(out.ok(), "{}", out.stderr);
    env.write(
        "experiments.yaml",
        &format!("probe: '{}'\n", weights().display()),
    );
    env.write("virb.yaml", &format!("CIFAR-100:\n  task: CIFAR-100\n  training_configs:\n    adam:\n      optimizer: adam\n      lr: 0.001\n  num_epochs: 25\n  batch_size: 8\n  image_size: {IMAGE_SIZE}\n"));
    env
}

fn cifar_accuracy(env: &Env) -> f64 {
    let out = env.run();
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    let r = read_json(&env.path("out/probe/CIFAR-100-adam/results.json"));
    assert_eq!(r["test_size"], 32);
    r["test_metrics"]["top1_accuracy"].as_f64().unwrap()
}

#[test]
fn cifar100_fixture_is_what_python_reads_and_the_probe_learns_it() {
    let env = cifar_env();
    // The generated files have the real format: Python's pickle gives a uint8 [N, 3072] array.
    let seen = python(
        "import pickle,sys; d=pickle.load(open(sys.argv[1],'rb'),encoding='bytes'); print(d['data'].dtype, d['data'].shape, sorted(set(d['fine_labels'])))",
        &[&env.path("data/cifar-100/train")],
    );
    assert_eq!(seen.trim(), "uint8 (40, 3072) [0, 1, 2, 3]");
    let acc = cifar_accuracy(&env);
    assert!(acc >= 0.9, "CIFAR-100 accuracy {acc} (chance 0.25)");
}

#[test]
fn cifar100_reads_python_written_pickles_and_does_not_learn_shuffled_labels() {
    let env = cifar_env();
    // Python rewrites the training file (protocol 2, as the real files) with shuffled labels.
    python(
        "import pickle,random,sys; p=sys.argv[1]; d=pickle.load(open(p,'rb'),encoding='bytes'); random.seed(3); random.shuffle(d['fine_labels']); pickle.dump(d,open(p,'wb'),protocol=2)",
        &[&env.path("data/cifar-100/train")],
    );
    let acc = cifar_accuracy(&env);
    assert!(
        acc <= 0.6,
        "CIFAR-100 accuracy {acc} with shuffled labels (chance 0.25)"
    );
}
