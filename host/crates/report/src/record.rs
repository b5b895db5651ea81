//! Reading `results.json` files: the fields a report needs, finding the files under `--out`.
use serde::{Deserialize, Deserializer};
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use crate::ReportError;

/// The schema this crate reads; files with any other `schema` are skipped with a warning.
pub const SCHEMA: &str = "virb.results/2";

/// The file name that marks a finished result.
pub const RESULTS_FILE: &str = "results.json";

/// How deep below `--out` results are looked for (`<experiment>/<job>-<config>/results.json` is
/// depth 3); deeper levels are not searched, which also stops symlink loops.
const MAX_DEPTH: usize = 4;

/// The task of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TaskInfo {
    /// Task type (`Imagenet`, `CalTech-101`).
    pub name: String,
}

/// The encoder of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct EncoderInfo {
    /// Architecture (`resnet50`).
    #[serde(default)]
    pub name: String,
}

/// Validation metrics of a result (last epoch, mean over repeats).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Validation {
    /// Fraction of the training split held out.
    #[serde(default)]
    pub fraction: Option<f64>,
    /// Number of validation samples.
    #[serde(default)]
    pub size: Option<u64>,
    /// Metrics by name; null values are dropped.
    #[serde(default, deserialize_with = "metrics")]
    pub metrics: BTreeMap<String, f64>,
}

/// The fields of one `results.json` (schema [`SCHEMA`]) that reports use; other fields are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Record {
    /// Schema identifier ([`SCHEMA`]).
    pub schema: String,
    /// Experiment: the encoder checkpoint being compared (`SWAV_800`).
    pub experiment: String,
    /// Job: the virb config's key, usually the task name.
    pub job: String,
    /// Training config name.
    pub config: String,
    /// The task.
    pub task: TaskInfo,
    /// The encoder architecture.
    #[serde(default)]
    pub encoder: EncoderInfo,
    /// `ok` or `diverged` (a NaN/inf loss); anything but `ok` is not selectable.
    #[serde(default = "status_ok", deserialize_with = "status")]
    pub status: String,
    /// Why the run did not end `ok`.
    #[serde(default)]
    pub error: Option<String>,
    /// Name of the headline metric.
    #[serde(default, deserialize_with = "null_default")]
    pub primary_metric: String,
    /// Whether larger is better for the headline metric.
    #[serde(default = "yes", deserialize_with = "higher_is_better")]
    pub higher_is_better: bool,
    /// Test metrics by name (mean over repeats); null values are dropped.
    #[serde(default, deserialize_with = "metrics")]
    pub test_metrics: BTreeMap<String, f64>,
    /// Sample standard deviation (n-1) of the test metrics over repeats; empty unless `repeats` > 1.
    #[serde(default, deserialize_with = "metrics")]
    pub test_metrics_std: BTreeMap<String, f64>,
    /// Number of repeated trainings the metrics average over (at least 1).
    #[serde(default = "one", deserialize_with = "repeats")]
    pub repeats: u32,
    /// Validation metrics; `None` when the job has no validation split.
    #[serde(default)]
    pub validation: Option<Validation>,
    /// For an eval-only job (Imagenetv2): the result folder whose head was evaluated; `config`
    /// then names that head's training config.
    #[serde(default)]
    pub evaluated_head: Option<String>,
    /// The file this record was read from (empty when not read from a file).
    #[serde(skip)]
    pub path: PathBuf,
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

fn metrics<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let map = Option::<BTreeMap<String, Option<f64>>>::deserialize(d)?.unwrap_or_default();
    Ok(map
        .into_iter()
        .filter_map(|(k, v)| v.filter(|v| v.is_finite()).map(|v| (k, v)))
        .collect())
}

impl Record {
    /// Whether the run finished normally (`status == "ok"`).
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

    /// Parses a record from the text of a `results.json`; `Err` says why it is not usable.
    pub fn parse(text: &str) -> Result<Record, String> {
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
}

/// The records found under an output folder.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Usable records, sorted by (experiment, job, config).
    pub records: Vec<Record>,
    /// One line per skipped file (and per duplicate), naming the file and why.
    pub warnings: Vec<String>,
    /// Number of `results.json` files found, usable or not.
    pub files: usize,
    /// Number of files skipped.
    pub skipped: usize,
}

