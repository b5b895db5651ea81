//! Training a job's grid of configs on one split's features, whatever store serves them: per
//! seed, one training pass trains every config that has no saved run for that seed (each batch
//! is produced once, cached or live, and serves every head), then each head is evaluated on the
//! whole test split and its run saved.
use super::cfg_dir;
use crate::config::TrainingConfig;
use crate::error::{plugin, JobError};
use crate::hashing::hash_json;
use crate::outdir::{
    checkpoint_dir, remove_event_files, save_run, saved_run, seed_dir, TensorFiles,
};
use crate::plan::{Ctx, ExpCtx, JobPlan};
use crate::records::{higher_is_better, metric_names, run_record};
use crate::store::FeatureStore;
use crate::train::{self, checkpoint, steps_per_epoch, CheckpointPolicy, Pass, Stop, Trainee};
use std::{collections::BTreeMap, path::Path};
use virb_plugin_api::{device_name, FeatureSpec, HeadBox, HeadRequest, NamedTensor};
use virb_records::RunRecord;

/// What the grid trains on.
pub(crate) struct GridData<'a> {
    /// The training samples (all of the train split, or its training part).
    pub train: &'a dyn FeatureStore,
    /// The validation part of the train split, if the job holds one out.
    pub val: Option<&'a dyn FeatureStore>,
    /// The test split.
    pub test: &'a dyn FeatureStore,
    /// The head's number of outputs.
    pub num_outputs: u32,
    /// The encoder's state, for a task that starts its head from encoder weights.
    pub encoder_state: Vec<NamedTensor>,
}

/// Per config: its seeds' runs, or why it failed.
pub(crate) type Outcomes = BTreeMap<String, Result<Vec<RunRecord>, String>>;

/// A new head of the job's task for features `features` of inputs `input_hw`.
pub(crate) fn new_head(
    ctx: &Ctx<'_>,
    plan: &JobPlan<'_>,
    features: Vec<FeatureSpec>,
    num_outputs: u32,
    seed: u64,
    input_hw: (u32, u32),
    encoder_state: Vec<NamedTensor>,
) -> Result<HeadBox, JobError> {
    plugin(plan.task.task.build_head(HeadRequest {
        features: features.into(),
        num_outputs: num_outputs.max(1),
        device: device_name(ctx.opts.device).into(),
        seed,
        options_json: plan.job.task_options_json().into(),
        input_height: input_hw.0,
        input_width: input_hw.1,
        encoder_state: encoder_state.into(),
    }))
}

/// Evaluates a trained trainee on `test` and saves its run (its head, any `extra` tensor files,
/// then `run.json`) in its config's folder.
pub(crate) fn finish_and_save(
    ctx: &Ctx<'_>,
    plan: &JobPlan<'_>,
    trainee: Trainee,
    test: &dyn FeatureStore,
    cfg_dir: &Path,
    hash: &str,
    extra: &dyn Fn() -> Result<TensorFiles, JobError>,
) -> Result<RunRecord, JobError> {
    let names = metric_names(plan.task);
    let (outcome, head) = trainee.finish(
        test,
        plan.job.eval_batch_size() as i64,
        ctx.opts.device,
        &names,
        higher_is_better(plan.task),
    );
    if let Some(Stop::Failed { reason }) = &outcome.stop {
        return Err(JobError::Other(reason.clone()));
    }
    let (state, extra) = match outcome.stop {
        None => (
            Some(
                plugin(head.state())?
                    .into_iter()
                    .map(|nt| (nt.name.to_string(), nt.tensor.into_tch()))
                    .collect(),
            ),
            extra()?,
        ),
        Some(_) => (None, Vec::new()),
    };
    save_run(cfg_dir, hash, run_record(&outcome, &names), state, &extra)
}

