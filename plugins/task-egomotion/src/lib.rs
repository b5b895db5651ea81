//! virb task plugin: egomotion from two frames. The frozen encoder embeds each frame; the head is
//! an MLP over both embeddings (`Linear(2*2048, 512) -> ReLU -> Linear(512, C)`), trained with
//! cross-entropy and scored by top-1 accuracy: `THORActionPrediction` and
//! `nuScenesActionPrediction`.
//!
//! Each task file registers its task (`virb_plugin_kit::register_task!`); the plugin exports
//! every registered task.
#![allow(non_local_definitions)]

pub mod nuscenes_action_prediction;
pub mod thor_action_prediction;

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
        assert_eq!(names, ["THORActionPrediction", "nuScenesActionPrediction"]);
    }
}
