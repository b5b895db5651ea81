//! The task through its plugin interface, on a fixture written to a temporary folder: layout,
//! split, sample shapes and values, training crops, bad input.
#![allow(clippy::unwrap_used)]
use crate::{fixture, kitti::Kitti};
use std::path::{Path, PathBuf};
use tch::Tensor as T;
use virb_plugin_api::{
    DatasetBox, DatasetRequest, FixtureRequest, PluginError, SampleContext, Split, Task,
};

/// A temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "virb-flow-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const SIZE: u32 = 32;

/// 4 shifts x 5 samples: 20 pairs, 18 train and 2 test.
fn fixture(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    let summary = fixture::write(&FixtureRequest {
        data_root: dir.0.to_string_lossy().as_ref().into(),
        classes: 4,
        train_per_class: 3,
        test_per_class: 2,
        image_size: SIZE,
        seed: 7,
        options_json: "{}".into(),
    })
    .unwrap();
    assert!(summary.contains("20 frame pairs"), "{summary}");
    dir
}

fn open(root: &Path, split: Split, options: &str) -> Result<DatasetBox, PluginError> {
    Kitti
        .open(DatasetRequest {
            data_root: root.to_string_lossy().as_ref().into(),
            split_ne: split.to_ne(),
            image_size: 24,
            options_json: options.into(),
        })
        .into_result()
}

fn get(ds: &DatasetBox, i: u64, context: SampleContext) -> (T, T) {
    let s = ds.get(i, context).into_result().unwrap();
    (s.input.into_tch(), s.target.into_tch())
}

fn training(root: &Path) -> PathBuf {
    root.join("KITTI/training")
}

#[test]
fn flow_task_is_registered_with_its_info() {
    let tasks = virb_plugin_kit::registry::registered_tasks();
    let info = tasks[0].info().into_result().unwrap();
    assert_eq!(info.name.as_str(), "KITTI");
    assert_eq!(info.data_dir.as_str(), "KITTI");
    assert_eq!(info.frames, 2);
    assert!(info.pixel_wise && info.encodable && !info.wants_encoder_state);
    let outputs: Vec<&str> = info.required_outputs.iter().map(|o| o.as_str()).collect();
    assert_eq!(outputs, ["conv", "block1", "block2", "block3", "block4"]);
    let metrics: Vec<(&str, bool)> = info
        .metrics
        .iter()
        .map(|m| (m.name.as_str(), m.higher_is_better))
        .collect();
    assert_eq!(metrics, [("epe", false), ("fl_all", false)]);
    assert_eq!(info.options[0].name.as_str(), "target");
}

#[test]
fn flow_split_samples_and_targets_follow_the_layout() {
    let dir = fixture("layout");
    let train = open(&dir.0, Split::Train, "{}").unwrap();
    let test = open(&dir.0, Split::Test, "{}").unwrap();
    let (tm, sm) = (
        train.meta().into_result().unwrap(),
        test.meta().into_result().unwrap(),
    );
    assert_eq!((tm.len, sm.len), (18, 2));
    assert_eq!(tm.num_outputs, 2);
    // Sample 2 of every 5 is one row taller; the test split holds samples 18 and 19.
    let (input, target) = get(&train, 2, SampleContext::PLAIN);
    assert_eq!(input.size(), [2, 3, 33, 32]);
    assert_eq!(target.size(), [3, 33, 32]);
    let (input, target) = get(&test, 0, SampleContext::PLAIN);
    assert_eq!(
        (input.size(), target.size()),
        (vec![2, 3, 32, 32], vec![3, 32, 32])
    );
    // Sample 18 has shift 18 % 4 = 2: (-2, 0) at 32 px; valid pixels carry it exactly.
    let valid = target.get(2).gt(0.5);
    let n = valid.sum(tch::Kind::Int64).int64_value(&[]);
    assert!(n > 500 && n < 1024, "{n} valid pixels");
    assert_eq!(
        target
            .get(0)
            .masked_select(&valid)
            .mean(tch::Kind::Double)
            .double_value(&[]),
        -2.0
    );
    assert_eq!(
        target
            .get(1)
            .masked_select(&valid)
            .abs()
            .max()
            .double_value(&[]),
        0.0
    );
    // Frame B is frame A moved by the shift, B(x - 2) = A(x), and tinted (40%): per channel,
    // B - 0.6 A is constant (up to rounding to 8 bits) where the frames align, and not elsewhere.
    let spread = |a: &T, b: &T| -> f64 {
        let r = b - a * 0.6;
        (0..3)
            .map(|c| {
                let r = r.get(c);
                r.max().double_value(&[]) - r.min().double_value(&[])
            })
            .fold(0.0, f64::max)
    };
    let (a, b) = (input.get(0), input.get(1));
    let aligned = spread(&a.narrow(2, 2, 30), &b.narrow(2, 0, 30));
    let unaligned = spread(&a.narrow(2, 0, 30), &b.narrow(2, 0, 30));
    assert!(aligned < 0.05 && unaligned > 0.2, "{aligned} {unaligned}");
    // Inputs are normalised.
    let mean = input.mean(tch::Kind::Double).double_value(&[]);
    assert!(mean.abs() < 2.0, "{mean}");
}

