//! virb task plugin: image-level classification with a linear probe on the encoder's embedding,
//! cross-entropy loss and top-1 accuracy over the whole test split: CalTech-101 (JSON split
//! lists), CIFAR-100 (pickle files) and the folder-per-class data sets Imagenet, SUN397, Eurosat, dtd and Pets.
//!
//! One task per file; the shared data set type lives in [`dataset`].
//!
//! Each task file registers its task (`virb_plugin_kit::register_task!`); the plugin exports
//! every registered task.
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

virb_plugin_api::export_task_plugin!(virb_plugin_kit::registry::registered_tasks());

#[cfg(test)]
mod tests {
    #[test]
    fn registers_every_task_file() {
        let names: Vec<String> = virb_plugin_kit::registry::registered_tasks()
            .iter()
            .map(|t| {
                t.info()
                    .into_result()
                    .map(|i| i.name.to_string())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(
            names,
            [
                "CIFAR-100",
                "CalTech-101",
                "Eurosat",
                "Imagenet",
                "Imagenetv2",
                "Pets",
                "SUN397",
                "dtd"
            ]
        );
    }
}
