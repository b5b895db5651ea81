//! `results.json` (schema `virb.results/1`), the head file, atomic writes and the final table.
use serde::Serialize;
use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

/// Schema identifier written into every results file.
pub const SCHEMA: &str = "virb.results/1";

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
#[derive(Debug, Clone, Serialize)]
pub struct Timings {
    /// Decoding and preprocessing images (train + test; shared by all configs of the job).
    pub decode: f64,
    /// Encoder forward passes (train + test; shared by all configs of the job).
    pub encode: f64,
    /// Wall-clock time of decoding and encoding together (they overlap), train + test.
    pub encode_wall: f64,
    /// Training this config's head.
    pub train: f64,
    /// Evaluating it on the test split.
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

/// One `results.json`: one (experiment, job, training config).
#[derive(Debug, Clone, Serialize)]
pub struct ResultRecord {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// Experiment name.
    pub experiment: String,
    /// Job name (the virb config's key).
    pub job: String,
    /// Training config name.
    pub config: String,
    /// The task.
    pub task: TaskRecord,
    /// The encoder.
    pub encoder: EncoderRecord,
    /// Training hyperparameters, with defaults filled in.
    pub hyperparameters: serde_json::Value,
    /// Name of the headline metric (the first of `test_metrics`).
    pub primary_metric: String,
    /// Whether larger is better for the headline metric.
    pub higher_is_better: bool,
    /// Metrics over the whole test split, by name.
    pub test_metrics: BTreeMap<String, f64>,
    /// Metrics on the training batches of the last epoch, by name.
    pub train_metrics: BTreeMap<String, f64>,
    /// Mean test loss.
    pub test_loss: f64,
    /// Mean training loss of the last epoch.
    pub train_loss: f64,
    /// ViRB-compatible key: the headline test metric.
    pub test_accuracy: f64,
    /// ViRB-compatible key: the headline training metric.
    pub train_accuracy: f64,
    /// Epochs trained.
    pub epochs: u32,
    /// Learning rate of the last optimiser step.
    pub final_lr: f64,
    /// Training samples.
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
    /// The saved head, relative to this file's folder.
    pub head_file: String,
    /// SHA-256 of the head file, binding this result to the head written with it.
    pub head_sha256: String,
    /// For an eval-only job (such as Imagenetv2): the result folder whose head was evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluated_head: Option<String>,
    /// When the result was written (RFC 3339, UTC).
    pub finished_at: String,
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

/// Writes a results file atomically.
pub fn write_results(path: &Path, record: &ResultRecord) -> std::io::Result<()> {
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
        tch::Tensor::write_safetensors(&cpu, tmp).map_err(std::io::Error::other)
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
                r.config.clone(),
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
