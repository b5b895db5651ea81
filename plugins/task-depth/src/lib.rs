//! virb task plugin: pixel-wise depth (its tasks land in the next commits).
#![allow(non_local_definitions)]

virb_plugin_api::export_task_plugin!(virb_plugin_kit::registry::registered_tasks());
