//! `virb-host run`: jobs = experiments x virb-config entries. Each experiment's encoder is loaded
//! once; each job's train and test splits are encoded once and every training config of the job
//! trains its own head on that one encoding. A failing job or config is reported and skipped; the
//! others go on.
use crate::config::{self, ConfigError, Experiment, JobConfig, TrainingConfig};
use crate::error::{plugin, JobError};
use crate::features::{encode_split, EncodeRequest, EncodeTimings, FeatureStore, MemoryStore};
use crate::plugins::{EncoderEntry, Registry, TaskEntry};
use crate::results::{
    self, EncoderRecord, PluginRef, ResultRecord, Row, TaskRecord, Timings, Versions,
};
use crate::train::{evaluate, train_and_eval, Outcome};
use sha2::{Digest, Sha256};
use std::{
    io::Read,
    path::{Path, PathBuf},
};
use tch::Device;
use virb_plugin_api::{
    device_name, DatasetRequest, EncoderBox, EncoderRequest, FeatureSpec, HeadRequest, Split,
    LIBTORCH_VERSION, PLUGIN_API_VERSION,
};

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

struct Ctx<'a> {
    opts: &'a RunOptions,
    registry: &'a Registry,
    pool: rayon::ThreadPool,
}

struct LoadedEncoder<'a> {
    entry: &'a EncoderEntry,
    encoder: EncoderBox,
    sha256: String,
}

/// Runs every job; returns the table rows, or an error when the configuration is invalid.
pub fn run(opts: &RunOptions, registry: &Registry) -> Result<RunSummary, SetupError> {
    let experiments = config::load_experiment_list(&opts.experiment_list)?;
    let virb = config::load_virb_config(&opts.virb_configs)?;
    // Check everything that can be checked before any work starts.
    let config_text = std::fs::read_to_string(&virb.path).unwrap_or_default();
    for (name, job) in &virb.jobs {
        let entry = registry.task(&job.task).map_err(|e| {
            let text = std::fs::read_to_string(&virb.path).unwrap_or_default();
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with("task:") && l.contains(job.task.as_str()))
                .map(|i| i + 1);
            ConfigError {
                file: virb.path.clone(),
                line,
                message: format!("job `{name}`: `task`: {e}"),
            }
        })?;
        let eval_only = !entry.info.evaluates_heads_of.is_empty();
        config::check_job_for_task(job, eval_only).map_err(|(key, message)| ConfigError {
            file: virb.path.clone(),
            line: config::locate(&config_text, name, Some(&key)),
            message: format!("job `{name}`: `{key}`: {message}"),
        })?;
    }
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
            line: None,
            message: format!("experiment `{}`: {e}", exp.name),
        })?;
    }
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
        match load_encoder(&ctx, exp) {
            Ok(enc) => {
                for &(job_name, job) in &jobs {
                    match run_job(&ctx, exp, &enc, job_name, job) {
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

fn failed_row(exp: &Experiment, job_name: &str, cfg: &str, error: &str) -> Row {
    Row {
        experiment: exp.name.clone(),
        job: job_name.to_string(),
        config: cfg.to_string(),
        metric: "FAILED".to_string(),
        value: "-".to_string(),
        note: error.lines().next().unwrap_or_default().to_string(),
    }
}

fn sha256_file(path: &Path) -> Result<String, JobError> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| JobError::Other(format!("cannot read {}: {e}", path.display())))?;

    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| JobError::Other(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn load_encoder<'a>(ctx: &Ctx<'a>, exp: &Experiment) -> Result<LoadedEncoder<'a>, JobError> {
    let entry = ctx
        .registry
        .encoder(&exp.encoder)
        .map_err(JobError::Other)?;
    eprintln!(
        "loading encoder `{}` for experiment `{}` from {}",
        exp.encoder,
        exp.name,
        exp.weights.display()
    );
    let encoder = plugin(entry.factory.load(EncoderRequest {
        weights: exp.weights.to_string_lossy().as_ref().into(),
        device: device_name(ctx.opts.device).into(),
        options_json: exp.options.to_string().into(),
    }))?;
    let sha256 = sha256_file(&exp.weights)?;
    Ok(LoadedEncoder {
        entry,
        encoder,
        sha256,
    })
}

fn run_job(
    ctx: &Ctx<'_>,
    exp: &Experiment,
    enc: &LoadedEncoder<'_>,
    job_name: &str,
    job: &JobConfig,
) -> Result<Vec<Row>, JobError> {
    let task = ctx.registry.task(&job.task).map_err(JobError::Other)?;
    if !task.info.evaluates_heads_of.is_empty() {
        return run_eval_job(ctx, exp, enc, job_name, job, task);
    }
    let open = |split| {
        plugin(task.task.open(DatasetRequest {
            data_root: ctx.opts.data_root.to_string_lossy().as_ref().into(),
            split,
            image_size: job.image_size,
            options_json: "{}".into(),
        }))
    };
    let train_ds = open(Split::Train)?;
    let test_ds = open(Split::Test)?;
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
    let provided: Vec<String> = enc
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
                enc.entry.info.name,
                provided.join(", ")
            )));
        }
    }
    let request = |split: &str| EncodeRequest {
        encoder: &enc.encoder,
        outputs: task.info.required_outputs.as_slice(),
        frames: task.info.frames.max(1),
        batch_size: job.eval_batch_size() as usize,
        pool: &ctx.pool,
        store_device: ctx.opts.device,
        label: format!("{}/{job_name}: encode {split}", exp.name),
    };
    let (train, t_train) = encode_split(&train_ds, &request("train"))?;
    let (test, t_test) = encode_split(&test_ds, &request("test"))?;
    let encode_timings = EncodeTimings {
        decode_s: t_train.decode_s + t_test.decode_s,
        encode_s: t_train.encode_s + t_test.encode_s,
        wall_s: t_train.wall_s + t_test.wall_s,
    };
    let job_ctx = JobCtx {
        ctx,
        exp,
        enc,
        task,
        job_name,
        job,
        train: Some(&train),
        test: &test,
        num_outputs: train_meta.num_outputs,
        encode_timings,
    };
    let mut rows = Vec::new();
    for (cfg_name, cfg) in &job.training_configs {
        match job_ctx.run_config(cfg_name, cfg) {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!(
                    "error: experiment `{}`, job `{job_name}`, config `{cfg_name}`: {e}",
                    exp.name
                );
                rows.push(failed_row(exp, job_name, cfg_name, &e.to_string()));
            }
        }
    }
    Ok(rows)
}

