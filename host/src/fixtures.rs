//! `virb-host fixtures`: writes a task's small synthetic data set, never into a folder that
//! already holds files (the new files would mix with the old ones, and the summary would count
//! only the new ones) unless `--force` replaces it.
use crate::plugins::Registry;
use std::path::{Component, Path};
use virb_plugin_api::FixtureRequest;

/// Writes the fixture of `task` under `data_root`; returns the plugin's one-line summary.
pub fn write(
    reg: &Registry,
    task: &str,
    data_root: &Path,
    request: FixtureRequest,
    force: bool,
) -> Result<String, String> {
    let entry = reg.task(task)?;
    let data_dir = entry.info.data_dir.as_str();
    let safe = !data_dir.is_empty()
        && Path::new(data_dir)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if !safe {
        return Err(format!(
            "task {task} (plugin {}) names its data folder `{data_dir}`, which is not a folder inside the data root; report this to the plugin's authors",
            entry.plugin.name
        ));
    }
    let dir = data_root.join(data_dir);
    let occupied = std::fs::read_dir(&dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(dir.exists());
    if occupied {
        if !force {
            return Err(format!(
                "{} already exists and is not empty: the fixture's files would mix with the ones there; pass --force to replace the folder, or give another data root",
                dir.display()
            ));
        }
        let removed = if dir.is_dir() {
            std::fs::remove_dir_all(&dir)
        } else {
            std::fs::remove_file(&dir)
        };
        removed.map_err(|e| format!("cannot remove {} (--force): {e}", dir.display()))?;
    }
    entry
        .task
        .write_fixture(request)
        .into_result()
        .map(|s| s.to_string())
        .map_err(|e| e.to_string())
}
