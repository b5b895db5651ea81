//! Experiment lists and virb configs: ViRB's YAML files load unchanged; unknown keys and bad values
//! are errors naming the file, line, job and key.
use crate::names::{self, NameKind};
use crate::yaml_index::YamlIndex;
use indexmap::IndexMap;
use serde::{de, Deserialize, Deserializer, Serialize};
use std::{
    fmt,
    path::{Path, PathBuf},
};

/// A configuration error: where it is and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file at fault.
    pub file: PathBuf,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong, naming the job and key.
    pub message: String,
}

/// The encoder used when an experiment list gives a plain weights path (as in ViRB).
pub const DEFAULT_ENCODER: &str = "resnet50";

/// One experiment: a named encoder with its weights.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// The experiment name (output folder).
    pub name: String,
    /// Encoder name, as an encoder plugin provides it.
    pub encoder: String,
    /// Weights file.
    pub weights: PathBuf,
    /// Encoder options, as a JSON object.
    pub options: serde_json::Value,
    /// The line of its entry in the experiment list.
    pub line: Option<usize>,
}

/// An experiment list entry: `name: path` (ViRB) or `name: {weights, encoder, options}`.
#[derive(Debug)]
struct ExperimentEntry {
    weights: String,
    encoder: Option<String>,
    options: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentEntryFull {
    weights: String,
    encoder: Option<String>,
    options: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for ExperimentEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = ExperimentEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a weights path, or a mapping with `weights`, `encoder`, `options`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ExperimentEntry {
                    weights: v.to_string(),
                    encoder: None,
                    options: None,
                })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let full =
                    ExperimentEntryFull::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ExperimentEntry {
                    weights: full.weights,
                    encoder: full.encoder,
                    options: full.options,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads an experiment list.
pub fn load_experiment_list(path: &Path) -> Result<Vec<Experiment>, ConfigError> {
    let text = read(path)?;
    let index = YamlIndex::new(&text);
    check_duplicates(path, &index, "experiment")?;
    let entries: IndexMap<String, ExperimentEntry> =
        serde_yaml::from_str(&text).map_err(|e| yaml_error(path, e))?;
    for name in entries.keys() {
        names::check(NameKind::Experiment, name).map_err(|message| ConfigError {
            file: path.to_path_buf(),
            line: index.line(&[name]),
            message,
        })?;
    }
    if entries.is_empty() {
        return Err(ConfigError {
            file: path.to_path_buf(),
            line: None,
            message: "the experiment list is empty; add `name: path/to/weights.pt` lines".into(),
        });
    }
    Ok(entries
        .into_iter()
        .map(|(name, e)| Experiment {
            line: index.line(&[&name]),
            name,
            encoder: e.encoder.unwrap_or_else(|| DEFAULT_ENCODER.to_string()),
            weights: PathBuf::from(e.weights),
            options: e
                .options
                .unwrap_or(serde_json::Value::Object(Default::default())),
        })
        .collect())
}

/// Optimiser names (case-insensitive in files, as in ViRB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam (betas 0.9, 0.999; eps 1e-8).
    Adam,
    /// SGD (optional momentum, dampening 0).
    Sgd,
}

impl<'de> Deserialize<'de> for OptimizerKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_lowercase().as_str() {
            "adam" => Ok(OptimizerKind::Adam),
            "sgd" => Ok(OptimizerKind::Sgd),
            _ => Err(de::Error::custom(format!(
                "unknown optimizer `{s}`, expected `adam` or `sgd`"
            ))),
        }
    }
}

/// A learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum SchedulerConfig {
    /// lr(e) = lr0 * gamma^floor(e / step_size), stepped after each epoch.
    StepLR {
        /// Epochs between decays.
        step_size: u32,
        /// Decay factor.
        gamma: f64,
    },
    /// PyTorch's OneCycleLR over the epochs (linear annealing), stepped after each epoch.
    OneCycle {
        /// Fraction of the cycle spent increasing the lr (default 0.3).
        #[serde(default = "default_pct_start")]
        pct_start: f64,
        /// initial lr = lr / div_factor (default 25).
        #[serde(default = "default_div_factor")]
        div_factor: f64,
        /// min lr = initial lr / final_div_factor (default 1e4).
        #[serde(default = "default_final_div_factor")]
        final_div_factor: f64,
    },
    /// lr(t) = lr0 * (1 - t/T)^exponent over all T optimiser steps, stepped after each batch.
    Poly {
        /// The exponent.
        exponent: f64,
    },
}