/// Evaluates, on the eval-only task's test split, every head that the task it names trained for
/// this experiment (found in `--out`), without training.
fn run_eval_job(
    ctx: &Ctx<'_>,
    exp: &Experiment,
    enc: &LoadedEncoder<'_>,
    job_name: &str,
    job: &JobConfig,
    task: &TaskEntry,
) -> Result<Vec<Row>, JobError> {
    let source = task.info.evaluates_heads_of.to_string();
    let exp_dir = ctx.opts.out.join(&exp.name);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&exp_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.sort();
    let heads: Vec<(PathBuf, serde_json::Value)> = dirs
        .into_iter()
        .filter_map(|dir| {
            let text = std::fs::read_to_string(dir.join("results.json")).ok()?;
            let r: serde_json::Value = serde_json::from_str(&text).ok()?;
            (r["task"]["name"] == source.as_str() && r["evaluated_head"].is_null())
                .then_some((dir, r))
        })
        .collect();
    if heads.is_empty() {
        return Err(JobError::Other(format!(
            "{}: no trained {source} head for experiment `{}` in {}; run a job with `task: {source}` for this experiment first (same --out), then this one",
            job.task,
            exp.name,
            exp_dir.display()
        )));
    }
    let test_ds = plugin(task.task.open(DatasetRequest {
        data_root: ctx.opts.data_root.to_string_lossy().as_ref().into(),
        split: Split::Test,
        image_size: job.image_size,
        options_json: "{}".into(),
    }))?;
    let test_meta = plugin(test_ds.meta())?;
    let (test, timings) = encode_split(
        &test_ds,
        &EncodeRequest {
            encoder: &enc.encoder,
            outputs: task.info.required_outputs.as_slice(),
            frames: task.info.frames.max(1),
            batch_size: job.eval_batch_size() as usize,
            pool: &ctx.pool,
            store_device: ctx.opts.device,
            label: format!("{}/{job_name}: encode test", exp.name),
        },
    )?;
    let features: Vec<FeatureSpec> = test
        .shapes()
        .into_iter()
        .map(|(name, shape)| FeatureSpec {
            name: name.as_str().into(),
            shape: shape.into(),
        })
        .collect();
    let mut rows = Vec::new();
    for (dir, r) in heads {
        let config = r["config"].as_str().unwrap_or("head").to_string();
        let head_name = r["head_file"]
            .as_str()
            .unwrap_or("head.safetensors")
            .to_string();
        let outcome = (|| -> Result<Row, JobError> {
            let num_outputs = r["num_outputs"].as_u64().unwrap_or(0) as u32;
            if test_meta.num_outputs > num_outputs {
                return Err(JobError::Other(format!(
                    "{}: labels go up to {} but the {source} head in {} has {num_outputs} outputs",
                    job.task,
                    test_meta.num_outputs.saturating_sub(1),
                    dir.display()
                )));
            }
            let head_file = dir.join(&head_name);
            let state = tch::Tensor::read_safetensors(&head_file).map_err(|e| {
                JobError::Other(format!("cannot read head {}: {e}", head_file.display()))
            })?;
            let mut head = plugin(task.task.build_head(HeadRequest {
                features: features.clone().into(),
                num_outputs,
                device: device_name(ctx.opts.device).into(),
                seed: job.seed,
            }))?;
            let state = state
                .into_iter()
                .map(|(n, t)| virb_plugin_api::NamedTensor::new(n, t))
                .collect();
            plugin(head.load_state(state))?;
            let t0 = std::time::Instant::now();
            let (test_loss, test_metrics) =
                evaluate(&head, &test, job.eval_batch_size() as i64, ctx.opts.device)?;
            let outcome = Outcome {
                train_loss: f64::NAN,
                train_metrics: Vec::new(),
                test_loss,
                test_metrics,
                epochs: 0,
                train_s: 0.0,
                eval_s: t0.elapsed().as_secs_f64(),
                final_lr: f64::NAN,
            };
            let folder = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let job_ctx = JobCtx {
                ctx,
                exp,
                enc,
                task,
                job_name,
                job,
                train: None,
                test: &test,
                num_outputs,
                encode_timings: timings,
            };
            job_ctx.write_record(
                &config,
                r["hyperparameters"].clone(),
                &outcome,
                HeadRef {
                    file: format!("../{folder}/{head_name}"),
                    sha256: r["head_sha256"].as_str().unwrap_or_default().to_string(),
                    evaluated: Some(dir.display().to_string()),
                },
            )
        })();
        match outcome {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!(
                    "error: experiment `{}`, job `{job_name}`, head `{config}`: {e}",
                    exp.name
                );
                rows.push(failed_row(exp, job_name, &config, &e.to_string()));
            }
        }
    }
    Ok(rows)
}

