//! `CityscapesSemanticSegmentation`: 20 outputs (0 void and the 19 classes of the Cityscapes
//! benchmark), ViRB's DeepLabV3+ head.
//!
//! Layout: `<data>/cityscapes/leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png` with
//! `<data>/cityscapes/gtFine/{train,val}/<city>/<name>_gtFine_labelIds.png`; `val` is the test
//! split. Images and labels are paired by city and `<name>` (ViRB paired two sorted lists by
//! position, which silently shifts every later pair when one file is missing); an unpaired file
//! is an error naming it and the partner it expected.
//!
//! Labels: the label ids 0–33 are remapped to the 20 classes of [`remap`] (every id not listed is
//! void), and 255 — the license plate's id −1 as an 8-bit PNG stores it — is void too; any other
//! value is an error naming the file and the value.
//!
//! **Void is ignored**, in the loss and in the metrics: the target of a void pixel is
//! [`IGNORE`], and `miou` is the mean over the 19 real classes, as in the standard Cityscapes
//! protocol. ViRB learned void as a class (it stays an output here, so a head keeps ViRB's
//! 20-way shape, but it is never a target and never scored).
//!
//! Training augmentation (ViRB's, with its crop bug fixed), drawn from
//! `SampleContext::rng_seed(index)` in this order: a scale s in [0.5, 2.0] (image to
//! (⌊W·s⌋, ⌊H·s⌋) with an antialiased bilinear filter, the mask with nearest neighbour), a
//! horizontal flip with p = 0.5, and a square crop whose window lies inside the **scaled**
//! image (ViRB drew it from the unscaled size, so crops of down-scaled images were mostly
//! padding). Only along a side shorter than the crop is there padding (right and bottom): 0 in
//! the normalised image (the mean colour), void in the mask. The crop side is
//! `min(450, image_size)`: ViRB's 450 for a job with `image_size >= 450`, smaller for small
//! jobs and fixtures. No colour jitter. Test (and unaugmented reads): the full-resolution image
//! and mask, no resize (images of different sizes are batched by size by the host).
use crate::dense::{
    check_same_size, crop_input, crop_mask, flip_mask, flip_rgb, load_mask, map_mask, mask_tensor,
    resize_mask, resize_rgb, Mask, Window, IGNORE,
};
use crate::fixture::{class_colour, Canvas};
use crate::head::{task_info, DenseHead, Loss};
use crate::metric::Scoring;
use crate::pairs::{files_ending, pair_by_key, strip_name, subfolders, Pair, PairSet, Prepare};
use std::path::{Path, PathBuf};
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RString},
    guard, DatasetBox, DatasetRequest, FixtureRequest, HeadBox, HeadRequest, PluginError,
    SampleContext, Split, Task, TaskInfo,
};
use virb_plugin_kit::{
    draw::Rng,
    image::{load_rgb, to_normalised_tensor, Rgb},
};

/// The task type name.
pub const NAME: &str = "CityscapesSemanticSegmentation";
const DIR: &str = "cityscapes";
const LAYOUT: &str = "cityscapes/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png + cityscapes/gtFine/{train,val}/<city>/*_gtFine_labelIds.png";
const IMAGE_SUFFIX: &str = "_leftImg8bit.png";
const LABEL_SUFFIX: &str = "_gtFine_labelIds.png";
/// ViRB's training crop side.
pub const VIRB_CROP: u32 = 450;

/// Class names by output index (0 is void).
pub const CLASSES: [&str; 20] = [
    "void",
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
];

/// The class (0 = void) of a Cityscapes label id, or `None` for a value that is not one.
pub fn remap(id: u16) -> Option<u8> {
    Some(match id {
        7 => 1,
        8 => 2,
        11 => 3,
        12 => 4,
        13 => 5,
        17 => 6,
        19 => 7,
        20 => 8,
        21 => 9,
        22 => 10,
        23 => 11,
        24 => 12,
        25 => 13,
        26 => 14,
        27 => 15,
        28 => 16,
        31 => 17,
        32 => 18,
        33 => 19,
        0..=33 | 255 => 0,
        _ => return None,
    })
}