/// Trains the pending configs of a job (see the module's documentation).
pub(crate) fn train_grid(
    ctx: &Ctx<'_>,
    ec: &ExpCtx<'_>,
    plan: &JobPlan<'_>,
    todo: &[(&String, &TrainingConfig)],
    data: &GridData<'_>,
) -> Result<Outcomes, JobError> {
    let (job, exp, job_name) = (plan.job, &ec.exp.name, plan.name);
    let device = ctx.opts.device;
    let names = metric_names(plan.task);
    let features = data.train.feature_specs();
    let input_hw = data.train.input_hw();
    let steps = steps_per_epoch(data.train.len(), job.batch_size as i64);
    let mut outcomes: Outcomes = todo
        .iter()
        .map(|(n, _)| ((*n).clone(), Ok(Vec::new())))
        .collect();
    for seed in plan.seeds() {
        let mut trainees = Vec::new();
        let mut meta = Vec::new();
        for &(cfg_name, cfg) in todo {
            if !matches!(outcomes.get(cfg_name), Some(Ok(_))) {
                continue;
            }
            let dir = cfg_dir(ctx, ec, plan, cfg_name);
            let hash = plan.run_hash(cfg, seed);
            if !ctx.opts.force {
                if let Some(saved) = saved_run(&seed_dir(&dir, seed), &hash) {
                    if let Some(Ok(runs)) = outcomes.get_mut(cfg_name) {
                        runs.push(saved);
                    }
                    continue;
                }
            }
            let trainee = new_head(
                ctx,
                plan,
                features.clone(),
                data.num_outputs,
                seed,
                input_hw,
                data.encoder_state.clone(),
            )
            .and_then(|head| {
                Trainee::new(cfg_name, seed, head, cfg, job.num_epochs, steps, Vec::new())
            });
            match trainee {
                Ok(t) => {
                    trainees.push(t);
                    meta.push((dir, hash));
                }
                Err(e) => {
                    eprintln!(
                        "error: experiment `{exp}`, job `{job_name}`, config `{cfg_name}`: {e}"
                    );
                    outcomes.insert(cfg_name.clone(), Err(e.to_string()));
                }
            }
        }
        if trainees.is_empty() {
            continue;
        }
        let policy = CheckpointPolicy {
            dir: checkpoint_dir(&ctx.opts.out, exp, &format!("{job_name}-seed-{seed}")),
            interval: ctx.opts.checkpoint_every,
            key: hash_json(&serde_json::json!(meta
                .iter()
                .map(|(_, h)| h)
                .collect::<Vec<_>>())),
        };
        let checkpoint_at = policy.dir.clone();
        let resuming = policy.dir.join("state.json").exists();
        for (t, (dir, _)) in trainees.iter_mut().zip(&meta) {
            let dir = seed_dir(dir, seed);
            if !resuming {
                remove_event_files(&dir);
            }
            if let Err(e) = t.log_to(&dir) {
                eprintln!("warning: {e}");
            }
        }
        let label = if job.repeats > 1 {
            format!("{exp}/{job_name}: train seed {seed}")
        } else {
            format!("{exp}/{job_name}: train")
        };
        train::train_pass(
            &mut trainees,
            data.train,
            &Pass {
                job,
                seed,
                device,
                label,
                val: data.val,
                metric_names: &names,
                checkpoint: Some(policy),
            },
        )?;
        for (t, (dir, hash)) in trainees.into_iter().zip(meta) {
            let cfg_name = t.config.clone();
            match finish_and_save(ctx, plan, t, data.test, &dir, &hash, &|| Ok(Vec::new())) {
                Ok(record) => {
                    if let Some(Ok(runs)) = outcomes.get_mut(&cfg_name) {
                        runs.push(record);
                    }
                }
                Err(e) => {
                    eprintln!(
                        "error: experiment `{exp}`, job `{job_name}`, config `{cfg_name}`: {e}"
                    );
                    outcomes.insert(cfg_name, Err(e.to_string()));
                }
            }
        }
        checkpoint::remove(&checkpoint_at);
    }
    Ok(outcomes)
}
