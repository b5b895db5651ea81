//! Pixel-wise regression tasks (THORDepth, NYUDepth, TaskonomyDepth, TaskonomyEdges,
//! TaskonomyInpainting): each depth task learns its generated fixture far better than the
//! train-mean-depth baseline, and not when the training depth maps are shuffled among the
//! images (a derangement chosen so that the images tell nothing about their new maps); the other
//! two run end to end; bad files are named.
//!
//! The baseline is computed here from the fixture files (with NumPy and PIL in the libtorch
//! venv): the mean of the training targets over valid pixels, scored on the test split as the
//! task scores (L1 per image over valid pixels, averaged over images).
//!
//! Cost: each training test is one task on ResNet-18's pyramid (ViRB's PixelWise head on it has
//! ~6 M parameters; see `virb_tests::resnet18_weights`): 8 training images, 8 epochs of batches
//! of 2 (32 Adam steps at lr 3e-4). Images are 65 px, an odd size, which also exercises the
//! head's resize of its 66-px output to the input.
use std::{fs, process::Command};
use virb_tests::{experiment_list, python, read_json, resnet18_weights, Env};

/// Side of the fixture images and the network input.
const SIZE: u32 = 65;

/// `classes` folders of `train` + `test` samples each, and one job per task.
fn setup(env: &Env, tasks: &[&str], epochs: u32) {
    // The Taskonomy tasks share `taskonomy/`, whose fixture (every domain) is written once.
    let mut taskonomy = false;
    for task in tasks {
        if task.starts_with("Taskonomy") {
            if taskonomy {
                continue;
            }
            taskonomy = true;
        }
        env.fixture(task, 4, 2, 1, SIZE);
    }
    env.write(
        "experiments.yaml",
        &experiment_list(resnet18_weights(), "resnet18"),
    );
    let jobs: String = tasks
        .iter()
        .map(|task| {
            format!("{task}:\n  task: {task}\n  training_configs:\n    adam:\n      optimizer: adam\n      lr: 0.0003\n  num_epochs: {epochs}\n  batch_size: 2\n  image_size: {SIZE}\n")
        })
        .collect();
    env.write("virb.yaml", &jobs);
}

/// Each task's `results.json`.
fn results(env: &Env, tasks: &[&str]) -> Vec<serde_json::Value> {
    let out = env.run();
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    tasks
        .iter()
        .map(|task| {
            let r = read_json(&env.path(&format!("out/probe/{task}-adam/results.json")));
            assert_eq!(r["test_size"], 4, "{task}");
            r
        })
        .collect()
}

/// Reads every target of a split as the task does and prints the baseline's test L1.
const BASELINE: &str = r#"
import glob, sys
import numpy as np
from PIL import Image
task, root = sys.argv[1], sys.argv[2]
def load(split):
    if task == "THORDepth":
        files = sorted(glob.glob(f"{root}/thor_depth_prediction/{split}/*/*depth.jpg"))
        return [(np.asarray(Image.open(f).convert("L"), np.float64) / 255 - 0.5) / 0.25 for f in files]
    if task == "NYUDepth":
        return [np.asarray(Image.open(f), np.float64) for f in sorted(glob.glob(f"{root}/nyu/{split}/depths/*.tiff"))]
    out = []
    for f in sorted(glob.glob(f"{root}/taskonomy/{split}/depth_zbuffer/*/*.png")):
        d = np.minimum(np.asarray(Image.open(f), np.float64), 10000)
        out.append((d - d.min()) / (d.max() - d.min()))
    return out
def valid(g):
    ok = np.isfinite(g)
    if task == "NYUDepth":
        g = np.nan_to_num(g)
        ok &= (g > 1e-3) & (g < 10)
    return ok
mean = np.concatenate([g[valid(g)] for g in load("train")]).mean()
print(np.mean([np.abs(g[valid(g)] - mean).mean() for g in load("test")]))
"#;

