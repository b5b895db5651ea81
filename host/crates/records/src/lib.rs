//! `results.json` and `run.json`: the one typed schema of virb's results.
//!
//! The host writes these records ([`ResultRecord`] per (experiment, job, config), [`SavedRun`]
//! per seed), reads them back to resume a run and to find the heads an eval-only job evaluates,
//! and `virb-host report` reads them for its tables and plots: all through these types, so a
//! field cannot mean one thing to the writer and another to a reader.
//!
//! Reading is lenient where a reader can carry on: every field but the identity (`schema`,
//! `experiment`, `job`, `config`, `task.name`) has a default, a metric that was not finite is
//! written by serde_json as `null` and read back as absent, and unknown fields are ignored.
//! Writing always gives every field.
use serde::{Deserialize, Deserializer, Serialize};
use std::{collections::BTreeMap, path::PathBuf};

/// Schema identifier written into every results file.
pub const SCHEMA: &str = "virb.results/2";

/// The file name that marks a finished result.
pub const RESULTS_FILE: &str = "results.json";

/// A seed's saved run, in its folder (`<job>-<config>/seed-<s>/run.json`).
pub const RUN_FILE: &str = "run.json";

/// Metric values by name.
pub type Metrics = BTreeMap<String, f64>;

/// A plugin and its version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginRef {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
}

/// The encoder that produced the features.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Task type (`CalTech-101`).
    pub name: String,
    /// Task family.
    #[serde(default)]
    pub family: String,
    /// The plugin that provides it.
    #[serde(default)]
    pub plugin: PluginRef,
}

/// Wall-clock seconds per phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
    /// (encoded once by this run), `live` (encoded batch by batch while training), with
    /// `, memory-mapped` when read from a mapped cache file.
    pub features: BTreeMap<String, String>,
    /// This config's own training calls (forward, backward, update), summed over repeats.
    pub train: f64,
    /// Evaluating on the test split, summed over repeats.
    pub eval: f64,
}

/// Versions of everything involved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Versions {
    /// virb-host.
    pub virb: String,
    /// virb-plugin-api the host was built against.
    pub plugin_api: String,
    /// libtorch.
    pub libtorch: String,
}

/// The held-out validation split and what the heads scored on it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ValidationRecord {
    /// Share of the training split held out.
    pub fraction: f64,
    /// Samples held out.
    pub size: i64,
    /// Whether the split was stratified by class.
    pub stratified: bool,
    /// Validation metrics after the last epoch (mean over repeats), by name.
    #[serde(deserialize_with = "metrics")]
    pub metrics: Metrics,
    /// Best validation metrics over the epochs (mean over repeats of each run's best), by name.
    #[serde(deserialize_with = "metrics")]
    pub best_metrics: Metrics,
}

/// One seed's run of a config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunRecord {
    /// Seed (head initialisation and batch order).
    pub seed: u64,
    /// `ok`, `diverged` (a NaN/inf loss) or `failed`.
    #[serde(deserialize_with = "status")]
    pub status: String,
    /// Why it diverged or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Test metrics, by name.
    #[serde(deserialize_with = "metrics")]
    pub test_metrics: Metrics,
    /// Mean test loss.
    pub test_loss: Option<f64>,
    /// Training metrics of the last epoch, by name.
    #[serde(deserialize_with = "metrics")]
    pub train_metrics: Metrics,
    /// Mean training loss of the last epoch.
    pub train_loss: Option<f64>,
    /// Validation metrics after the last epoch, by name.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_metrics"
    )]
    pub val_metrics: Option<Metrics>,
    /// 0-based epoch with the best validation headline metric.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_epoch: Option<u32>,
    /// Validation metrics at the best epoch, by name.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_metrics"
    )]
    pub best_val_metrics: Option<Metrics>,
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
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub test_details: serde_json::Value,
    /// Seconds in this head's training calls.
    pub train_s: f64,
    /// Seconds evaluating.
    pub eval_s: f64,
}

impl RunRecord {
    /// Whether the run finished normally.
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

/// `run.json`: one seed's run and the hash of everything it was trained for; a rerun with the
/// same hash reuses it instead of training again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedRun {
    /// Hash of the job's identity, the training config and the seed.
    pub run_hash: String,
    /// The run.
    pub run: RunRecord,
}

