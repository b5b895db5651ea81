//! `results.json` (schema `virb.results/1`), the head file, atomic writes and the final table.
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

/// Schema identifier written into every results file.
pub const SCHEMA: &str = "virb.results/2";

/// A plugin and its version.
#[derive(Debug, Clone, Serialize)]
pub struct PluginRef {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
}

/// The encoder that produced the features.
#[derive(Debug, Clone, Serialize)]
pub struct EncoderRecord {
    /// Encoder name (`resnet50`).
    pub name: String,
    /// The plugin that provides it.
    pub plugin: PluginRef,
    /// The weights file, as given in the experiment list.
    pub weights: String,
    /// SHA-256 of the weights file's content.
    pub weights_sha256: String,
    /// Encoder options.
    pub options: serde_json::Value,
}

/// The task.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    /// Task type (`CalTech-101`).
    pub name: String,
    /// Task family.
    pub family: String,
    /// The plugin that provides it.
    pub plugin: PluginRef,
}

/// Wall-clock seconds per phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Decoding and preprocessing images (train + test; shared by all configs of the job; 0
    /// when the features came from the cache).
    pub decode: f64,
    /// Encoder forward passes (train + test; shared by all configs of the job).
    pub encode: f64,
    /// Wall-clock time of getting the features (decoding and encoding overlap, or reading the
    /// cache), train + test.
    pub encode_wall: f64,
    /// Whether the features came from the on-disk cache.
    pub from_cache: bool,
    /// How each split reached training: `cached` (read from the feature cache), `encoded`
    /// (encoded once by this run), `live` (encoded batch by batch while training).
    #[serde(default)]
    pub features: BTreeMap<String, String>,
    /// This config's own training calls (forward, backward, update), summed over repeats.
    pub train: f64,
    /// Evaluating on the test split, summed over repeats.
    pub eval: f64,
}

/// Versions of everything involved.
#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    /// virb-host.
    pub virb: String,
    /// virb-plugin-api the host was built against.
    pub plugin_api: String,
    /// libtorch.
    pub libtorch: String,
}

/// The held-out validation split and what the heads scored on it.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationRecord {
    /// Share of the training split held out.
    pub fraction: f64,
    /// Samples held out.
    pub size: i64,
    /// Whether the split was stratified by class.
    pub stratified: bool,
    /// Validation metrics after the last epoch (mean over repeats), by name.
    pub metrics: BTreeMap<String, f64>,
    /// Best validation metrics over the epochs (mean over repeats of each run's best), by name.
    pub best_metrics: BTreeMap<String, f64>,
}

/// One seed's run of a config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Seed (head initialisation and batch order).
    pub seed: u64,
    /// `ok` or `diverged`.
    pub status: String,
    /// Why it diverged.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// Test metrics, by name.
    pub test_metrics: BTreeMap<String, f64>,
    /// Mean test loss.
    pub test_loss: Option<f64>,
    /// Training metrics of the last epoch, by name.
    pub train_metrics: BTreeMap<String, f64>,
    /// Mean training loss of the last epoch.
    pub train_loss: Option<f64>,
    /// Validation metrics after the last epoch, by name.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_metrics: Option<BTreeMap<String, f64>>,
    /// 0-based epoch with the best validation headline metric.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub best_epoch: Option<u32>,
    /// Validation metrics at the best epoch, by name.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub best_val_metrics: Option<BTreeMap<String, f64>>,
    /// 0-based last epoch trained.
    pub last_epoch: Option<u32>,
    /// Optimiser steps taken.
    pub steps: u64,
    /// Learning rate of the last step.
    pub final_lr: Option<f64>,
    /// The head, relative to the result's folder (none when diverged).
    pub head_file: Option<String>,
    /// SHA-256 of the head file.
    pub head_sha256: Option<String>,
    /// The test metric's details (per-class IoU, ...), when the task gives any.
    #[serde(skip_serializing_if = "serde_json::Value::is_null", default)]
    pub test_details: serde_json::Value,
    /// Seconds in this head's training calls.
    pub train_s: f64,
    /// Seconds evaluating.
    pub eval_s: f64,
}

