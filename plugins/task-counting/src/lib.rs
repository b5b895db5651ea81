//! virb task plugin: counting and scene structure, each a linear probe on the embedding with
//! cross-entropy and top-1 accuracy: `CLEVRNumObjects` (objects in a CLEVR scene), `CLEVRDist`
//! (distance of the closest object, in half units) and `THORNumSteps`.
//!
//! Each task file registers its task (`virb_plugin_kit::register_task!`); the plugin exports
//! every registered task.
#![allow(non_local_definitions)]

pub mod clevr;
pub mod clevr_dist;
pub mod clevr_num_objects;
pub mod thor_num_steps;

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
        assert_eq!(names, ["CLEVRDist", "CLEVRNumObjects", "THORNumSteps"]);
    }
}
