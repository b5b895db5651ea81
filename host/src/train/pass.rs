//! The training pass: every trainee of a job (or one fine-tuned config) on one store, each batch
//! produced once and serving every head, with per-epoch validation and checkpoints; and the
//! evaluation of a head on a whole split.
use super::checkpoint;
use super::trainee::{as_refs, scalar, Stop, Trainee};
use crate::config::JobConfig;
use crate::error::{plugin, JobError};
use crate::progress::Progress;
use crate::store::{Batch, FeatureStore};
use rayon::prelude::*;
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use virb_plugin_api::{
    abi_stable::std_types::RSlice, ForwardContext, HeadBox, MetricBox, SampleContext, TensorRef,
};

/// The batch order of epoch `epoch` for `seed`: a permutation that depends on nothing else, so
/// a config trains identically alone or in a grid, and a resumed run continues exactly.
pub fn epoch_order(n: i64, seed: u64, epoch: u32) -> Result<Tensor, JobError> {
    let mix = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(epoch as u64)
        .wrapping_add(1);
    tch::manual_seed((mix >> 1) as i64);
    Ok(Tensor::f_randperm(n, (Kind::Int64, Device::Cpu))?)
}

/// Optimiser steps of an epoch over `n` samples in batches of `bs`. A last batch of a single
/// sample is skipped (when `n` > 1): batch norm cannot train on one sample (DeepLab's pooling
/// branch, a fine-tuned ResNet), so PyTorch users drop it with `drop_last`; virb drops only that
/// batch, every other short last batch still trains.
pub fn steps_per_epoch(n: i64, bs: i64) -> u64 {
    let bs = bs.max(1);
    let last = n % bs;
    (n / bs + i64::from(last > 1 || (last == 1 && n == 1))).max(1) as u64
}

/// Where and how often a training pass saves its state.
pub struct CheckpointPolicy {
    /// Folder of this pass's checkpoint.
    pub dir: std::path::PathBuf,
    /// Minimum time between checkpoints (zero: after every epoch).
    pub interval: std::time::Duration,
    /// Identifies what is being trained; a checkpoint with another key is ignored.
    pub key: String,
}

/// Shared settings of a training pass.
pub struct Pass<'a> {
    /// The job.
    pub job: &'a JobConfig,
    /// The pass's seed (batch order).
    pub seed: u64,
    /// Device for training.
    pub device: Device,
    /// Progress label.
    pub label: String,
    /// Validation features, when the job holds out a validation split.
    pub val: Option<&'a dyn FeatureStore>,
    /// The task's metric names.
    pub metric_names: &'a [String],
    /// Checkpointing, if any.
    pub checkpoint: Option<CheckpointPolicy>,
}

