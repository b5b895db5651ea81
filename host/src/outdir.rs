//! The `--out` folder: every path in it and every write to it.
//!
//! ```text
//! <out>/<experiment>/<job>-<config>/results.json        complete result (written last)
//! <out>/<experiment>/<job>-<config>/seed-<s>/run.json   one seed's run (written after its head)
//! <out>/<experiment>/<job>-<config>/seed-<s>/head.safetensors
//! <out>/<experiment>/<job>-<config>/seed-<s>/encoder.safetensors   (fine-tuning)
//! <out>/<experiment>/<job>-<config>/seed-<s>/events.out.tfevents.* (TensorBoard)
//! <out>/<experiment>/<job>.selection.json               the config chosen for the job
//! <out>/<experiment>/.checkpoints/<job>-seed-<s>/        a training pass between epochs
//! <out>/<experiment>/.claims/<job>.claim                the worker doing the job (a lease)
//! <out>/<experiment>/.claims/<job>.done                 how the job ended, in which run
//! <out>/.slurm/<submission>/                            Slurm batch script, units, logs
//! ```
//!
//! Every file is written to a temporary name of its own in its folder (unique across processes
//! and machines, created with `create_new`), synced and renamed, so a crash or a
//! kill leaves the old file or the new one, never a part; a file that names another (a run
//! naming its head, a result naming its runs) is written after it. Names were checked when the
//! configs were loaded ([`crate::names`]), so none of these paths leaves `--out`.
use crate::error::JobError;
use crate::hashing::sha256_file;
use serde::Serialize;
use std::{
    io::Write,
    path::{Path, PathBuf},
};
use virb_records::{RunRecord, SavedRun, RESULTS_FILE, RUN_FILE};

/// Tensors by name, as a safetensors file holds them.
pub type NamedTensors = Vec<(String, tch::Tensor)>;

/// Tensor files of a run besides its head (the fine-tuned encoder): file name and tensors.
pub type TensorFiles = Vec<(&'static str, NamedTensors)>;

/// The output folder of one (experiment, job, config): `<out>/<experiment>/<job>-<config>`.
pub fn result_dir(out: &Path, experiment: &str, job: &str, config: &str) -> PathBuf {
    out.join(experiment).join(format!("{job}-{config}"))
}

/// The `results.json` of a result folder.
pub fn results_file(dir: &Path) -> PathBuf {
    dir.join(RESULTS_FILE)
}

/// Folder of one seed's run of a config.
pub fn seed_dir(cfg_dir: &Path, seed: u64) -> PathBuf {
    cfg_dir.join(format!("seed-{seed}"))
}

/// Folder of the checkpoint of one training pass (a job's seed; a fine-tuned config's seed).
pub fn checkpoint_dir(out: &Path, experiment: &str, pass: &str) -> PathBuf {
    out.join(experiment).join(".checkpoints").join(pass)
}

/// `<out>/<experiment>/<job>.selection.json`.
pub fn selection_file(out: &Path, experiment: &str, job: &str) -> PathBuf {
    out.join(experiment).join(format!("{job}.selection.json"))
}

/// Writes a file through `write` atomically: a temporary file in the same folder, synced,
/// renamed. A crash leaves either the old file or the new one, never a partial one.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // A name no other writer (another process, another machine sharing --out) can have, made
    // with `create_new`: never a file another writer is filling.
    let (file, tmp) = crate::claims::unique_temp(path)?;
    drop(file);
    let outcome = write(&tmp).and_then(|_| {
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)
    });
    if outcome.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    outcome
}

/// Writes a value as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, record: &T) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    write_atomic(path, |tmp| {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(&text)?;
        f.write_all(b"\n")
    })
}

/// Writes tensors as safetensors (on the CPU, contiguous), atomically.
pub fn write_tensors(path: &Path, tensors: &[(String, tch::Tensor)]) -> std::io::Result<()> {
    write_atomic(path, |tmp| {
        let cpu: Vec<(String, tch::Tensor)> = tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.to_device(tch::Device::Cpu).contiguous()))
            .collect();
        // Create the file first: an unwritable folder is then a plain I/O error ("Permission
        // denied") rather than the safetensors crate's debug dump of it.
        std::fs::File::create(tmp)?;
        tch::Tensor::write_safetensors(&cpu, tmp).map_err(|e| {
            let text = e.to_string();
            std::io::Error::other(format!(
                "cannot write safetensors: {}",
                text.lines().next().unwrap_or("unknown error")
            ))
        })
    })
}

/// A seed's run saved by an earlier (possibly killed) run with the same settings, if its head
/// is still the file it was saved with.
pub fn saved_run(seed_dir: &Path, hash: &str) -> Option<RunRecord> {
    let text = std::fs::read_to_string(seed_dir.join(RUN_FILE)).ok()?;
    let saved: SavedRun = serde_json::from_str(&text).ok()?;
    if saved.run_hash != hash {
        return None;
    }
    let record = saved.run;
    if let (Some(file), Some(sha)) = (&record.head_file, &record.head_sha256) {
        let path = seed_dir.parent()?.join(file);
        if sha256_file(&path).ok()? != *sha {
            return None;
        }
    }
    Some(record)
}

/// Saves one seed's run: its tensor files first (`head`, as `head.safetensors`, and any
/// `extra` such as the fine-tuned encoder), then `run.json` naming the head.
pub fn save_run(
    cfg_dir: &Path,
    hash: &str,
    mut record: RunRecord,
    head: Option<NamedTensors>,
    extra: &[(&str, NamedTensors)],
) -> Result<RunRecord, JobError> {
    let dir = seed_dir(cfg_dir, record.seed);
    let io = |what: &str, e: std::io::Error| {
        JobError::Other(format!("cannot write {what} in {}: {e}", dir.display()))
    };
    for (file, tensors) in extra {
        write_tensors(&dir.join(file), tensors).map_err(|e| io(file, e))?;
    }
    if let Some(state) = head {
        let path = dir.join("head.safetensors");
        write_tensors(&path, &state).map_err(|e| io("head.safetensors", e))?;
        record.head_file = Some(format!("seed-{}/head.safetensors", record.seed));
        record.head_sha256 = Some(sha256_file(&path)?);
    }
    let doc = SavedRun {
        run_hash: hash.to_string(),
        run: record,
    };
    write_json(&dir.join(RUN_FILE), &doc).map_err(|e| io(RUN_FILE, e))?;
    Ok(doc.run)
}

/// Removes TensorBoard event files left by an earlier run that is being redone from scratch.
pub fn remove_event_files(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// `<out>/<experiment>/.claims/<job>.claim`: held by the worker doing the (experiment, job).
pub fn claim_file(out: &Path, experiment: &str, job: &str) -> PathBuf {
    out.join(experiment)
        .join(".claims")
        .join(format!("{job}.claim"))
}

/// `<out>/<experiment>/.claims/<job>.done`: how the (experiment, job) ended, in which run.
pub fn done_file(out: &Path, experiment: &str, job: &str) -> PathBuf {
    out.join(experiment)
        .join(".claims")
        .join(format!("{job}.done"))
}
