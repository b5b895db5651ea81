//! Training a job's grid of configs on one split's features, whatever store serves them.
use crate::config::{Experiment, JobConfig, TrainingConfig};
use crate::error::{plugin, JobError};
use crate::plugins::TaskEntry;
use crate::results::{self, hash_json, RunRecord};
use crate::runner::{
    higher_is_better, metric_names, remove_event_files, run_hash, run_record, save_run, saved_run,
    seed_dir, Ctx,
};
use crate::store::FeatureStore;
use crate::train::{self, checkpoint, CheckpointPolicy, Pass, Stop, Trainee};
use std::{collections::BTreeMap, path::PathBuf};
use virb_plugin_api::{device_name, HeadRequest, NamedTensor};

/// What the grid trains on.
pub struct GridData<'a> {
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

/// Trains the pending configs of a job: per seed, one pass over the training batches trains
/// every config that has no saved run for that seed (cached or live, each batch is produced once
/// and serves every head), then each is evaluated on the whole test split.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_grid(
    ctx: &Ctx<'_>,
    exp: &Experiment,
    task: &TaskEntry,
    identity: &serde_json::Value,
    job_name: &str,
    job: &JobConfig,
    todo: &[(&String, &TrainingConfig)],
    data: &GridData<'_>,
) -> Result<BTreeMap<String, Result<Vec<RunRecord>, String>>, JobError> {
    let (train, val, test, num_outputs) = (data.train, data.val, data.test, data.num_outputs);
    let device = ctx.opts.device;
    let names = metric_names(task);
    let features = train.feature_specs();
    let (input_height, input_width) = train.input_hw();
    let bs = job.batch_size as i64;
    let steps_per_epoch = ((train.len() + bs - 1) / bs) as u64;
    let mut outcomes: BTreeMap<String, Result<Vec<RunRecord>, String>> = todo
        .iter()
        .map(|(n, _)| ((*n).clone(), Ok(Vec::new())))
        .collect();
    for r in 0..job.repeats {
        let seed = job.seed.wrapping_add(r as u64);
        let mut trainees = Vec::new();
        let mut hashes = Vec::new();
        for &(cfg_name, cfg) in todo {
            if !matches!(outcomes.get(cfg_name), Some(Ok(_))) {
                continue;
            }
            let cfg_dir = results::result_dir(&ctx.opts.out, &exp.name, job_name, cfg_name);
            let hash = run_hash(identity, cfg, seed);
            if !ctx.opts.force {
                if let Some(saved) = saved_run(&seed_dir(&cfg_dir, seed), &hash) {
                    if let Some(Ok(runs)) = outcomes.get_mut(cfg_name) {
                        runs.push(saved);
                    }
                    continue;
                }
            }
            let head = plugin(task.task.build_head(HeadRequest {
                features: features.clone().into(),
                num_outputs: num_outputs.max(1),
                device: device_name(device).into(),
                seed,
                options_json: job.task_options_json().into(),
                input_height,
                input_width,
                encoder_state: data.encoder_state.clone().into(),
            }))
            .and_then(|head| {
                Trainee::new(
                    cfg_name,
                    seed,
                    head,
                    cfg,
                    job.num_epochs,
                    steps_per_epoch,
                    Vec::new(),
                )
            });
            match head {
                Ok(t) => {
                    trainees.push((t, cfg_dir, hash.clone()));
                    hashes.push(hash);
                }
                Err(e) => {
                    eprintln!(
                        "error: experiment `{}`, job `{job_name}`, config `{cfg_name}`: {e}",
                        exp.name
                    );
                    outcomes.insert(cfg_name.clone(), Err(e.to_string()));
                }
            }
        }
        if trainees.is_empty() {
            continue;
        }
        let checkpoint_dir = ctx
            .opts
            .out
            .join(&exp.name)
            .join(".checkpoints")
            .join(format!("{job_name}-seed-{seed}"));
        let policy = CheckpointPolicy {
            dir: checkpoint_dir.clone(),
            interval: ctx.opts.checkpoint_every,
            key: hash_json(&serde_json::json!(hashes)),
        };
        let resuming = policy.dir.join("state.json").exists();
        for (t, cfg_dir, _) in trainees.iter_mut() {
            let dir = seed_dir(cfg_dir, seed);
            if !resuming {
                remove_event_files(&dir);
            }
            if let Err(e) = t.log_to(&dir) {
                eprintln!("warning: {e}");
            }
        }
        let (mut list, meta): (Vec<Trainee>, Vec<(PathBuf, String)>) =
            trainees.into_iter().map(|(t, d, h)| (t, (d, h))).unzip();
        let label = if job.repeats > 1 {
            format!("{}/{job_name}: train seed {seed}", exp.name)
        } else {
            format!("{}/{job_name}: train", exp.name)
        };
        train::train_pass(
            &mut list,
            train,
            &Pass {
                job,
                seed,
                device,
                label,
                val,
                metric_names: &names,
                checkpoint: Some(policy),
            },
        )?;
        for (t, (cfg_dir, hash)) in list.into_iter().zip(meta) {
            let cfg_name = t.config.clone();
            let (outcome, head) = t.finish(
                test,
                job.eval_batch_size() as i64,
                device,
                &names,
                higher_is_better(task),
            );
            let saved = (|| -> Result<RunRecord, JobError> {
                if let Some(Stop::Failed { reason }) = &outcome.stop {
                    return Err(JobError::Other(reason.clone()));
                }
                let state = match outcome.stop {
                    None => Some(
                        plugin(head.state())?
                            .into_iter()
                            .map(|nt| (nt.name.to_string(), nt.tensor.into_tch()))
                            .collect(),
                    ),
                    Some(_) => None,
                };
                save_run(&cfg_dir, &hash, run_record(&outcome, &names), state)
            })();
            match saved {
                Ok(record) => {
                    if let Some(Ok(runs)) = outcomes.get_mut(&cfg_name) {
                        runs.push(record);
                    }
                }
                Err(e) => {
                    eprintln!(
                        "error: experiment `{}`, job `{job_name}`, config `{cfg_name}`: {e}",
                        exp.name
                    );
                    outcomes.insert(cfg_name, Err(e.to_string()));
                }
            }
        }
        checkpoint::remove(&checkpoint_dir);
    }
    Ok(outcomes)
}