/// The task.
pub struct Cityscapes;

virb_plugin_kit::register_task!(Cityscapes);

fn split_dir(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        // The test split is Cityscapes' val (its test labels are not public).
        _ => "val",
    }
}

fn help(root: &Path) -> String {
    format!(
        "expected {LAYOUT} under {} (leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from cityscapes-dataset.com); or run `virb-host fixtures {NAME} {}`",
        root.display(),
        root.display()
    )
}

/// The image/label pairs of a split, paired by city and name.
pub fn read_split(root: &Path, split: Split) -> Result<Vec<Pair>, PluginError> {
    let help = help(root);
    let base = root.join(DIR);
    let (images_dir, labels_dir) = (
        base.join("leftImg8bit").join(split_dir(split)),
        base.join("gtFine").join(split_dir(split)),
    );
    let collect = |dir: &Path, suffix: &str| -> Result<Vec<PathBuf>, PluginError> {
        let mut all = Vec::new();
        for city in subfolders(dir, &help)? {
            all.extend(files_ending(&city, suffix, &help)?);
        }
        Ok(all)
    };
    let images = collect(&images_dir, IMAGE_SUFFIX)?;
    let labels = collect(&labels_dir, LABEL_SUFFIX)?;
    let key = |p: &Path, suffix: &str| {
        let city = p
            .parent()
            .and_then(Path::file_name)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{city}/{}", strip_name(p, suffix))
    };
    let partner = |p: &Path, dir: &Path, from: &str, to: &str| {
        let k = key(p, from);
        dir.join(format!("{k}{to}"))
    };
    pair_by_key(
        NAME,
        images,
        labels,
        |p| key(p, IMAGE_SUFFIX),
        |p| key(p, LABEL_SUFFIX),
        |p| partner(p, &labels_dir, IMAGE_SUFFIX, LABEL_SUFFIX),
        |p| partner(p, &images_dir, LABEL_SUFFIX, IMAGE_SUFFIX),
    )
}

/// Reads a label-id PNG as targets: the 19 classes as 1..=19, void as [`IGNORE`].
pub fn load_target(path: &Path) -> Result<Mask, PluginError> {
    let raw = load_mask(path, false)?;
    map_mask(
        NAME,
        path,
        raw,
        |v| remap(v).map(|c| if c == 0 { IGNORE } else { c }),
        "label ids 0 to 33, or 255 for the license plate",
    )
}

/// The training augmentation on a decoded pair (scale, flip, crop, in that order of draws);
/// returns the normalised input `[3, side, side]` and its mask.
pub fn augment(
    img: Rgb,
    mask: Mask,
    rng: &mut Rng,
    side: u32,
) -> Result<(tch::Tensor, Mask), PluginError> {
    let s = 0.5 + 1.5 * rng.uniform();
    let (w, h) = (
        ((img.width as f32 * s).floor() as u32).max(1),
        ((img.height as f32 * s).floor() as u32).max(1),
    );
    let mut img = resize_rgb(img, w, h)?;
    let mut mask = resize_mask(&mask, w, h);
    if rng.uniform() < 0.5 {
        flip_rgb(&mut img);
        flip_mask(&mut mask);
    }
    let window = Window::random(rng, w, h, side);
    Ok((crop_input(&img, window)?, crop_mask(&mask, window)))
}

struct Prep {
    crop: u32,
}

impl Prepare for Prep {
    fn prepare(
        &self,
        pair: &Pair,
        index: u64,
        context: SampleContext,
    ) -> Result<(tch::Tensor, tch::Tensor), PluginError> {
        let img = load_rgb(&pair.image)?;
        let mask = load_target(&pair.mask)?;
        check_same_size(NAME, &img, &pair.image, &mask, &pair.mask)?;
        if !context.augment {
            return Ok((to_normalised_tensor(&img), mask_tensor(&mask)?));
        }
        let (input, mask) = augment(img, mask, &mut Rng::new(context.rng_seed(index)), self.crop)?;
        Ok((input, mask_tensor(&mask)?))
    }
}

