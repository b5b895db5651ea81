//! `EgoHands`: 5 classes (0 background, 1 your left, 2 your right, 3 my left, 4 my right hand),
//! ViRB's DeepLabV3+ head, cross-entropy with class weights (0.1, 1, 1, 1, 1).
//!
//! Layout: `<data>/egohands/images/<video>/*.jpg` and `<data>/egohands/labels/<video>/*.png`
//! (integer masks 0..4, rendered by the user from the data set's polygons), 48 video folders.
//! The split is ViRB's (from the 2015 EgoHands paper), by position in the sorted list of video
//! folders: test = indices {0, 10, 12, 19, 30, 33, 37, 43}, train = the others except the
//! validation videos {6, 13, 27, 46}, which — as in ViRB — are in **neither** split (a job that
//! wants a validation part takes it from the training split). With fewer than 48 folders (a
//! subset) the same indices apply to the folders that exist; more than 48 is an error. Frames
//! are paired with masks by name within a video (ViRB paired sorted lists by position); the
//! image and label folders must list the same videos.
//!
//! Training augmentation: a square random crop (the same window for frame and mask) of side
//! `image_size` (ViRB: 513, on 1280×720 frames), re-drawn up to 11 times until the mask crop
//! holds a hand pixel (else the last draw is kept); a side shorter than the crop is padded (0
//! in the normalised image, ignored in the mask). No resize, no colour jitter. Test: full
//! frames.
//!
//! Metrics: `miou` over the four hand classes (background excluded, as ViRB did), from one
//! confusion matrix over the split; `pixel_accuracy` over all pixels, background included.
use crate::dense::{
    check_same_size, crop_input, crop_mask, load_mask, map_mask, mask_tensor, Mask, Window,
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
    image::{load_rgb, to_normalised_tensor},
};

/// The task type name.
pub const NAME: &str = "EgoHands";
const DIR: &str = "egohands";
const LAYOUT: &str = "egohands/images/<48 video folders>/*.jpg + egohands/labels/<48 video folders>/*.png (masks 0..4)";
/// Number of videos of EgoHands.
pub const VIDEOS: usize = 48;
/// Sorted-folder indices of the test videos.
pub const TEST_VIDEOS: [usize; 8] = [0, 10, 12, 19, 30, 33, 37, 43];
/// Sorted-folder indices of the validation videos (unused, as in ViRB).
pub const VAL_VIDEOS: [usize; 4] = [6, 13, 27, 46];
/// Draws of the crop window in training.
const CROP_TRIES: usize = 11;
/// Class weights of the loss.
pub const WEIGHTS: [f64; 5] = [0.1, 1.0, 1.0, 1.0, 1.0];

/// Class names by index.
pub const CLASSES: [&str; 5] = [
    "background",
    "your left",
    "your right",
    "my left",
    "my right",
];

/// The task.
pub struct EgoHands;

virb_plugin_kit::register_task!(EgoHands);

fn help(root: &Path) -> String {
    format!(
        "expected {LAYOUT} under {} (render the label PNGs from egohands_data.zip's polygons); or run `virb-host fixtures {NAME} {}`",
        root.display(),
        root.display()
    )
}

/// Which split the video at sorted position `index` belongs to (`None`: validation, unused).
pub fn split_of(index: usize) -> Option<Split> {
    if TEST_VIDEOS.contains(&index) {
        Some(Split::Test)
    } else if VAL_VIDEOS.contains(&index) {
        None
    } else {
        Some(Split::Train)
    }
}

fn names(folders: &[PathBuf]) -> Vec<String> {
    folders.iter().map(|f| strip_name(f, "")).collect()
}

/// The frame/mask pairs of a split.
pub fn read_split(root: &Path, split: Split) -> Result<Vec<Pair>, PluginError> {
    let help = help(root);
    let (images, labels) = (root.join(DIR).join("images"), root.join(DIR).join("labels"));
    let videos = subfolders(&images, &help)?;
    let label_videos = subfolders(&labels, &help)?;
    if videos.len() > VIDEOS {
        return Err(PluginError::data(format!(
            "{NAME}: {} holds {} video folders; EgoHands has {VIDEOS}, and the split is defined by position among them",
            images.display(),
            videos.len()
        ))
        .with_help(help));
    }
    let (vn, ln) = (names(&videos), names(&label_videos));
    if let Some(v) = vn.iter().find(|v| !ln.contains(v)) {
        return Err(PluginError::data(format!(
            "{NAME}: video {} has no label folder (expected {})",
            images.join(v).display(),
            labels.join(v).display()
        ))
        .with_help(help));
    }
    if let Some(v) = ln.iter().find(|v| !vn.contains(v)) {
        return Err(PluginError::data(format!(
            "{NAME}: label folder {} has no video (expected {})",
            labels.join(v).display(),
            images.join(v).display()
        ))
        .with_help(help));
    }
    let mut pairs = Vec::new();
    for (i, video) in vn.iter().enumerate() {
        if split_of(i) != Some(split) {
            continue;
        }
        let (idir, ldir) = (images.join(video), labels.join(video));
        pairs.extend(pair_by_key(
            NAME,
            files_ending(&idir, ".jpg", &help)?,
            files_ending(&ldir, ".png", &help)?,
            |p| strip_name(p, ".jpg"),
            |p| strip_name(p, ".png"),
            |p| ldir.join(format!("{}.png", strip_name(p, ".jpg"))),
            |p| idir.join(format!("{}.jpg", strip_name(p, ".png"))),
        )?);
    }
    Ok(pairs)
}