/// One `results.json`: one (experiment, job, training config), over all its repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// Always [`SCHEMA`] when written; [`ResultRecord::parse`] refuses any other.
    pub schema: String,
    /// `ok`, or `diverged` when a run's loss became NaN or infinite (see `error`).
    #[serde(default = "status_ok", deserialize_with = "status")]
    pub status: String,
    /// Why it diverged.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// Experiment name: the encoder checkpoint being compared (`SWAV_800`).
    pub experiment: String,
    /// Job name (the virb config's key, usually the task's name).
    pub job: String,
    /// Training config name.
    pub config: String,
    /// Hash of everything that determines this result (settings, weights, task, plugins); a
    /// rerun skips the result only when it matches.
    #[serde(default, deserialize_with = "null_default")]
    pub config_hash: String,
    /// The task.
    pub task: TaskRecord,
    /// The encoder.
    #[serde(default)]
    pub encoder: EncoderRecord,
    /// Training hyperparameters, with defaults filled in.
    #[serde(default)]
    pub hyperparameters: serde_json::Value,
    /// Whether the encoder was fine-tuned with the head.
    #[serde(default)]
    pub train_encoder: bool,
    /// Name of the headline metric (the first of `test_metrics`).
    #[serde(default, deserialize_with = "null_default")]
    pub primary_metric: String,
    /// Whether larger is better for the headline metric.
    #[serde(default = "yes", deserialize_with = "higher_is_better")]
    pub higher_is_better: bool,
    /// Number of seeds run (at least 1).
    #[serde(default = "one", deserialize_with = "repeats")]
    pub repeats: u32,
    /// Metrics over the whole test split, by name (mean over the repeats that finished).
    #[serde(default, deserialize_with = "metrics")]
    pub test_metrics: Metrics,
    /// Sample standard deviation (n - 1) of the test metrics over repeats (repeats > 1 only).
    #[serde(
        default,
        deserialize_with = "metrics",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub test_metrics_std: Metrics,
    /// Metrics on the training batches of the last epoch, by name (mean over repeats).
    #[serde(default, deserialize_with = "metrics")]
    pub train_metrics: Metrics,
    /// Mean test loss (mean over repeats).
    #[serde(default)]
    pub test_loss: Option<f64>,
    /// Mean training loss of the last epoch (mean over repeats).
    #[serde(default)]
    pub train_loss: Option<f64>,
    /// ViRB-compatible key: the headline test metric.
    #[serde(default)]
    pub test_accuracy: Option<f64>,
    /// ViRB-compatible key: the headline training metric.
    #[serde(default)]
    pub train_accuracy: Option<f64>,
    /// The validation split, when the job holds one out.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub validation: Option<ValidationRecord>,
    /// Epochs per run.
    #[serde(default)]
    pub epochs: u32,
    /// Each seed's run.
    #[serde(default)]
    pub runs: Vec<RunRecord>,
    /// Training samples (after holding out validation).
    #[serde(default)]
    pub train_size: i64,
    /// Test samples.
    #[serde(default)]
    pub test_size: i64,
    /// Head outputs (classes).
    #[serde(default)]
    pub num_outputs: u32,
    /// Seconds per phase.
    #[serde(default)]
    pub timings_s: Timings,
    /// Device used (`cpu`, `cuda:0`).
    #[serde(default)]
    pub device: String,
    /// Versions.
    #[serde(default)]
    pub versions: Versions,
    /// The test metric's details of the first finished run (per-class IoU, ...), when the task
    /// gives any.
    #[serde(skip_serializing_if = "serde_json::Value::is_null", default)]
    pub test_details: serde_json::Value,
    /// The first run's head, relative to this file's folder.
    #[serde(default)]
    pub head_file: Option<String>,
    /// SHA-256 of that head file.
    #[serde(default)]
    pub head_sha256: Option<String>,
    /// For an eval-only job (such as Imagenetv2): the result folder whose heads were evaluated;
    /// `config` then names that head's training config.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub evaluated_head: Option<String>,
    /// When the result was written (RFC 3339, UTC).
    #[serde(default)]
    pub finished_at: String,
    /// The file this record was read from (empty when it was not read from a file).
    #[serde(skip)]
    pub path: PathBuf,
}