/// Trains every trainee on `train` in one pass over the features: each batch is gathered once
/// and serves every head. A head that diverges or fails stops; the others go on. Returns the
/// number of epochs resumed from a checkpoint.
pub fn train_pass(
    trainees: &mut [Trainee],
    train: &dyn FeatureStore,
    pass: &Pass<'_>,
) -> Result<u32, JobError> {
    // What the survey, the datasets and the encoding freed goes back to the system before the
    // longest phase (see `release_free_memory`).
    crate::libtorch::release_free_memory();
    let job = pass.job;
    let n = train.len();
    let bs = job.batch_size as i64;
    let resumed = match &pass.checkpoint {
        Some(policy) => checkpoint::load(policy, trainees)?,
        None => 0,
    };
    let mut last_save = Instant::now();
    let mut checkpoints_work = true;
    let mut progress = Progress::new(pass.label.clone(), job.num_epochs as u64);
    if resumed > 0 {
        eprintln!(
            "{}: resumed from the checkpoint after epoch {resumed} of {}",
            pass.label, job.num_epochs
        );
    }
    progress.inc(resumed as u64, "resumed");
    let eval_bs = job.eval_batch_size() as i64;
    for epoch in resumed..job.num_epochs {
        if trainees.iter().all(|t| !t.active()) {
            break;
        }
        let mut order = Vec::<i64>::try_from(&epoch_order(n, pass.seed, epoch)?)?;
        if n > 1 && n % bs == 1 {
            // See `steps_per_epoch`: the last batch would hold a single sample.
            order.pop();
        }
        let mut metrics = Vec::with_capacity(trainees.len());
        for t in trainees.iter() {
            metrics.push(if t.active() {
                Some(plugin(t.head.new_metric())?)
            } else {
                None
            });
        }
        // Linear classifier heads of a grid train stacked; the others one by one.
        let mut stacks = super::stacked::build(trainees, epoch)?;
        if epoch == resumed && !stacks.is_empty() {
            let heads: usize = stacks.iter().map(|s| s.len()).sum();
            eprintln!(
                "{}: {heads} linear heads train stacked, in {} group(s) of one optimiser family",
                pass.label,
                stacks.len()
            );
        }
        let alone: Vec<bool> = (0..trainees.len())
            .map(|i| !stacks.iter().any(|s| s.holds(i)))
            .collect();
        let trainees_len = trainees
            .iter()
            .zip(&alone)
            .filter(|(t, a)| **a && t.active())
            .count();
        let label = pass.label.as_str();
        let context = SampleContext {
            augment: true,
            epoch,
            seed: pass.seed,
        };
        let mut sink = |batch: Batch| -> Result<(), JobError> {
            let refs = as_refs(&batch.features);
            let target = TensorRef::of(&batch.target);
            let hw = batch.input_hw;
            for (i, e) in super::stacked::train_step(
                &mut stacks,
                trainees,
                &mut metrics,
                &refs,
                target,
                epoch,
            ) {
                eprintln!("{label}: stopped: {e}");
                stacks[i].fail(trainees, &e.to_string());
            }
            // Each head's step is independent of the others': on the CPU they run in parallel
            // (the numbers are the same as one after the other).
            let step = |(t, metric): (&mut Trainee, &mut Option<MetricBox>)| {
                let Some(metric) = metric.as_mut().filter(|_| t.active()) else {
                    return;
                };
                if let Err(stop) = t.train_step(&refs, target, metric, epoch, hw) {
                    eprintln!("{label}: {}: stopped: {}", t.config, stop_reason(&stop));
                    t.stop = Some(stop);
                }
            };
            let work = trainees
                .iter_mut()
                .zip(metrics.iter_mut())
                .zip(&alone)
                .filter(|(_, a)| **a)
                .map(|(w, _)| w);
            if pass.device == Device::Cpu && trainees_len > 1 {
                work.collect::<Vec<_>>().into_par_iter().for_each(step);
            } else {
                work.for_each(step);
            }
            Ok(())
        };
        train.for_each_batch(&order, bs as usize, pass.device, context, &mut sink)?;
        for stack in &mut stacks {
            stack.end_epoch(trainees, &mut metrics)?;
        }
        let mut summary = String::new();
        for (i, t) in trainees.iter_mut().enumerate() {
            let Some(metric) = metrics[i].take().filter(|_| t.active()) else {
                continue;
            };
            let loss = match t.take_epoch_loss(epoch) {
                Ok(loss) => loss,
                Err(stop) => {
                    eprintln!(
                        "{}: {}: stopped: {}",
                        pass.label,
                        t.config,
                        stop_reason(&stop)
                    );
                    t.stop = Some(stop);
                    continue;
                }
            };
            let outcome = (|| -> Result<_, JobError> {
                let train_metrics: Vec<f64> = plugin(metric.compute())?.into_iter().collect();
                let val = match pass.val {
                    Some(v) => {
                        let e = evaluate(&t.head, v, eval_bs, pass.device)?;
                        Some((e.loss, e.metrics))
                    }
                    None => None,
                };
                Ok((train_metrics, val))
            })();
            match outcome {
                Ok((train_metrics, val)) => {
                    if summary.is_empty() {
                        summary = format!("loss {loss:.4}");
                    }
                    t.end_epoch(epoch, loss, train_metrics, val, pass.metric_names);
                }
                Err(e) => {
                    t.stop = Some(Stop::Failed {
                        reason: e.to_string(),
                    })
                }
            }
        }
        progress.inc(1, &summary);
        if let Some(policy) = pass.checkpoint.as_ref().filter(|_| checkpoints_work) {
            let last_epoch = epoch + 1 == job.num_epochs;
            if !last_epoch && last_save.elapsed() >= policy.interval {
                // A checkpoint only shortens a rerun after a crash: failing to write one stops
                // the checkpoints of this pass, not its training.
                if let Err(e) = checkpoint::save(policy, trainees, epoch + 1) {
                    eprintln!(
                        "warning: {}: {e}; training goes on without checkpoints",
                        pass.label
                    );
                    checkpoints_work = false;
                }
                last_save = Instant::now();
            }
        }
    }
    progress.finish("trained");
    Ok(resumed)
}

fn stop_reason(stop: &Stop) -> &str {
    match stop {
        Stop::Diverged { reason } | Stop::Failed { reason } => reason,
    }
}

/// What an evaluation measured.
pub struct Evaluation {
    /// Mean loss over the samples.
    pub loss: f64,
    /// Metric values, in the task's order.
    pub metrics: Vec<f64>,
    /// The metric's details (a JSON object; per-class IoU and the like).
    pub details: serde_json::Value,
}

/// Loss and metrics of `head` over every sample of `split` (no sample dropped).
pub fn evaluate(
    head: &HeadBox,
    split: &dyn FeatureStore,
    bs: i64,
    device: Device,
) -> Result<Evaluation, JobError> {
    let _guard = tch::no_grad_guard();
    let n = split.len();
    let mut metric = plugin(head.new_metric())?;
    let mut loss_sum = 0.0;
    let order: Vec<i64> = (0..n).collect();
    let mut sink = |batch: Batch| -> Result<(), JobError> {
        let refs = as_refs(&batch.features);
        let context = ForwardContext {
            train: false,
            input_height: batch.input_hw.0,
            input_width: batch.input_hw.1,
        };
        let out = plugin(head.forward(RSlice::from_slice(&refs), context))?.into_tch();
        let loss = plugin(head.loss(TensorRef::of(&out), TensorRef::of(&batch.target)))?.into_tch();
        loss_sum += scalar(&loss)? * batch.len() as f64;
        plugin(metric.update(TensorRef::of(&out), TensorRef::of(&batch.target)))?;
        Ok(())
    };
    split.for_each_batch(
        &order,
        bs.max(1) as usize,
        device,
        SampleContext::PLAIN,
        &mut sink,
    )?;
    let details = plugin(metric.details())?;
    let details = serde_json::from_str(details.as_str()).map_err(|e| {
        JobError::Other(format!(
            "the task's metric details are not JSON ({e}): {}",
            details.as_str().chars().take(200).collect::<String>()
        ))
    })?;
    Ok(Evaluation {
        loss: loss_sum / n.max(1) as f64,
        metrics: plugin(metric.compute())?.into_iter().collect(),
        details,
    })
}
