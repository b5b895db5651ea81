//! Image/mask pairs: listing a layout's files, pairing images with masks by name (never by
//! sorted position alone, which silently shifts every later pair when one file is missing), and
//! the data set type over the pairs.
use std::path::{Path, PathBuf};
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RVec},
    guard, Dataset, DatasetBox, DatasetMeta, PluginError, Sample, SampleContext, Tensor,
};

/// An image file and its mask file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// The image.
    pub image: PathBuf,
    /// Its mask.
    pub mask: PathBuf,
}

/// How a task turns a pair into a sample.
pub trait Prepare: Send + Sync + 'static {
    /// The network input `[3, H, W]` and target `[H, W]` of `pair`, the `index`-th sample,
    /// augmented as `context` says.
    fn prepare(
        &self,
        pair: &Pair,
        index: u64,
        context: SampleContext,
    ) -> Result<(tch::Tensor, tch::Tensor), PluginError>;
}

/// A split of image/mask pairs.
pub struct PairSet<P: Prepare> {
    /// The pairs, in a fixed order.
    pub pairs: Vec<Pair>,
    /// Outputs of the head.
    pub num_outputs: u32,
    /// Where the split comes from, for messages.
    pub source: String,
    /// The task's preprocessing.
    pub prepare: P,
}

impl<P: Prepare> PairSet<P> {
    /// Boxes the split, refusing an empty one.
    pub fn boxed(self, task: &str, help: &str) -> Result<DatasetBox, PluginError> {
        if self.pairs.is_empty() {
            return Err(PluginError::data(format!(
                "{task}: the split {} holds no image",
                self.source
            ))
            .with_help(help.to_string()));
        }
        Ok(DatasetBox::from_value(
            self,
            virb_plugin_api::abi_stable::sabi_trait::TD_Opaque,
        ))
    }
}

impl<P: Prepare> Dataset for PairSet<P> {
    fn meta(&self) -> RResult<DatasetMeta, PluginError> {
        guard(|| {
            Ok(DatasetMeta {
                len: self.pairs.len() as u64,
                num_outputs: self.num_outputs,
                // Pixel-wise: no image-level classes (class names are in the metric details).
                class_names: RVec::new(),
                source: self.source.as_str().into(),
            })
        })
    }

    fn get(&self, index: u64, context: SampleContext) -> RResult<Sample, PluginError> {
        guard(|| {
            let pair = self.pairs.get(index as usize).ok_or_else(|| {
                PluginError::invalid_input(format!(
                    "sample {index} out of range for {} ({} samples)",
                    self.source,
                    self.pairs.len()
                ))
            })?;
            let (input, target) = self.prepare.prepare(pair, index, context)?;
            Ok(Sample {
                input: Tensor::new(input),
                target: Tensor::new(target),
            })
        })
    }
}

/// The files directly in `dir` whose name ends with `suffix`, sorted; an error naming `dir`
/// when it cannot be read.
pub fn files_ending(dir: &Path, suffix: &str, help: &str) -> Result<Vec<PathBuf>, PluginError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        PluginError::data(format!("cannot read folder {}: {e}", dir.display()))
            .with_help(help.to_string())
    })?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The sub-folders of `dir`, sorted by name.
pub fn subfolders(dir: &Path, help: &str) -> Result<Vec<PathBuf>, PluginError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        PluginError::data(format!("cannot read folder {}: {e}", dir.display()))
            .with_help(help.to_string())
    })?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    Ok(out)
}

/// Pairs images with masks by a key (the file stem without the data set's suffix): every image
/// needs a mask and every mask an image, else the error names the unpaired file and the partner
/// it expected.
pub fn pair_by_key(
    task: &str,
    images: Vec<PathBuf>,
    masks: Vec<PathBuf>,
    image_key: impl Fn(&Path) -> String,
    mask_key: impl Fn(&Path) -> String,
    expected_mask: impl Fn(&Path) -> PathBuf,
    expected_image: impl Fn(&Path) -> PathBuf,
) -> Result<Vec<Pair>, PluginError> {
    let mut by_key: std::collections::BTreeMap<String, PathBuf> =
        masks.into_iter().map(|m| (mask_key(&m), m)).collect();
    let mut pairs = Vec::with_capacity(images.len());
    for image in images {
        match by_key.remove(&image_key(&image)) {
            Some(mask) => pairs.push(Pair { image, mask }),
            None => {
                return Err(PluginError::data(format!(
                    "{task}: image {} has no mask (expected {})",
                    image.display(),
                    expected_mask(&image).display()
                ))
                .with_help("every image needs its mask; restore the mask or remove the image"))
            }
        }
    }
    if let Some(mask) = by_key.into_values().next() {
        return Err(PluginError::data(format!(
            "{task}: mask {} has no image (expected {})",
            mask.display(),
            expected_image(&mask).display()
        ))
        .with_help("every mask needs its image; restore the image or remove the mask"));
    }
    Ok(pairs)
}

/// The file name of `path` without `suffix` (the whole name when it does not end so).
pub fn strip_name(path: &Path, suffix: &str) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(suffix)
        .map(str::to_string)
        .unwrap_or(name)
}
