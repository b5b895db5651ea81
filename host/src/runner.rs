//! `virb-host run`: jobs = experiments x virb-config entries.
//!
//! Per experiment the weights are hashed first and every (job, config) whose `results.json` is
//! complete for the same settings is skipped, so re-running a command redoes only what is
//! missing; the encoder is loaded only when something is left to do. Per job, the train and test
//! splits are encoded once (or read from the verified on-disk feature cache); an optional
//! validation split is carved from train; then, for each seed, every training config trains its
//! own head in one pass over the features. Each seed's run is saved as soon as it finishes and a
//! pass checkpoints between epochs, so a killed run loses at most the current epoch. A failing
//! job or config is reported and skipped; the others go on.
use crate::config::{self, ConfigError, Experiment, JobConfig, TrainingConfig};
use crate::encode::EncodeTimings;
use crate::error::{plugin, JobError};
use crate::grid::{train_grid, GridData};
use crate::plugins::{EncoderEntry, Registry, TaskEntry};
use crate::results::{
    self, hash_json, mean_std, sha256_file, EncoderRecord, PluginRef, ResultRecord, Row, RunRecord,
    TaskRecord, Timings, ValidationRecord, Versions,
};
use crate::splits::EncoderId;
use crate::store::{split_validation, FeatureStore};
use crate::train::{RunOutcome, Stop};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};
use tch::Device;
use virb_plugin_api::{
    device_name, DatasetBox, DatasetRequest, EncoderBox, EncoderRequest, Split, LIBTORCH_VERSION,
    PLUGIN_API_VERSION,
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
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

pub(crate) struct Ctx<'a> {
    pub(crate) opts: &'a RunOptions,
    pub(crate) registry: &'a Registry,
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
            .get_or_init(|| load_encoder(ctx, self.exp, self.entry).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| JobError::Other(e.clone()))
    }
}

/// Runs every job; returns the table rows, or an error when the configuration is invalid.
pub fn run(opts: &RunOptions, registry: &Registry) -> Result<RunSummary, SetupError> {
    let experiments = config::load_experiment_list(&opts.experiment_list)?;
    let mut virb = config::load_virb_config(&opts.virb_configs)?;
    if let Some(max) = opts.max_epochs {
        let capped: Vec<String> = virb
            .jobs
            .iter_mut()
            .filter(|(_, j)| j.num_epochs > max)
            .map(|(name, j)| {
                j.num_epochs = max;
                name.clone()
            })
            .collect();
        if !capped.is_empty() {
            eprintln!(
                "note: --max-epochs {max}: {} train for {max} epoch(s) only (a smoke test: schedules are compressed and the numbers are not those of the full run)",
                capped.join(", ")
            );
        }
    }
    for d in &virb.defaults {
        let at = d.line.map(|l| format!(":{l}")).unwrap_or_default();
        eprintln!("note: {}{at}: {d}", virb.path.display());
    }
    // Check everything that can be checked before any work starts.
    for (name, job) in &virb.jobs {
        let entry = registry
            .task(&job.task)
            .map_err(|e| virb.error(name, &["task"], e))?;
        let eval_only = !entry.info.evaluates_heads_of.is_empty();
        config::check_job_for_task(job, eval_only)
            .map_err(|(key, message)| virb.error(name, &[key], message))?;
    }
    crate::preflight::check_eval_only_names(&virb, registry)?;
    crate::preflight::check_task_options(&virb, registry)?;
    // Eval-only jobs evaluate heads that training jobs write: run them last.
    let mut jobs: Vec<(&String, &JobConfig)> = virb.jobs.iter().collect();
    jobs.sort_by_key(|(_, job)| {
        registry
            .task(&job.task)
            .map(|t| !t.info.evaluates_heads_of.is_empty())
            .unwrap_or(false)
    });
    for exp in &experiments {
        registry.encoder(&exp.encoder).map_err(|e| ConfigError {
            file: opts.experiment_list.clone(),
            line: exp.line,
            message: format!("experiment `{}`: {e}", exp.name),
        })?;
    }
    crate::preflight::check_out_dir(&opts.out)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.decode_workers.max(1))
        .thread_name(|i| format!("virb-decode-{i}"))
        .build()
        .map_err(|e| SetupError::Other(format!("cannot start decoding threads: {e}")))?;
    let ctx = Ctx {
        opts,
        registry,
        pool,
    };
    let mut rows = Vec::new();
    for exp in &experiments {
        let prepared = registry
            .encoder(&exp.encoder)
            .map_err(JobError::Other)
            .and_then(|entry| {
                let what = if exp.weights.is_dir() {
                    "is a folder, not a weights file"
                } else if !exp.weights.exists() {
                    "not found"
                } else if !exp.weights.is_file() {
                    "is not a regular file"
                } else {
                    ""
                };
                if !what.is_empty() {
                    return Err(JobError::Other(format!(
                        "weights file {} {what} (experiment `{}` in {}); fix the path in the experiment list",
                        exp.weights.display(),
                        exp.name,
                        opts.experiment_list.display()
                    )));
                }
                Ok((entry, sha256_file(&exp.weights)?))
            });
        match prepared {
            Ok((entry, weights_sha256)) => {
                let ec = ExpCtx {
                    exp,
                    entry,
                    weights_sha256,
                    encoder: std::cell::OnceCell::new(),
                };
                for &(job_name, job) in &jobs {
                    match run_job(&ctx, &ec, job_name, job) {
                        Ok(job_rows) => rows.extend(job_rows),
                        Err(e) => rows.extend(failed_rows(exp, job_name, job, &e.to_string())),
                    }
                }
            }
            Err(e) => {
                for &(job_name, job) in &jobs {
                    rows.extend(failed_rows(exp, job_name, job, &e.to_string()));
                }
            }
        }
    }
    let failures = rows.iter().filter(|r| r.metric == "FAILED").count();
    Ok(RunSummary { rows, failures })
}

