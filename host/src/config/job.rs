//! The schema of a virb config job: ViRB's keys, their defaults, and the training configs.
use indexmap::IndexMap;
use serde::{de, Deserialize, Deserializer, Serialize};

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
    /// ViRB's switch between cached features (`true`, the default for every task: the frozen
    /// features or pyramid are encoded once and every config and seed trains from them) and live
    /// encoding (`false`: the encoder runs on every training batch, with the task's training
    /// augmentation drawn afresh each epoch; one forward serves every head of the grid).
    #[serde(default)]
    pub pre_encode: Option<bool>,
    /// Task options, passed to the task plugin as JSON (`virb-host tasks` lists each task's).
    #[serde(default)]
    pub task_options: serde_json::Map<String, serde_json::Value>,
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

    /// The task options as the JSON object plugins receive.
    pub fn task_options_json(&self) -> String {
        serde_json::Value::Object(self.task_options.clone()).to_string()
    }

    /// Whether the job trains from features encoded once (`pre_encode`, default true; never when
    /// the encoder is fine-tuned).
    pub fn pre_encoded(&self) -> bool {
        !self.train_encoder && self.pre_encode.unwrap_or(true)
    }
}
