//! virb task plugin: egomotion from two frames. The frozen encoder embeds each frame; the head is
//! an MLP over both embeddings (`Linear(2*2048, 512) -> ReLU -> Linear(512, C)`), trained with
//! cross-entropy and scored by top-1 accuracy: `THORActionPrediction` and
//! `nuScenesActionPrediction`.
#![allow(non_local_definitions)]

pub mod nuscenes_action_prediction;
pub mod thor_action_prediction;

use virb_plugin_api::{abi_stable::sabi_trait::TD_Opaque, TaskBox};

/// Every task this plugin provides.
pub fn tasks() -> Vec<TaskBox> {
    vec![
        TaskBox::from_value(thor_action_prediction::ThorActionPrediction, TD_Opaque),
        TaskBox::from_value(
            nuscenes_action_prediction::NuScenesActionPrediction,
            TD_Opaque,
        ),
    ]
}

virb_plugin_api::export_task_plugin!(tasks());