fn default_pct_start() -> f64 {
    0.3
}
fn default_div_factor() -> f64 {
    25.0
}
fn default_final_div_factor() -> f64 {
    1e4
}

/// One entry of `training_configs`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// `adam` or `sgd`.
    pub optimizer: OptimizerKind,
    /// Learning rate (> 0).
    pub lr: f64,
    /// SGD momentum (default 0).
    #[serde(default)]
    pub momentum: Option<f64>,
    /// L2 weight decay (default 0).
    #[serde(default)]
    pub weight_decay: Option<f64>,
    /// Nesterov momentum for SGD (default false).
    #[serde(default)]
    pub nesterov: Option<bool>,
    /// Optional learning-rate schedule.
    #[serde(default)]
    pub scheduler: Option<SchedulerConfig>,
}

fn default_batch_size() -> u32 {
    32
}
fn default_image_size() -> u32 {
    224
}
fn default_repeats() -> u32 {
    1
}

/// One job of a virb config: a task and a grid of training configs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Task type, as a task plugin names it.
    pub task: String,
    /// Named training configs; all train on one encoding. Eval-only tasks have none.
    #[serde(default)]
    pub training_configs: IndexMap<String, TrainingConfig>,
    /// Epochs per training config (required unless the task is eval-only).
    #[serde(default)]
    pub num_epochs: u32,
    /// Training batch size (default 32).
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Evaluation batch size (default: `batch_size`).
    #[serde(default)]
    pub test_batch_size: Option<u32>,
    /// Side of the square network input (default 224, as in the paper).
    #[serde(default = "default_image_size")]
    pub image_size: u32,
    /// ViRB's switch between cached features and live encoding; only `true` is supported.
    #[serde(default)]
    pub pre_encode: Option<bool>,
    /// ViRB's number of passes over the training split when caching; only 1 is supported.
    #[serde(default = "default_repeats")]
    pub num_dataset_repeats: u32,
    /// ViRB's eval-only switch, accepted for ViRB files and ignored: an eval-only task (such as
    /// `Imagenetv2`) always evaluates the heads of the task it names, found in `--out`.
    #[serde(default)]
    pub task_head_weights_path: Option<String>,
    /// Seed for head initialisation and batch order (default 0). Repeat `r` uses `seed + r`.
    #[serde(default)]
    pub seed: u64,
    /// Runs every training config with this many seeds (`seed`, `seed + 1`, ...) and reports the
    /// mean and standard deviation (default 1).
    #[serde(default = "default_repeats")]
    pub repeats: u32,
    /// Fraction of the training split held out for validation (seeded by `seed`, stratified by
    /// class for classification), in (0, 0.5]. With it, results record validation metrics and
    /// the best epoch, and the job's configs are compared on validation, never on test.
    #[serde(default)]
    pub validation_fraction: Option<f64>,
    /// Trains the encoder's parameters together with the head (fine-tuning) instead of probing
    /// frozen features. The encoder plugin must support it; features are not cached then.
    #[serde(default)]
    pub train_encoder: bool,
}

/// Most repeats a job may ask for.
pub const MAX_REPEATS: u32 = 100;

impl JobConfig {
    /// The evaluation batch size.
    pub fn eval_batch_size(&self) -> u32 {
        self.test_batch_size.unwrap_or(self.batch_size)
    }
}

/// A virb config file: jobs in file order.
#[derive(Debug)]
pub struct VirbConfig {
    /// The file.
    pub path: PathBuf,
    /// Jobs by name (the task key).
    pub jobs: IndexMap<String, JobConfig>,
    /// Where each key is in the file.
    pub index: YamlIndex,
    /// Top-level scalars applied as defaults to every job that does not set them, for the run
    /// to say so once.
    pub defaults: Vec<TopLevelDefault>,
}

/// A top-level `key: value` of a virb config, used as a default for every job.
#[derive(Debug, Clone)]
pub struct TopLevelDefault {
    /// The job key.
    pub key: String,
    /// Its value, as written.
    pub value: String,
    /// Its line.
    pub line: Option<usize>,
    /// The jobs it was applied to (those that do not set the key themselves).
    pub jobs: Vec<String>,
}

