//! Task registration: each task file of a plugin registers itself with [`register_task!`], and
//! the plugin exports [`registered_tasks`], so adding a task touches one file.
//!
//! The registry is an `inventory` collection. The kit is compiled into each plugin library, so
//! each library has its own registry and lists only the tasks compiled into it.
use virb_plugin_api::TaskBox;

/// One task a plugin provides: how to build it.
pub struct TaskRegistration {
    /// Builds the task object.
    pub build: fn() -> TaskBox,
}

inventory::collect!(TaskRegistration);

/// Every task registered in this library, sorted by task name (registration order is not
/// defined).
pub fn registered_tasks() -> Vec<TaskBox> {
    let mut tasks: Vec<(String, TaskBox)> = inventory::iter::<TaskRegistration>
        .into_iter()
        .map(|r| {
            let task = (r.build)();
            let name = task
                .info()
                .into_result()
                .map(|i| i.name.to_string())
                .unwrap_or_default();
            (name, task)
        })
        .collect();
    tasks.sort_by(|a, b| a.0.cmp(&b.0));
    tasks.into_iter().map(|(_, t)| t).collect()
}

/// Registers a task (an expression implementing `virb_plugin_api::Task`) in this library.
///
/// ```ignore
/// virb_plugin_kit::register_task!(MyTask);
/// ```
#[macro_export]
macro_rules! register_task {
    ($task:expr) => {
        $crate::inventory::submit! {
            $crate::registry::TaskRegistration {
                build: || {
                    $crate::__TaskBox::from_value($task, $crate::__TD_Opaque)
                },
            }
        }
    };
}