/// Runs one of this file's Python scripts on `task`'s fixture; returns what it printed.
fn python_on(env: &Env, name: &str, script: &str, task: &str) -> f64 {
    let script = env.write(name, script);
    let out = Command::new(python())
        .arg(&script)
        .arg(task)
        .arg(env.path("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn baseline(env: &Env, task: &str) -> f64 {
    python_on(env, "baseline.py", BASELINE, task)
}

/// Moves the training depth maps to other images: of 500 random derangements, the one whose
/// images' brightness is least correlated with their new depth maps (a plain random permutation
/// of 8 smooth maps can leave a chance correlation a head learns from). Prints that correlation.
const SHUFFLE: &str = r#"
import glob, sys
import numpy as np
from PIL import Image
task, root = sys.argv[1], sys.argv[2]
if task == "THORDepth":
    images = sorted(glob.glob(f"{root}/thor_depth_prediction/train/*/*rgb.jpg"))
    depths = sorted(glob.glob(f"{root}/thor_depth_prediction/train/*/*depth.jpg"))
elif task == "NYUDepth":
    images = sorted(glob.glob(f"{root}/nyu/train/images/*.png"))
    depths = sorted(glob.glob(f"{root}/nyu/train/depths/*.tiff"))
else:
    images = sorted(glob.glob(f"{root}/taskonomy/train/rgb/*/*.png"))
    depths = sorted(glob.glob(f"{root}/taskonomy/train/depth_zbuffer/*/*.png"))
grey = [np.asarray(Image.open(f).convert("L"), np.float64).ravel() for f in images]
depth = [np.nan_to_num(np.asarray(Image.open(f), np.float64)).ravel() for f in depths]
corr = np.array([[np.corrcoef(g, d)[0, 1] for d in depth] for g in grey])
n, rng, best = len(images), np.random.default_rng(7), None
for _ in range(500):
    p = rng.permutation(n)
    if (p == np.arange(n)).any():
        continue
    c = abs(corr[np.arange(n), p].mean())
    if best is None or c < best[0]:
        best = (c, p)
data = [open(f, "rb").read() for f in depths]
for f, j in zip(depths, best[1]):
    open(f, "wb").write(data[j])
print(best[0])
"#;

fn shuffle_training_depth(env: &Env, task: &str) -> f64 {
    python_on(env, "shuffle.py", SHUFFLE, task)
}

/// Trains `task` on its fixture (optionally with shuffled training depth); returns the test L1,
/// the baseline and the results.
fn train(task: &str, shuffled: bool) -> (f64, f64, serde_json::Value) {
    let env = Env::new();
    setup(&env, &[task], 8);
    if shuffled {
        let corr = shuffle_training_depth(&env, task);
        assert!(
            corr < 0.1,
            "{task}: shuffled pairs still correlate ({corr})"
        );
    }
    let r = results(&env, &[task]).remove(0);
    let l1 = r["test_metrics"]["l1"].as_f64().unwrap();
    (l1, baseline(&env, task), r)
}

fn learns(task: &str) -> serde_json::Value {
    let (l1, base, r) = train(task, false);
    eprintln!("{task}: test L1 {l1}, train-mean baseline {base}");
    assert!(
        l1 < 0.5 * base,
        "{task}: test L1 {l1}, train-mean baseline {base}"
    );
    r
}

fn does_not_learn_shuffled(task: &str) {
    let (l1, base, _) = train(task, true);
    eprintln!("{task}: test L1 {l1} with shuffled training depth, train-mean baseline {base}");
    assert!(
        l1 > 0.8 * base,
        "{task}: test L1 {l1} with shuffled training depth, train-mean baseline {base}"
    );
}

#[test]
fn thor_depth_beats_the_mean_depth() {
    let r = learns("THORDepth");
    assert!(r["test_metrics"]["delta1"].as_f64().unwrap() > 0.5, "{r}");
}

#[test]
fn thor_depth_does_not_learn_shuffled_depth() {
    does_not_learn_shuffled("THORDepth");
}

#[test]
fn nyu_depth_beats_the_mean_depth_and_counts_nan() {
    let r = learns("NYUDepth");
    // The NaN pixel of test/depths/00000.tiff is masked and counted, never scored.
    assert_eq!(r["test_details"]["non_finite_target_pixels"], 1, "{r}");
    assert!(r["test_metrics"]["delta1"].as_f64().unwrap() > 0.5, "{r}");
}

#[test]
fn nyu_depth_does_not_learn_shuffled_depth() {
    does_not_learn_shuffled("NYUDepth");
}

#[test]
fn taskonomy_depth_beats_the_mean_depth() {
    learns("TaskonomyDepth");
}

#[test]
fn taskonomy_depth_does_not_learn_shuffled_depth() {
    does_not_learn_shuffled("TaskonomyDepth");
}

#[test]
fn taskonomy_edges_and_inpainting_run() {
    let tasks = ["TaskonomyEdges", "TaskonomyInpainting"];
    let env = Env::new();
    setup(&env, &tasks, 2);
    for (task, r) in tasks.iter().zip(results(&env, &tasks)) {
        let values = r["test_metrics"].as_object().unwrap();
        let names: Vec<&str> = values.keys().map(String::as_str).collect();
        let expected: &[&str] = if *task == "TaskonomyEdges" {
            &["l1"]
        } else {
            &["hole_l1", "l1"]
        };
        assert_eq!(names, expected, "{task}");
        assert_eq!(r["primary_metric"], expected[0], "{task}");
        for (name, v) in values {
            assert!(v.as_f64().is_some_and(f64::is_finite), "{task} {name}: {r}");
        }
    }
}

#[test]
fn depth_tasks_name_bad_files() {
    let env = Env::new();
    setup(&env, &["NYUDepth", "THORDepth"], 1);
    // A depth map of another size: the same fixture at 32 px.
    let small = Env::new();
    small.fixture("NYUDepth", 2, 1, 1, 32);
    fs::copy(
        small.path("data/nyu/test/depths/00000.tiff"),
        env.path("data/nyu/test/depths/00001.tiff"),
    )
    .unwrap();
    // A missing depth map.
    fs::remove_file(env.path("data/thor_depth_prediction/test/scene_01/00001_depth.jpg")).unwrap();
    // Some files are found bad when the split is opened (the survey), others only when read:
    // --keep-going shows both.
    let out = env.run_with(&["--keep-going"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("NYUDepth: data/nyu/test/depths/00001.tiff is 32x32 but its image data/nyu/test/images/00001.png is 65x65"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("THORDepth: image data/thor_depth_prediction/test/scene_01/00001_rgb.jpg has no depth map"),
        "{}",
        out.stderr
    );
}
