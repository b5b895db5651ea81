//! `THORDepth`: per-pixel depth of AI2-THOR views.
//!
//! Layout: `thor_depth_prediction/{train,test}/<dir>/<stem>rgb.jpg` with its depth map
//! `<stem>depth.jpg` beside it. Files are paired by `<dir>/<stem>` (ViRB sorted the two lists
//! separately and paired them by position); an rgb without its depth, or a depth without its rgb,
//! is an error naming the file.
//!
//! Target (ViRB's): the depth JPEG as 8-bit grey (PIL's `convert("L")`), resized to the input
//! size with PIL's antialiased bilinear filter (8-bit result, as PIL's `L` resize), then
//! (x/255 − 0.5)/0.25, a `[1, S, S]` map in [−2, 2]. Every finite pixel is trained on and
//! scored. Image: resized, normalised; training reads add ColorJitter + RandomGrayscale (image
//! only).
use crate::{
    augment,
    data::{self, DenseDataset, Pair},
    fixture,
    head::{task_info, PixelHead, Scoring, Validity},
};
use std::path::{Path, PathBuf};
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RString},
    guard, DatasetBox, DatasetRequest, FixtureRequest, HeadBox, HeadRequest, PluginError, Split,
    Task, TaskInfo,
};
use virb_plugin_kit::draw;

/// The task.
pub struct ThorDepth;

const NAME: &str = "THORDepth";
const DIR: &str = "thor_depth_prediction";
const LAYOUT: &str =
    "thor_depth_prediction/{train,test}/<dir>/<stem>rgb.jpg + <stem>depth.jpg (paired by <dir>/<stem>)";
const RULE: &str = "THOR pairs <dir>/<stem>rgb.jpg with <dir>/<stem>depth.jpg";
const SCORING: Scoring = Scoring::Thor;

/// `(key, path)` of the files of `split` whose name ends with `suffix`, over every `<dir>`.
fn listed(root: &Path, split: Split, suffix: &str) -> Result<Vec<(String, PathBuf)>, PluginError> {
    let split_dir = root.join(DIR).join(split.as_str());
    if !split_dir.is_dir() {
        return Err(data::missing(NAME, &split_dir, LAYOUT, root));
    }
    let mut out = Vec::new();
    for dir in data::subdirs(&split_dir)? {
        let dir_name = data::file_name(&dir);
        for file in data::files(&dir)? {
            let name = data::file_name(&file);
            if let Some(stem) = name.strip_suffix(suffix) {
                out.push((format!("{dir_name}/{stem}"), file));
            }
        }
    }
    Ok(out)
}

/// The pairs of a split, sorted by `<dir>/<stem>`.
pub fn pairs(root: &Path, split: Split) -> Result<Vec<Pair>, PluginError> {
    let images = listed(root, split, "rgb.jpg")?;
    let depths = listed(root, split, "depth.jpg")?;
    data::pair_by_key(NAME, images, depths, "depth map", RULE)
}

/// ViRB's target from 8-bit grey values: (x/255 − 0.5)/0.25.
pub fn normalise(grey: u8) -> f32 {
    (grey as f32 / 255.0 - 0.5) / 0.25
}

/// Reads one sample.
pub fn load(
    pair: &Pair,
    ctx: &data::LoadContext,
) -> Result<(tch::Tensor, tch::Tensor), PluginError> {
    let input = data::load_image(&pair.image, ctx.image_size, ctx.augment, true)?;
    let path = pair.target.as_deref().ok_or_else(|| {
        PluginError::invalid_input(format!("{NAME}: {} has no depth map", pair.image.display()))
    })?;
    let decoded = ::image::ImageReader::open(path)
        .map_err(|e| {
            PluginError::data(format!(
                "{NAME}: cannot open depth map {}: {e}",
                path.display()
            ))
        })?
        .with_guessed_format()
        .map_err(|e| {
            PluginError::data(format!(
                "{NAME}: cannot read depth map {}: {e}",
                path.display()
            ))
        })?
        .decode()
        .map_err(|e| {
            PluginError::data(format!(
                "{NAME}: cannot decode depth map {}: {e}",
                path.display()
            ))
            .with_help("the file is corrupt or not an image; replace or remove its pair")
        })?;
    let (w, h) = (decoded.width(), decoded.height());
    // PIL's `convert("L")`: a grey file as it is, a colour one by ITU-R 601 luma.
    let grey = match decoded {
        ::image::DynamicImage::ImageLuma8(g) => g.into_raw(),
        other => other
            .into_rgb8()
            .chunks_exact(3)
            .map(augment::luma)
            .collect(),
    };
    data::check_same_size(NAME, &pair.image, (input.width, input.height), path, (w, h))?;
    let resized = data::resize_grey_u8(w, h, grey, ctx.image_size)?;
    let values: Vec<f32> = resized.into_iter().map(normalise).collect();
    let s = ctx.image_size as i64;
    Ok((
        input.tensor,
        tch::Tensor::from_slice(&values).f_view([1, s, s])?,
    ))
}

