//! `NYUWalkable`: binary walkable-floor masks of NYU Depth v2 images, ViRB's PixelWise head with
//! one output, BCE-with-logits.
//!
//! Layout (the project's `nyu.zip`): `<data>/nyu/{train,test}/images/*.png` and
//! `<data>/nyu/{train,test}/walkable/*.png`, paired by file stem (ViRB paired sorted lists by
//! position); an unpaired file is an error naming it.
//!
//! Targets: every non-zero mask value is walkable (1, the positive class scored by `iou`), zero
//! is not (0); an RGB mask counts a pixel as walkable when any channel is non-zero. The mask is
//! resized to `image_size`² with nearest neighbour (ViRB used Pillow's default filter).
//!
//! Input: the image resized to `image_size`² (antialiased bilinear); in training, ColorJitter
//! then RandomGrayscale ([`crate::augment`]), drawn from `SampleContext::rng_seed(index)`.
use crate::binary::{binary_head, SquarePrep};
use crate::dense::{load_mask, map_mask, Mask};
use crate::fixture::{class_colour, Canvas};
use crate::head::task_info;
use crate::pairs::{files_ending, pair_by_key, strip_name, Pair, PairSet};
use std::path::Path;
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RString},
    guard, DatasetBox, DatasetRequest, FixtureRequest, HeadBox, HeadRequest, PluginError, Split,
    Task, TaskInfo,
};
use virb_plugin_kit::draw::Rng;

/// The task type name.
pub const NAME: &str = "NYUWalkable";
const DIR: &str = "nyu";
const LAYOUT: &str = "nyu/{train,test}/images/*.png + nyu/{train,test}/walkable/*.png";
/// `[negative, positive]` class names.
pub const CLASSES: [&str; 2] = ["not walkable", "walkable"];

/// The task.
pub struct NyuWalkable;

virb_plugin_kit::register_task!(NyuWalkable);

fn help(root: &Path) -> String {
    format!(
        "expected {LAYOUT} under {} (from ViRB's nyu.zip); or run `virb-host fixtures {NAME} {}`",
        root.display(),
        root.display()
    )
}

/// The image/mask pairs of a split.
pub fn read_split(root: &Path, split: Split) -> Result<Vec<Pair>, PluginError> {
    let help = help(root);
    let base = root.join(DIR).join(split.as_str());
    let (idir, mdir) = (base.join("images"), base.join("walkable"));
    pair_by_key(
        NAME,
        files_ending(&idir, ".png", &help)?,
        files_ending(&mdir, ".png", &help)?,
        |p| strip_name(p, ".png"),
        |p| strip_name(p, ".png"),
        |p| mdir.join(p.file_name().unwrap_or_default()),
        |p| idir.join(p.file_name().unwrap_or_default()),
    )
}

/// Reads a walkable mask: non-zero is walkable (1).
pub fn load_target(path: &Path) -> Result<Mask, PluginError> {
    let raw = load_mask(path, true)?;
    map_mask(NAME, path, raw, |v| Some(u8::from(v != 0)), "any value")
}

impl Task for NyuWalkable {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| Ok(task_info(NAME, DIR, LAYOUT, "iou", false)))
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            let split = request.split()?;
            let root = Path::new(request.data_root.as_str());
            PairSet {
                pairs: read_split(root, split)?,
                num_outputs: 1,
                source: root
                    .join(DIR)
                    .join(split.as_str())
                    .join("images")
                    .display()
                    .to_string(),
                prepare: SquarePrep {
                    task: NAME,
                    size: request.image_size,
                    target: load_target,
                },
            }
            .boxed(NAME, &help(root))
        })
    }

    fn build_head(&self, request: HeadRequest) -> RResult<HeadBox, PluginError> {
        guard(|| binary_head(&request, CLASSES))
    }

    /// `classes × per-class` images per split (NYU has no classes), `4s/3 × s` pixels: one or
    /// two floor patches (walkable, one colour) and furniture rectangles of `classes - 1` other
    /// colours, at random places on a textured wall; masks 0 / 255.
    fn write_fixture(&self, request: FixtureRequest) -> RResult<RString, PluginError> {
        guard(|| {
            let root = Path::new(request.data_root.as_str());
            let classes = request.classes_up_to(NAME, 8)?;
            let s = request.image_size.max(32);
            let (w, h) = (s * 4 / 3, s);
            let mut rng = Rng::new(request.seed);
            let mut total = 0;
            for (split, per_class) in request.per_split() {
                let base = root.join(DIR).join(split.as_str());
                for i in 0..classes * per_class {
                    let mut c = Canvas::background(w, h, 0, &mut rng);
                    for _ in 0..1 + i % 2 {
                        c.rect(class_colour(0, classes), 255, 0.25, 0.5, &mut rng);
                    }
                    for k in 1..classes {
                        c.rect(class_colour(k, classes), 0, 0.1, 0.25, &mut rng);
                    }
                    let name = format!("{i:05}.png");
                    c.save(
                        &base.join("images").join(&name),
                        &base.join("walkable").join(&name),
                    )?;
                    total += 1;
                }
            }
            Ok(RString::from(format!(
                "{NAME}: {total} images with walkable masks in {}",
                root.join(DIR).display()
            )))
        })
    }
}
