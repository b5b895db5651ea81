//! One head being trained (a training config and a seed): its optimiser and schedule, its
//! steps, the per-epoch history, the TensorBoard log, and what the run produced.
use super::optim::{Optimizer, Schedule};
use super::pass::{evaluate, Evaluation};
use crate::config::TrainingConfig;
use crate::error::{plugin, JobError};
use crate::store::FeatureStore;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use virb_plugin_api::{
    abi_stable::std_types::{RSlice, RStr},
    ForwardContext, HeadBox, MetricBox, NamedTensorRef, TensorRef,
};

/// One epoch of one head, as recorded in results and checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    /// 0-based epoch.
    pub epoch: u32,
    /// Mean training loss over the epoch's batches (pre-step outputs).
    pub train_loss: f64,
    /// Training metrics of the epoch, in the task's order.
    pub train_metrics: Vec<f64>,
    /// Learning rate of the epoch's last optimiser step.
    pub lr: f64,
    /// Validation loss after the epoch, when there is a validation split.
    pub val_loss: Option<f64>,
    /// Validation metrics after the epoch, in the task's order.
    pub val_metrics: Option<Vec<f64>>,
}

/// Why a head stopped early.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stop {
    /// The loss became NaN or infinite: the result records it (status `diverged`).
    Diverged {
        /// What happened, for the result.
        reason: String,
    },
    /// Anything else (a plugin error): the config fails, no result is written.
    Failed {
        /// What happened.
        reason: String,
    },
}

/// What training and evaluating one (config, seed) produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOutcome {
    /// Training config name.
    pub config: String,
    /// Seed of this run.
    pub seed: u64,
    /// Set when training stopped early.
    pub stop: Option<Stop>,
    /// Per-epoch history.
    pub history: Vec<EpochRecord>,
    /// Mean test loss over the whole test split (None when diverged).
    pub test_loss: Option<f64>,
    /// Test metrics over the whole test split, in the task's order (empty when diverged).
    pub test_metrics: Vec<f64>,
    /// The test metric's details (per-class IoU, ...), `null` when none.
    pub test_details: serde_json::Value,
    /// Epoch (0-based) with the best validation headline metric.
    pub best_epoch: Option<u32>,
    /// Optimiser steps taken.
    pub steps: u64,
    /// Seconds in this head's own forward, backward and update calls.
    pub train_s: f64,
    /// Seconds evaluating on the test split.
    pub eval_s: f64,
}

impl RunOutcome {
    /// The last epoch's record.
    pub fn last(&self) -> Option<&EpochRecord> {
        self.history.last()
    }
}

/// One head being trained: a (training config, seed).
pub struct Trainee {
    /// Training config name.
    pub config: String,
    /// Seed (head initialisation; batch order comes from the pass's seed).
    pub seed: u64,
    /// The head.
    pub head: HeadBox,
    pub(super) opt: Optimizer,
    pub(super) schedule: Schedule,
    pub(super) stop: Option<Stop>,
    pub(super) history: Vec<EpochRecord>,
    pub(super) step: u64,
    pub(super) busy_s: f64,
    /// This epoch's per-step losses (on the device) and batch sizes: read once at the end of the
    /// epoch, so that training never waits for the device between steps.
    pub(super) epoch_losses: super::losses::LossLog,
    /// The same for a head trained stacked: each entry the losses `[k]` of `k` steps and their
    /// batch sizes (one tensor per epoch rather than one per step).
    pub(super) epoch_loss_columns: Vec<(Tensor, Vec<i64>)>,
    log: Option<virb_tensorboard::EventWriter>,
    log_error: bool,
}

impl Trainee {
    /// A trainee for `head` trained with `cfg` for `epochs` epochs of `steps_per_epoch` steps.
    /// `extra` parameters (an encoder being fine-tuned) are optimised with the head's.
    pub fn new(
        config: &str,
        seed: u64,
        head: HeadBox,
        cfg: &TrainingConfig,
        epochs: u32,
        steps_per_epoch: u64,
        extra: Vec<Tensor>,
    ) -> Result<Self, JobError> {
        let mut params: Vec<Tensor> = plugin(head.parameters())?
            .into_iter()
            .map(|nt| nt.tensor.into_tch())
            .collect();
        params.extend(extra);
        Ok(Trainee {
            config: config.to_string(),
            seed,
            head,
            opt: Optimizer::new(cfg, params),
            schedule: Schedule::new(cfg, epochs, steps_per_epoch),
            stop: None,
            history: Vec::new(),
            step: 0,
            busy_s: 0.0,
            log: None,
            log_error: false,
            epoch_losses: super::losses::LossLog::new(1),
            epoch_loss_columns: Vec::new(),
        })
    }

