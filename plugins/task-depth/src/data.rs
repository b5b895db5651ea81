//! The data side every task of this plugin shares: images paired with target files **by name**
//! (ViRB paired two separately sorted lists by position, so one missing file shifted every
//! later pair), the data set type, image decoding with the training augmentation, and resizing
//! of continuous target maps.
//!
//! Target maps are resized with an antialiased bilinear filter (PIL's `BILINEAR`, which torch's
//! `_upsample_bilinear2d_aa` reproduces), never with nearest or an interpolating filter across
//! missing values: [`resize_valid`] resizes the valid values and the validity mask alike and
//! divides, so missing depth (0) never smears into its neighbours.
use crate::augment;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};
use tch::{Kind, Tensor as T};
use virb_plugin_api::{
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RResult, RVec},
    },
    guard, Dataset, DatasetBox, DatasetMeta, PluginError, Sample, SampleContext, Tensor,
};
use virb_plugin_kit::{draw::Rng, image as kimage};

/// One sample's files: the image and, for tasks with a target file, that file.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The RGB image.
    pub image: PathBuf,
    /// The target map (depth, edges); `None` when the target is the image itself.
    pub target: Option<PathBuf>,
}

/// What a sample loader is told besides the files.
pub struct LoadContext {
    /// Side of the square network input.
    pub image_size: u32,
    /// The seed of this read's training augmentation; `None` for a plain read.
    pub augment: Option<u64>,
}

/// Turns a pair into `(input [3, S, S], target [C, S, S])`.
pub type Loader =
    Box<dyn Fn(&Pair, &LoadContext) -> Result<(T, T), PluginError> + Send + Sync + 'static>;

/// An opened split: pairs and the task's loader.
pub struct DenseDataset {
    /// The task's name, for messages.
    pub task: &'static str,
    /// The samples.
    pub items: Vec<Pair>,
    /// Side of the square network input.
    pub image_size: u32,
    /// Channels of the target (the head's outputs).
    pub outputs: u32,
    /// Where the split came from, for messages.
    pub source: String,
    /// Reads one sample.
    pub load: Loader,
}

impl DenseDataset {
    /// Boxes the split for the plugin boundary, refusing an empty one.
    pub fn boxed(self) -> Result<DatasetBox, PluginError> {
        if self.items.is_empty() {
            return Err(PluginError::data(format!(
                "{}: the split {} has no samples",
                self.task, self.source
            ))
            .with_help("put samples in the layout `virb-host tasks` shows for the task"));
        }
        Ok(DatasetBox::from_value(self, TD_Opaque))
    }
}

impl Dataset for DenseDataset {
    fn meta(&self) -> RResult<DatasetMeta, PluginError> {
        guard(|| {
            Ok(DatasetMeta {
                len: self.items.len() as u64,
                num_outputs: self.outputs,
                class_names: RVec::new(),
                source: self.source.as_str().into(),
            })
        })
    }

    fn get(&self, index: u64, context: SampleContext) -> RResult<Sample, PluginError> {
        guard(|| {
            let pair = self.items.get(index as usize).ok_or_else(|| {
                PluginError::invalid_input(format!(
                    "{}: sample {index} out of range for {} ({} samples)",
                    self.task,
                    self.source,
                    self.items.len()
                ))
            })?;
            let ctx = LoadContext {
                image_size: self.image_size,
                augment: context.augment.then(|| context.rng_seed(index)),
            };
            let (input, target) = (self.load)(pair, &ctx)?;
            Ok(Sample {
                input: Tensor::new(input),
                target: Tensor::new(target),
            })
        })
    }
}

/// The error for a missing folder of the layout.
pub fn missing(task: &str, what: &Path, layout: &str, data_root: &Path) -> PluginError {
    PluginError::data(format!("{task}: folder {} not found", what.display())).with_help(format!(
        "expected {layout} under {}; or write a small synthetic one with `virb-host fixtures {task} {}`",
        data_root.display(),
        data_root.display()
    ))
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, PluginError> {
    let mut out = std::fs::read_dir(dir)
        .map_err(|e| PluginError::data(format!("cannot list folder {}: {e}", dir.display())))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PluginError::data(format!("cannot list folder {}: {e}", dir.display())))?;
    out.sort();
    Ok(out)
}

/// The regular files of `dir`, sorted by name.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, PluginError> {
    Ok(read_dir(dir)?.into_iter().filter(|p| p.is_file()).collect())
}

/// The sub-folders of `dir`, sorted by name.
pub fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, PluginError> {
    Ok(read_dir(dir)?.into_iter().filter(|p| p.is_dir()).collect())
}