fn failed_rows(exp: &Experiment, job_name: &str, job: &JobConfig, error: &str) -> Vec<Row> {
    eprintln!(
        "error: experiment `{}`, job `{job_name}`: {error}",
        exp.name
    );
    if job.training_configs.is_empty() {
        return vec![failed_row(exp, job_name, "-", error)];
    }
    job.training_configs
        .keys()
        .map(|cfg| failed_row(exp, job_name, cfg, error))
        .collect()
}

pub(crate) fn failed_row(exp: &Experiment, job_name: &str, cfg: &str, error: &str) -> Row {
    Row {
        experiment: exp.name.clone(),
        job: job_name.to_string(),
        config: cfg.to_string(),
        metric: "FAILED".to_string(),
        value: "-".to_string(),
        note: error.lines().next().unwrap_or_default().to_string(),
        selected: false,
    }
}

fn load_encoder(
    ctx: &Ctx<'_>,
    exp: &Experiment,
    entry: &EncoderEntry,
) -> Result<EncoderBox, JobError> {
    eprintln!(
        "loading encoder `{}` for experiment `{}` from {}",
        exp.encoder,
        exp.name,
        exp.weights.display()
    );
    plugin(entry.factory.load(EncoderRequest {
        weights: exp.weights.to_string_lossy().as_ref().into(),
        device: device_name(ctx.opts.device).into(),
        options_json: exp.options.to_string().into(),
    }))
}