impl fmt::Display for TopLevelDefault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "top-level `{}: {}` is not a job; it is the default of every job that does not set `{}` ({})",
            self.key,
            self.value,
            self.key,
            if self.jobs.is_empty() {
                "none here".to_string()
            } else {
                self.jobs.join(", ")
            }
        )
    }
}

impl VirbConfig {
    /// A [`names::PlanError`] at the line of the entry at fault.
    pub fn plan_error(&self, e: names::PlanError) -> ConfigError {
        let mut path = vec![e.at.job.as_str()];
        if let Some(c) = &e.at.config {
            path.extend(["training_configs", c.as_str()]);
        }
        ConfigError {
            file: self.path.clone(),
            line: self.index.line(&path),
            message: e.message,
        }
    }

    /// An error at `key` (a path below the job, e.g. `["training_configs", "a", "lr"]`) of job
    /// `job`, with the line of the key (or of its deepest ancestor in the file).
    pub fn error(&self, job: &str, key: &[&str], message: impl std::fmt::Display) -> ConfigError {
        let mut path = vec![job];
        path.extend_from_slice(key);
        ConfigError {
            file: self.path.clone(),
            line: self.index.line(&path),
            message: if key.is_empty() {
                format!("job `{job}`: {message}")
            } else {
                format!("job `{job}`: `{}`: {message}", key.join("."))
            },
        }
    }
}

/// Reads and validates a virb config.
pub fn load_virb_config(path: &Path) -> Result<VirbConfig, ConfigError> {
    let text = read(path)?;
    let index = YamlIndex::new(&text);
    check_duplicates(path, &index, "job")?;
    let entries: IndexMap<String, JobEntry> =
        serde_yaml::from_str(&text).map_err(|e| yaml_error(path, e))?;
    let (jobs, defaults) = apply_defaults(path, &index, entries)?;
    let config = VirbConfig {
        path: path.to_path_buf(),
        jobs,
        index,
        defaults,
    };
    if config.jobs.is_empty() {
        return Err(ConfigError {
            file: path.to_path_buf(),
            line: None,
            message: "the virb config has no jobs".into(),
        });
    }
    let name_error = |key: &[&str], message: String| ConfigError {
        file: path.to_path_buf(),
        line: config.index.line(key),
        message,
    };
    for (name, job) in &config.jobs {
        names::check(NameKind::Job, name).map_err(|m| name_error(&[name], m))?;
        for cfg in job.training_configs.keys() {
            names::check(NameKind::Config, cfg).map_err(|m| {
                name_error(
                    &[name, "training_configs", cfg],
                    format!("job `{name}`: {m}"),
                )
            })?;
        }
        validate(job).map_err(|(key, message)| {
            let key: Vec<&str> = key.iter().map(String::as_str).collect();
            config.error(name, &key, message)
        })?;
    }
    names::plan_collisions(config.jobs.iter().flat_map(|(job, j)| {
        j.training_configs
            .keys()
            .map(move |c| (job.as_str(), c.as_str()))
    }))
    .map_err(|e| config.plan_error(e))?;
    Ok(config)
}

/// A top-level entry of a virb config: a job (a mapping), or a scalar that ViRB's own
/// `imagenetv2.yaml` has by an indentation slip (`batch_size: 32` at the top level), taken as a
/// default for every job.
enum JobEntry {
    Job(Box<JobConfig>),
    Default(serde_yaml::Value),
}

