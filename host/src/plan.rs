//! What a run is asked to do and what identifies each piece of it: the run's options, an
//! experiment with its (lazily loaded) encoder, the identity of a job and the hashes derived
//! from it (a result is complete only for the same hash), the configs of a job still to do,
//! and the checks of a job's data before any training.
use crate::config::{ConfigError, Experiment, JobConfig, TrainingConfig};
use crate::error::{plugin, JobError};
use crate::hashing::hash_json;
use crate::outdir;
use crate::plugins::{EncoderEntry, Registry, TaskEntry};
use crate::records::complete_row;
use crate::table::Row;
use std::{path::PathBuf, time::Duration};
use tch::Device;
use virb_plugin_api::{
    abi_stable::std_types::RString, device_name, DatasetBox, DatasetMeta, DatasetRequest,
    EncoderBox, EncoderRequest, Split,
};

/// Most outputs a head may have: more than any real label set (ImageNet-21k has 21,841), far
/// fewer than a typo in a label file asks for.
pub const MAX_OUTPUTS: u32 = 100_000;

/// Options of one run.
pub struct RunOptions {
    /// Experiment list file.
    pub experiment_list: PathBuf,
    /// Virb config file.
    pub virb_configs: PathBuf,
    /// Data root.
    pub data_root: PathBuf,
    /// Output root.
    pub out: PathBuf,
    /// Device for encoding and training.
    pub device: Device,
    /// Image decoding threads.
    pub decode_workers: usize,
    /// Rerun every config even when its result is complete.
    pub force: bool,
    /// The on-disk feature cache (None: `--no-cache`).
    pub cache: Option<virb_feature_cache::Cache>,
    /// Minimum time between checkpoints of a training pass.
    pub checkpoint_every: Duration,
    /// Caps every job's `num_epochs` (smoke tests of full configs).
    pub max_epochs: Option<u32>,
    /// Most bytes of features a split encoded once may hold; over it, the split is live.
    pub cache_budget: u64,
    /// Most bytes of features a split keeps in (device) memory; over it, they are read from a
    /// memory-mapped cache file batch by batch.
    pub memory_budget: u64,
    /// Run what can run when the survey finds problems.
    pub keep_going: bool,
    /// `--only` patterns (`EXP/JOB`, `EXP`, `*/JOB`); empty: every unit.
    pub only: Vec<String>,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// The run's id, shared by its workers (`VIRB_RUN_ID`).
    pub run_id: String,
    /// Encode a split larger than this in shards other workers help with (None: never).
    pub shard_samples: Option<usize>,
    /// The run's precision for frozen encoders (`auto` resolved for the device): filled into the
    /// options of experiments whose encoder takes one and that do not set it.
    pub precision: String,
}

/// How a run ended.
pub struct RunSummary {
    /// One row per (experiment, job, config).
    pub rows: Vec<Row>,
    /// Number of failed rows.
    pub failures: usize,
}

/// Errors found before any work starts.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A configuration file is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Problems found by the survey of the whole run (weights files, data folders), all of
    /// them; nothing was started.
    #[error("{} problem(s) found before any work; nothing was started:\n{}\nfix them, or pass --keep-going to run everything else", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Problems(Vec<String>),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// What every job of a run shares.
pub(crate) struct Ctx<'a> {
    pub(crate) opts: &'a RunOptions,
    pub(crate) registry: &'a Registry,
    /// Image decoding threads.
    pub(crate) pool: rayon::ThreadPool,
}

/// An experiment: its encoder entry, weights hash and (once needed) the loaded encoder.
pub(crate) struct ExpCtx<'a> {
    pub(crate) exp: &'a Experiment,
    pub(crate) entry: &'a EncoderEntry,
    pub(crate) weights_sha256: String,
    pub(crate) encoder: std::cell::OnceCell<Result<EncoderBox, String>>,
}