/// Finds and reads every `results.json` under `out` (`<out>/<experiment>/<job>-<config>/results.json`),
/// skipping hidden folders and files (`.checkpoints`, `.results.json.tmp-*`).
///
/// A file that cannot be read or parsed, or whose schema is not [`SCHEMA`], is skipped with a
/// warning; so is a second file for the same (experiment, job, config). Fails only when `out`
/// itself cannot be read.
pub fn load(out: &Path) -> Result<Loaded, ReportError> {
    let mut files = Vec::new();
    let mut loaded = Loaded::default();
    let entries = std::fs::read_dir(out).map_err(|source| ReportError::ReadOut {
        out: out.to_owned(),
        source,
    })?;
    walk(entries, 1, &mut files, &mut loaded.warnings);
    files.sort();
    loaded.files = files.len();
    let mut seen: BTreeMap<(String, String, String), PathBuf> = BTreeMap::new();
    for path in files {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                loaded
                    .warnings
                    .push(format!("skipped {}: cannot read it: {e}", path.display()));
                loaded.skipped += 1;
                continue;
            }
        };
        let mut record = match Record::parse(&text) {
            Ok(r) => r,
            Err(why) => {
                loaded
                    .warnings
                    .push(format!("skipped {}: {why}", path.display()));
                loaded.skipped += 1;
                continue;
            }
        };
        let key = (
            record.experiment.clone(),
            record.job.clone(),
            record.config.clone(),
        );
        if let Some(first) = seen.get(&key) {
            loaded.warnings.push(format!(
                "skipped {}: experiment `{}`, job `{}`, config `{}` was already read from {}",
                path.display(),
                key.0,
                key.1,
                key.2,
                first.display()
            ));
            loaded.skipped += 1;
            continue;
        }
        record.path = path.clone();
        seen.insert(key, path);
        loaded.records.push(record);
    }
    loaded.records.sort_by(|a, b| {
        (&a.experiment, &a.job, &a.config).cmp(&(&b.experiment, &b.job, &b.config))
    });
    Ok(loaded)
}

fn walk(
    entries: std::fs::ReadDir,
    depth: usize,
    files: &mut Vec<PathBuf>,
    warnings: &mut Vec<String>,
) {
    let mut dirs = BTreeSet::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follows symlinks: experiments may be linked in; MAX_DEPTH bounds any loop.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                dirs.insert(path);
            }
        } else if meta.is_file() && name == RESULTS_FILE {
            files.push(path);
        }
    }
    for dir in dirs {
        match std::fs::read_dir(&dir) {
            Ok(entries) => walk(entries, depth + 1, files, warnings),
            Err(e) => warnings.push(format!("skipped folder {}: {e}", dir.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_fields_default_and_nulls_are_dropped() {
        let r = Record::parse(
            r#"{"schema": "virb.results/2", "experiment": "E", "job": "J", "config": "c",
                "task": {"name": "T", "family": "x"}, "status": "diverged", "error": "NaN loss",
                "primary_metric": "acc", "higher_is_better": null, "test_metrics": {"acc": null, "b": 1.0},
                "test_metrics_std": null, "repeats": null, "validation": null, "extra": [1, 2]}"#,
        )
        .expect("record");
        assert!(!r.is_ok());
        assert_eq!(r.error.as_deref(), Some("NaN loss"));
        assert!(r.higher_is_better);
        assert_eq!(r.test_value(), None);
        assert_eq!(r.test_metrics.get("b"), Some(&1.0));
        assert_eq!(r.repeats, 1);
        assert_eq!(r.encoder.name, "");
        assert!(!r.is_eval_only());

        let r = Record::parse(
            r#"{"schema": "virb.results/2", "experiment": "E", "job": "J", "config": "c",
                "task": {"name": "T"}, "primary_metric": "acc", "test_metrics": {"acc": 0.5},
                "test_metrics_std": {"acc": 0.1}, "repeats": 3,
                "validation": {"fraction": 0.1, "size": 4, "metrics": {"acc": 0.4}},
                "evaluated_head": "/out/E/Imagenet-c/"}"#,
        )
        .expect("record");
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
            Record::parse(r#"{"schema": "virb.results/1"}"#).expect_err("unusable"),
            "schema `virb.results/1`, expected `virb.results/2`"
        );
        assert_eq!(
            Record::parse("{}").expect_err("unusable"),
            "no `schema` field, expected `virb.results/2`"
        );
        assert!(Record::parse("nope")
            .expect_err("unusable")
            .starts_with("not valid JSON: "));
        let e = Record::parse(r#"{"schema": "virb.results/2", "experiment": "E"}"#)
            .expect_err("unusable");
        assert!(
            e.starts_with("not a virb.results/2 record: missing field `job`"),
            "{e}"
        );
    }
}