impl<'de> Deserialize<'de> for JobEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = JobEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a job (a mapping with `task`, `training_configs`, ...) or a default value for every job")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                JobConfig::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|j| JobEntry::Job(Box::new(j)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(JobEntry::Default(v.into()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(JobEntry::Default(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(JobEntry::Default(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(JobEntry::Default(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JobEntry::Default(v.into()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Splits jobs from top-level defaults and sets each default in every job that does not give
/// the key itself (the index says which keys a job's block has).
fn apply_defaults(
    path: &Path,
    index: &YamlIndex,
    entries: IndexMap<String, JobEntry>,
) -> Result<(IndexMap<String, JobConfig>, Vec<TopLevelDefault>), ConfigError> {
    let mut jobs = IndexMap::new();
    let mut defaults = Vec::new();
    for (name, entry) in entries {
        match entry {
            JobEntry::Job(j) => {
                jobs.insert(name, *j);
            }
            JobEntry::Default(v) => defaults.push((name, v)),
        }
    }
    let mut applied = Vec::new();
    for (key, value) in defaults {
        let line = index.line(&[&key]);
        let bad = |message: String| ConfigError {
            file: path.to_path_buf(),
            line,
            message,
        };
        if !DEFAULTABLE.contains(&key.as_str()) {
            return Err(bad(format!(
                "top-level `{key}` is neither a job (a mapping) nor a key that can default every job ({}); indent it under a job or remove it",
                DEFAULTABLE.join(", ")
            )));
        }
        let mut to = Vec::new();
        for (job, cfg) in jobs.iter_mut() {
            if index.has(&[job, &key]) {
                continue; // the job sets it
            }
            let mut doc = serde_yaml::to_value(&*cfg).map_err(|e| bad(e.to_string()))?;
            if let serde_yaml::Value::Mapping(m) = &mut doc {
                m.insert(key.clone().into(), value.clone());
            }
            *cfg = serde_yaml::from_value(doc).map_err(|e| {
                bad(format!(
                    "top-level `{key}` as a default for job `{job}`: {e}"
                ))
            })?;
            to.push(job.clone());
        }
        let value = serde_yaml::to_string(&value)
            .map(|v| v.trim().to_string())
            .unwrap_or_default();
        applied.push(TopLevelDefault {
            key,
            value,
            line,
            jobs: to,
        });
    }
    Ok((jobs, applied))
}

/// Job keys a top-level scalar may set for every job.
const DEFAULTABLE: &[&str] = &[
    "num_epochs",
    "batch_size",
    "test_batch_size",
    "image_size",
    "pre_encode",
    "num_dataset_repeats",
    "seed",
    "repeats",
    "validation_fraction",
    "train_encoder",
];

/// Refuses a key given twice in one mapping (serde_yaml would keep the last one silently).
/// `top` names what the top-level keys are (`job`, `experiment`).
fn check_duplicates(path: &Path, index: &YamlIndex, top: &str) -> Result<(), ConfigError> {
    let Some(d) = index.duplicates.first() else {
        return Ok(());
    };
    let what = match d.path.as_slice() {
        [name] => format!("{top} `{name}`"),
        [job, tc, cfg] if top == "job" && tc == "training_configs" => {
            format!("training config `{cfg}` of job `{job}`")
        }
        [first, rest @ ..] => format!("key `{}` of {top} `{first}`", rest.join(".")),
        [] => "a key".to_string(),
    };
    Err(ConfigError {
        file: path.to_path_buf(),
        line: Some(d.second),
        message: format!(
            "{what} is given twice (lines {} and {}); YAML would keep only the last one, so rename or remove one",
            d.first, d.second
        ),
    })
}

/// A key (as a path below the job) and what is wrong with it.
type Invalid = (Vec<String>, String);

/// Checks what depends on the kind of task: a training task needs training configs and epochs;
/// an eval-only task trains nothing. Returns `(key, message)` on error.
pub fn check_job_for_task(job: &JobConfig, eval_only: bool) -> Result<(), (&'static str, String)> {
    if eval_only {
        if !job.training_configs.is_empty() {
            return Err((
                "training_configs",
                "the task is eval-only (it evaluates heads trained by another job); remove training_configs".into(),
            ));
        }
        for (key, set) in [
            ("repeats", job.repeats != 1),
            ("validation_fraction", job.validation_fraction.is_some()),
            ("train_encoder", job.train_encoder),
        ] {
            if set {
                return Err((
                    key,
                    "does not apply to an eval-only task: it evaluates every seed's head of the job it names; remove the key".into(),
                ));
            }
        }
        return Ok(());
    }
    if job.training_configs.is_empty() {
        return Err((
            "training_configs",
            "needs at least one training config".into(),
        ));
    }
    if job.num_epochs == 0 {
        return Err(("num_epochs", "must be at least 1".into()));
    }
    if job.train_encoder && job.validation_fraction.is_some() {
        return Err((
            "validation_fraction",
            "is not supported with `train_encoder: true` yet; remove one of them".into(),
        ));
    }
    Ok(())
}

fn bad(key: &str, message: impl Into<String>) -> Invalid {
    (vec![key.to_string()], message.into())
}