impl ExpCtx<'_> {
    /// The experiment's encoder, loaded on first use (a load error is kept and repeated).
    pub(crate) fn encoder(&self, ctx: &Ctx<'_>) -> Result<&EncoderBox, JobError> {
        self.encoder
            .get_or_init(|| self.load(ctx, &self.exp.options).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| JobError::Other(e.clone()))
    }

    /// A new copy of the experiment's encoder to fine-tune (one per config and seed), with the
    /// entry's options as written (not the run's precision: fine-tuning trains in fp32).
    pub(crate) fn load_fresh(&self, ctx: &Ctx<'_>) -> Result<EncoderBox, JobError> {
        self.load(ctx, &self.exp.written_options)
    }

    fn load(&self, ctx: &Ctx<'_>, options: &serde_json::Value) -> Result<EncoderBox, JobError> {
        eprintln!(
            "loading encoder `{}` for experiment `{}` from {}",
            self.exp.encoder,
            self.exp.name,
            self.exp.weights.display()
        );
        plugin(self.entry.factory.load(EncoderRequest {
            weights: self.exp.weights.to_string_lossy().as_ref().into(),
            device: device_name(ctx.opts.device).into(),
            options_json: options.to_string().into(),
        }))
    }
}

/// A job of an experiment and what identifies its results.
pub(crate) struct JobPlan<'a> {
    pub(crate) name: &'a str,
    pub(crate) job: &'a JobConfig,
    pub(crate) task: &'a TaskEntry,
    /// What the job's results depend on besides the training config ([`job_identity`]).
    pub(crate) identity: serde_json::Value,
}

impl JobPlan<'_> {
    /// The hash of one seed's run of a config.
    pub(crate) fn run_hash(&self, cfg: &TrainingConfig, seed: u64) -> String {
        hash_json(&serde_json::json!({"job": self.identity, "config": cfg, "seed": seed}))
    }

    /// The hash of a config's result over all its repeats.
    pub(crate) fn config_hash(&self, cfg: &TrainingConfig) -> String {
        hash_json(&serde_json::json!({
            "job": self.identity, "config": cfg, "seed": self.job.seed, "repeats": self.job.repeats,
        }))
    }

    /// The seeds of the job's repeats.
    pub(crate) fn seeds(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.job.repeats).map(|r| self.job.seed.wrapping_add(r as u64))
    }

    /// The rows of the configs whose result is complete (unless `--force`), and the configs
    /// still to do.
    pub(crate) fn pending(
        &self,
        ctx: &Ctx<'_>,
        experiment: &str,
    ) -> (Vec<Row>, Vec<(&String, &TrainingConfig)>) {
        let mut rows = Vec::new();
        let mut todo = Vec::new();
        for (cfg_name, cfg) in &self.job.training_configs {
            let dir = outdir::result_dir(&ctx.opts.out, experiment, self.name, cfg_name);
            match complete_row(&dir, &self.config_hash(cfg)) {
                Some(row) if !ctx.opts.force => rows.push(row),
                _ => todo.push((cfg_name, cfg)),
            }
        }
        (rows, todo)
    }

    /// The training hyperparameters of a config, with the job's settings and defaults filled in
    /// (`results.json`'s `hyperparameters`).
    pub(crate) fn hyperparameters(&self, cfg: &TrainingConfig) -> serde_json::Value {
        let job = self.job;
        let mut hyper = serde_json::json!({
            "optimizer": cfg.optimizer,
            "lr": cfg.lr,
            "momentum": cfg.momentum.unwrap_or(0.0),
            "weight_decay": cfg.weight_decay.unwrap_or(0.0),
            "nesterov": cfg.nesterov.unwrap_or(false),
            "scheduler": cfg.scheduler,
            "num_epochs": job.num_epochs,
            "batch_size": job.batch_size,
            "test_batch_size": job.eval_batch_size(),
            "image_size": job.image_size,
            "seed": job.seed,
            "repeats": job.repeats,
            "validation_fraction": job.validation_fraction,
            "train_encoder": job.train_encoder,
            "pre_encode": job.pre_encode,
            "task_options": job.task_options,
        });
        if let Some(obj) = hyper.as_object_mut() {
            obj.retain(|_, v| !v.is_null());
        }
        hyper
    }

    /// Opens one split of the job's task.
    pub(crate) fn open_split(&self, ctx: &Ctx<'_>, split: Split) -> Result<DatasetBox, JobError> {
        plugin(self.task.task.open(DatasetRequest {
            data_root: ctx.opts.data_root.to_string_lossy().as_ref().into(),
            split_ne: split.to_ne(),
            image_size: self.job.image_size,
            options_json: self.job.task_options_json().into(),
        }))
    }
}