/// Fixture foreground label ids: car, person, building, vegetation, sky, traffic sign,
/// sidewalk, pole.
const FIXTURE_IDS: [u8; 8] = [26, 24, 11, 21, 23, 20, 8, 17];

impl Task for Cityscapes {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| Ok(task_info(NAME, DIR, LAYOUT, "miou", true)))
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            let split = request.split()?;
            let root = Path::new(request.data_root.as_str());
            let pairs = read_split(root, split)?;
            PairSet {
                pairs,
                num_outputs: CLASSES.len() as u32,
                source: root
                    .join(DIR)
                    .join("leftImg8bit")
                    .join(split_dir(split))
                    .display()
                    .to_string(),
                prepare: Prep {
                    crop: request.image_size.clamp(1, VIRB_CROP),
                },
            }
            .boxed(NAME, &help(root))
        })
    }

    fn build_head(&self, request: HeadRequest) -> RResult<HeadBox, PluginError> {
        guard(|| {
            let scoring = Scoring::MultiClass {
                names: &CLASSES,
                scored: 1..CLASSES.len(),
            };
            Ok(DenseHead::deeplab(NAME, &request, Loss::CrossEntropy(None), scoring)?.boxed())
        })
    }

    /// `classes` (2 to 8) foreground classes as coloured rectangles (label ids car, person, ...)
    /// on a textured road (id 7), a void strip (id 1, ego vehicle, with a patch of 255) at the
    /// bottom; `classes × per-class` images per split, `2s × s` pixels (`s` = image size), and
    /// every third test image `3s/2 × 3s/4`, in two cities per split.
    fn write_fixture(&self, request: FixtureRequest) -> RResult<RString, PluginError> {
        guard(|| {
            let root = Path::new(request.data_root.as_str());
            let classes = request.classes_up_to(NAME, FIXTURE_IDS.len() as u32)?;
            let s = request.image_size.max(32);
            let mut rng = Rng::new(request.seed);
            let mut total = 0;
            for (split, per_class) in request.per_split() {
                let cities = match split {
                    Split::Train => ["aachen", "bremen"],
                    _ => ["frankfurt", "lindau"],
                };
                for i in 0..classes * per_class {
                    let odd = split != Split::Train && i % 3 == 2;
                    let (w, h) = if odd {
                        (s * 3 / 2, s * 3 / 4)
                    } else {
                        (2 * s, s)
                    };
                    let mut c = Canvas::background(w, h, 7, &mut rng);
                    for j in 0..3 {
                        let k = (i + j) % classes;
                        c.rect(
                            class_colour(k, classes),
                            FIXTURE_IDS[k as usize],
                            0.3,
                            0.6,
                            &mut rng,
                        );
                    }
                    let strip = h as f32 * 7.0 / 8.0;
                    c.paint([0.05; 3], 1, &mut rng, |_, y| y >= strip);
                    c.relabel(255, |x, y| y >= strip && x < 6.0);
                    let city = cities[(i % 2) as usize];
                    let name = format!("{city}_000000_{i:06}");
                    let base = root.join(DIR);
                    c.save(
                        &base
                            .join("leftImg8bit")
                            .join(split_dir(split))
                            .join(city)
                            .join(format!("{name}{IMAGE_SUFFIX}")),
                        &base
                            .join("gtFine")
                            .join(split_dir(split))
                            .join(city)
                            .join(format!("{name}{LABEL_SUFFIX}")),
                    )?;
                    total += 1;
                }
            }
            Ok(RString::from(format!(
                "{NAME}: {classes} foreground classes, {total} images in {}",
                root.join(DIR).display()
            )))
        })
    }
}