/// One `results.json`: one (experiment, job, training config), over all its repeats.
#[derive(Debug, Clone, Serialize)]
pub struct ResultRecord {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// `ok`, or `diverged` when a run's loss became NaN or infinite (see `error`).
    pub status: String,
    /// Why it diverged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Experiment name.
    pub experiment: String,
    /// Job name (the virb config's key).
    pub job: String,
    /// Training config name.
    pub config: String,
    /// Hash of everything that determines this result (settings, weights, task, plugins); a
    /// rerun skips the result only when it matches.
    pub config_hash: String,
    /// The task.
    pub task: TaskRecord,
    /// The encoder.
    pub encoder: EncoderRecord,
    /// Training hyperparameters, with defaults filled in.
    pub hyperparameters: serde_json::Value,
    /// Whether the encoder was fine-tuned with the head.
    pub train_encoder: bool,
    /// Name of the headline metric (the first of `test_metrics`).
    pub primary_metric: String,
    /// Whether larger is better for the headline metric.
    pub higher_is_better: bool,
    /// Number of seeds run.
    pub repeats: u32,
    /// Metrics over the whole test split, by name (mean over the repeats that finished).
    pub test_metrics: BTreeMap<String, f64>,
    /// Sample standard deviation (n - 1) of the test metrics over repeats (repeats > 1 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_metrics_std: Option<BTreeMap<String, f64>>,
    /// Metrics on the training batches of the last epoch, by name (mean over repeats).
    pub train_metrics: BTreeMap<String, f64>,
    /// Mean test loss (mean over repeats).
    pub test_loss: Option<f64>,
    /// Mean training loss of the last epoch (mean over repeats).
    pub train_loss: Option<f64>,
    /// ViRB-compatible key: the headline test metric.
    pub test_accuracy: Option<f64>,
    /// ViRB-compatible key: the headline training metric.
    pub train_accuracy: Option<f64>,
    /// The validation split, when the job holds one out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationRecord>,
    /// Epochs per run.
    pub epochs: u32,
    /// Each seed's run.
    pub runs: Vec<RunRecord>,
    /// Training samples (after holding out validation).
    pub train_size: i64,
    /// Test samples.
    pub test_size: i64,
    /// Head outputs (classes).
    pub num_outputs: u32,
    /// Seconds per phase.
    pub timings_s: Timings,
    /// Device used (`cpu`, `cuda:0`).
    pub device: String,
    /// Versions.
    pub versions: Versions,
    /// The test metric's details of the first finished run (per-class IoU, ...), when the task
    /// gives any.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub test_details: serde_json::Value,
    /// The first run's head, relative to this file's folder.
    pub head_file: Option<String>,
    /// SHA-256 of that head file.
    pub head_sha256: Option<String>,
    /// For an eval-only job (such as Imagenetv2): the result folder whose heads were evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluated_head: Option<String>,
    /// When the result was written (RFC 3339, UTC).
    pub finished_at: String,
}

/// Mean and sample standard deviation of each metric over runs (std only with 2+ values).
pub fn mean_std(
    values: &[&BTreeMap<String, f64>],
) -> (BTreeMap<String, f64>, Option<BTreeMap<String, f64>>) {
    let mut mean = BTreeMap::new();
    let mut std = BTreeMap::new();
    let Some(first) = values.first() else {
        return (mean, None);
    };
    for name in first.keys() {
        let xs: Vec<f64> = values.iter().filter_map(|m| m.get(name).copied()).collect();
        let n = xs.len() as f64;
        let mu = xs.iter().sum::<f64>() / n;
        mean.insert(name.clone(), mu);
        if xs.len() > 1 {
            let var = xs.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / (n - 1.0);
            std.insert(name.clone(), var.sqrt());
        }
    }
    let std = (values.len() > 1).then_some(std);
    (mean, std)
}

/// SHA-256 of a file's content, hex.
pub fn sha256_file(path: &Path) -> Result<String, crate::error::JobError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let err = |e: std::io::Error| {
        crate::error::JobError::Other(format!("cannot read {}: {e}", path.display()))
    };
    let mut file = std::fs::File::open(path).map_err(err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a JSON value's canonical text (object keys sorted), hex.
pub fn hash_json(value: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    // serde_json's default map is ordered by key, so `to_string` is canonical.
    hex(&Sha256::digest(value.to_string().as_bytes()))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, synced, renamed.
/// A crash leaves either the old file or the new one, never a partial one.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
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

/// Writes head tensors as safetensors, atomically.
pub fn write_head(path: &Path, tensors: &[(String, tch::Tensor)]) -> std::io::Result<()> {
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

/// The output folder of one (experiment, job, config): `<out>/<experiment>/<job>-<config>`.
pub fn result_dir(out: &Path, experiment: &str, job: &str, config: &str) -> PathBuf {
    out.join(experiment).join(format!("{job}-{config}"))
}

/// A row of the final table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Experiment.
    pub experiment: String,
    /// Job.
    pub job: String,
    /// Config.
    pub config: String,
    /// `metric=value` or `FAILED`.
    pub metric: String,
    /// Value, formatted.
    pub value: String,
    /// Where the result is, or the error.
    pub note: String,
    /// Whether this config is the one selected for its job.
    pub selected: bool,
}

/// Formats rows as an aligned text table.
pub fn table(rows: &[Row]) -> String {
    let header = ["experiment", "job", "config", "metric", "value", "result"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.experiment.clone(),
                r.job.clone(),
                if r.selected {
                    format!("{} *", r.config)
                } else {
                    r.config.clone()
                },
                r.metric.clone(),
                r.value.clone(),
                r.note.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.len());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: Vec<&str>| {
        cols.iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    out.push_str(&line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(|s| s.as_str())
            .collect(),
    ));
    for row in &cells {
        out.push('\n');
        out.push_str(&line(row.iter().map(|s| s.as_str()).collect()));
    }
    out
}
