//! Building blocks shared by virb's own task plugins: image decoding and preprocessing that match
//! torchvision's, heads with PyTorch's default initialisation, the cross-entropy loss, dataset-level
//! metrics (image-level and pixel-wise), KITTI's flow files, and drawing helpers for synthetic fixture data sets.
//!
//! Third-party plugins may use it too; only `virb-plugin-api` is part of the stable contract.
#![deny(missing_docs)]
#![allow(non_local_definitions)]

pub mod dataset;
pub mod deeplab;
pub mod dense_losses;
pub mod dense_metrics;
pub mod draw;
pub mod flow_png;
pub mod heads;
pub mod image;
pub mod metrics;
pub mod pixel_heads;
pub mod registry;

#[doc(hidden)]
pub use inventory;
#[doc(hidden)]
pub use virb_plugin_api::{abi_stable::sabi_trait::TD_Opaque as __TD_Opaque, TaskBox as __TaskBox};
