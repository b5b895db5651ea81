//! The drivers of a job, one per way a job runs:
//!
//! * [`frozen`]: the encoder stays frozen; each split is served from the feature cache, encoded
//!   once, or encoded live batch by batch ([`crate::splits`]), and every config of the job's
//!   grid trains on it in one pass ([`grid`]);
//! * [`finetune`]: `train_encoder: true`; per (config, seed) a fresh encoder trains with its
//!   head through the same training pass, on a live store in training mode;
//! * [`eval_only`]: tasks such as `Imagenetv2` evaluate the heads another task trained.
//!
//! Each driver produces runs; [`finish`] turns them into `results.json` files and the job's
//! selection.
pub(crate) mod eval_only;
pub(crate) mod finetune;
pub(crate) mod frozen;
pub(crate) mod grid;

use crate::encode::EncodeTimings;
use crate::error::JobError;
use crate::plan::{check_splits, job_identity, Ctx, ExpCtx, JobPlan};
use crate::records::{failed_row, write_record, RecordParts};
use crate::table::Row;
use crate::{config::JobConfig, config::TrainingConfig, outdir};
use std::{collections::BTreeMap, path::PathBuf};
use virb_plugin_api::Split;
use virb_records::RunRecord;

/// Runs one job of an experiment; returns its rows (complete, newly written or failed).
pub(crate) fn run_job(
    ctx: &Ctx<'_>,
    ec: &ExpCtx<'_>,
    job_name: &str,
    job: &JobConfig,
) -> Result<Vec<Row>, JobError> {
    let task = ctx.registry.task(&job.task).map_err(JobError::Other)?;
    if !task.info.evaluates_heads_of.is_empty() {
        return eval_only::run(ctx, ec, job_name, job, task);
    }
    let plan = JobPlan {
        name: job_name,
        job,
        task,
        identity: job_identity(ctx, ec, task, job),
    };
    let (rows, todo) = plan.pending(ctx, &ec.exp.name);
    if todo.is_empty() {
        eprintln!(
            "{}/{job_name}: every config is complete; skipped (--force reruns)",
            ec.exp.name
        );
        return Ok(finish_job(ctx, ec, &plan, rows));
    }
    let train_ds = plan.open_split(ctx, Split::Train)?;
    let test_ds = plan.open_split(ctx, Split::Test)?;
    let train_meta = crate::error::plugin(train_ds.meta())?;
    let test_meta = crate::error::plugin(test_ds.meta())?;
    check_splits(&plan, ec, &train_meta, &test_meta)?;
    let splits = frozen::Splits {
        train: &train_ds,
        test: &test_ds,
        num_outputs: train_meta.num_outputs,
        classes: !train_meta.class_names.is_empty(),
    };
    let trained = if job.train_encoder {
        finetune::run(ctx, ec, &plan, &todo, &splits)?
    } else {
        frozen::run(ctx, ec, &plan, &todo, &splits)?
    };
    Ok(finish(ctx, ec, &plan, &todo, trained, rows))
}

/// What training a job's pending configs produced.
pub(crate) struct TrainedJob {
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

/// Writes `results.json` for every pending config from its runs, then the job's selection.
fn finish(
    ctx: &Ctx<'_>,
    ec: &ExpCtx<'_>,
    plan: &JobPlan<'_>,
    todo: &[(&String, &TrainingConfig)],
    trained: TrainedJob,
    mut rows: Vec<Row>,
) -> Vec<Row> {
    let exp = &ec.exp.name;
    for &(cfg_name, cfg) in todo {
        let runs = match trained.outcomes.get(cfg_name) {
            Some(Ok(runs)) => runs.clone(),
            Some(Err(e)) => {
                rows.push(failed_row(exp, plan.name, cfg_name, e));
                continue;
            }
            None => continue,
        };
        let written = write_record(
            ctx,
            ec,
            plan.task,
            RecordParts {
                job_name: plan.name,
                cfg_name,
                config_hash: plan.config_hash(cfg),
                hyper: plan.hyperparameters(cfg),
                train_encoder: plan.job.train_encoder,
                epochs: plan.job.num_epochs,
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
            Err(e) => rows.push(failed_row(exp, plan.name, cfg_name, &e.to_string())),
        }
    }
    finish_job(ctx, ec, plan, rows)
}

/// Orders the rows of a job as its configs are listed and marks the config selected for the
/// job (on validation when there is a validation split), writing `<job>.selection.json`.
fn finish_job(ctx: &Ctx<'_>, ec: &ExpCtx<'_>, plan: &JobPlan<'_>, mut rows: Vec<Row>) -> Vec<Row> {
    let order: Vec<&String> = plan.job.training_configs.keys().collect();
    rows.sort_by_key(|r| order.iter().position(|c| **c == r.config));
    let exp = &ec.exp.name;
    match crate::selection::write_selection(&ctx.opts.out, exp, plan.name, &order) {
        Ok(Some(selected)) => {
            for r in rows.iter_mut() {
                r.selected = r.config == selected;
            }
        }
        Ok(None) => {}
        Err(e) => eprintln!(
            "warning: {exp}/{}: cannot write the selection: {e}",
            plan.name
        ),
    }
    rows
}

/// The result folder of one of the job's configs.
pub(crate) fn cfg_dir(
    ctx: &Ctx<'_>,
    ec: &ExpCtx<'_>,
    plan: &JobPlan<'_>,
    cfg_name: &str,
) -> PathBuf {
    outdir::result_dir(&ctx.opts.out, &ec.exp.name, plan.name, cfg_name)
}