/// What a job's results depend on besides the training config: hashed into every result so
/// that a rerun with other settings, weights, data or plugins is not mistaken for complete.
pub(crate) fn job_identity(
    ctx: &Ctx<'_>,
    ec: &ExpCtx<'_>,
    task: &TaskEntry,
    job: &JobConfig,
) -> serde_json::Value {
    serde_json::json!({
        "encoder": ec.exp.encoder,
        "encoder_options": ec.exp.options,
        "encoder_plugin": [ec.entry.plugin.name, ec.entry.plugin.version],
        "weights_sha256": ec.weights_sha256,
        "task": job.task,
        "task_plugin": [task.plugin.name, task.plugin.version],
        "data_root": ctx.opts.data_root.display().to_string(),
        "num_epochs": job.num_epochs,
        "batch_size": job.batch_size,
        "test_batch_size": job.eval_batch_size(),
        "image_size": job.image_size,
        "validation_fraction": job.validation_fraction,
        "train_encoder": job.train_encoder,
    })
}

/// The hash of one seed's run of a config.
pub(crate) fn run_hash(identity: &serde_json::Value, cfg: &TrainingConfig, seed: u64) -> String {
    hash_json(&serde_json::json!({"job": identity, "config": cfg, "seed": seed}))
}

/// The hash of a config's result over all its repeats.
fn config_hash(identity: &serde_json::Value, cfg: &TrainingConfig, job: &JobConfig) -> String {
    hash_json(&serde_json::json!({
        "job": identity, "config": cfg, "seed": job.seed, "repeats": job.repeats,
    }))
}

/// The row of a complete result in `dir` written for `hash`, if there is one. Complete means the
/// result was written for these settings and every head it names is still the file it was
/// written with; a result whose head was deleted or changed is redone (and says so).
pub(crate) fn complete_row(dir: &Path, hash: &str) -> Option<Row> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path).ok()?;
    let r: serde_json::Value = serde_json::from_str(&text).ok()?;
    if r["schema"] != results::SCHEMA || r["config_hash"] != hash {
        return None;
    }
    if let Err(why) = verify_heads(dir, &r) {
        eprintln!("{}: {why}; redoing it", path.display());
        return None;
    }
    Some(row_of(&r, &path, "done earlier: "))
}

/// Checks every head a result names against the SHA-256 recorded with it.
fn verify_heads(dir: &Path, r: &serde_json::Value) -> Result<(), String> {
    let runs = r["runs"].as_array().map(Vec::as_slice).unwrap_or_default();
    for run in runs {
        let (Some(file), Some(sha)) = (run["head_file"].as_str(), run["head_sha256"].as_str())
        else {
            continue;
        };
        let head = dir.join(file);
        match sha256_file(&head) {
            Ok(actual) if actual == sha => {}
            Ok(_) => {
                return Err(format!(
                    "its head {} was changed since it was written",
                    head.display()
                ))
            }
            Err(_) => return Err(format!("its head {} is missing", head.display())),
        }
    }
    Ok(())
}

pub(crate) fn row_of(r: &serde_json::Value, path: &Path, prefix: &str) -> Row {
    let primary = r["primary_metric"].as_str().unwrap_or("metric").to_string();
    let value = match (r["status"].as_str(), r["test_metrics"][&primary].as_f64()) {
        (Some("diverged"), _) => "diverged".to_string(),
        (_, Some(v)) => match r["test_metrics_std"][&primary].as_f64() {
            Some(sd) => format!("{v:.4} ± {sd:.4}"),
            None => format!("{v:.4}"),
        },
        _ => "-".to_string(),
    };
    Row {
        experiment: r["experiment"].as_str().unwrap_or_default().to_string(),
        job: r["job"].as_str().unwrap_or_default().to_string(),
        config: r["config"].as_str().unwrap_or_default().to_string(),
        metric: primary,
        value,
        note: format!("{prefix}{}", path.display()),
        selected: false,
    }
}

pub(crate) fn open_split(
    ctx: &Ctx<'_>,
    task: &TaskEntry,
    job: &JobConfig,
    split: Split,
) -> Result<DatasetBox, JobError> {
    plugin(task.task.open(DatasetRequest {
        data_root: ctx.opts.data_root.to_string_lossy().as_ref().into(),
        split_ne: split.to_ne(),
        image_size: job.image_size,
        options_json: job.task_options_json().into(),
    }))
}

