//! virb task plugin: pixel-wise segmentation on the encoder's feature pyramid.
//!
//! * [`cityscapes`] `CityscapesSemanticSegmentation`: 20 outputs (void and 19 classes, void
//!   ignored), ViRB's DeepLabV3+ head, mIoU over the 19 classes;
//! * [`egohands`] `EgoHands`: 5 classes, DeepLabV3+, class-weighted cross-entropy, mIoU over
//!   the four hands;
//! * [`pets_detection`] `Pets-Detection`: pet (positive) vs background, PixelWise head, BCE,
//!   IoU of the pet;
//! * [`nyu_walkable`] `NYUWalkable`: walkable floor vs the rest, PixelWise head, BCE, IoU of
//!   the floor.
//!
//! Every metric is dataset-level (one confusion matrix over the split). A sample's target is an
//! `[H, W]` int64 map of class ids, 255 where a pixel is ignored ([`dense::IGNORE`]). One task
//! per file, each registering itself; the shared pieces are [`dense`] (masks, geometric
//! augmentation), [`pairs`] (layouts, pairing, the data set type), [`augment`] (colour
//! jitter), [`head`], [`pixel`], [`metric`], [`binary`], [`options`] and [`fixture`].
#![allow(non_local_definitions)]

pub mod augment;
pub mod binary;
pub mod cityscapes;
pub mod dense;
pub mod egohands;
pub mod fixture;
pub mod head;
pub mod metric;
pub mod nyu_walkable;
pub mod options;
pub mod pairs;
pub mod pets_detection;
pub mod pixel;

#[cfg(test)]
mod seg_tests;

virb_plugin_api::export_task_plugin!(virb_plugin_kit::registry::registered_tasks());
