//! Segmentation tasks (Pets-Detection, NYUWalkable, CityscapesSemanticSegmentation, EgoHands):
//! each learns its generated fixture far better than the best constant prediction, and not when
//! the training masks are moved to other images; bad files are named.
//!
//! The baseline is computed here from the fixture's test masks, as the task scores them (one
//! confusion matrix over the split, ignored pixels excluded): for a binary task the IoU of
//! predicting the positive class everywhere (predicting background everywhere scores 0); for a
//! multi-class task the best mIoU of predicting one class everywhere.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};
use virb_tests::{experiment_list, read_json, resnet18_weights, weights, Env, IMAGE_SIZE};

/// How a task's fixture is written and trained.
struct Case {
    task: &'static str,
    /// `--classes`, `--train-per-class`, `--test-per-class`.
    fixture: [u32; 3],
    epochs: u32,
    batch: u32,
    /// `pre_encode: false` (live encoding with the training augmentation).
    live: bool,
    /// `task_options`, as a YAML flow mapping.
    options: &'static str,
    headline: &'static str,
    /// The encoder: ResNet-18 for the PixelWise head (~6 M parameters on its pyramid, ~100 M on
    /// ResNet-50's); ResNet-50 for DeepLab, whose `layer4` replica needs bottleneck blocks.
    resnet18: bool,
    /// Classes in the per-class IoU of `test_details`.
    classes: usize,
}

const PETS: Case = Case {
    task: "Pets-Detection",
    fixture: [2, 6, 4],
    epochs: 6,
    batch: 4,
    live: false,
    options: "{}",
    headline: "iou",
    resnet18: true,
    classes: 2,
};
const NYU: Case = Case {
    task: "NYUWalkable",
    fixture: [2, 6, 4],
    epochs: 6,
    batch: 4,
    live: false,
    options: "{}",
    headline: "iou",
    resnet18: true,
    classes: 2,
};
const CITYSCAPES: Case = Case {
    task: "CityscapesSemanticSegmentation",
    fixture: [3, 4, 3],
    epochs: 6,
    batch: 4,
    live: true,
    // ViRB's BatchNorm momentum (0.0003) leaves the DeepLab head's running statistics near their
    // start after a few dozen steps, and the test split is scored in eval mode.
    options: "{bn_momentum: 0.3}",
    headline: "miou",
    resnet18: false,
    classes: 19,
};
const EGOHANDS: Case = Case {
    task: "EgoHands",
    // 18 training frames (in half of the training videos), 8 test frames.
    fixture: [2, 9, 4],
    epochs: 3,
    batch: 3,
    live: false,
    // See CITYSCAPES.
    options: "{bn_momentum: 0.3}",
    headline: "miou",
    resnet18: false,
    classes: 4,
};

fn setup(env: &Env, case: &Case) {
    let [classes, train, test] = case.fixture;
    env.fixture(case.task, classes, train, test, IMAGE_SIZE);
    let experiments = if case.resnet18 {
        experiment_list(resnet18_weights(), "resnet18")
    } else {
        experiment_list(weights(), "resnet50")
    };
    env.write("experiments.yaml", &experiments);
    env.write(
        "virb.yaml",
        &format!(
            "{t}:\n  task: {t}\n  training_configs:\n    adam:\n      optimizer: adam\n      lr: 0.001\n  num_epochs: {e}\n  batch_size: {b}\n  image_size: {IMAGE_SIZE}\n  pre_encode: {p}\n  task_options: {o}\n",
            t = case.task,
            e = case.epochs,
            b = case.batch,
            p = !case.live,
            o = case.options
        ),
    );
}

/// Trains and returns the results record.
fn train(env: &Env, case: &Case) -> serde_json::Value {
    // The PixelWise head is ~100M parameters: a checkpoint per epoch would dominate.
    let out = env.run_with(&["--checkpoint-every", "100000"]);
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    read_json(&env.path(&format!("out/probe/{}-adam/results.json", case.task)))
}

/// The first channel of every pixel of a mask file.
fn mask(path: &Path) -> (u32, u32, Vec<u8>) {
    let img = virb_plugin_kit::image::load_rgb(path).unwrap();
    let values = img.pixels.chunks_exact(3).map(|p| p[0]).collect();
    (img.width, img.height, values)
}

