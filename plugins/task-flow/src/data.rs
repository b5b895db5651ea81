//! Reading KITTI's layout: the frame pairs and targets of a split, checked when the split is
//! opened, and the samples (decoded, normalised, cropped for training).
//!
//! Frames are never resized (as in ViRB): training crops a square, testing uses full frames. So
//! flow vectors never need rescaling, and EPE is in pixels of the original frame.
use crate::options::Target;
use std::path::{Path, PathBuf};
use tch::Tensor as T;
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RVec},
    guard, Dataset, DatasetMeta, PluginError, Sample, SampleContext, Split, Tensor,
};
use virb_plugin_kit::{
    draw::Rng,
    flow_png,
    image::{load_rgb, to_normalised_tensor, Rgb},
};

/// The task's name.
pub const NAME: &str = "KITTI";
/// Folder below the data root.
pub const DIR: &str = "KITTI";
/// The layout, in one line.
pub const LAYOUT: &str = "KITTI/training/image_2/<id>_10.png (frame A) and <id>_11.png (frame B) + KITTI/training/flow_occ/<id>_10.png (16-bit KITTI flow; viz_flow_occ/<id>_10.png for target: viz)";

/// `<data_root>/KITTI/training`.
pub fn training_dir(data_root: &Path) -> PathBuf {
    data_root.join(DIR).join("training")
}

/// One sample's files.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// Frame A (`image_2/<id>_10.png`).
    pub a: PathBuf,
    /// Frame B (`image_2/<id>_11.png`).
    pub b: PathBuf,
    /// The target file (`flow_occ/<id>_10.png` or `viz_flow_occ/<id>_10.png`).
    pub target: PathBuf,
}

fn help_layout(data_root: &Path) -> String {
    format!(
        "expected {LAYOUT} under {} (the KITTI flow 2015 training archive, data_scene_flow.zip); or run `virb-host fixtures {NAME} {}` for a small synthetic one",
        data_root.display(),
        data_root.display()
    )
}

/// Every sample of the data set in sorted order of frame A's name, its files checked to exist.
pub fn list_pairs(data_root: &Path, target: Target) -> Result<Vec<Pair>, PluginError> {
    let training = training_dir(data_root);
    let images = training.join("image_2");
    let entries = std::fs::read_dir(&images).map_err(|e| {
        PluginError::data(format!(
            "{NAME}: cannot read frame folder {}: {e}",
            images.display()
        ))
        .with_help(help_layout(data_root))
    })?;
    let mut stems: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix("_10.png").map(String::from)
        })
        .collect();
    stems.sort();
    if stems.is_empty() {
        return Err(PluginError::data(format!(
            "{NAME}: no frame A (<id>_10.png) in {}",
            images.display()
        ))
        .with_help(help_layout(data_root)));
    }
    stems
        .into_iter()
        .map(|stem| {
            let pair = Pair {
                a: images.join(format!("{stem}_10.png")),
                b: images.join(format!("{stem}_11.png")),
                target: training
                    .join(target.folder())
                    .join(format!("{stem}_10.png")),
            };
            if !pair.b.is_file() {
                return Err(PluginError::data(format!(
                    "{NAME}: second frame {} of {} not found",
                    pair.b.display(),
                    pair.a.display()
                ))
                .with_help("each <id>_10.png in image_2 needs its next frame <id>_11.png"));
            }
            if !pair.target.is_file() {
                return Err(PluginError::data(format!(
                    "{NAME}: {} file {} of {} not found",
                    if target == Target::Flow {
                        "flow"
                    } else {
                        "flow visualisation"
                    },
                    pair.target.display(),
                    pair.a.display()
                ))
                .with_help(format!(
                    "each frame pair needs training/{}/<id>_10.png{}",
                    target.folder(),
                    if target == Target::Flow {
                        " (KITTI flow 2015's flow_occ)"
                    } else {
                        " (target: viz reads the colour visualisation ViRB used)"
                    }
                )));
            }
            Ok(pair)
        })
        .collect()
}

/// ViRB's split of the sorted list: the first ⌊0.9·n⌋ samples train, the rest test.
pub fn split_pairs(pairs: Vec<Pair>, split: Split) -> Vec<Pair> {
    let train = pairs.len() * 9 / 10;
    match split {
        Split::Train => pairs.into_iter().take(train).collect(),
        Split::Test => pairs.into_iter().skip(train).collect(),
        // Unreachable in practice: a split this plugin does not know arrives as an error from
        // `DatasetRequest::split()`. Treated like the test split.
        _ => pairs.into_iter().skip(train).collect(),
    }
}

fn dimensions(path: &Path) -> Result<(u32, u32), PluginError> {
    ::image::image_dimensions(path)
        .map_err(|e| PluginError::data(format!("{NAME}: cannot read {}: {e}", path.display())))
}

