//! virb task plugin: optical flow, `KITTI`, with ViRB's siamese pixel-wise head on the encoder's
//! pyramid (`conv`, `block1` .. `block4` of both frames).
//!
//! The default target is the **real** flow (`training/flow_occ`, KITTI's 16-bit encoding), scored
//! by EPE (the headline, lower is better) and Fl-all in pixels of the original frame. The task
//! option `target: viz` keeps ViRB's protocol reachable (the grey level of the flow's colour
//! visualisation, scored by the share of pixels within 0.05): it is not optical flow, its score
//! is reported in the results' `test_details.viz_accuracy`, and `epe`/`fl_all` are null then
//! (see [`metric`] for why).
//!
//! One task per file ([`kitti`]), registered with `virb_plugin_kit::register_task!`; the plugin
//! exports every registered task.
#![allow(non_local_definitions)]

pub mod data;
pub mod fixture;
#[cfg(test)]
mod flow_tests;
pub mod head;
pub mod kitti;
pub mod metric;
pub mod options;

virb_plugin_api::export_task_plugin!(virb_plugin_kit::registry::registered_tasks());