/// Every file below `dir` whose path ends with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// EgoHands' test videos (sorted-folder indices) and the unused validation ones.
const EGO_TEST: [usize; 8] = [0, 10, 12, 19, 30, 33, 37, 43];
const EGO_VAL: [usize; 4] = [6, 13, 27, 46];

/// The mask files of a split (`train` or `test`) of a case's fixture under `data`.
fn mask_files(data: &Path, case: &Case, split: &str) -> Vec<PathBuf> {
    match case.task {
        "Pets-Detection" => {
            let stems: Vec<String> = files(&data.join("pets").join(split), ".jpg")
                .iter()
                .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
                .collect();
            stems
                .iter()
                .map(|s| data.join(format!("pets/annotations/trimaps/{s}.png")))
                .collect()
        }
        "NYUWalkable" => files(&data.join(format!("nyu/{split}/walkable")), ".png"),
        "CityscapesSemanticSegmentation" => {
            let dir = if split == "train" { "train" } else { "val" };
            files(
                &data.join(format!("cityscapes/gtFine/{dir}")),
                "_gtFine_labelIds.png",
            )
        }
        _ => {
            let mut videos: Vec<PathBuf> = fs::read_dir(data.join("egohands/labels"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            videos.sort();
            videos
                .iter()
                .enumerate()
                .filter(|(i, _)| match split {
                    "test" => EGO_TEST.contains(i),
                    _ => !EGO_TEST.contains(i) && !EGO_VAL.contains(i),
                })
                .flat_map(|(_, v)| files(v, ".png"))
                .collect()
        }
    }
}

/// The task's class of a stored mask value; `None` where the pixel is ignored.
fn class_of(task: &str, v: u8) -> Option<u8> {
    match task {
        "Pets-Detection" => match v {
            1 => Some(1),
            2 => Some(0),
            _ => None,
        },
        "NYUWalkable" => Some(u8::from(v != 0)),
        // The fixture's label ids: road, car, person, building (others are void).
        "CityscapesSemanticSegmentation" => match v {
            7 => Some(1),
            26 => Some(14),
            24 => Some(12),
            11 => Some(3),
            _ => None,
        },
        _ => Some(v),
    }
}

/// The best constant prediction's headline metric on the test masks.
fn baseline(env: &Env, case: &Case) -> f64 {
    let mut counts: BTreeMap<u8, u64> = BTreeMap::new();
    for f in mask_files(&env.path("data"), case, "test") {
        for v in mask(&f).2 {
            if let Some(c) = class_of(case.task, v) {
                *counts.entry(c).or_default() += 1;
            }
        }
    }
    let total: u64 = counts.values().sum();
    let share = |c: u8| counts.get(&c).copied().unwrap_or(0) as f64 / total as f64;
    match case.task {
        // All positive: IoU = positive pixels / all pixels.
        "Pets-Detection" | "NYUWalkable" => share(1),
        _ => {
            // Scored classes present in the ground truth; predicting class c everywhere gives
            // IoU(c) = share(c) and 0 for the others.
            let scored: Vec<u8> = counts.keys().copied().filter(|&c| c != 0).collect();
            let best = scored.iter().map(|&c| share(c)).fold(0.0, f64::max);
            best / scored.len() as f64
        }
    }
}

/// Moves every training mask to another training image of the same size (a cyclic shift within
/// each size).
fn shuffle_masks(env: &Env, case: &Case) {
    let mut by_size: BTreeMap<(u32, u32), Vec<PathBuf>> = BTreeMap::new();
    for f in mask_files(&env.path("data"), case, "train") {
        let (w, h, _) = mask(&f);
        by_size.entry((w, h)).or_default().push(f);
    }
    for group in by_size.values() {
        let contents: Vec<Vec<u8>> = group.iter().map(|p| fs::read(p).unwrap()).collect();
        for (i, p) in group.iter().enumerate() {
            fs::write(p, &contents[(i + 1) % group.len()]).unwrap();
        }
    }
}

/// Trains on the fixture, then on the fixture with shuffled training masks: the first beats the
/// baseline by a wide margin, the second does not.
fn learns_and_not_shuffled(case: &Case) {
    let env = Env::new();
    setup(&env, case);
    let base = baseline(&env, case);
    let r = train(&env, case);
    let [_, _, test] = case.fixture;
    assert_eq!(r["test_size"], case.fixture[0] * test, "{}: {r}", case.task);
    let learned = r["test_metrics"][case.headline].as_f64().unwrap();
    assert!(
        learned >= base + 0.3,
        "{}: test {} {learned}, constant-prediction baseline {base}",
        case.task,
        case.headline
    );
    let details = r["test_details"]["per_class_iou"].as_object().unwrap();
    assert_eq!(details.len(), case.classes, "{}: {r}", case.task);
    for v in r["test_metrics"].as_object().unwrap().values() {
        assert!(
            v.as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)),
            "{}: {r}",
            case.task
        );
    }
    let shuffled = Env::new();
    setup(&shuffled, case);
    shuffle_masks(&shuffled, case);
    let r = train(&shuffled, case);
    let value = r["test_metrics"][case.headline].as_f64().unwrap();
    eprintln!(
        "{}: test {} {learned}, with shuffled masks {value}, baseline {base}",
        case.task, case.headline
    );
    assert!(
        value <= base + 0.15,
        "{}: test {} {value} with shuffled training masks, baseline {base} (learned {learned})",
        case.task,
        case.headline
    );
}

