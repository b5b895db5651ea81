//! virb task plugin: counting and scene structure, each a linear probe on the embedding with
//! cross-entropy and top-1 accuracy: `CLEVRNumObjects` (objects in a CLEVR scene), `CLEVRDist`
//! (distance of the closest object, in half units) and `THORNumSteps`.
#![allow(non_local_definitions)]

pub mod clevr;
pub mod clevr_dist;
pub mod clevr_num_objects;
pub mod thor_num_steps;

use virb_plugin_api::{abi_stable::sabi_trait::TD_Opaque, TaskBox};

/// Every task this plugin provides.
pub fn tasks() -> Vec<TaskBox> {
    vec![
        TaskBox::from_value(clevr::ClevrTask(&clevr_num_objects::SPEC), TD_Opaque),
        TaskBox::from_value(clevr::ClevrTask(&clevr_dist::SPEC), TD_Opaque),
        TaskBox::from_value(thor_num_steps::ThorNumSteps, TD_Opaque),
    ]
}

virb_plugin_api::export_task_plugin!(tasks());
