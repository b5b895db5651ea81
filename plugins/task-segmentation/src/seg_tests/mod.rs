//! Unit tests of the tasks: layouts read from fixtures in temporary folders, label mapping,
//! augmentation that keeps image and mask aligned, bad input, heads and losses.
#![allow(clippy::unwrap_used)]

mod binary_tasks;
mod cityscapes;
mod egohands;
mod heads;

use std::path::Path;
use virb_plugin_api::{
    DatasetBox, DatasetRequest, FixtureRequest, PluginError, SampleContext, Split, Task,
};

/// Writes `task`'s fixture under `root`.
pub fn fixture(task: &impl Task, root: &Path, classes: u32, train: u32, test: u32, size: u32) {
    task.write_fixture(FixtureRequest {
        data_root: root.display().to_string().into(),
        classes,
        train_per_class: train,
        test_per_class: test,
        image_size: size,
        seed: 7,
        options_json: "{}".into(),
    })
    .into_result()
    .unwrap();
}

/// The request for a split.
pub fn request(root: &Path, split: Split, size: u32) -> DatasetRequest {
    DatasetRequest {
        data_root: root.display().to_string().into(),
        split_ne: split.to_ne(),
        image_size: size,
        options_json: "{}".into(),
    }
}

/// Opens a split, panicking on error.
pub fn open(task: &impl Task, root: &Path, split: Split, size: u32) -> DatasetBox {
    task.open(request(root, split, size)).into_result().unwrap()
}

/// The error of opening a split.
pub fn open_error(task: &impl Task, root: &Path, split: Split) -> PluginError {
    match task.open(request(root, split, 64)).into_result() {
        Ok(_) => panic!("opening succeeded"),
        Err(e) => e,
    }
}

/// Sample `i` as tch tensors.
pub fn sample(ds: &DatasetBox, i: u64, context: SampleContext) -> (tch::Tensor, tch::Tensor) {
    let s = ds.get(i, context).into_result().unwrap();
    (s.input.into_tch(), s.target.into_tch())
}

/// The error of reading sample `i`.
pub fn sample_error(ds: &DatasetBox, i: u64) -> PluginError {
    match ds.get(i, SampleContext::PLAIN).into_result() {
        Ok(_) => panic!("reading succeeded"),
        Err(e) => e,
    }
}

/// A training read of epoch `epoch`.
pub fn train_context(epoch: u32) -> SampleContext {
    SampleContext {
        augment: true,
        epoch,
        seed: 1,
    }
}

/// The distinct values of an int64 tensor.
pub fn values(t: &tch::Tensor) -> std::collections::BTreeSet<i64> {
    Vec::<i64>::try_from(&t.flatten(0, -1))
        .unwrap()
        .into_iter()
        .collect()
}

/// Writes a grey PNG.
pub fn grey_png(path: &Path, w: u32, h: u32, value: u8) {
    crate::fixture::write_grey_png(path, w, h, &vec![value; (w * h) as usize]).unwrap();
}
