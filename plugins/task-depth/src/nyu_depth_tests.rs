//! Unit tests of `NYUDepth` (layout, TIFF decoding, masking, errors).
#![allow(clippy::unwrap_used)]
use super::*;
use tch::Kind;
use virb_plugin_api::SampleContext;

fn fixture(dir: &Path) {
    let request = FixtureRequest {
        data_root: dir.display().to_string().into(),
        classes: 2,
        train_per_class: 2,
        test_per_class: 1,
        image_size: 32,
        seed: 5,
        options_json: "{}".into(),
    };
    NyuDepth.write_fixture(request).into_result().unwrap();
}

fn open(dir: &Path, split: Split, size: u32, options: &str) -> Result<DatasetBox, PluginError> {
    NyuDepth
        .open(DatasetRequest {
            data_root: dir.display().to_string().into(),
            split_ne: split.to_ne(),
            image_size: size,
            options_json: options.into(),
        })
        .into_result()
}

#[test]
fn reads_the_layout_with_missing_depth_and_nan_masked() {
    let tmp = tempfile::tempdir().unwrap();
    fixture(tmp.path());
    let ds = open(tmp.path(), Split::Train, 32, "{}").unwrap();
    assert_eq!(ds.meta().into_result().unwrap().len, 4);
    let s = ds.get(0, SampleContext::PLAIN).into_result().unwrap();
    let (input, t) = (s.input.into_tch(), s.target.into_tch());
    assert_eq!(input.size(), [3, 32, 32]);
    assert_eq!(t.size(), [1, 32, 32]);
    // Train file 0 has one NaN pixel, kept as NaN at the same resolution.
    assert_eq!(t.isnan().sum(Kind::Int64).int64_value(&[]), 1);
    // A missing block of (32/5)^2 = 36 pixels (the NaN may sit inside it).
    let zeros = t.eq(0.0).sum(Kind::Int64).int64_value(&[]);
    assert!((35..=36).contains(&zeros), "{zeros}");
    let valid = t.masked_select(&t.gt(0.0));
    let (lo, hi) = (valid.min().double_value(&[]), valid.max().double_value(&[]));
    assert!(
        (0.49..0.6).contains(&lo) && (4.9..=5.01).contains(&hi),
        "{lo} {hi}"
    );
    // Downscaled, the NaN marks the pixels under its filter and the block stays missing.
    let half = open(tmp.path(), Split::Train, 16, "{}").unwrap();
    let t = half
        .get(0, SampleContext::PLAIN)
        .into_result()
        .unwrap()
        .target
        .into_tch();
    let nan = t.isnan().sum(Kind::Int64).int64_value(&[]);
    assert!((1..=9).contains(&nan), "{nan}");
    assert!(t.eq(0.0).sum(Kind::Int64).int64_value(&[]) >= 4);
    let finite = t.masked_select(&t.isfinite().logical_and(&t.gt(0.0)));
    assert!(
        finite.min().double_value(&[]) >= 0.49,
        "missing depth smeared into valid pixels"
    );
    assert_eq!(
        open(tmp.path(), Split::Test, 32, "{}")
            .unwrap()
            .meta()
            .into_result()
            .unwrap()
            .len,
        2
    );
}

#[test]
fn integer_tiffs_are_scaled_and_grey_images_converted() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("d.tiff");
    fixture::write_u16_tiff(&path, 2, 1, &[1500, 0]).unwrap();
    assert_eq!(load_tiff(&path, 0.001).unwrap().values, [1.5, 0.0]);
    let path = tmp.path().join("f.tiff");
    fixture::write_float_tiff(&path, 2, 1, &[2.25, f32::NAN]).unwrap();
    let map = load_tiff(&path, 0.001).unwrap();
    assert_eq!(map.values[0], 2.25);
    assert!(map.values[1].is_nan());
    assert_eq!(integer_scale("{}").unwrap(), 0.001);
    assert_eq!(
        integer_scale(r#"{"integer_depth_scale": 0.0002}"#).unwrap(),
        0.0002
    );
    let e = integer_scale(r#"{"integer_depth_scale": -1}"#).unwrap_err();
    assert!(
        e.message
            .as_str()
            .contains("integer_depth_scale must be a positive number"),
        "{}",
        e.message
    );
    // A grey PNG image (ViRB's loader broke on these) becomes RGB.
    fixture(tmp.path());
    let image = tmp.path().join("nyu/train/images/00001.png");
    ::image::GrayImage::from_pixel(32, 32, ::image::Luma([90]))
        .save(&image)
        .unwrap();
    let ds = open(tmp.path(), Split::Train, 32, "{}").unwrap();
    assert_eq!(
        ds.get(1, SampleContext::PLAIN)
            .into_result()
            .unwrap()
            .input
            .into_tch()
            .size(),
        [3, 32, 32]
    );
}

#[test]
fn names_missing_mismatched_and_unreadable_files() {
    let tmp = tempfile::tempdir().unwrap();
    fixture(tmp.path());
    let depths = tmp.path().join("nyu/train/depths");
    std::fs::remove_file(depths.join("00003.tiff")).unwrap();
    let e = open(tmp.path(), Split::Train, 32, "{}").err().unwrap();
    assert!(e.message.as_str().ends_with("images/00003.png has no depth map (NYU pairs images/<stem>.png with depths/<stem>.tiff)"), "{}", e.message);
    fixture::write_float_tiff(&depths.join("00003.tiff"), 20, 32, &[1.0; 640]).unwrap();
    let ds = open(tmp.path(), Split::Train, 32, "{}").unwrap();
    let e = ds.get(3, SampleContext::PLAIN).into_result().err().unwrap();
    assert!(
        e.message
            .as_str()
            .contains("depths/00003.tiff is 20x32 but its image"),
        "{}",
        e.message
    );
    assert!(
        e.message.as_str().contains("images/00003.png is 32x32"),
        "{}",
        e.message
    );
    std::fs::write(depths.join("00003.tiff"), b"II*\0garbage").unwrap();
    let e = ds.get(3, SampleContext::PLAIN).into_result().err().unwrap();
    assert!(
        e.message.as_str().contains("cannot decode depth map"),
        "{}",
        e.message
    );
    std::fs::write(depths.join("00009.tif"), b"").unwrap();
    let e = open(tmp.path(), Split::Train, 32, "{}").err().unwrap();
    assert!(
        e.message.as_str().contains("depth map")
            && e.message.as_str().contains("00009.tif has no image"),
        "{}",
        e.message
    );
    let e = open(
        tmp.path(),
        Split::Test,
        32,
        r#"{"integer_depth_scale": "mm"}"#,
    )
    .err()
    .unwrap();
    assert!(
        e.message.as_str().contains("integer_depth_scale"),
        "{}",
        e.message
    );
}
