//! Eval-only jobs (such as `Imagenetv2`): evaluate, without training, the heads that the task
//! they name trained for the same experiment, found in `--out`.
use crate::config::JobConfig;
use crate::error::{plugin, JobError};
use crate::names::{self, NameKind};
use crate::plugins::TaskEntry;
use crate::results::{self, hash_json, sha256_file, Row, RunRecord};
use crate::runner::{
    complete_row, failed_row, job_identity, metric_names, open_split, write_record, Ctx, ExpCtx,
    RecordParts,
};
use crate::train;
use std::{collections::BTreeMap, path::PathBuf};
use virb_plugin_api::{device_name, HeadRequest, Split};

/// Evaluates, on the eval-only task's test split, every head that the task it names trained
/// for this experiment (found in `--out`), without training: each seed's head, with the mean
/// and standard deviation over seeds.
pub(crate) fn run_eval_job(
    ctx: &Ctx<'_>,
    ec: &ExpCtx<'_>,
    job_name: &str,
    job: &JobConfig,
    task: &TaskEntry,
) -> Result<Vec<Row>, JobError> {
    let exp = ec.exp;
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
            (r["schema"] == results::SCHEMA
                && r["task"]["name"] == source.as_str()
                && r["evaluated_head"].is_null()
                && r["status"] == "ok")
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
    let identity = job_identity(ctx, ec, task, job);
    let mut rows = Vec::new();
    let mut pending: Vec<(PathBuf, serde_json::Value, String, String)> = Vec::new();
    // Which head's result goes to which folder: `<job>-<config of the head>`. The config name
    // comes from a file in --out, so it is checked like a name in a config file.
    let mut folders: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    for (dir, r) in heads {
        let config = r["config"].as_str().unwrap_or("head").to_string();
        let refused = names::check(NameKind::Config, &config)
            .map_err(|e| {
                format!(
                    "the {source} result in {} is not usable: {e}",
                    dir.display()
                )
            })
            .and_then(|()| {
                names::plan_collisions([(job_name, config.as_str())]).map_err(|e| e.message)
            });
        if let Err(e) = refused {
            rows.push(failed_row(exp, job_name, &config, &e));
            continue;
        }
        let hash = hash_json(&serde_json::json!({"job": identity, "source": r["config_hash"]}));
        let out_dir = results::result_dir(&ctx.opts.out, &exp.name, job_name, &config);
        if let Some(first) = folders.insert(out_dir.clone(), dir.clone()) {
            let e = format!(
                "the {source} heads in {} and {} have the same config name `{config}`, so both results would be written to {}; rename one of the configs",
                first.display(),
                dir.display(),
                out_dir.display()
            );
            eprintln!("error: experiment `{}`, job `{job_name}`: {e}", exp.name);
            rows.push(failed_row(exp, job_name, &config, &e));
            // The first of the two is not evaluated either: neither result would be trustworthy.
            let before = pending.len();
            pending.retain(|(d, ..)| *d != first);
            if pending.len() < before {
                rows.push(failed_row(exp, job_name, &config, &e));
            }
            continue;
        }
        match complete_row(&out_dir, &hash) {
            Some(row) if !ctx.opts.force => rows.push(row),
            _ => pending.push((dir, r, config, hash)),
        }
    }
    if pending.is_empty() {
        return Ok(rows);
    }
    let test_ds = open_split(ctx, task, job, Split::Test)?;
    let test_meta = plugin(test_ds.meta())?;
    let served = crate::splits::serve_split(ctx, ec, task, job, job_name, Split::Test, &test_ds)?;
    let test = served.store();
    let features = test.feature_specs();
    let (input_height, input_width) = test.input_hw();
    let names = metric_names(task);
    for (dir, r, config, hash) in pending {
        let folder = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
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
            let source_runs: Vec<RunRecord> =
                serde_json::from_value(r["runs"].clone()).unwrap_or_default();
            let mut runs = Vec::new();
            for src in source_runs.iter().filter(|s| s.status == "ok") {
                let Some(head_name) = &src.head_file else {
                    continue;
                };
                let head_file = dir.join(head_name);
                if let Some(sha) = &src.head_sha256 {
                    if sha256_file(&head_file).ok().as_ref() != Some(sha) {
                        return Err(JobError::Other(format!(
                            "{}: the {source} head {} is missing or differs from the one recorded in {}; rerun the {source} job (same --out) to retrain it",
                            job.task,
                            head_file.display(),
                            dir.join("results.json").display()
                        )));
                    }
                }
                let state = tch::Tensor::read_safetensors(&head_file).map_err(|e| {
                    JobError::Other(format!("cannot read head {}: {e}", head_file.display()))
                })?;
                let mut head = plugin(task.task.build_head(HeadRequest {
                    features: features.clone().into(),
                    num_outputs,
                    device: device_name(ctx.opts.device).into(),
                    seed: src.seed,
                    options_json: job.task_options_json().into(),
                    input_height,
                    input_width,
                    encoder_state: Default::default(),
                }))?;
                let state = state
                    .into_iter()
                    .map(|(n, t)| virb_plugin_api::NamedTensor::new(n, t))
                    .collect();
                plugin(head.load_state(state))?;
                let t0 = std::time::Instant::now();
                let eval =
                    train::evaluate(&head, test, job.eval_batch_size() as i64, ctx.opts.device)?;
                let (test_loss, test_metrics) = (eval.loss, eval.metrics);
                runs.push(RunRecord {
                    seed: src.seed,
                    status: "ok".into(),
                    error: None,
                    test_metrics: names.iter().cloned().zip(test_metrics).collect(),
                    test_details: eval.details,
                    test_loss: Some(test_loss),
                    train_metrics: BTreeMap::new(),
                    train_loss: None,
                    val_metrics: None,
                    best_epoch: None,
                    best_val_metrics: None,
                    last_epoch: None,
                    steps: 0,
                    final_lr: None,
                    head_file: Some(format!("../{folder}/{head_name}")),
                    head_sha256: src.head_sha256.clone(),
                    train_s: 0.0,
                    eval_s: t0.elapsed().as_secs_f64(),
                });
            }
            if runs.is_empty() {
                return Err(JobError::Other(format!(
                    "{}: the {source} result in {} lists no head",
                    job.task,
                    dir.display()
                )));
            }
            write_record(
                ctx,
                ec,
                task,
                RecordParts {
                    job_name,
                    cfg_name: &config,
                    config_hash: hash,
                    hyper: r["hyperparameters"].clone(),
                    train_encoder: false,
                    epochs: 0,
                    runs,
                    train_size: 0,
                    test_size: test.len(),
                    validation: None,
                    num_outputs,
                    timings: served.timings(),
                    features: ["", "encoded"],
                    evaluated_head: Some(dir.display().to_string()),
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