#[test]
fn pets_detection_learns_the_pet_not_shuffled_masks() {
    learns_and_not_shuffled(&PETS);
}

#[test]
fn nyu_walkable_learns_the_floor_not_shuffled_masks() {
    learns_and_not_shuffled(&NYU);
}

/// Cityscapes trains live, with its augmentation (ViRB's `pre_encode: false`).
#[test]
fn cityscapes_learns_its_classes_not_shuffled_masks() {
    learns_and_not_shuffled(&CITYSCAPES);
}

/// EgoHands trains from cached pyramids, with its class weights.
#[test]
fn egohands_learns_the_hands_not_shuffled_masks() {
    learns_and_not_shuffled(&EGOHANDS);
}

#[test]
fn segmentation_tasks_name_bad_files() {
    let env = Env::new();
    env.fixture("Pets-Detection", 2, 2, 2, 32);
    env.fixture("NYUWalkable", 2, 2, 1, 32);
    env.fixture("CityscapesSemanticSegmentation", 2, 1, 1, 32);
    // A trimap of another size than its image.
    let small = Env::new();
    small.fixture("NYUWalkable", 2, 1, 1, 48);
    fs::copy(
        small.path("data/nyu/test/walkable/00000.png"),
        env.path("data/nyu/test/walkable/00001.png"),
    )
    .unwrap();
    // A missing trimap.
    fs::remove_file(env.path("data/pets/annotations/trimaps/Bengal_1001.png")).unwrap();
    // A label id that Cityscapes does not have.
    let label = env
        .path("data/cityscapes/gtFine/val/frankfurt/frankfurt_000000_000000_gtFine_labelIds.png");
    let (w, h, mut values) = mask(&label);
    values[5] = 77;
    let img: Vec<u8> = values.iter().flat_map(|v| [*v, *v, *v]).collect();
    virb_plugin_kit::draw::write_png(&label, w, h, &img).unwrap();
    env.write(
        "experiments.yaml",
        &format!("probe: '{}'\n", weights().display()),
    );
    let job = |t: &str| {
        format!("{t}:\n  task: {t}\n  training_configs:\n    a: {{optimizer: adam, lr: 0.001}}\n  num_epochs: 1\n  batch_size: 2\n  image_size: 32\n")
    };
    env.write(
        "virb.yaml",
        &(job("Pets-Detection") + &job("NYUWalkable") + &job("CityscapesSemanticSegmentation")),
    );
    // Some files are found bad when the split is opened (the survey), others only when read:
    // --keep-going shows both.
    let out = env.run_with(&["--keep-going"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    for want in [
        "NYUWalkable: image data/nyu/test/images/00001.png is 42x32 but its mask data/nyu/test/walkable/00001.png is 64x48",
        "Pets-Detection: image data/pets/test/Bengal/Bengal_1001.jpg has no trimap (expected data/pets/annotations/trimaps/Bengal_1001.png)",
        "CityscapesSemanticSegmentation: mask data/cityscapes/gtFine/val/frankfurt/frankfurt_000000_000000_gtFine_labelIds.png has value 77",
    ] {
        assert!(out.stderr.contains(want), "missing `{want}` in:\n{}", out.stderr);
    }
    assert!(env.results().is_empty());
}
