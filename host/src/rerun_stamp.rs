//! The rerun stamp of a run that finished with every result complete (see the `virb-rerun`
//! crate): what its outcome depends on and the table it printed, so that `virb-host` answers an
//! identical rerun without loading libtorch or a plugin.
use crate::plan::RunOptions;
use crate::plugins::Registry;
use std::ffi::OsString;
use virb_rerun::{Inputs, Stamp};

/// Entries of out/ past which no stamp is written: checking them would cost a rerun about as
/// much as the survey it saves.
const OUT_LIMIT: usize = 200_000;
/// Entries of the data root a stamp lists at most (fewer levels when there are more).
const DATA_LIMIT: usize = 20_000;
/// Levels of the data root listed: the task folder, its split files and image folders, and their
/// class folders (a file added to or removed from any of them changes that folder's times).
const DATA_DEPTH: usize = 3;

/// After a run: writes its stamp when `complete` (every result there, nothing forced), else
/// removes any stamp of the same command, which can no longer be trusted.
pub(crate) fn update(opts: &RunOptions, reg: &Registry, stdout: &str, complete: bool) {
    if !virb_rerun::enabled() {
        return;
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Ok(cwd) = std::env::current_dir() else {
        return;
    };
    let key = virb_rerun::key(&args, &cwd);
    let entries = if complete { inputs(opts, reg) } else { None };
    let Some(entries) = entries else {
        virb_rerun::remove(&key);
        return;
    };
    let stamp = Stamp {
        format: virb_rerun::FORMAT,
        key,
        written_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        out: std::path::absolute(&opts.out).unwrap_or_else(|_| opts.out.clone()),
        entries,
        stdout: stdout.to_string(),
    };
    if let Err(e) = virb_rerun::write(&stamp) {
        tracing::warn!("cannot write the rerun stamp: {e}");
    }
}

/// Everything the run's outcome depends on (see the `virb-rerun` crate), or `None` when out/
/// is too large to list.
fn inputs(opts: &RunOptions, reg: &Registry) -> Option<Vec<virb_rerun::Entry>> {
    let mut i = Inputs::default();
    i.path(&opts.experiment_list);
    i.path(&opts.virb_configs);
    for site in crate::site::standard_paths() {
        i.path(&site);
    }
    for exp in crate::config::load_experiment_list(&opts.experiment_list).ok()? {
        i.path(&exp.weights);
    }
    for dir in &reg.dirs {
        // Each plugin file, and the folder (a plugin added or removed changes its times).
        i.tree(&dir.path, 1, DATA_LIMIT, false).ok()?;
    }
    for p in &reg.plugins {
        i.path(&p.path);
    }
    if let Ok(exe) = std::env::current_exe() {
        i.path(&exe.with_file_name("virb-host"));
        i.path(&exe);
    }
    let data = (1..=DATA_DEPTH).rev().find_map(|depth| {
        let mut d = Inputs::default();
        d.tree(&opts.data_root, depth, DATA_LIMIT, false)
            .ok()
            .map(|()| d)
    })?;
    i.extend(data);
    // Every result, head, selection and report; not the hidden claims, Slurm logs or shards.
    i.tree(&opts.out, usize::MAX, OUT_LIMIT, true).ok()?;
    Some(i.into_entries())
}
