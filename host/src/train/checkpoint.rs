//! Checkpoints of a training pass: every head's state, its optimiser's buffers and its history,
//! saved after an epoch so that a killed run continues from there instead of from scratch.
//!
//! A checkpoint is `state-e<epoch>.safetensors` plus `state.json`, which names that file and its
//! SHA-256 and is written (atomically) last: a crash at any point leaves either the previous
//! complete checkpoint or the new one. A checkpoint whose key, file or hash does not match is
//! ignored (the pass starts over) and never half-used.
use super::trainee::{EpochRecord, Stop, Trainee};
use crate::error::{plugin, JobError};
use crate::hashing::sha256_file;
use crate::outdir::write_atomic;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tch::Tensor;
use virb_plugin_api::NamedTensor;

#[derive(Serialize, Deserialize)]
struct TraineeState {
    config: String,
    seed: u64,
    step: u64,
    opt_step: i32,
    busy_s: f64,
    stop: Option<Stop>,
    history: Vec<EpochRecord>,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    key: String,
    epochs_done: u32,
    tensors: String,
    tensors_sha256: String,
    trainees: Vec<TraineeState>,
}

const MANIFEST: &str = "state.json";

/// Saves the state of every trainee after `epochs_done` epochs.
pub fn save(
    policy: &super::CheckpointPolicy,
    trainees: &[Trainee],
    epochs_done: u32,
) -> Result<(), JobError> {
    let dir = &policy.dir;
    let io = |e: std::io::Error| {
        JobError::Other(format!("cannot write checkpoint in {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut states = Vec::new();
    for (i, t) in trainees.iter().enumerate() {
        for nt in plugin(t.head.state())? {
            tensors.push((format!("{i}/head/{}", nt.name), nt.tensor.into_tch()));
        }
        for (j, m) in t.opt.m.iter().enumerate() {
            if let Some(m) = m {
                tensors.push((format!("{i}/m/{j}"), m.shallow_clone()));
            }
        }
        for (j, v) in t.opt.v.iter().enumerate() {
            if let Some(v) = v {
                tensors.push((format!("{i}/v/{j}"), v.shallow_clone()));
            }
        }
        states.push(TraineeState {
            config: t.config.clone(),
            seed: t.seed,
            step: t.step,
            opt_step: t.opt.step,
            busy_s: t.busy_s,
            stop: t.stop.clone(),
            history: t.history.clone(),
        });
    }
    let name = format!("state-e{epochs_done}.safetensors");
    let path = dir.join(&name);
    crate::outdir::write_tensors(&path, &tensors).map_err(io)?;
    let manifest = Manifest {
        key: policy.key.clone(),
        epochs_done,
        tensors: name.clone(),
        tensors_sha256: sha256_file(&path)?,
        trainees: states,
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| io(std::io::Error::other(e)))?;
    write_atomic(&dir.join(MANIFEST), |tmp| std::fs::write(tmp, &text)).map_err(io)?;
    // Older tensor files are no longer referenced.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("state-e") && n.ends_with(".safetensors") && n != name {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// Restores the trainees from the checkpoint in `policy.dir`, if there is a valid one for the
/// same key and the same trainees; returns the number of epochs already done (0: start over).
pub fn load(policy: &super::CheckpointPolicy, trainees: &mut [Trainee]) -> Result<u32, JobError> {
    let dir = &policy.dir;
    let Ok(text) = std::fs::read_to_string(dir.join(MANIFEST)) else {
        return Ok(0);
    };
    let ignore = |why: String| {
        eprintln!(
            "checkpoint {} not used ({why}); starting this pass over",
            dir.display()
        );
        Ok(0)
    };
    let manifest: Manifest = match serde_json::from_str(&text) {
        Ok(m) => m,
        Err(e) => return ignore(format!("unreadable: {e}")),
    };
    if manifest.key != policy.key {
        return ignore("written for other settings".into());
    }
    let same = manifest.trainees.len() == trainees.len()
        && manifest
            .trainees
            .iter()
            .zip(trainees.iter())
            .all(|(s, t)| s.config == t.config && s.seed == t.seed);
    if !same {
        return ignore("written for another set of configs".into());
    }
    let path = dir.join(&manifest.tensors);
    match sha256_file(&path) {
        Ok(h) if h == manifest.tensors_sha256 => {}
        Ok(_) => return ignore(format!("{} does not match its hash", path.display())),
        Err(e) => return ignore(e.to_string()),
    }
    let loaded = match Tensor::read_safetensors(&path) {
        Ok(t) => t,
        Err(e) => return ignore(format!("cannot read {}: {e}", path.display())),
    };
    let mut by_name: HashMap<String, Tensor> = loaded.into_iter().collect();
    for (i, (t, s)) in trainees.iter_mut().zip(manifest.trainees).enumerate() {
        let prefix = format!("{i}/head/");
        let mut state = Vec::new();
        let keys: Vec<String> = by_name
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        for k in keys {
            if let Some(tensor) = by_name.remove(&k) {
                state.push(NamedTensor::new(&k[prefix.len()..], tensor));
            }
        }
        plugin(t.head.load_state(state.into()))?;
        let device = t.opt.params.first().map(|p| p.device());
        for j in 0..t.opt.params.len() {
            let to_dev = |x: Tensor| match device {
                Some(d) => x.to_device(d),
                None => x,
            };
            t.opt.m[j] = by_name.remove(&format!("{i}/m/{j}")).map(to_dev);
            t.opt.v[j] = by_name.remove(&format!("{i}/v/{j}")).map(to_dev);
        }
        t.opt.step = s.opt_step;
        t.step = s.step;
        t.busy_s = s.busy_s;
        t.stop = s.stop;
        t.history = s.history;
    }
    eprintln!(
        "resuming from checkpoint {} after epoch {}",
        dir.display(),
        manifest.epochs_done
    );
    Ok(manifest.epochs_done)
}

/// Removes a pass's checkpoint once its results are written.
pub fn remove(dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
    // The experiment's `.checkpoints` folder goes too once nothing else is in it.
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
}