/// Where the head of a result is.
struct HeadRef {
    /// Path relative to the result's folder.
    file: String,
    /// SHA-256 of its content.
    sha256: String,
    /// For an eval-only job: the result folder whose head was evaluated.
    evaluated: Option<String>,
}

struct JobCtx<'a> {
    ctx: &'a Ctx<'a>,
    exp: &'a Experiment,
    enc: &'a LoadedEncoder<'a>,
    task: &'a TaskEntry,
    job_name: &'a str,
    job: &'a JobConfig,
    /// None for an eval-only job.
    train: Option<&'a MemoryStore>,
    test: &'a MemoryStore,
    num_outputs: u32,
    encode_timings: EncodeTimings,
}

impl JobCtx<'_> {
    fn run_config(&self, cfg_name: &str, cfg: &TrainingConfig) -> Result<Row, JobError> {
        let (exp, job, task) = (self.exp, self.job, self.task);
        let device = self.ctx.opts.device;
        let train = self
            .train
            .ok_or_else(|| JobError::Other("an eval-only job has no training split".into()))?;
        let features: Vec<FeatureSpec> = train
            .shapes()
            .into_iter()
            .map(|(name, shape)| FeatureSpec {
                name: name.as_str().into(),
                shape: shape.into(),
            })
            .collect();
        let head = plugin(task.task.build_head(HeadRequest {
            features: features.into(),
            num_outputs: self.num_outputs,
            device: device_name(device).into(),
            seed: job.seed,
        }))?;
        let label = format!("{}/{}-{cfg_name}: train", exp.name, self.job_name);
        let outcome = train_and_eval(&head, cfg, job, train, self.test, device, &label)?;
        let dir = results::result_dir(&self.ctx.opts.out, &exp.name, self.job_name, cfg_name);
        let io = |what: &str, e: std::io::Error| {
            JobError::Other(format!("cannot write {what} in {}: {e}", dir.display()))
        };
        let state: Vec<(String, tch::Tensor)> = plugin(head.state())?
            .into_iter()
            .map(|nt| (nt.name.to_string(), nt.tensor.into_tch()))
            .collect();
        let head_file = "head.safetensors";
        results::write_head(&dir.join(head_file), &state).map_err(|e| io(head_file, e))?;
        let head_sha256 = sha256_file(&dir.join(head_file))?;
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
        });
        if let Some(obj) = hyper.as_object_mut() {
            obj.retain(|_, v| !v.is_null());
        }
        let head = HeadRef {
            file: head_file.to_string(),
            sha256: head_sha256,
            evaluated: None,
        };
        self.write_record(cfg_name, hyper, &outcome, head)
    }

    /// Writes `results.json` for one config (last, so its presence means the result is complete).
    fn write_record(
        &self,
        cfg_name: &str,
        hyper: serde_json::Value,
        outcome: &Outcome,
        head: HeadRef,
    ) -> Result<Row, JobError> {
        let (exp, task) = (self.exp, self.task);
        let device = self.ctx.opts.device;
        let dir = results::result_dir(&self.ctx.opts.out, &exp.name, self.job_name, cfg_name);
        let io = |what: &str, e: std::io::Error| {
            JobError::Other(format!("cannot write {what} in {}: {e}", dir.display()))
        };
        let names: Vec<String> = task
            .info
            .metrics
            .iter()
            .map(|m| m.name.to_string())
            .collect();
        let by_name = |values: &[f64]| names.iter().cloned().zip(values.iter().copied()).collect();
        let primary = names
            .first()
            .cloned()
            .unwrap_or_else(|| "metric".to_string());
        let record = ResultRecord {
            schema: results::SCHEMA,
            experiment: exp.name.clone(),
            job: self.job_name.to_string(),
            config: cfg_name.to_string(),
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
                    name: self.enc.entry.plugin.name.clone(),
                    version: self.enc.entry.plugin.version.clone(),
                },
                weights: exp.weights.display().to_string(),
                weights_sha256: self.enc.sha256.clone(),
                options: exp.options.clone(),
            },
            hyperparameters: hyper,
            primary_metric: primary.clone(),
            higher_is_better: task
                .info
                .metrics
                .first()
                .map(|m| m.higher_is_better)
                .unwrap_or(true),
            test_metrics: by_name(&outcome.test_metrics),
            train_metrics: by_name(&outcome.train_metrics),
            test_loss: outcome.test_loss,
            train_loss: outcome.train_loss,
            test_accuracy: outcome.test_metrics.first().copied().unwrap_or(f64::NAN),
            train_accuracy: outcome.train_metrics.first().copied().unwrap_or(f64::NAN),
            epochs: outcome.epochs,
            final_lr: outcome.final_lr,
            train_size: self.train.map(|t| t.len()).unwrap_or(0),
            test_size: self.test.len(),
            num_outputs: self.num_outputs,
            timings_s: Timings {
                decode: self.encode_timings.decode_s,
                encode: self.encode_timings.encode_s,
                encode_wall: self.encode_timings.wall_s,
                train: outcome.train_s,
                eval: outcome.eval_s,
            },
            device: device_name(device),
            versions: Versions {
                virb: env!("CARGO_PKG_VERSION").to_string(),
                plugin_api: PLUGIN_API_VERSION.to_string(),
                libtorch: LIBTORCH_VERSION.to_string(),
            },
            head_file: head.file,
            head_sha256: head.sha256,
            evaluated_head: head.evaluated,
            finished_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string(),
        };
        let results_path = dir.join("results.json");
        results::write_results(&results_path, &record).map_err(|e| io("results.json", e))?;
        let value = record.test_accuracy;
        Ok(Row {
            experiment: exp.name.clone(),
            job: self.job_name.to_string(),
            config: cfg_name.to_string(),
            metric: primary,
            value: format!("{value:.4}"),
            note: results_path.display().to_string(),
        })
    }
}