fn validate(job: &JobConfig) -> Result<(), Invalid> {
    if job.batch_size == 0 {
        return Err(bad("batch_size", "must be at least 1"));
    }
    if job.test_batch_size == Some(0) {
        return Err(bad("test_batch_size", "must be at least 1"));
    }
    if !(16..=4096).contains(&job.image_size) {
        return Err(bad("image_size", "must be between 16 and 4096 pixels"));
    }
    if job.pre_encode == Some(false) {
        return Err(bad(
            "pre_encode",
            "live encoding (`pre_encode: false`) is not supported yet; image-level tasks are always encoded once and cached, so remove the key",
        ));
    }
    if job.num_dataset_repeats != 1 {
        return Err(bad(
            "num_dataset_repeats",
            "only 1 is supported: cached features are not augmented, so repeats would only duplicate samples",
        ));
    }
    if !(1..=MAX_REPEATS).contains(&job.repeats) {
        return Err(bad(
            "repeats",
            format!("must be between 1 and {MAX_REPEATS}, got {}", job.repeats),
        ));
    }
    if let Some(f) = job.validation_fraction {
        if !(f.is_finite() && f > 0.0 && f <= 0.5) {
            return Err(bad(
                "validation_fraction",
                format!("must be in (0, 0.5] (the share of the training split held out), got {f}"),
            ));
        }
    }
    for (name, cfg) in &job.training_configs {
        let bad = |k: &str, message: &dyn fmt::Display| -> Invalid {
            let mut path = vec!["training_configs".to_string(), name.clone()];
            path.extend(k.split('.').map(String::from));
            (path, message.to_string())
        };
        if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
            return Err(bad(
                "lr",
                &format!("must be a positive number, got {}", cfg.lr),
            ));
        }
        if let Some(m) = cfg.momentum {
            if !(0.0..1.0).contains(&m) {
                return Err(bad("momentum", &format!("must be in [0, 1), got {m}")));
            }
            if cfg.optimizer == OptimizerKind::Adam {
                return Err(bad(
                    "momentum",
                    &"applies to `sgd` only (Adam uses fixed betas)",
                ));
            }
        }
        if let Some(wd) = cfg.weight_decay {
            if !(wd.is_finite() && wd >= 0.0) {
                return Err(bad("weight_decay", &format!("must be >= 0, got {wd}")));
            }
        }
        if cfg.nesterov == Some(true)
            && (cfg.optimizer != OptimizerKind::Sgd || cfg.momentum.unwrap_or(0.0) <= 0.0)
        {
            return Err(bad(
                "nesterov",
                &"needs `optimizer: sgd` with a positive momentum",
            ));
        }
        match &cfg.scheduler {
            Some(SchedulerConfig::StepLR { step_size, gamma }) => {
                if *step_size == 0 {
                    return Err(bad("scheduler.step_size", &"must be at least 1"));
                }
                if !(gamma.is_finite() && *gamma > 0.0) {
                    return Err(bad("scheduler.gamma", &"must be positive"));
                }
            }
            Some(SchedulerConfig::OneCycle {
                pct_start,
                div_factor,
                final_div_factor,
            }) => {
                if !(*pct_start > 0.0 && *pct_start < 1.0) {
                    return Err(bad("scheduler.pct_start", &"must be in (0, 1)"));
                }
                if !(*div_factor > 0.0 && *final_div_factor > 0.0) {
                    return Err(bad("scheduler", &"div factors must be positive"));
                }
            }
            Some(SchedulerConfig::Poly { exponent })
                if !(exponent.is_finite() && *exponent > 0.0) =>
            {
                return Err(bad("scheduler.exponent", &"must be positive"));
            }
            Some(SchedulerConfig::Poly { .. }) | None => {}
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        message: format!("cannot read: {e}"),
    })
}