/// A file's name as text (an undecodable name becomes lossy text, and then fails to pair).
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Pairs images and targets that share a key (a folder and a stem, see each task's `key`
/// rule). An image without a target, a target without an image, or two files with one key
/// is an error naming the file.
pub fn pair_by_key(
    task: &str,
    images: Vec<(String, PathBuf)>,
    targets: Vec<(String, PathBuf)>,
    target_kind: &str,
    rule: &str,
) -> Result<Vec<Pair>, PluginError> {
    let index = |list: Vec<(String, PathBuf)>| -> Result<BTreeMap<String, PathBuf>, PluginError> {
        let mut map = BTreeMap::new();
        for (key, path) in list {
            if let Some(first) = map.insert(key, path.clone()) {
                return Err(PluginError::data(format!(
                    "{task}: {} and {} have the same name key ({rule})",
                    first.display(),
                    path.display()
                ))
                .with_help("remove one of them"));
            }
        }
        Ok(map)
    };
    let (images, mut targets) = (index(images)?, index(targets)?);
    let mut pairs = Vec::with_capacity(images.len());
    for (key, image) in images {
        let target = targets.remove(&key).ok_or_else(|| {
            PluginError::data(format!(
                "{task}: image {} has no {target_kind} ({rule})",
                image.display()
            ))
            .with_help(format!(
                "add its {target_kind} or remove the image from the split"
            ))
        })?;
        pairs.push(Pair {
            image,
            target: Some(target),
        });
    }
    if let Some((_, orphan)) = targets.into_iter().next() {
        return Err(PluginError::data(format!(
            "{task}: {target_kind} {} has no image ({rule})",
            orphan.display()
        ))
        .with_help("add its image or remove the file from the split"));
    }
    Ok(pairs)
}

/// A decoded network input and the size of the file it came from.
pub struct Input {
    /// `[3, S, S]`, normalised with ImageNet's statistics.
    pub tensor: T,
    /// Width of the file, in pixels.
    pub width: u32,
    /// Height of the file.
    pub height: u32,
}

/// Decodes an image (any colour type, converted to RGB), resizes it to `size` x `size` and,
/// when `augment` holds a seed and `jitter` is set, applies the colour jitter and random
/// grayscale; then normalises.
pub fn load_image(
    path: &Path,
    size: u32,
    augment: Option<u64>,
    jitter: bool,
) -> Result<Input, PluginError> {
    let rgb = kimage::load_rgb(path)?;
    let (width, height) = (rgb.width, rgb.height);
    let mut rgb = kimage::resize_square(rgb, size)?;
    if let (Some(seed), true) = (augment, jitter) {
        augment::jitter_and_grayscale(&mut rgb, &mut Rng::new(seed));
    }
    Ok(Input {
        tensor: kimage::to_normalised_tensor(&rgb),
        width,
        height,
    })
}

/// The error for a target map whose size is not its image's.
pub fn check_same_size(
    task: &str,
    image: &Path,
    image_wh: (u32, u32),
    target: &Path,
    target_wh: (u32, u32),
) -> Result<(), PluginError> {
    if image_wh == target_wh {
        return Ok(());
    }
    Err(PluginError::data(format!(
        "{task}: {} is {}x{} but its image {} is {}x{} (width x height)",
        target.display(),
        target_wh.0,
        target_wh.1,
        image.display(),
        image_wh.0,
        image_wh.1
    ))
    .with_help("the target map must be pixel-aligned with its image: fix or remove the pair"))
}

/// A single-channel map of raw sample values, row-major.
pub struct GreyMap {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` values.
    pub values: Vec<f32>,
}

/// Decodes a grey PNG (8- or 16-bit, an alpha channel ignored) to its raw values (0..255 or
/// 0..65535). A colour file is an error: a depth or edge map has one channel.
pub fn load_grey_png(task: &str, path: &Path) -> Result<GreyMap, PluginError> {
    let img = ::image::ImageReader::open(path)
        .map_err(|e| PluginError::data(format!("{task}: cannot open {}: {e}", path.display())))?
        .with_guessed_format()
        .map_err(|e| PluginError::data(format!("{task}: cannot read {}: {e}", path.display())))?
        .decode()
        .map_err(|e| {
            PluginError::data(format!("{task}: cannot decode {}: {e}", path.display()))
                .with_help("the file is corrupt or not an image; replace or remove its pair")
        })?;
    let (width, height) = (img.width(), img.height());
    let values: Vec<f32> = match img {
        ::image::DynamicImage::ImageLuma8(g) => g.into_raw().into_iter().map(f32::from).collect(),
        ::image::DynamicImage::ImageLumaA8(g) => g
            .into_raw()
            .chunks_exact(2)
            .map(|p| f32::from(p[0]))
            .collect(),
        ::image::DynamicImage::ImageLuma16(g) => g.into_raw().into_iter().map(f32::from).collect(),
        ::image::DynamicImage::ImageLumaA16(g) => g
            .into_raw()
            .chunks_exact(2)
            .map(|p| f32::from(p[0]))
            .collect(),
        other => {
            return Err(PluginError::data(format!(
            "{task}: {} is a {:?} image; a target map must be single-channel (grey, 8 or 16 bits)",
            path.display(),
            other.color()
        ))
            .with_help("convert it to a grey PNG"))
        }
    };
    Ok(GreyMap {
        width,
        height,
        values,
    })
}

/// Resizes 8-bit grey values to `size` x `size` with the kit's (PIL's) antialiased bilinear
/// filter, rounding to 8 bits as PIL does for an `L` image.
pub fn resize_grey_u8(
    width: u32,
    height: u32,
    grey: Vec<u8>,
    size: u32,
) -> Result<Vec<u8>, PluginError> {
    use fast_image_resize::{
        images::Image, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
    };
    if width == size && height == size {
        return Ok(grey);
    }
    let src = Image::from_vec_u8(width, height, grey, PixelType::U8)
        .map_err(|e| PluginError::data(format!("bad grey buffer: {e}")))?;
    let mut dst = Image::new(size, size, PixelType::U8);
    Resizer::new()
        .resize(
            &src,
            &mut dst,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
        )
        .map_err(|e| PluginError::data(format!("cannot resize a grey map: {e}")))?;
    Ok(dst.into_vec())
}

fn plane(map: &GreyMap) -> Result<T, PluginError> {
    Ok(T::from_slice(&map.values).f_view([1, 1, map.height as i64, map.width as i64])?)
}

fn resize_planes(planes: &T, size: u32) -> Result<T, PluginError> {
    let s = planes.size();
    if s[2] == size as i64 && s[3] == size as i64 {
        return Ok(planes.shallow_clone());
    }
    Ok(planes.f_internal_upsample_bilinear2d_aa([size as i64, size as i64], false, None, None)?)
}

/// Resizes a map of continuous values to `[size, size]` (antialiased bilinear).
pub fn resize_map(map: &GreyMap, size: u32) -> Result<T, PluginError> {
    Ok(resize_planes(&plane(map)?, size)?.f_view([size as i64, size as i64])?)
}

/// Resizes a map with missing values to `[size, size]`: the valid values (`is_valid`) and the
/// validity mask are resized alike and divided, so missing values never blend into valid ones.
/// A result pixel is valid when at least half of its filter weight lies on valid values; it is
/// 0 (missing) otherwise, and NaN when any NaN or infinite value of the file falls under its
/// filter (so such pixels stay masked, and the metric counts them). Returns the map and the
/// number of non-finite values in the file.
pub fn resize_valid(
    map: &GreyMap,
    size: u32,
    is_valid: impl Fn(f32) -> bool,
) -> Result<(T, u64), PluginError> {
    let n = map.values.len();
    let mut data = vec![0f32; 3 * n];
    let mut non_finite = 0u64;
    for (i, &v) in map.values.iter().enumerate() {
        if !v.is_finite() {
            data[2 * n + i] = 1.0;
            non_finite += 1;
        } else if is_valid(v) {
            data[i] = v;
            data[n + i] = 1.0;
        }
    }
    let planes = T::from_slice(&data).f_view([1, 3, map.height as i64, map.width as i64])?;
    let r = resize_planes(&planes, size)?.f_squeeze_dim(0)?;
    let (num, weight, bad) = (r.f_get(0)?, r.f_get(1)?, r.f_get(2)?);
    let valid = weight.f_ge(0.5)?;
    let value = num.f_div(&weight.f_clamp_min(1e-12)?)?;
    let zero = T::f_zeros([size as i64, size as i64], (Kind::Float, tch::Device::Cpu))?;
    let out = value.f_where_self(&valid, &zero)?;
    let nan = T::f_full(
        [size as i64, size as i64],
        f64::NAN,
        (Kind::Float, tch::Device::Cpu),
    )?;
    Ok((nan.f_where_self(&bad.f_gt(0.0)?, &out)?, non_finite))
}

/// Per-image min–max scaling to [0, 1] over the finite values; a constant map becomes 0
/// everywhere (never NaN).
pub fn min_max(t: &T) -> Result<T, PluginError> {
    let finite = t.f_masked_select(&t.f_isfinite()?)?;
    if finite.numel() == 0 {
        return Ok(t.shallow_clone());
    }
    let lo = finite.f_min()?.double_value(&[]);
    let hi = finite.f_max()?.double_value(&[]);
    if hi - lo <= 0.0 {
        return Ok(t.f_sub_scalar(lo)?);
    }
    Ok(t.f_sub_scalar(lo)?.f_div_scalar(hi - lo)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn map(width: u32, height: u32, values: Vec<f32>) -> GreyMap {
        GreyMap {
            width,
            height,
            values,
        }
    }

    #[test]
    fn pairs_by_key_and_names_unpaired_files() {
        let p = |s: &str| PathBuf::from(s);
        let images = vec![("a".into(), p("i/a.png")), ("b".into(), p("i/b.png"))];
        let targets = vec![("b".into(), p("d/b.tiff")), ("a".into(), p("d/a.tiff"))];
        let pairs = pair_by_key("T", images.clone(), targets, "depth map", "same stem").unwrap();
        assert_eq!(pairs[0].target, Some(p("d/a.tiff")));
        assert_eq!(pairs[1].target, Some(p("d/b.tiff")));
        let e = pair_by_key(
            "T",
            images.clone(),
            vec![("a".into(), p("d/a.tiff"))],
            "depth map",
            "same stem",
        )
        .unwrap_err();
        assert_eq!(
            e.message.as_str(),
            "T: image i/b.png has no depth map (same stem)"
        );
        let mut targets = vec![("a".into(), p("d/a.tiff")), ("b".into(), p("d/b.tiff"))];
        targets.push(("c".into(), p("d/c.tiff")));
        let e = pair_by_key("T", images, targets, "depth map", "same stem").unwrap_err();
        assert_eq!(
            e.message.as_str(),
            "T: depth map d/c.tiff has no image (same stem)"
        );
    }

    #[test]
    fn missing_depth_does_not_smear() {
        // Left half 2 m, right half missing (0): the valid side keeps 2 exactly, the other is 0.
        let values: Vec<f32> = (0..64).map(|i| if i % 8 < 4 { 2.0 } else { 0.0 }).collect();
        let (t, bad) = resize_valid(&map(8, 8, values), 4, |v| v > 0.0).unwrap();
        assert_eq!(bad, 0);
        let row: Vec<f32> = Vec::try_from(t.get(1)).unwrap();
        assert_eq!(row, [2.0, 2.0, 0.0, 0.0]);
    }

    #[test]
    fn non_finite_depth_is_counted_and_stays_nan() {
        let mut values = vec![1.5f32; 64];
        values[9] = f32::NAN;
        values[63] = f32::INFINITY;
        let (t, bad) = resize_valid(&map(8, 8, values.clone()), 4, |v| v > 0.0).unwrap();
        assert_eq!(bad, 2);
        let finite = t.isfinite().sum(Kind::Int64).int64_value(&[]);
        assert!((1..16).contains(&(16 - finite)), "{t}");
        assert_eq!(t.get(3).get(0).double_value(&[]), 1.5);
        // Without a resize the NaN stays where it was.
        let (t, bad) = resize_valid(&map(8, 8, values), 8, |v| v > 0.0).unwrap();
        assert_eq!(bad, 2);
        assert!(t.get(1).get(1).double_value(&[]).is_nan());
        assert_eq!(t.isnan().sum(Kind::Int64).int64_value(&[]), 2);
    }

    #[test]
    fn resize_map_is_pils_antialiased_bilinear() {
        // Halving a 4x4 ramp: output centre 1.0 of the source, triangle filter of support 2,
        // weights 0.75, 0.75, 0.25 on columns 0, 1, 2: (0.75 + 0.5) / 1.75 = 5/7; mirrored 16/7.
        // PIL's `Image.fromarray(a, "F").resize((2, 2), BILINEAR)` gives the same.
        let values: Vec<f32> = (0..16).map(|i| (i % 4) as f32).collect();
        let t = resize_map(&map(4, 4, values), 2).unwrap();
        let row: Vec<f32> = Vec::try_from(t.get(0)).unwrap();
        assert!((row[0] - 5.0 / 7.0).abs() < 1e-5, "{row:?}");
        assert!((row[1] - 16.0 / 7.0).abs() < 1e-5, "{row:?}");
    }

    #[test]
    fn min_max_spans_zero_to_one_and_constant_is_zero() {
        let t = min_max(&T::from_slice(&[2.0f32, 4.0, 3.0])).unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [0.0, 1.0, 0.5]);
        let t = min_max(&T::from_slice(&[7.0f32, 7.0])).unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [0.0, 0.0]);
    }
}