/// What a job's results depend on besides the training config: hashed into every result so
/// that a rerun with other settings, weights, data, plugins or task options is not mistaken for
/// complete.
pub(crate) fn job_identity(
    ctx: &Ctx<'_>,
    ec: &ExpCtx<'_>,
    task: &TaskEntry,
    job: &JobConfig,
) -> serde_json::Value {
    serde_json::json!({
        "encoder": ec.exp.encoder,
        "encoder_options": encoder_options(ec.exp, job.train_encoder),
        "encoder_plugin": [ec.entry.plugin.name, ec.entry.plugin.version],
        "weights_sha256": ec.weights_sha256,
        "task": job.task,
        "task_plugin": [task.plugin.name, task.plugin.version],
        "task_options": job.task_options_json(),
        // Absolute: `data`, `./data` and the path a worker is given are one data root.
        "data_root": std::path::absolute(&ctx.opts.data_root)
            .unwrap_or_else(|_| ctx.opts.data_root.clone())
            .display()
            .to_string(),
        "num_epochs": job.num_epochs,
        "batch_size": job.batch_size,
        "test_batch_size": job.eval_batch_size(),
        "image_size": job.image_size,
        "validation_fraction": job.validation_fraction,
        "train_encoder": job.train_encoder,
    })
}

/// The encoder options a job runs with: the run's (precision filled in) when frozen, the
/// entry's as written when fine-tuned.
pub(crate) fn encoder_options(exp: &Experiment, train_encoder: bool) -> &serde_json::Value {
    if train_encoder {
        &exp.written_options
    } else {
        &exp.options
    }
}

/// Checks that a job's train and test splits and its encoder fit together: the same classes,
/// a sane number of head outputs, every encoder output the task needs.
pub(crate) fn check_splits(
    plan: &JobPlan<'_>,
    ec: &ExpCtx<'_>,
    train: &DatasetMeta,
    test: &DatasetMeta,
) -> Result<(), JobError> {
    let task_name = &plan.job.task;
    if train.class_names != test.class_names || train.num_outputs != test.num_outputs {
        let only = |a: &[RString], b: &[RString]| {
            a.iter()
                .filter(|c| !b.contains(c))
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(JobError::Other(format!(
            "{task_name}: train and test splits have different classes (only in train: [{}]; only in test: [{}]); class indices would not line up",
            only(&train.class_names, &test.class_names),
            only(&test.class_names, &train.class_names)
        )));
    }
    if train.num_outputs > MAX_OUTPUTS {
        return Err(JobError::Other(format!(
            "{task_name}: the data set asks for a head with {} outputs ({}); virb allows at most {MAX_OUTPUTS}; check the labels",
            train.num_outputs, train.source
        )));
    }
    let provided: Vec<String> = ec
        .entry
        .info
        .outputs
        .iter()
        .map(|o| o.name.to_string())
        .collect();
    for wanted in plan.task.info.required_outputs.iter() {
        if !provided.iter().any(|p| p == wanted.as_str()) {
            return Err(JobError::Other(format!(
                "task {task_name} needs encoder output `{wanted}`, which {} does not provide ({})",
                ec.entry.info.name,
                provided.join(", ")
            )));
        }
    }
    Ok(())
}