impl ResultRecord {
    /// Parses a record from the text of a `results.json`; `Err` says why it is not usable.
    pub fn parse(text: &str) -> Result<ResultRecord, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        match value.get("schema") {
            Some(serde_json::Value::String(s)) if s == SCHEMA => {}
            Some(serde_json::Value::String(s)) => {
                return Err(format!("schema `{s}`, expected `{SCHEMA}`"))
            }
            Some(_) => return Err(format!("`schema` is not a string, expected `{SCHEMA}`")),
            None => return Err(format!("no `schema` field, expected `{SCHEMA}`")),
        }
        serde_json::from_value(value).map_err(|e| format!("not a {SCHEMA} record: {e}"))
    }

    /// Reads and parses `path` (remembered in [`ResultRecord::path`]).
    pub fn read(path: &std::path::Path) -> Result<ResultRecord, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        let mut record = ResultRecord::parse(&text)?;
        record.path = path.to_owned();
        Ok(record)
    }

    /// Whether every run finished normally (`status == "ok"`).
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }

    /// Whether this is an eval-only result (it has `evaluated_head`).
    pub fn is_eval_only(&self) -> bool {
        self.evaluated_head.is_some()
    }

    /// The primary test metric (mean over repeats), if present and finite.
    pub fn test_value(&self) -> Option<f64> {
        self.test_metrics.get(&self.primary_metric).copied()
    }

    /// The standard deviation of the primary test metric over repeats, when `repeats` > 1.
    pub fn test_std(&self) -> Option<f64> {
        if self.repeats > 1 {
            self.test_metrics_std.get(&self.primary_metric).copied()
        } else {
            None
        }
    }

    /// The primary validation metric, if the job has a validation split and it is finite.
    pub fn validation_value(&self) -> Option<f64> {
        self.validation
            .as_ref()
            .and_then(|v| v.metrics.get(&self.primary_metric).copied())
    }

    /// The last component of `evaluated_head` (`Imagenet-adam-0.001`), for eval-only results.
    pub fn evaluated_folder(&self) -> Option<&str> {
        self.evaluated_head
            .as_deref()?
            .split(['/', '\\'])
            .rfind(|c| !c.is_empty())
    }
}

fn status_ok() -> String {
    "ok".into()
}
fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}

fn null_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn status<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_else(status_ok))
}

fn higher_is_better<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

fn repeats<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    Ok(Option::<u32>::deserialize(d)?.unwrap_or(1).max(1))
}

/// A metric map; `null` (a metric that was NaN or infinite when written) and non-finite values
/// are dropped.
fn metrics<'de, D: Deserializer<'de>>(d: D) -> Result<Metrics, D::Error> {
    let map = Option::<BTreeMap<String, Option<f64>>>::deserialize(d)?.unwrap_or_default();
    Ok(map
        .into_iter()
        .filter_map(|(k, v)| v.filter(|v| v.is_finite()).map(|v| (k, v)))
        .collect())
}

