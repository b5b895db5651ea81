//! virb task plugin: image-level classification with a linear probe on the encoder's embedding,
//! cross-entropy loss and top-1 accuracy over the whole test split: CalTech-101 (JSON split
//! lists), CIFAR-100 (pickle files) and the folder-per-class data sets Imagenet, SUN397, Eurosat, dtd and Pets.
//!
//! One task per file; the shared data set type lives in [`dataset`].
#![allow(non_local_definitions)]

pub mod caltech101;
pub mod cifar100;
pub mod dtd;
pub mod eurosat;
pub mod folder;
pub mod imagenet;
pub mod imagenetv2;
pub mod pets;
pub mod sun397;

use virb_plugin_api::{abi_stable::sabi_trait::TD_Opaque, TaskBox};

/// Every task this plugin provides.
pub fn tasks() -> Vec<TaskBox> {
    let folder_tasks = [
        &imagenet::SPEC,
        &sun397::SPEC,
        &eurosat::SPEC,
        &dtd::SPEC,
        &pets::SPEC,
    ];
    [
        TaskBox::from_value(caltech101::CalTech101, TD_Opaque),
        TaskBox::from_value(cifar100::Cifar100, TD_Opaque),
        TaskBox::from_value(imagenetv2::Imagenetv2, TD_Opaque),
    ]
    .into_iter()
    .chain(
        folder_tasks
            .into_iter()
            .map(|spec| TaskBox::from_value(folder::FolderTask(spec), TD_Opaque)),
    )
    .collect()
}

virb_plugin_api::export_task_plugin!(tasks());