fn yaml_error(path: &Path, e: serde_yaml::Error) -> ConfigError {
    let line = e.location().map(|l| l.line());
    let mut message = e.to_string();
    // serde_yaml appends " at line X column Y"; the location is already in the prefix.
    if let Some(idx) = message.find(" at line ") {
        message.truncate(idx);
    }
    ConfigError {
        file: path.to_path_buf(),
        line,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn virb_grid_search_file_loads_unchanged() {
        let f = write(
            r#"
Imagenet:
 task: "Imagenet"
 training_configs:
   adam-0.0001:
     optimizer: "adam"
     lr: 0.0001
   sgd-0.01-StepLR:
     optimizer: "sgd"
     lr: 0.01
     scheduler:
       type: "StepLR"
       step_size: 50
       gamma: 0.1
   sgd-0.01-OneCycle:
     optimizer: "SGD"
     lr: 0.01
     scheduler:
       type: "OneCycle"
   sgd-0.01-Poly:
     optimizer: "sgd"
     lr: 0.001
     scheduler:
       type: "Poly"
       exponent: 0.9
 num_epochs: 100
 batch_size: 32
"#,
        );
        let cfg = load_virb_config(f.path()).expect("loads");
        let job = &cfg.jobs["Imagenet"];
        assert_eq!(job.training_configs.len(), 4);
        assert_eq!(job.eval_batch_size(), 32);
        assert_eq!(job.image_size, 224);
        assert!(matches!(
            job.training_configs["sgd-0.01-OneCycle"].scheduler,
            Some(SchedulerConfig::OneCycle { pct_start, .. }) if pct_start == 0.3
        ));
    }

    #[test]
    fn unknown_key_names_job_key_and_line() {
        let f = write("CalTech-101:\n  task: CalTech-101\n  training_configs:\n    a:\n      optimizer: adam\n      lrate: 0.1\n  num_epochs: 1\n");
        let err = load_virb_config(f.path()).expect_err("unknown key");
        let text = err.to_string();
        assert!(text.contains("unknown field `lrate`"), "{text}");
        assert_eq!(err.line, Some(6), "{text}");
    }

    #[test]
    fn bad_value_names_job_and_key() {
        let f = write("J:\n  task: T\n  training_configs:\n    a:\n      optimizer: adam\n      lr: -1\n  num_epochs: 1\n");
        let err = load_virb_config(f.path()).expect_err("bad lr");
        assert!(
            err.message.contains("job `J`: `training_configs.a.lr`"),
            "{err}"
        );
        assert_eq!(err.line, Some(6));
    }

    #[test]
    fn virb_imagenetv2_top_level_batch_size_is_a_default() {
        // ViRB's imagenetv2.yaml, verbatim: `batch_size` slipped out of the job's block.
        let f = write("Imagenetv2:\n  task: \"Imagenetv2\"\n  task_head_weights_path: \"out/%s/Imagenet*/model_head.pt\"\nbatch_size: 32\nOwn:\n  task: Imagenet\n  training_configs:\n    a: {optimizer: adam, lr: 0.1}\n  num_epochs: 1\n  batch_size: 8\n");
        let cfg = load_virb_config(f.path()).expect("loads");
        assert_eq!(cfg.jobs.len(), 2);
        assert_eq!(cfg.jobs["Imagenetv2"].batch_size, 32);
        assert_eq!(cfg.jobs["Own"].batch_size, 8, "a job's own value wins");
        assert_eq!(cfg.defaults.len(), 1);
        assert_eq!(
            cfg.defaults[0].to_string(),
            "top-level `batch_size: 32` is not a job; it is the default of every job that does not set `batch_size` (Imagenetv2)"
        );
        assert_eq!(cfg.defaults[0].line, Some(4));
        let f = write("J:\n  task: T\n  training_configs:\n    a: {optimizer: adam, lr: 0.1}\n  num_epochs: 1\nlearning_rate: 3\n");
        let err = load_virb_config(f.path()).expect_err("not a job key");
        assert_eq!(err.line, Some(6));
        assert!(
            err.message.starts_with("top-level `learning_rate` is neither a job (a mapping) nor a key that can default every job"),
            "{err}"
        );
        let f = write("J:\n  task: T\n  training_configs:\n    a: {optimizer: adam, lr: 0.1}\n  num_epochs: 1\nbatch_size: many\n");
        let err = load_virb_config(f.path()).expect_err("bad value");
        assert!(
            err.message
                .contains("top-level `batch_size` as a default for job `J`"),
            "{err}"
        );
    }

    #[test]
    fn experiment_list_forms() {
        let f = write("SWAV_800: 'pretrained_weights/SWAV_800.pt'\nother:\n  weights: w.safetensors\n  options: {channels_last: false}\n");
        let list = load_experiment_list(f.path()).expect("loads");
        assert_eq!(list[0].name, "SWAV_800");
        assert_eq!(list[0].encoder, DEFAULT_ENCODER);
        assert_eq!(list[1].weights, PathBuf::from("w.safetensors"));
        assert_eq!(
            list[1].options["channels_last"],
            serde_json::Value::Bool(false)
        );
        let f = write("x:\n  weights: a\n  wieghts: b\n");
        let err = load_experiment_list(f.path()).expect_err("unknown key");
        assert!(err.to_string().contains("unknown field `wieghts`"), "{err}");
    }
}
