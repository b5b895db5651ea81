//! virb task plugin: pixel-wise regression on the encoder's feature pyramid, ViRB's
//! "pixel-wise structural" tasks: `THORDepth`, `NYUDepth`, `TaskonomyDepth`, `TaskonomyEdges`
//! and `TaskonomyInpainting`.
//!
//! Every task uses ViRB's PixelWise head ([`head::PixelHead`]: the kit's
//! [`virb_plugin_kit::pixel_heads::PixelDecoder`] over `conv`, `block1` .. `block4`, sized from
//! the encoder's pyramid, resized bilinearly to the input when its 2x-`conv` size differs) and an
//! L1 loss over the pixels the task calls valid. Metrics are dataset-level: computed per image
//! over its valid pixels, then averaged over the images, as the depth toolboxes do (see
//! [`head::Scoring`] for each task's list and units).
//!
//! Targets and their fixes of ViRB's bugs, per task (each file says more):
//! * `THORDepth`: ViRB's (grey/255 − 0.5)/0.25, rgb and depth files paired by name, not by the
//!   position of two separately sorted lists.
//! * `NYUDepth`: metres from a float (or 16-bit, millimetres) TIFF; missing depth (0) and NaN/inf
//!   are masked out of loss and metrics when resizing (valid-weighted), NaN/inf counted.
//! * `TaskonomyDepth`: clamp at 10000, then a true per-image min–max scaling to [0, 1] (ViRB
//!   divided by the max, then subtracted the min).
//! * `TaskonomyEdges`: per-image min–max, plain L1 (ViRB's label-weighted L1 is degenerate).
//! * `TaskonomyInpainting`: the centre square zeroed in the input; L1 over the hole is the
//!   headline, ViRB's whole-image L1 beside it.
//!
//! Training augmentation (THOR, NYU): ColorJitter(0.4, 0.4, 0.4, 0.2) and RandomGrayscale(0.2) on
//! the image only ([`augment`]). Each task file registers its task
//! (`virb_plugin_kit::register_task!`); the plugin exports every registered task.
#![allow(non_local_definitions)]

pub mod augment;
pub mod data;
pub mod fixture;
pub mod head;
pub mod nyu_depth;
pub mod taskonomy;
pub mod taskonomy_depth;
pub mod taskonomy_edges;
pub mod taskonomy_inpainting;
pub mod thor_depth;

virb_plugin_api::export_task_plugin!(virb_plugin_kit::registry::registered_tasks());