fn some_metrics<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Metrics>, D::Error> {
    let map = Option::<BTreeMap<String, Option<f64>>>::deserialize(d)?;
    Ok(map.map(|m| {
        m.into_iter()
            .filter_map(|(k, v)| v.filter(|v| v.is_finite()).map(|v| (k, v)))
            .collect()
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn optional_fields_default_and_nulls_are_dropped() {
        let r = ResultRecord::parse(
            r#"{"schema": "virb.results/2", "experiment": "E", "job": "J", "config": "c",
                "task": {"name": "T", "family": "x"}, "status": "diverged", "error": "NaN loss",
                "primary_metric": "acc", "higher_is_better": null, "test_metrics": {"acc": null, "b": 1.0},
                "test_metrics_std": null, "repeats": null, "validation": null, "extra": [1, 2]}"#,
        )
        .unwrap();
        assert!(!r.is_ok());
        assert_eq!(r.error.as_deref(), Some("NaN loss"));
        assert!(r.higher_is_better);
        assert_eq!(r.test_value(), None);
        assert_eq!(r.test_metrics.get("b"), Some(&1.0));
        assert_eq!(r.repeats, 1);
        assert_eq!(r.encoder.name, "");
        assert!(!r.is_eval_only());

        let r = ResultRecord::parse(
            r#"{"schema": "virb.results/2", "experiment": "E", "job": "J", "config": "c",
                "task": {"name": "T"}, "primary_metric": "acc", "test_metrics": {"acc": 0.5},
                "test_metrics_std": {"acc": 0.1}, "repeats": 3,
                "validation": {"fraction": 0.1, "size": 4, "metrics": {"acc": 0.4}},
                "evaluated_head": "/out/E/Imagenet-c/"}"#,
        )
        .unwrap();
        assert!(r.is_ok());
        assert_eq!(
            (r.test_value(), r.test_std(), r.validation_value()),
            (Some(0.5), Some(0.1), Some(0.4))
        );
        assert_eq!(r.evaluated_folder(), Some("Imagenet-c"));
    }

    #[test]
    fn unusable_files_say_why() {
        assert_eq!(
            ResultRecord::parse(r#"{"schema": "virb.results/1"}"#).unwrap_err(),
            "schema `virb.results/1`, expected `virb.results/2`"
        );
        assert_eq!(
            ResultRecord::parse("{}").unwrap_err(),
            "no `schema` field, expected `virb.results/2`"
        );
        assert!(ResultRecord::parse("nope")
            .unwrap_err()
            .starts_with("not valid JSON: "));
        let e =
            ResultRecord::parse(r#"{"schema": "virb.results/2", "experiment": "E"}"#).unwrap_err();
        assert!(
            e.starts_with("not a virb.results/2 record: missing field `job`"),
            "{e}"
        );
    }

    #[test]
    fn a_written_record_reads_back_equal_and_nan_reads_back_absent() {
        let run = RunRecord {
            seed: 3,
            status: "ok".into(),
            test_metrics: [("miou".to_string(), 0.5), ("pixel_accuracy".into(), 0.9)].into(),
            steps: 12,
            head_file: Some("seed-3/head.safetensors".into()),
            test_details: serde_json::json!({"per_class_iou": [0.4, 0.6]}),
            ..RunRecord::default()
        };
        let record = ResultRecord {
            schema: SCHEMA.into(),
            status: "ok".into(),
            error: None,
            experiment: "E".into(),
            job: "J".into(),
            config: "c".into(),
            config_hash: "h".into(),
            task: TaskRecord {
                name: "T".into(),
                family: "segmentation".into(),
                plugin: PluginRef {
                    name: "p".into(),
                    version: "0.1.0".into(),
                },
            },
            encoder: EncoderRecord::default(),
            hyperparameters: serde_json::json!({"lr": 0.1}),
            train_encoder: false,
            primary_metric: "miou".into(),
            higher_is_better: true,
            repeats: 1,
            test_metrics: run.test_metrics.clone(),
            test_metrics_std: Metrics::new(),
            train_metrics: Metrics::new(),
            test_loss: Some(0.25),
            train_loss: None,
            test_accuracy: Some(0.5),
            train_accuracy: None,
            validation: None,
            epochs: 2,
            runs: vec![run],
            train_size: 8,
            test_size: 4,
            num_outputs: 3,
            timings_s: Timings::default(),
            device: "cpu".into(),
            versions: Versions::default(),
            test_details: serde_json::Value::Null,
            head_file: None,
            head_sha256: None,
            evaluated_head: None,
            finished_at: "2026-01-01T00:00:00Z".into(),
            path: PathBuf::new(),
        };
        let text = serde_json::to_string(&record).unwrap();
        assert!(!text.contains("test_metrics_std"), "{text}");
        assert_eq!(ResultRecord::parse(&text).unwrap(), record);
        let mut nan = record.clone();
        nan.test_metrics.insert("miou".into(), f64::NAN);
        let back = ResultRecord::parse(&serde_json::to_string(&nan).unwrap()).unwrap();
        assert_eq!(back.test_value(), None);
        assert_eq!(back.test_metrics.get("pixel_accuracy"), Some(&0.9));
    }
}
