//! A labelled list of image files: the data set type of every folder-based classification task.
use std::path::PathBuf;
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RString, RVec},
    guard, Dataset, DatasetMeta, PluginError, Sample, Tensor,
};

/// Images with class indices into `classes`.
pub struct ImageList {
    /// `(file, class index)` pairs.
    pub items: Vec<(PathBuf, i64)>,
    /// Class names in index order (identical for the train and test split).
    pub classes: Vec<String>,
    /// Network input side.
    pub image_size: u32,
    /// Where the split came from, for messages.
    pub source: String,
}

impl Dataset for ImageList {
    fn meta(&self) -> RResult<DatasetMeta, PluginError> {
        guard(|| {
            Ok(DatasetMeta {
                len: self.items.len() as u64,
                num_outputs: self.classes.len() as u32,
                class_names: self
                    .classes
                    .iter()
                    .map(|c| RString::from(c.as_str()))
                    .collect::<RVec<_>>(),
                source: self.source.as_str().into(),
            })
        })
    }

    fn get(&self, index: u64) -> RResult<Sample, PluginError> {
        guard(|| {
            let (path, label) = self.items.get(index as usize).ok_or_else(|| {
                PluginError::invalid_input(format!(
                    "sample {index} out of range for {} ({} samples)",
                    self.source,
                    self.items.len()
                ))
            })?;
            let input = virb_plugin_kit::image::load_input(path, self.image_size)?;
            Ok(Sample {
                input: Tensor::new(input),
                target: Tensor::new(tch::Tensor::from(*label)),
            })
        })
    }
}
