//! virb task plugin: action recognition from several frames. The frozen encoder embeds each
//! frame; the head is an MLP over the frames' embeddings (`Linear(6*2048, 512) -> ReLU ->
//! Linear(512, C)`), with cross-entropy and top-1 accuracy: `KineticsActionPrediction`.
#![allow(non_local_definitions)]

pub mod kinetics;

use virb_plugin_api::{abi_stable::sabi_trait::TD_Opaque, TaskBox};

/// Every task this plugin provides.
pub fn tasks() -> Vec<TaskBox> {
    vec![TaskBox::from_value(
        kinetics::KineticsActionPrediction,
        TD_Opaque,
    )]
}

virb_plugin_api::export_task_plugin!(tasks());