/// Reads a mask of class ids 0..4.
pub fn load_target(path: &Path) -> Result<Mask, PluginError> {
    let raw = load_mask(path, false)?;
    map_mask(
        NAME,
        path,
        raw,
        |v| (v < CLASSES.len() as u16).then_some(v as u8),
        "0 background, 1 to 4 the hands",
    )
}

/// The crop window: up to [`CROP_TRIES`] draws until the mask crop holds a hand pixel.
pub fn hand_window(mask: &Mask, rng: &mut Rng, side: u32) -> Window {
    let mut window = Window::random(rng, mask.width, mask.height, side);
    for _ in 1..CROP_TRIES {
        if crop_mask(mask, window)
            .data
            .iter()
            .any(|&v| (1..=4).contains(&v))
        {
            break;
        }
        window = Window::random(rng, mask.width, mask.height, side);
    }
    window
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
        let window = hand_window(&mask, &mut Rng::new(context.rng_seed(index)), self.crop);
        Ok((
            crop_input(&img, window)?,
            mask_tensor(&crop_mask(&mask, window))?,
        ))
    }
}

impl Task for EgoHands {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| Ok(task_info(NAME, DIR, LAYOUT, "miou", true)))
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            let split = request.split()?;
            let root = Path::new(request.data_root.as_str());
            PairSet {
                pairs: read_split(root, split)?,
                num_outputs: CLASSES.len() as u32,
                source: format!(
                    "{} ({} videos)",
                    root.join(DIR).join("images").display(),
                    split.as_str()
                ),
                prepare: Prep {
                    crop: request.image_size.max(1),
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
            Ok(DenseHead::deeplab(
                NAME,
                &request,
                Loss::CrossEntropy(Some(WEIGHTS.to_vec())),
                scoring,
            )?
            .boxed())
        })
    }

    /// 48 video folders (`video_00` .. `video_47`) of `7s/4 × s` frames (`s` = image size), each
    /// with one or two hands of `classes` (2 to 4) hand classes as coloured ellipses on a
    /// textured background; `classes × per-class` frames per split, spread over the split's
    /// videos in turn, and one frame in each validation video.
    fn write_fixture(&self, request: FixtureRequest) -> RResult<RString, PluginError> {
        guard(|| {
            let root = Path::new(request.data_root.as_str());
            let classes = request.classes_up_to(NAME, 4)?;
            let s = request.image_size.max(32);
            let (w, h) = (s * 7 / 4, s);
            let mut rng = Rng::new(request.seed);
            let mut frames = [0u32; VIDEOS];
            for (split, per_class) in request.per_split() {
                let videos: Vec<usize> = (0..VIDEOS)
                    .filter(|&i| split_of(i) == Some(split))
                    .collect();
                for n in 0..(classes * per_class) as usize {
                    frames[videos[n % videos.len()]] += 1;
                }
            }
            for &v in &VAL_VIDEOS {
                frames[v] = 1;
            }
            let mut total = 0;
            for (v, &count) in frames.iter().enumerate() {
                let video = format!("video_{v:02}");
                std::fs::create_dir_all(root.join(DIR).join("images").join(&video))
                    .and_then(|_| {
                        std::fs::create_dir_all(root.join(DIR).join("labels").join(&video))
                    })
                    .map_err(|e| {
                        PluginError::data(format!(
                            "cannot create the fixture's folders under {}: {e}",
                            root.display()
                        ))
                    })?;
                for f in 0..count {
                    let mut c = Canvas::background(w, h, 0, &mut rng);
                    let hands = 1 + (f + v as u32) % 2;
                    for j in 0..hands {
                        let k = (f + v as u32 + j) % classes;
                        c.ellipse(class_colour(k, classes), (k + 1) as u8, 0.15, 0.3, &mut rng);
                    }
                    let name = format!("frame_{f:04}");
                    c.save(
                        &root
                            .join(DIR)
                            .join("images")
                            .join(&video)
                            .join(format!("{name}.jpg")),
                        &root
                            .join(DIR)
                            .join("labels")
                            .join(&video)
                            .join(format!("{name}.png")),
                    )?;
                    total += 1;
                }
            }
            Ok(RString::from(format!(
                "{NAME}: {classes} hand classes, {total} frames in {VIDEOS} videos in {}",
                root.join(DIR).display()
            )))
        })
    }
}