    /// Logs scalars to TensorBoard event files in `dir` from now on.
    pub fn log_to(&mut self, dir: &std::path::Path) -> Result<(), JobError> {
        let writer = virb_tensorboard::EventWriter::create(dir).map_err(|e| {
            JobError::Other(format!(
                "cannot create TensorBoard event file in {}: {e}",
                dir.display()
            ))
        })?;
        self.log = Some(writer);
        Ok(())
    }

    pub(super) fn scalar(&mut self, tag: &str, step: i64, value: f64) {
        if let Some(log) = &mut self.log {
            if let Err(e) = log.add_scalar(tag, step, value) {
                if !self.log_error {
                    eprintln!("warning: {}: TensorBoard logging stopped: {e}", self.config);
                    self.log_error = true;
                }
                self.log = None;
            }
        }
    }

    fn flush_log(&mut self, sync: bool) {
        if let Some(log) = &mut self.log {
            let outcome = if sync { log.sync() } else { log.flush() };
            if let Err(e) = outcome {
                eprintln!("warning: {}: TensorBoard logging stopped: {e}", self.config);
                self.log = None;
            }
        }
    }

    /// Whether the trainee still trains.
    pub fn active(&self) -> bool {
        self.stop.is_none()
    }

    /// One optimiser step on a batch; returns the loss, or stops the trainee.
    pub(crate) fn train_step(
        &mut self,
        features: &[NamedTensorRef<'_>],
        target: TensorRef<'_>,
        metric: &mut MetricBox,
        epoch: u32,
        input_hw: (u32, u32),
    ) -> Result<(), Stop> {
        let t0 = Instant::now();
        let failed = |e: JobError| Stop::Failed {
            reason: e.to_string(),
        };
        let context = ForwardContext {
            train: true,
            input_height: input_hw.0,
            input_width: input_hw.1,
        };
        let out = plugin(self.head.forward(RSlice::from_slice(features), context))
            .map_err(failed)?
            .into_tch();
        let loss = plugin(self.head.loss(TensorRef::of(&out), target))
            .map_err(failed)?
            .into_tch();
        let len = target.shallow_clone().size().first().copied().unwrap_or(1);
        self.epoch_losses
            .push(&loss, len)
            .map_err(|e| failed(e.into()))?;
        self.opt.zero_grad();
        loss.f_backward().map_err(|e| failed(e.into()))?;
        let (lr, momentum) = self.schedule.at(epoch, self.step);
        self.opt.step(lr, momentum).map_err(failed)?;
        let detached = out.f_detach().map_err(|e| failed(e.into()))?;
        plugin(metric.update(TensorRef::of(&detached), target)).map_err(failed)?;
        let step = self.step as i64;
        self.scalar("batch/lr", step, lr);
        if let Some(m) = momentum {
            self.scalar("batch/momentum", step, m);
        }
        self.step += 1;
        self.busy_s += t0.elapsed().as_secs_f64();
        Ok(())
    }

    /// Reads the epoch's per-step losses back from the device (one transfer), logs them, and
    /// returns their sample-weighted mean; a NaN or infinite loss stops the trainee as diverged,
    /// naming the first step where it happened.
    pub(crate) fn take_epoch_loss(&mut self, epoch: u32) -> Result<f64, Stop> {
        let steps = self.epoch_losses.take();
        let mut columns = std::mem::take(&mut self.epoch_loss_columns);
        let failed = |e: tch::TchError| Stop::Failed {
            reason: JobError::from(e).to_string(),
        };
        let read = |t: Tensor| -> Result<Vec<f64>, Stop> {
            let t = t
                .f_to_kind(Kind::Double)
                .and_then(|t| t.f_to_device(Device::Cpu))
                .map_err(failed)?;
            Vec::<f64>::try_from(&t).map_err(failed)
        };
        if let Some((t, l)) = steps.map_err(failed)? {
            columns.push((t.f_reshape([-1]).map_err(failed)?, l));
        }
        let mut values = Vec::new();
        let mut lens = Vec::new();
        if !columns.is_empty() {
            let parts: Vec<Tensor> = columns.iter().map(|(t, _)| t.shallow_clone()).collect();
            values.extend(read(Tensor::f_cat(&parts, 0).map_err(failed)?)?);
            lens.extend(columns.iter().flat_map(|(_, l)| l.iter().copied()));
        }
        let first_step = self.step - values.len() as u64;
        let (mut sum, mut count) = (0.0, 0i64);
        for (i, (value, len)) in values.iter().zip(&lens).enumerate() {
            let step = first_step + i as u64;
            self.scalar("batch/loss", step as i64, *value);
            if !value.is_finite() {
                return Err(Stop::Diverged {
                    reason: JobError::NonFinite {
                        value: *value,
                        epoch,
                        step,
                    }
                    .to_string(),
                });
            }
            sum += value * *len as f64;
            count += len;
        }
        Ok(sum / count.max(1) as f64)
    }

    pub(crate) fn end_epoch(
        &mut self,
        epoch: u32,
        train_loss: f64,
        train_metrics: Vec<f64>,
        val: Option<(f64, Vec<f64>)>,
        metric_names: &[String],
    ) {
        let lr = self.schedule.at(epoch, self.step.saturating_sub(1)).0;
        let e = epoch as i64 + 1;
        self.scalar("train/loss", e, train_loss);
        self.scalar("train/lr", e, lr);
        for (name, v) in metric_names.iter().zip(&train_metrics) {
            self.scalar(&format!("train/{name}"), e, *v);
        }
        if let Some((loss, metrics)) = &val {
            self.scalar("val/loss", e, *loss);
            for (name, v) in metric_names.iter().zip(metrics) {
                self.scalar(&format!("val/{name}"), e, *v);
            }
        }
        self.flush_log(false);
        let (val_loss, val_metrics) = match val {
            Some((l, m)) => (Some(l), Some(m)),
            None => (None, None),
        };
        self.history.push(EpochRecord {
            epoch,
            train_loss,
            train_metrics,
            lr,
            val_loss,
            val_metrics,
        });
    }

    /// Evaluates on `test` (unless stopped) and returns what the run produced.
    pub fn finish(
        mut self,
        test: &dyn FeatureStore,
        bs: i64,
        device: Device,
        metric_names: &[String],
        higher_is_better: bool,
    ) -> (RunOutcome, HeadBox) {
        let t0 = Instant::now();
        let (mut test_loss, mut test_metrics) = (None, Vec::new());
        let mut test_details = serde_json::Value::Null;
        if self.stop.is_none() {
            match evaluate(&self.head, test, bs, device) {
                Ok(Evaluation {
                    loss,
                    metrics,
                    details,
                }) => {
                    test_details = details;
                    let e = self.history.len() as i64;
                    self.scalar("test/loss", e, loss);
                    for (name, v) in metric_names.iter().zip(&metrics) {
                        self.scalar(&format!("test/{name}"), e, *v);
                    }
                    test_loss = Some(loss);
                    test_metrics = metrics;
                }
                Err(e) => {
                    self.stop = Some(Stop::Failed {
                        reason: e.to_string(),
                    })
                }
            }
        }
        self.flush_log(true);
        let best_epoch = best_epoch(&self.history, higher_is_better);
        (
            RunOutcome {
                config: self.config,
                seed: self.seed,
                stop: self.stop,
                history: self.history,
                test_loss,
                test_metrics,
                test_details,
                best_epoch,
                steps: self.step,
                train_s: self.busy_s,
                eval_s: t0.elapsed().as_secs_f64(),
            },
            self.head,
        )
    }
}

/// Lends named tensors to a plugin.
pub fn as_refs(features: &[(String, Tensor)]) -> Vec<NamedTensorRef<'_>> {
    features
        .iter()
        .map(|(name, t)| NamedTensorRef {
            name: RStr::from(name.as_str()),
            tensor: TensorRef::of(t),
        })
        .collect()
}

pub(super) fn scalar(t: &Tensor) -> Result<f64, JobError> {
    Ok(f64::try_from(&t.f_to_kind(Kind::Double)?)?)
}

/// The epoch whose validation headline metric is best (the first one on ties).
pub fn best_epoch(history: &[EpochRecord], higher_is_better: bool) -> Option<u32> {
    let mut best: Option<(u32, f64)> = None;
    for rec in history {
        let Some(v) = rec.val_metrics.as_ref().and_then(|m| m.first()).copied() else {
            continue;
        };
        if !v.is_finite() {
            continue;
        }
        let better = match best {
            None => true,
            Some((_, b)) => {
                if higher_is_better {
                    v > b
                } else {
                    v < b
                }
            }
        };
        if better {
            best = Some((rec.epoch, v));
        }
    }
    best.map(|(e, _)| e)
}
