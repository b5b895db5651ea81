//! The fine-tuning driver (`train_encoder: true`): the encoder's parameters train with the
//! head, through the plugin boundary, in the same training pass as frozen heads. Each (config,
//! seed) loads a fresh copy of the encoder, asks it for its trainable parameters (shared with the
//! plugin, updated in place by the host's optimiser) and trains on a live store of the train
//! split that runs the encoder in training mode with gradients; nothing is cached. The test
//! split is then encoded with the tuned encoder in eval mode, and the tuned encoder is saved next
//! to the head (`seed-<s>/encoder.safetensors`).
use super::frozen::Splits;
use super::grid::{finish_and_save, new_head, Outcomes};
use super::{cfg_dir, TrainedJob};
use crate::config::TrainingConfig;
use crate::encode::EncodeTimings;
use crate::error::{plugin, JobError};
use crate::outdir::{remove_event_files, saved_run, seed_dir, TensorFiles};
use crate::plan::{Ctx, ExpCtx, JobPlan};
use crate::records::metric_names;
use crate::store::{FeatureStore, LiveStore};
use crate::train::{self, steps_per_epoch, Pass, Trainee};
use tch::Tensor;
use virb_plugin_api::abi_stable::std_types::RString;
use virb_records::RunRecord;

/// Fine-tunes every pending config for every seed; returns their runs.
pub(crate) fn run(
    ctx: &Ctx<'_>,
    ec: &ExpCtx<'_>,
    plan: &JobPlan<'_>,
    todo: &[(&String, &TrainingConfig)],
    splits: &Splits<'_>,
) -> Result<TrainedJob, JobError> {
    let mut outcomes = Outcomes::new();
    let mut timings = EncodeTimings::default();
    let train_size = plugin(splits.train.meta())?.len as i64;
    let mut test_size = plugin(splits.test.meta())?.len as i64;
    for &(cfg_name, cfg) in todo {
        let dir = cfg_dir(ctx, ec, plan, cfg_name);
        let mut runs = Vec::new();
        let mut failure = None;
        for seed in plan.seeds() {
            let hash = plan.run_hash(cfg, seed);
            if !ctx.opts.force {
                if let Some(saved) = saved_run(&seed_dir(&dir, seed), &hash) {
                    runs.push(saved);
                    continue;
                }
            }
            let one = One {
                ctx,
                ec,
                plan,
                splits,
                cfg_name,
                cfg,
                seed,
            };
            match one.run(&dir, &hash, &mut timings) {
                Ok((record, n_test)) => {
                    test_size = n_test;
                    runs.push(record);
                }
                Err(e) => {
                    eprintln!(
                        "error: experiment `{}`, job `{}`, config `{cfg_name}`: {e}",
                        ec.exp.name, plan.name
                    );
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        outcomes.insert(
            cfg_name.clone(),
            match failure {
                Some(e) => Err(e),
                None => Ok(runs),
            },
        );
    }
    Ok(TrainedJob {
        outcomes,
        train_size,
        test_size,
        validation: None,
        num_outputs: splits.num_outputs,
        timings,
        features: ["live", "live"],
    })
}

/// One (config, seed) of a fine-tuning job.
struct One<'a> {
    ctx: &'a Ctx<'a>,
    ec: &'a ExpCtx<'a>,
    plan: &'a JobPlan<'a>,
    splits: &'a Splits<'a>,
    cfg_name: &'a str,
    cfg: &'a TrainingConfig,
    seed: u64,
}

impl One<'_> {
    /// Fresh encoder, training pass, test evaluation, saved run; returns the run and the number
    /// of test samples.
    fn run(
        &self,
        dir: &std::path::Path,
        hash: &str,
        timings: &mut EncodeTimings,
    ) -> Result<(RunRecord, i64), JobError> {
        let (ctx, plan, seed) = (self.ctx, self.plan, self.seed);
        let (job, task) = (plan.job, plan.task);
        let encoder = self.ec.load_fresh(ctx)?;
        let encoder_params: Vec<Tensor> = plugin(encoder.trainable_parameters())?
            .into_iter()
            .map(|nt| nt.tensor.into_tch())
            .collect();
        let outputs: Vec<RString> = task.info.required_outputs.to_vec();
        let frames = task.info.frames.max(1);
        let train = LiveStore::open(
            self.splits.train,
            &encoder,
            &outputs,
            frames,
            &ctx.pool,
            true,
        )?;
        let encoder_state = if task.info.wants_encoder_state {
            super::frozen::encoder_state(self.ec, plan, &encoder)
        } else {
            Vec::new()
        };
        let head = new_head(
            ctx,
            plan,
            train.feature_specs(),
            self.splits.num_outputs,
            seed,
            train.input_hw(),
            encoder_state,
        )?;
        let steps = steps_per_epoch(train.len(), job.batch_size as i64);
        let mut trainee = Trainee::new(
            self.cfg_name,
            seed,
            head,
            self.cfg,
            job.num_epochs,
            steps,
            encoder_params,
        )?;
        let seed_folder = seed_dir(dir, seed);
        remove_event_files(&seed_folder);
        if let Err(e) = trainee.log_to(&seed_folder) {
            eprintln!("warning: {e}");
        }
        let names = metric_names(task);
        let mut trainees = vec![trainee];
        train::train_pass(
            &mut trainees,
            &train,
            &Pass {
                job,
                seed,
                device: ctx.opts.device,
                label: format!(
                    "{}/{}-{}: fine-tune seed {seed}",
                    self.ec.exp.name, plan.name, self.cfg_name
                ),
                val: None,
                metric_names: &names,
                // A checkpoint holds heads and optimiser state, not the encoder being tuned.
                checkpoint: None,
            },
        )?;
        // The test split through the tuned encoder in eval mode, batch by batch (samples of
        // different input sizes are batched apart).
        let test = LiveStore::open(
            self.splits.test,
            &encoder,
            &outputs,
            frames,
            &ctx.pool,
            false,
        )?;
        let trainee = trainees
            .pop()
            .ok_or_else(|| JobError::Other("the fine-tuned trainee was lost".into()))?;
        let tuned = || -> Result<TensorFiles, JobError> {
            let state = plugin(encoder.state())?
                .into_iter()
                .map(|nt| (nt.name.to_string(), nt.tensor.into_tch()))
                .collect();
            Ok(vec![("encoder.safetensors", state)])
        };
        let record = finish_and_save(ctx, plan, trainee, &test, dir, hash, &tuned)?;
        *timings = *timings + train.encode_timings() + test.encode_timings();
        Ok((record, test.len()))
    }
}