#[test]
fn flow_training_crops_frames_and_flow_identically_and_reproducibly() {
    let dir = fixture("crop");
    let train = open(&dir.0, Split::Train, "{}").unwrap();
    let (full_in, full_t) = get(&train, 2, SampleContext::PLAIN);
    let ctx = |seed| SampleContext {
        augment: true,
        epoch: 1,
        seed,
    };
    let mut offsets = std::collections::BTreeSet::new();
    for seed in 0..12 {
        let (input, target) = get(&train, 2, ctx(seed));
        assert_eq!(input.size(), [2, 3, 24, 24]);
        assert_eq!(target.size(), [3, 24, 24]);
        let (again, _) = get(&train, 2, ctx(seed));
        assert!(
            input.equal(&again),
            "the same (seed, epoch, index) gives the same crop"
        );
        // Find the crop's offset in the full frame; the flow is cut at the same place.
        let found = (0..=9)
            .flat_map(|y| (0..=8).map(move |x| (y, x)))
            .find(|&(y, x)| full_in.narrow(2, y, 24).narrow(3, x, 24).equal(&input));
        let (y, x) = found.expect("the crop is a window of the full frames");
        assert!(full_t.narrow(1, y, 24).narrow(2, x, 24).equal(&target));
        offsets.insert((y, x));
    }
    assert!(offsets.len() > 3, "crops vary with the seed: {offsets:?}");
}

#[test]
fn flow_viz_target_is_the_grey_level_of_the_visualisation() {
    let dir = fixture("viz");
    let train = open(&dir.0, Split::Train, r#"{"target":"viz"}"#).unwrap();
    assert_eq!(train.meta().into_result().unwrap().num_outputs, 1);
    let (input, target) = get(&train, 0, SampleContext::PLAIN);
    assert_eq!(
        (input.size(), target.size()),
        (vec![2, 3, 32, 32], vec![1, 32, 32])
    );
    let max = target.max().double_value(&[]);
    assert!(max > 0.0 && max <= 1.0, "{max}");
    // Invalid pixels are black: zero, which the loss and metric skip.
    assert!(target.eq(0.0).any().int64_value(&[]) == 1);
    let err = open(&dir.0, Split::Train, r#"{"target":"vizz"}"#)
        .err()
        .unwrap();
    assert!(err.to_string().contains("\"vizz\""), "{err}");
}

fn error(root: &Path) -> String {
    let err = match open(root, Split::Train, "{}") {
        Err(e) => e,
        Ok(ds) => ds.get(0, SampleContext::PLAIN).into_result().err().unwrap(),
    };
    err.to_string()
}

#[test]
fn flow_bad_input_names_the_file() {
    let dir = fixture("missing-b");
    let b = training(&dir.0).join("image_2/000003_11.png");
    std::fs::remove_file(&b).unwrap();
    let msg = error(&dir.0);
    assert!(
        msg.contains("second frame") && msg.contains(&b.display().to_string()),
        "{msg}"
    );

    let dir = fixture("missing-flow");
    let f = training(&dir.0).join("flow_occ/000005_10.png");
    std::fs::remove_file(&f).unwrap();
    let msg = error(&dir.0);
    assert!(msg.contains(&f.display().to_string()), "{msg}");
    // The viz target does not need flow_occ.
    assert!(open(&dir.0, Split::Train, r#"{"target":"viz"}"#).is_ok());

    let dir = fixture("eight-bit");
    let f = training(&dir.0).join("flow_occ/000001_10.png");
    virb_plugin_kit::draw::write_png(&f, SIZE, SIZE, &vec![128u8; (SIZE * SIZE * 3) as usize])
        .unwrap();
    let msg = error(&dir.0);
    assert!(
        msg.contains(&f.display().to_string()) && msg.contains("16-bit"),
        "{msg}"
    );

    let dir = fixture("size");
    let f = training(&dir.0).join("flow_occ/000004_10.png");
    let field = virb_plugin_kit::flow_png::FlowField {
        width: 20,
        height: 10,
        u: vec![0.0; 200],
        v: vec![0.0; 200],
        valid: vec![true; 200],
    };
    virb_plugin_kit::flow_png::write(&f, &field).unwrap();
    let msg = error(&dir.0);
    assert!(
        msg.contains(&f.display().to_string()) && msg.contains("20x10") && msg.contains("32x32"),
        "{msg}"
    );

    let empty = TempDir::new("empty");
    let msg = error(&empty.0);
    assert!(msg.contains("KITTI/training/image_2"), "{msg}");
}