impl Task for ThorDepth {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| Ok(task_info(NAME, DIR, LAYOUT, SCORING, Vec::new())))
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            let root = Path::new(request.data_root.as_str());
            let split = request.split()?;
            DenseDataset {
                task: NAME,
                items: pairs(root, split)?,
                image_size: request.image_size,
                outputs: 1,
                source: root.join(DIR).join(split.as_str()).display().to_string(),
                load: Box::new(load),
            }
            .boxed()
        })
    }

    fn build_head(&self, request: HeadRequest) -> RResult<HeadBox, PluginError> {
        guard(|| PixelHead::build(&request, Validity::Finite, SCORING))
    }

    fn write_fixture(&self, request: FixtureRequest) -> RResult<RString, PluginError> {
        guard(|| {
            let root = Path::new(request.data_root.as_str());
            let (folders, per_split) = fixture::counts(&request, NAME)?;
            let size = request.image_size.max(16);
            let mut total = 0;
            for (split, n) in per_split {
                for i in 0..n {
                    let mut rng = fixture::sample_rng(request.seed, split, i);
                    let scene = fixture::ramp_scene(size, &mut rng);
                    let base = root
                        .join(DIR)
                        .join(split.as_str())
                        .join(format!("scene_{:02}", i % folders));
                    draw::write_jpeg(
                        &base.join(format!("{i:05}_rgb.jpg")),
                        size,
                        size,
                        &scene.rgb,
                    )?;
                    let grey: Vec<u8> =
                        scene.ramp.iter().map(|r| (r * 255.0 + 0.5) as u8).collect();
                    fixture::write_grey_jpeg(&base.join(format!("{i:05}_depth.jpg")), size, &grey)?;
                    total += 1;
                }
            }
            Ok(RString::from(format!(
                "{NAME}: {total} rgb/depth pairs ({size} px, depth = a ramp the image's brightness follows) in {}",
                root.join(DIR).display()
            )))
        })
    }
}

virb_plugin_kit::register_task!(ThorDepth);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use virb_plugin_api::SampleContext;

    fn fixture(dir: &Path) {
        let request = FixtureRequest {
            data_root: dir.display().to_string().into(),
            classes: 2,
            train_per_class: 2,
            test_per_class: 1,
            image_size: 32,
            seed: 3,
            options_json: "{}".into(),
        };
        ThorDepth.write_fixture(request).into_result().unwrap();
    }

    fn open(dir: &Path, split: Split) -> Result<DatasetBox, PluginError> {
        ThorDepth
            .open(DatasetRequest {
                data_root: dir.display().to_string().into(),
                split_ne: split.to_ne(),
                image_size: 32,
                options_json: "{}".into(),
            })
            .into_result()
    }

    #[test]
    fn reads_the_layout_and_normalises_as_virb() {
        let tmp = tempfile::tempdir().unwrap();
        fixture(tmp.path());
        let ds = open(tmp.path(), Split::Train).unwrap();
        assert_eq!(ds.meta().into_result().unwrap().len, 4);
        let s = ds.get(0, SampleContext::PLAIN).into_result().unwrap();
        let (input, target) = (s.input.into_tch(), s.target.into_tch());
        assert_eq!(input.size(), [3, 32, 32]);
        assert_eq!(target.size(), [1, 32, 32]);
        let (lo, hi) = (
            target.min().double_value(&[]),
            target.max().double_value(&[]),
        );
        assert!(lo >= -2.0 && hi <= 2.0 && hi - lo > 3.0, "{lo} {hi}");
        assert_eq!(normalise(0), -2.0);
        assert_eq!(normalise(255), 2.0);
        assert!((normalise(128) - 0.007_843).abs() < 1e-5);
        // Augmentation changes the image, never the target.
        let ctx = SampleContext {
            augment: true,
            epoch: 1,
            seed: 9,
        };
        let a = ds.get(0, ctx).into_result().unwrap();
        assert!(a.target.into_tch().equal(&target));
        assert_eq!(
            open(tmp.path(), Split::Test)
                .unwrap()
                .meta()
                .into_result()
                .unwrap()
                .len,
            2
        );
    }

    #[test]
    fn names_an_unpaired_file_and_a_size_mismatch() {
        let tmp = tempfile::tempdir().unwrap();
        fixture(tmp.path());
        let scene = tmp.path().join(DIR).join("train/scene_00");
        std::fs::remove_file(scene.join("00002_depth.jpg")).unwrap();
        let e = open(tmp.path(), Split::Train).err().unwrap();
        assert!(
            e.message
                .as_str()
                .contains("00002_rgb.jpg has no depth map"),
            "{}",
            e.message
        );
        fixture::write_grey_jpeg(&scene.join("00002_depth.jpg"), 16, &[0; 256]).unwrap();
        let ds = open(tmp.path(), Split::Train).unwrap();
        // Pairs are sorted by key: scene_00/00000, scene_00/00002, scene_01/...
        let e = ds.get(1, SampleContext::PLAIN).into_result().err().unwrap();
        assert!(
            e.message
                .as_str()
                .contains("00002_depth.jpg is 16x16 but its image"),
            "{}",
            e.message
        );
        assert!(
            e.message.as_str().contains("00002_rgb.jpg is 32x32"),
            "{}",
            e.message
        );
        std::fs::write(scene.join("00002_depth.jpg"), b"not a jpeg").unwrap();
        let e = open(tmp.path(), Split::Train)
            .unwrap()
            .get(1, SampleContext::PLAIN)
            .into_result()
            .err()
            .unwrap();
        assert!(
            e.message.as_str().contains("cannot decode depth map"),
            "{}",
            e.message
        );
        std::fs::remove_dir_all(tmp.path().join(DIR).join("test")).unwrap();
        let e = open(tmp.path(), Split::Test).err().unwrap();
        assert!(
            e.message
                .as_str()
                .ends_with("thor_depth_prediction/test not found"),
            "{}",
            e.message
        );
    }
}
