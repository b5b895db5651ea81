//! A labelled list of image files, one or several frames per sample: the data set type of every
//! file-based classification task (folder classes, split lists, frame pairs, clips).
use std::path::PathBuf;
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RString, RVec},
    guard, Dataset, DatasetBox, DatasetMeta, MetricSpec, PluginError, Sample, SampleContext,
    TaskInfo, Tensor,
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

    fn get(&self, index: u64, _context: SampleContext) -> RResult<Sample, PluginError> {
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
        pixel_wise: false,
        wants_encoder_state: false,
        options: RVec::new(),
    }
}

/// Class names `"0"`..`"max"` for tasks whose classes are integers (counts, steps, distances),
/// from every label of both splits with where it came from (`file:line`, or a scene of a file).
///
/// The number of classes comes from the data, so one absurd label would make an absurd head (a
/// label of 10^9 asks for a 10^9-way classifier): more than `max_classes` classes is an error
/// that names the largest label, where it is, and the distinct values found.
pub fn integer_classes<S: std::fmt::Display>(
    task: &str,
    labels: impl IntoIterator<Item = (i64, S)>,
    max_classes: i64,
) -> Result<Vec<String>, PluginError> {
    let mut max: Option<(i64, S)> = None;
    let mut distinct = std::collections::BTreeSet::new();
    for (label, origin) in labels {
        distinct.insert(label);
        if max.as_ref().is_none_or(|(m, _)| label > *m) {
            max = Some((label, origin));
        }
    }
    let top = match max {
        Some((label, origin)) if label >= max_classes => {
            return Err(PluginError::data(format!(
                "{task}: label {label} ({origin}) would make a {}-way classifier, but {task} allows at most {max_classes} classes (labels 0 to {}); found {} distinct values: {}",
                label as i128 + 1,
                max_classes - 1,
                distinct.len(),
                ranges(&distinct)
            ))
            .with_help("fix that label (a typo, or another column of the file?)"));
        }
        Some((label, _)) => label.max(0),
        None => 0,
    };
    Ok((0..=top).map(|i| i.to_string()).collect())
}

/// `0-15, 17, 999999999`: sorted values with runs collapsed, at most 12 runs shown.
fn ranges(values: &std::collections::BTreeSet<i64>) -> String {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &v in values {
        match runs.last_mut() {
            Some((_, end)) if v == *end + 1 => *end = v,
            _ => runs.push((v, v)),
        }
    }
    let shown: Vec<String> = runs
        .iter()
        .take(12)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    let more = runs.len().saturating_sub(12);
    if more > 0 {
        format!("{} and {more} more runs", shown.join(", "))
    } else {
        shown.join(", ")
    }
}