/// Checks from the files' headers (without decoding them) that frame B and the target have frame
/// A's size and, for the real flow, that the flow file is a 16-bit RGB PNG.
pub fn check_headers(pair: &Pair, target: Target) -> Result<(), PluginError> {
    let (w, h) = dimensions(&pair.a)?;
    for other in [&pair.b, &pair.target] {
        let (ow, oh) = dimensions(other)?;
        same_size(other, (ow, oh), &pair.a, (w, h))?;
    }
    if target == Target::Flow {
        let colour = ::image::ImageReader::open(&pair.target)
            .and_then(|r| r.with_guessed_format())
            .map_err(|e| {
                PluginError::data(format!(
                    "{NAME}: cannot read flow file {}: {e}",
                    pair.target.display()
                ))
            })
            .and_then(|r| {
                r.into_decoder().map_err(|e| {
                    PluginError::data(format!(
                        "{NAME}: cannot read flow file {}: {e}",
                        pair.target.display()
                    ))
                })
            })
            .map(|d| ::image::ImageDecoder::color_type(&d))?;
        if !matches!(
            colour,
            ::image::ColorType::Rgb16 | ::image::ColorType::Rgba16
        ) {
            return Err(PluginError::data(format!(
                "{NAME}: flow file {} is a {colour:?} image, not a 16-bit RGB PNG",
                pair.target.display()
            ))
            .with_help("KITTI flow ground truth is training/flow_occ/*_10.png from the KITTI flow 2015 archive (16-bit PNGs), not the colour visualisation; `task_options: {target: viz}` reads viz_flow_occ instead"));
        }
    }
    Ok(())
}

fn same_size(
    file: &Path,
    size: (u32, u32),
    frame: &Path,
    frame_size: (u32, u32),
) -> Result<(), PluginError> {
    if size == frame_size {
        return Ok(());
    }
    Err(PluginError::data(format!(
        "{NAME}: {} is {}x{} (width x height) but its frame {} is {}x{}",
        file.display(),
        size.0,
        size.1,
        frame.display(),
        frame_size.0,
        frame_size.1
    ))
    .with_help("a frame pair and its flow map must have the same size; replace the file"))
}

/// The grey level of an RGB image, / 255: PIL's `convert("L")` (ITU-R 601-2 luma in fixed
/// point, `(19595 R + 38470 G + 7471 B + 2^15) >> 16`), as ViRB read the visualisation.
pub fn luma(img: &Rgb) -> Vec<f32> {
    img.pixels
        .chunks_exact(3)
        .map(|p| {
            let l = (19595 * p[0] as u32 + 38470 * p[1] as u32 + 7471 * p[2] as u32 + 0x8000) >> 16;
            l as f32 / 255.0
        })
        .collect()
}

/// One opened split.
pub struct KittiSplit {
    /// The split's samples.
    pub pairs: Vec<Pair>,
    /// What the target is.
    pub target: Target,
    /// Side of the training crop (ViRB's 224: the job's `image_size`), capped by the frame.
    pub crop: u32,
    /// Where the split came from, for messages.
    pub source: String,
}

impl KittiSplit {
    /// The target map `[C, H, W]` of a pair: (u, v, valid) for the flow, the grey level for viz.
    fn read_target(&self, pair: &Pair, frame: (u32, u32)) -> Result<T, PluginError> {
        match self.target {
            Target::Flow => {
                let flow = flow_png::read(&pair.target).map_err(|mut e| {
                    e.message = format!("{NAME}: {}", e.message).into();
                    e
                })?;
                same_size(&pair.target, (flow.width, flow.height), &pair.a, frame)?;
                let valid: Vec<f32> = flow.valid.iter().map(|&v| f32::from(u8::from(v))).collect();
                let data = [flow.u, flow.v, valid].concat();
                Ok(T::from_slice(&data).f_view([3, flow.height as i64, flow.width as i64])?)
            }
            Target::Viz => {
                let img = load_rgb(&pair.target)?;
                same_size(&pair.target, (img.width, img.height), &pair.a, frame)?;
                let (w, h) = (img.width as i64, img.height as i64);
                Ok(T::from_slice(&luma(&img)).f_view([1, h, w])?)
            }
        }
    }

    /// Sample `index`: `[2, 3, H, W]` frames and its target, cropped as `context` says.
    pub fn sample(&self, index: u64, context: SampleContext) -> Result<(T, T), PluginError> {
        let pair = self.pairs.get(index as usize).ok_or_else(|| {
            PluginError::invalid_input(format!(
                "{NAME}: sample {index} out of range for {} ({} samples)",
                self.source,
                self.pairs.len()
            ))
        })?;
        let a = load_rgb(&pair.a)?;
        let b = load_rgb(&pair.b)?;
        let frame = (a.width, a.height);
        same_size(&pair.b, (b.width, b.height), &pair.a, frame)?;
        let target = self.read_target(pair, frame)?;
        let input = T::f_stack(&[to_normalised_tensor(&a), to_normalised_tensor(&b)], 0)?;
        if !context.augment {
            return Ok((input, target));
        }
        // The identical random square crop of both frames and the target (ViRB: 224x224).
        let side = self.crop.min(a.width).min(a.height).max(1) as i64;
        let mut rng = Rng::new(context.rng_seed(index));
        let y0 = rng.below((a.height as i64 - side + 1) as u64) as i64;
        let x0 = rng.below((a.width as i64 - side + 1) as u64) as i64;
        let crop = |t: &T, dims: (i64, i64)| -> Result<T, PluginError> {
            Ok(t.f_narrow(dims.0, y0, side)?
                .f_narrow(dims.1, x0, side)?
                .f_contiguous()?)
        };
        Ok((crop(&input, (2, 3))?, crop(&target, (1, 2))?))
    }
}

impl Dataset for KittiSplit {
    fn meta(&self) -> RResult<DatasetMeta, PluginError> {
        guard(|| {
            Ok(DatasetMeta {
                len: self.pairs.len() as u64,
                num_outputs: self.target.outputs(),
                class_names: RVec::new(),
                source: self.source.as_str().into(),
            })
        })
    }

    fn get(&self, index: u64, context: SampleContext) -> RResult<Sample, PluginError> {
        guard(|| {
            let (input, target) = self.sample(index, context)?;
            Ok(Sample {
                input: Tensor::new(input),
                target: Tensor::new(target),
            })
        })
    }
}
