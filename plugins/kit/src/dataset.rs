//! A labelled list of image files, one or several frames per sample: the data set type of every
//! file-based classification task (folder classes, split lists, frame pairs, clips).
use std::path::PathBuf;
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RString, RVec},
    guard, Dataset, DatasetBox, DatasetMeta, MetricSpec, PluginError, Sample, TaskInfo, Tensor,
};

/// Samples (frame files and a class index into `classes`).
pub struct ImageList {
    /// `(frames, class index)`: one file for a single-image sample, `T` files for `T` frames.
    pub items: Vec<(Vec<PathBuf>, i64)>,
    /// Class names in index order (identical for the train and test split).
    pub classes: Vec<String>,
    /// Network input side.
    pub image_size: u32,
    /// Where the split came from, for messages.
    pub source: String,
}

impl ImageList {
    /// Single-image samples.
    pub fn single(
        items: Vec<(PathBuf, i64)>,
        classes: Vec<String>,
        image_size: u32,
        source: String,
    ) -> Self {
        ImageList {
            items: items.into_iter().map(|(p, l)| (vec![p], l)).collect(),
            classes,
            image_size,
            source,
        }
    }

    /// Boxes the list for the plugin boundary, refusing an empty one.
    pub fn boxed(self, task: &str) -> Result<DatasetBox, PluginError> {
        if self.items.is_empty() {
            return Err(PluginError::data(format!(
                "{task}: the split {} is empty",
                self.source
            )));
        }
        Ok(DatasetBox::from_value(
            self,
            virb_plugin_api::abi_stable::sabi_trait::TD_Opaque,
        ))
    }
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
            let (paths, label) = self.items.get(index as usize).ok_or_else(|| {
                PluginError::invalid_input(format!(
                    "sample {index} out of range for {} ({} samples)",
                    self.source,
                    self.items.len()
                ))
            })?;
            let frames = paths
                .iter()
                .map(|p| crate::image::load_input(p, self.image_size))
                .collect::<Result<Vec<_>, _>>()?;
            let input = match frames.as_slice() {
                [one] => one.shallow_clone(),
                many => tch::Tensor::f_stack(many, 0)?,
            };
            Ok(Sample {
                input: Tensor::new(input),
                target: Tensor::new(tch::Tensor::from(*label)),
            })
        })
    }
}

/// The description of a classification-style task: cross-entropy on the `embedding` of each of
/// `frames` frames, top-1 accuracy.
pub fn classification_info(
    name: &str,
    family: &str,
    data_dir: &str,
    layout: &str,
    frames: u32,
) -> TaskInfo {
    TaskInfo {
        name: name.into(),
        family: family.into(),
        data_dir: data_dir.into(),
        layout: layout.into(),
        metrics: vec![MetricSpec {
            name: "top1_accuracy".into(),
            higher_is_better: true,
        }]
        .into(),
        required_outputs: vec![RString::from("embedding")].into(),
        frames,
        encodable: true,
        evaluates_heads_of: RString::new(),
    }
}

/// Class names `"0"`..`"max"` for tasks whose classes are integers (counts, steps, distances).
pub fn integer_classes(labels: impl IntoIterator<Item = i64>) -> Vec<String> {
    let max = labels.into_iter().max().unwrap_or(0).max(0);
    (0..=max).map(|i| i.to_string()).collect()
}
