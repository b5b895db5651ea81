//! `Pets-Detection` (Pets segmentation): binary pet/background masks from the Oxford-IIIT Pets
//! trimaps, ViRB's PixelWise head with one output, BCE-with-logits.
//!
//! Layout: images `<data>/pets/{train,test}/<breed>/*.jpg` (as for the `Pets` classification
//! task) and trimaps `<data>/pets/annotations/trimaps/<image stem>.png` (from
//! `annotations.tar.gz`; Oxford coding 1 pet, 2 background, 3 boundary). A missing trimap is an
//! error naming it.
//!
//! Targets: **1 = pet** (the positive class scored by `iou`), 0 = background, and the boundary
//! band (3) is ignored (not trained on, not scored), as is standard for this data set. ViRB
//! scored background ∪ boundary as the positive class instead, and interpolated the trimap with
//! Pillow's default (bicubic) filter; here the trimap is resized with nearest neighbour.
//!
//! Input: the image resized to `image_size`² (antialiased bilinear); in training, ColorJitter
//! then RandomGrayscale ([`crate::augment`]), drawn from `SampleContext::rng_seed(index)`.
use crate::binary::{binary_head, SquarePrep};
use crate::dense::{load_mask, map_mask, Mask, IGNORE};
use crate::fixture::{class_colour, Canvas};
use crate::head::task_info;
use crate::pairs::{files_ending, subfolders, Pair, PairSet};
use std::path::Path;
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RString},
    guard, DatasetBox, DatasetRequest, FixtureRequest, HeadBox, HeadRequest, PluginError, Task,
    TaskInfo,
};
use virb_plugin_kit::draw::Rng;

/// The task type name.
pub const NAME: &str = "Pets-Detection";
const DIR: &str = "pets";
const LAYOUT: &str = "pets/{train,test}/<breed>/*.jpg + pets/annotations/trimaps/<image stem>.png";
/// `[negative, positive]` class names.
pub const CLASSES: [&str; 2] = ["background", "pet"];
const BREEDS: [&str; 8] = [
    "Abyssinian",
    "Bengal",
    "Birman",
    "Bombay",
    "British_Shorthair",
    "Egyptian_Mau",
    "Maine_Coon",
    "Persian",
];

/// The task.
pub struct PetsDetection;

virb_plugin_kit::register_task!(PetsDetection);

fn help(root: &Path) -> String {
    format!(
        "expected {LAYOUT} under {} (images.tar.gz sorted into breed folders, and annotations.tar.gz); or run `virb-host fixtures {NAME} {}`",
        root.display(),
        root.display()
    )
}

/// The image/trimap pairs of a split.
pub fn read_split(root: &Path, split: virb_plugin_api::Split) -> Result<Vec<Pair>, PluginError> {
    let help = help(root);
    let trimaps = root.join(DIR).join("annotations").join("trimaps");
    let mut pairs = Vec::new();
    for breed in subfolders(&root.join(DIR).join(split.as_str()), &help)? {
        for image in files_ending(&breed, ".jpg", &help)? {
            let stem = image
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mask = trimaps.join(format!("{stem}.png"));
            if !mask.is_file() {
                return Err(PluginError::data(format!(
                    "{NAME}: image {} has no trimap (expected {})",
                    image.display(),
                    mask.display()
                ))
                .with_help(help));
            }
            pairs.push(Pair { image, mask });
        }
    }
    Ok(pairs)
}

/// Reads a trimap as targets: pet 1, background 0, boundary ignored.
pub fn load_target(path: &Path) -> Result<Mask, PluginError> {
    let raw = load_mask(path, false)?;
    map_mask(
        NAME,
        path,
        raw,
        |v| match v {
            1 => Some(1),
            2 => Some(0),
            3 => Some(IGNORE),
            _ => None,
        },
        "trimap values 1 pet, 2 background, 3 boundary",
    )
}

impl Task for PetsDetection {
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
                source: root.join(DIR).join(split.as_str()).display().to_string(),
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

    /// `classes` (2 to 8) breed folders with `per-class` images each per split: a pet (an
    /// ellipse of the breed's colour) on a textured background, its trimap with a 2-pixel
    /// boundary band; images `s × s` to `(s + 16) × s` pixels.
    fn write_fixture(&self, request: FixtureRequest) -> RResult<RString, PluginError> {
        guard(|| {
            let root = Path::new(request.data_root.as_str());
            let classes = request.classes_up_to(NAME, BREEDS.len() as u32)?;
            let s = request.image_size.max(32);
            let mut rng = Rng::new(request.seed);
            let mut total = 0;
            for (split, per_class) in request.per_split() {
                for (b, breed) in BREEDS.iter().take(classes as usize).enumerate() {
                    for i in 0..per_class {
                        let w = s + 8 * (i % 3);
                        let mut c = Canvas::background(w, s, 2, &mut rng);
                        let (cx, cy, ax, ay) =
                            c.ellipse(class_colour(b as u32, classes), 1, 0.15, 0.3, &mut rng);
                        // The boundary: a band of 2 pixels either side of the ellipse's edge.
                        let (ox, oy, ix, iy) =
                            (ax + 2.0, ay + 2.0, (ax - 2.0).max(0.5), (ay - 2.0).max(0.5));
                        c.relabel(3, |x, y| {
                            let out = ((x - cx) / ox).powi(2) + ((y - cy) / oy).powi(2) <= 1.0;
                            let inner = ((x - cx) / ix).powi(2) + ((y - cy) / iy).powi(2) <= 1.0;
                            out && !inner
                        });
                        let stem = format!(
                            "{breed}_{}",
                            i + 1 + 1000 * u32::from(split.as_str() == "test")
                        );
                        c.save(
                            &root
                                .join(DIR)
                                .join(split.as_str())
                                .join(breed)
                                .join(format!("{stem}.jpg")),
                            &root
                                .join(DIR)
                                .join("annotations")
                                .join("trimaps")
                                .join(format!("{stem}.png")),
                        )?;
                        total += 1;
                    }
                }
            }
            Ok(RString::from(format!(
                "{NAME}: {classes} breeds, {total} images with trimaps in {}",
                root.join(DIR).display()
            )))
        })
    }
}
