//! Eval-only jobs (such as `Imagenetv2`): evaluate, without training, the heads that the task
//! they name trained for the same experiment, found in `--out`.
use super::grid::new_head;
use crate::config::JobConfig;
use crate::error::{plugin, JobError};
use crate::hashing::{hash_json, sha256_file};
use crate::names::{self, NameKind};
use crate::outdir;
use crate::plan::{job_identity, Ctx, ExpCtx, JobPlan};
use crate::plugins::TaskEntry;
use crate::records::{complete_row, failed_row, metric_names, write_record, RecordParts};
use crate::table::Row;
use crate::train;
use std::{collections::BTreeMap, path::PathBuf};
use virb_plugin_api::Split;
use virb_records::{ResultRecord, RunRecord};

/// Evaluates, on the eval-only task's test split, every head that the task it names trained
/// for this experiment (found in `--out`), without training: each seed's head, with the mean
/// and standard deviation over seeds.
pub(crate) fn run(
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
    let heads: Vec<(PathBuf, ResultRecord)> = dirs
        .into_iter()
        .filter_map(|dir| {
            let r = ResultRecord::read(&outdir::results_file(&dir)).ok()?;
            (r.task.name == source && !r.is_eval_only() && r.is_ok()).then_some((dir, r))
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
    let plan = JobPlan {
        name: job_name,
        job,
        task,
        identity: job_identity(ctx, ec, task, job),
    };
    let mut rows = Vec::new();
    let mut pending: Vec<(PathBuf, ResultRecord, String, String)> = Vec::new();
    // Which head's result goes to which folder: `<job>-<config of the head>`. The config name
    // comes from a file in --out, so it is checked like a name in a config file.
    let mut folders: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    for (dir, r) in heads {
        let config = r.config.clone();
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
            rows.push(failed_row(&exp.name, job_name, &config, &e));
            continue;
        }
        let hash = hash_json(&serde_json::json!({"job": plan.identity, "source": r.config_hash}));
        let out_dir = outdir::result_dir(&ctx.opts.out, &exp.name, job_name, &config);
        if let Some(first) = folders.insert(out_dir.clone(), dir.clone()) {
            let e = format!(
                "the {source} heads in {} and {} have the same config name `{config}`, so both results would be written to {}; rename one of the configs",
                first.display(),
                dir.display(),
                out_dir.display()
            );
            eprintln!("error: experiment `{}`, job `{job_name}`: {e}", exp.name);
            rows.push(failed_row(&exp.name, job_name, &config, &e));
            // The first of the two is not evaluated either: neither result would be trustworthy.
            let before = pending.len();
            pending.retain(|(d, ..)| *d != first);
            if pending.len() < before {
                rows.push(failed_row(&exp.name, job_name, &config, &e));
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
    let test_ds = plan.open_split(ctx, Split::Test)?;
    let test_meta = plugin(test_ds.meta())?;
    let served = crate::splits::serve_split(ctx, ec, task, job, job_name, Split::Test, &test_ds)?;
    let test = served.store();
    let features = test.feature_specs();
    let names = metric_names(task);
    for (dir, r, config, hash) in pending {
        let folder = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let outcome = (|| -> Result<Row, JobError> {
            let num_outputs = r.num_outputs;
            if test_meta.num_outputs > num_outputs {
                return Err(JobError::Other(format!(
                    "{}: labels go up to {} but the {source} head in {} has {num_outputs} outputs",
                    job.task,
                    test_meta.num_outputs.saturating_sub(1),
                    dir.display()
                )));
            }
            let mut runs = Vec::new();
            for src in r.runs.iter().filter(|s| s.is_ok()) {
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
                let mut head = new_head(
                    ctx,
                    &plan,
                    features.clone(),
                    num_outputs,
                    src.seed,
                    test.input_hw(),
                    Vec::new(),
                )?;
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
                    test_metrics: names.iter().cloned().zip(test_metrics).collect(),
                    test_details: eval.details,
                    test_loss: Some(test_loss),
                    head_file: Some(format!("../{folder}/{head_name}")),
                    head_sha256: src.head_sha256.clone(),
                    eval_s: t0.elapsed().as_secs_f64(),
                    ..RunRecord::default()
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
                    hyper: r.hyperparameters.clone(),
                    train_encoder: false,
                    epochs: 0,
                    runs,
                    train_size: 0,
                    test_size: test.len(),
                    validation: None,
                    num_outputs,
                    timings: served.timings(),
                    features: ["", served.how()],
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
                rows.push(failed_row(&exp.name, job_name, &config, &e.to_string()));
            }
        }
    }
    Ok(rows)
}