fn run_job(
    ctx: &Ctx<'_>,
    ec: &ExpCtx<'_>,
    job_name: &str,
    job: &JobConfig,
) -> Result<Vec<Row>, JobError> {
    let task = ctx.registry.task(&job.task).map_err(JobError::Other)?;
    if !task.info.evaluates_heads_of.is_empty() {
        return crate::eval_only::run_eval_job(ctx, ec, job_name, job, task);
    }
    let exp = ec.exp;
    let identity = job_identity(ctx, ec, task, job);
    let mut rows = Vec::new();
    let mut todo: Vec<(&String, &TrainingConfig)> = Vec::new();
    for (cfg_name, cfg) in &job.training_configs {
        let dir = results::result_dir(&ctx.opts.out, &exp.name, job_name, cfg_name);
        match complete_row(&dir, &config_hash(&identity, cfg, job)) {
            Some(row) if !ctx.opts.force => rows.push(row),
            _ => todo.push((cfg_name, cfg)),
        }
    }
    if todo.is_empty() {
        eprintln!(
            "{}/{job_name}: every config is complete; skipped (--force reruns)",
            exp.name
        );
        return Ok(finish_job(ctx, exp, job_name, job, rows));
    }
    let train_ds = open_split(ctx, task, job, Split::Train)?;
    let test_ds = open_split(ctx, task, job, Split::Test)?;
    let (train_meta, test_meta) = (plugin(train_ds.meta())?, plugin(test_ds.meta())?);
    if train_meta.class_names != test_meta.class_names
        || train_meta.num_outputs != test_meta.num_outputs
    {
        let only = |a: &[virb_plugin_api::abi_stable::std_types::RString],
                    b: &[virb_plugin_api::abi_stable::std_types::RString]| {
            a.iter()
                .filter(|c| !b.contains(c))
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(JobError::Other(format!(
            "{}: train and test splits have different classes (only in train: [{}]; only in test: [{}]); class indices would not line up",
            job.task,
            only(&train_meta.class_names, &test_meta.class_names),
            only(&test_meta.class_names, &train_meta.class_names)
        )));
    }
    if train_meta.num_outputs > MAX_OUTPUTS {
        return Err(JobError::Other(format!(
            "{}: the data set asks for a head with {} outputs ({}); virb allows at most {MAX_OUTPUTS}; check the labels",
            job.task, train_meta.num_outputs, train_meta.source
        )));
    }
    let provided: Vec<String> = ec
        .entry
        .info
        .outputs
        .iter()
        .map(|o| o.name.to_string())
        .collect();
    for wanted in task.info.required_outputs.iter() {
        if !provided.iter().any(|p| p == wanted.as_str()) {
            return Err(JobError::Other(format!(
                "task {} needs encoder output `{wanted}`, which {} does not provide ({})",
                job.task,
                ec.entry.info.name,
                provided.join(", ")
            )));
        }
    }
    if job.train_encoder {
        let names = metric_names(task);
        let ft = crate::finetune::FineTune {
            opts: ctx.opts,
            pool: &ctx.pool,
            exp: ec.exp,
            entry: ec.entry,
            task,
            job_name,
            job,
            train: &train_ds,
            test: &test_ds,
            num_outputs: train_meta.num_outputs,
            metric_names: &names,
            higher_is_better: higher_is_better(task),
        };
        let out = crate::finetune::run(&ft, &todo, &|cfg, seed| run_hash(&identity, cfg, seed))?;
        return Ok(write_job_results(
            ctx, ec, task, &identity, job_name, job, &todo, out, rows,
        ));
    }
    let (exp, entry) = (ec.exp, ec.entry);
    let sha = ec.weights_sha256.clone();
    let id = EncoderId {
        exp,
        entry,
        weights_sha256: &sha,
    };
    let cached_train = crate::splits::cached(ctx, &id, task, job, Split::Train, &train_ds)?;
    let cached_test = crate::splits::cached(ctx, &id, task, job, Split::Test, &test_ds)?;
    // The encoder is loaded only when something needs it: a fully cached job never reads the
    // weights (unless the head starts from them).
    let encoder: Option<&EncoderBox> =
        if cached_train.is_none() || cached_test.is_none() || task.info.wants_encoder_state {
            Some(ec.encoder(ctx)?)
        } else {
            None
        };
    let loaded = || encoder.ok_or_else(|| JobError::Other("encoder not loaded".into()));
    let train_full = match cached_train {
        Some(hit) => hit,
        None => crate::splits::serve(
            ctx,
            &id,
            task,
            job,
            job_name,
            Split::Train,
            &train_ds,
            loaded()?,
        )?,
    };
    let test = match cached_test {
        Some(hit) => hit,
        None => crate::splits::serve(
            ctx,
            &id,
            task,
            job,
            job_name,
            Split::Test,
            &test_ds,
            loaded()?,
        )?,
    };
    let encoder_state = match encoder {
        Some(enc) if task.info.wants_encoder_state => match enc.state().into_result() {
            Ok(state) => state.into_iter().collect(),
            Err(e) => {
                eprintln!(
                    "{}/{job_name}: the encoder does not give its weights to the head ({})",
                    exp.name, e.message
                );
                Vec::new()
            }
        },
        _ => Vec::new(),
    };
    let split = match job.validation_fraction {
        Some(fraction) => Some(split_validation(
            train_full.store(),
            fraction,
            job.seed,
            !train_meta.class_names.is_empty(),
        )?),
        None => None,
    };
    let (train, val): (&dyn FeatureStore, Option<&dyn FeatureStore>) = match &split {
        Some(s) => (&s.train, Some(&s.val as &dyn FeatureStore)),
        None => (train_full.store(), None),
    };
    let outcomes = train_grid(
        ctx,
        exp,
        task,
        &identity,
        job_name,
        job,
        &todo,
        &GridData {
            train,
            val,
            test: test.store(),
            num_outputs: train_meta.num_outputs,
            encoder_state,
        },
    )?;
    let out = TrainedJob {
        outcomes,
        train_size: train.len(),
        test_size: test.store().len(),
        validation: split
            .as_ref()
            .map(|s| (s.fraction, s.val.len(), s.stratified)),
        num_outputs: train_meta.num_outputs,
        timings: train_full.timings() + test.timings(),
        features: [train_full.how(), test.how()],
    };
    Ok(write_job_results(
        ctx, ec, task, &identity, job_name, job, &todo, out, rows,
    ))
}

/// What training a job's pending configs produced.
pub struct TrainedJob {
    /// Per config: its seeds' outcomes (from this run or saved by an earlier one), or an error.
    pub outcomes: BTreeMap<String, Result<Vec<RunRecord>, String>>,
    /// Training samples.
    pub train_size: i64,
    /// Test samples.
    pub test_size: i64,
    /// How each split was served (`cached`, `encoded`, `live`), train then test.
    pub features: [&'static str; 2],
    /// `(fraction, size, stratified)` of the validation split.
    pub validation: Option<(f64, i64, bool)>,
    /// Head outputs.
    pub num_outputs: u32,
    /// Getting the features.
    pub timings: EncodeTimings,
}

/// Folder of one seed's run of a config.
pub fn seed_dir(cfg_dir: &Path, seed: u64) -> PathBuf {
    cfg_dir.join(format!("seed-{seed}"))
}

/// A seed's run saved by an earlier (possibly killed) run with the same settings.
pub fn saved_run(seed_dir: &Path, hash: &str) -> Option<RunRecord> {
    let text = std::fs::read_to_string(seed_dir.join("run.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    if v["run_hash"] != hash {
        return None;
    }
    let record: RunRecord = serde_json::from_value(v["run"].clone()).ok()?;
    // The head must still be the one the record was written with.
    if let (Some(file), Some(sha)) = (&record.head_file, &record.head_sha256) {
        let path = seed_dir.parent()?.join(file);
        if sha256_file(&path).ok()? != *sha {
            return None;
        }
    }
    Some(record)
}

/// Saves one seed's run: the head first, then `run.json` naming it (atomically, last).
pub fn save_run(
    cfg_dir: &Path,
    hash: &str,
    mut record: RunRecord,
    head: Option<Vec<(String, tch::Tensor)>>,
) -> Result<RunRecord, JobError> {
    let dir = seed_dir(cfg_dir, record.seed);
    let io = |what: &str, e: std::io::Error| {
        JobError::Other(format!("cannot write {what} in {}: {e}", dir.display()))
    };
    if let Some(state) = head {
        let path = dir.join("head.safetensors");
        results::write_head(&path, &state).map_err(|e| io("head.safetensors", e))?;
        record.head_file = Some(format!("seed-{}/head.safetensors", record.seed));
        record.head_sha256 = Some(sha256_file(&path)?);
    }
    let doc = serde_json::json!({"run_hash": hash, "run": record});
    results::write_json(&dir.join("run.json"), &doc).map_err(|e| io("run.json", e))?;
    Ok(record)
}

/// Converts a finished trainee's outcome to a run record (metrics by name).
pub fn run_record(outcome: &RunOutcome, names: &[String]) -> RunRecord {
    let by_name = |values: &[f64]| -> BTreeMap<String, f64> {
        names.iter().cloned().zip(values.iter().copied()).collect()
    };
    let last = outcome.last();
    let best = outcome
        .best_epoch
        .and_then(|e| outcome.history.iter().find(|h| h.epoch == e));
    let (status, error) = match &outcome.stop {
        Some(Stop::Diverged { reason }) => ("diverged", Some(reason.clone())),
        Some(Stop::Failed { reason }) => ("failed", Some(reason.clone())),
        None => ("ok", None),
    };
    RunRecord {
        seed: outcome.seed,
        status: status.to_string(),
        error,
        test_metrics: by_name(&outcome.test_metrics),
        test_loss: outcome.test_loss,
        train_metrics: last.map(|l| by_name(&l.train_metrics)).unwrap_or_default(),
        train_loss: last.map(|l| l.train_loss),
        val_metrics: last.and_then(|l| l.val_metrics.as_deref().map(by_name)),
        best_epoch: outcome.best_epoch,
        best_val_metrics: best.and_then(|b| b.val_metrics.as_deref().map(by_name)),
        last_epoch: last.map(|l| l.epoch),
        steps: outcome.steps,
        final_lr: last.map(|l| l.lr),
        head_file: None,
        head_sha256: None,
        test_details: outcome.test_details.clone(),
        train_s: outcome.train_s,
        eval_s: outcome.eval_s,
    }
}

pub(crate) fn metric_names(task: &TaskEntry) -> Vec<String> {
    task.info
        .metrics
        .iter()
        .map(|m| m.name.to_string())
        .collect()
}

pub(crate) fn higher_is_better(task: &TaskEntry) -> bool {
    task.info
        .metrics
        .first()
        .map(|m| m.higher_is_better)
        .unwrap_or(true)
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

/// Writes `results.json` for every pending config from its runs, then the job's selection.
#[allow(clippy::too_many_arguments)]
fn write_job_results(
    ctx: &Ctx<'_>,
    ec: &ExpCtx<'_>,
    task: &TaskEntry,
    identity: &serde_json::Value,
    job_name: &str,
    job: &JobConfig,
    todo: &[(&String, &TrainingConfig)],
    trained: TrainedJob,
    mut rows: Vec<Row>,
) -> Vec<Row> {
    let exp = ec.exp;
    for &(cfg_name, cfg) in todo {
        let runs = match trained.outcomes.get(cfg_name) {
            Some(Ok(runs)) => runs.clone(),
            Some(Err(e)) => {
                rows.push(failed_row(exp, job_name, cfg_name, e));
                continue;
            }
            None => continue,
        };
        let hyper = hyperparameters(cfg, job);
        let written = write_record(
            ctx,
            ec,
            task,
            RecordParts {
                job_name,
                cfg_name,
                config_hash: config_hash(identity, cfg, job),
                hyper,
                train_encoder: job.train_encoder,
                epochs: job.num_epochs,
                runs,
                train_size: trained.train_size,
                test_size: trained.test_size,
                validation: trained.validation,
                num_outputs: trained.num_outputs,
                timings: trained.timings,
                features: trained.features,
                evaluated_head: None,
            },
        );
        match written {
            Ok(row) => rows.push(row),
            Err(e) => rows.push(failed_row(exp, job_name, cfg_name, &e.to_string())),
        }
    }
    finish_job(ctx, exp, job_name, job, rows)
}

fn hyperparameters(cfg: &TrainingConfig, job: &JobConfig) -> serde_json::Value {
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
    });
    if let Some(obj) = hyper.as_object_mut() {
        obj.retain(|_, v| !v.is_null());
    }
    hyper
}

/// Orders the rows of a job as its configs are listed and marks the config selected for the
/// job (on validation when there is a validation split), writing `<job>.selection.json`.
fn finish_job(
    ctx: &Ctx<'_>,
    exp: &Experiment,
    job_name: &str,
    job: &JobConfig,
    mut rows: Vec<Row>,
) -> Vec<Row> {
    let order: Vec<&String> = job.training_configs.keys().collect();
    rows.sort_by_key(|r| order.iter().position(|c| **c == r.config));
    match crate::selection::write_selection(&ctx.opts.out, &exp.name, job_name, &order) {
        Ok(Some(selected)) => {
            for r in rows.iter_mut() {
                r.selected = r.config == selected;
            }
        }
        Ok(None) => {}
        Err(e) => eprintln!(
            "warning: {}/{job_name}: cannot write the selection: {e}",
            exp.name
        ),
    }
    rows
}

/// The parts of a `results.json` that differ between training and eval-only jobs.
pub struct RecordParts<'a> {
    pub(crate) job_name: &'a str,
    pub(crate) cfg_name: &'a str,
    pub(crate) config_hash: String,
    pub(crate) hyper: serde_json::Value,
    pub(crate) train_encoder: bool,
    pub(crate) epochs: u32,
    pub(crate) runs: Vec<RunRecord>,
    pub(crate) train_size: i64,
    pub(crate) test_size: i64,
    pub(crate) validation: Option<(f64, i64, bool)>,
    pub(crate) num_outputs: u32,
    pub(crate) timings: EncodeTimings,
    /// How the train and test split were served (`""` for a split not used).
    pub(crate) features: [&'static str; 2],
    pub(crate) evaluated_head: Option<String>,
}

/// Writes `results.json` (last, atomically: its presence means the result is complete).
pub(crate) fn write_record(
    ctx: &Ctx<'_>,
    ec: &ExpCtx<'_>,
    task: &TaskEntry,
    p: RecordParts<'_>,
) -> Result<Row, JobError> {
    let exp = ec.exp;
    let dir = results::result_dir(&ctx.opts.out, &exp.name, p.job_name, p.cfg_name);
    let names = metric_names(task);
    let primary = names
        .first()
        .cloned()
        .unwrap_or_else(|| "metric".to_string());
    let finished: Vec<&RunRecord> = p.runs.iter().filter(|r| r.status == "ok").collect();
    let diverged = p.runs.iter().find(|r| r.status == "diverged");
    let (test_metrics, test_metrics_std) =
        mean_std(&finished.iter().map(|r| &r.test_metrics).collect::<Vec<_>>());
    let (train_metrics, _) = mean_std(
        &finished
            .iter()
            .map(|r| &r.train_metrics)
            .collect::<Vec<_>>(),
    );
    let mean_of = |f: &dyn Fn(&RunRecord) -> Option<f64>| -> Option<f64> {
        let xs: Vec<f64> = finished.iter().filter_map(|r| f(r)).collect();
        (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
    };
    let validation = p.validation.map(|(fraction, size, stratified)| {
        let last: Vec<&BTreeMap<String, f64>> = finished
            .iter()
            .filter_map(|r| r.val_metrics.as_ref())
            .collect();
        let best: Vec<&BTreeMap<String, f64>> = finished
            .iter()
            .filter_map(|r| r.best_val_metrics.as_ref())
            .collect();
        ValidationRecord {
            fraction,
            size,
            stratified,
            metrics: mean_std(&last).0,
            best_metrics: mean_std(&best).0,
        }
    });
    let timings = Timings {
        decode: p.timings.decode_s,
        encode: p.timings.encode_s,
        encode_wall: p.timings.wall_s,
        from_cache: p.timings.from_cache,
        features: [("train", p.features[0]), ("test", p.features[1])]
            .into_iter()
            .filter(|(_, how)| !how.is_empty())
            .map(|(split, how)| (split.to_string(), how.to_string()))
            .collect(),
        train: p.runs.iter().map(|r| r.train_s).sum(),
        eval: p.runs.iter().map(|r| r.eval_s).sum(),
    };
    let first = p.runs.first();
    let record = ResultRecord {
        schema: results::SCHEMA,
        status: if diverged.is_some() { "diverged" } else { "ok" }.to_string(),
        error: diverged.and_then(|r| r.error.clone()),
        experiment: exp.name.clone(),
        job: p.job_name.to_string(),
        config: p.cfg_name.to_string(),
        config_hash: p.config_hash,
        task: TaskRecord {
            name: task.info.name.to_string(),
            family: task.info.family.to_string(),
            plugin: PluginRef {
                name: task.plugin.name.clone(),
                version: task.plugin.version.clone(),
            },
        },
        encoder: EncoderRecord {
            name: exp.encoder.clone(),
            plugin: PluginRef {
                name: ec.entry.plugin.name.clone(),
                version: ec.entry.plugin.version.clone(),
            },
            weights: exp.weights.display().to_string(),
            weights_sha256: ec.weights_sha256.clone(),
            options: exp.options.clone(),
        },
        hyperparameters: p.hyper,
        train_encoder: p.train_encoder,
        primary_metric: primary.clone(),
        higher_is_better: higher_is_better(task),
        repeats: p.runs.len() as u32,
        test_accuracy: test_metrics.get(&primary).copied(),
        train_accuracy: train_metrics.get(&primary).copied(),
        test_metrics,
        test_metrics_std,
        train_metrics,
        test_loss: mean_of(&|r| r.test_loss),
        train_loss: mean_of(&|r| r.train_loss),
        validation,
        epochs: p.epochs,
        train_size: p.train_size,
        test_size: p.test_size,
        num_outputs: p.num_outputs,
        timings_s: timings,
        device: device_name(ctx.opts.device),
        versions: Versions {
            virb: env!("CARGO_PKG_VERSION").to_string(),
            plugin_api: PLUGIN_API_VERSION.to_string(),
            libtorch: LIBTORCH_VERSION.to_string(),
        },
        test_details: finished
            .first()
            .map(|r| r.test_details.clone())
            .unwrap_or_default(),
        head_file: first.and_then(|r| r.head_file.clone()),
        head_sha256: first.and_then(|r| r.head_sha256.clone()),
        runs: p.runs,
        evaluated_head: p.evaluated_head,
        finished_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    let path = dir.join("results.json");
    results::write_json(&path, &record).map_err(|e| {
        JobError::Other(format!(
            "cannot write results.json in {}: {e}",
            dir.display()
        ))
    })?;
    let value = serde_json::to_value(&record)
        .map_err(|e| JobError::Other(format!("cannot serialise the result: {e}")))?;
    Ok(row_of(&value, &path, ""))
}
