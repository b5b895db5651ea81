//! virb task plugin: image-level classification with a linear probe on the encoder's embedding,
//! cross-entropy loss and top-1 accuracy over the whole test split.
//!
//! One task per file; the shared data set type lives in [`dataset`].
#![allow(non_local_definitions)]

pub mod caltech101;
pub mod dataset;

use virb_plugin_api::{abi_stable::sabi_trait::TD_Opaque, TaskBox};

/// Every task this plugin provides.
pub fn tasks() -> Vec<TaskBox> {
    vec![TaskBox::from_value(caltech101::CalTech101, TD_Opaque)]
}

virb_plugin_api::export_task_plugin!(tasks());
