//! Training heads on cached features: every config of a job in one pass over the batches,
//! optimisers and schedulers with PyTorch's semantics (schedulers really step: per epoch for
//! StepLR and OneCycle, per batch for Poly), per-epoch validation, checkpoints, then a
//! dataset-level evaluation on the whole test split.
use crate::config::{JobConfig, OptimizerKind, SchedulerConfig, TrainingConfig};
use crate::error::{plugin, JobError};
use crate::progress::Progress;
use crate::store::{Batch, FeatureStore};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use virb_plugin_api::{
    abi_stable::std_types::{RSlice, RStr},
    ForwardContext, HeadBox, MetricBox, NamedTensorRef, SampleContext, TensorRef,
};

pub mod checkpoint;

/// Adam or SGD over a list of parameters, updated in place.
pub struct Optimizer {
    params: Vec<Tensor>,
    kind: OptimizerKind,
    weight_decay: f64,
    momentum: f64,
    nesterov: bool,
    /// Adam: first and second moments; SGD: momentum buffers (first only).
    m: Vec<Option<Tensor>>,
    v: Vec<Option<Tensor>>,
    step: i32,
}

const ADAM_BETA2: f64 = 0.999;
const ADAM_BETA1: f64 = 0.9;
const ADAM_EPS: f64 = 1e-8;

impl Optimizer {
    /// An optimiser for `params` as the training config says.
    pub fn new(cfg: &TrainingConfig, params: Vec<Tensor>) -> Self {
        let n = params.len();
        Optimizer {
            params,
            kind: cfg.optimizer,
            weight_decay: cfg.weight_decay.unwrap_or(0.0),
            momentum: cfg.momentum.unwrap_or(0.0),
            nesterov: cfg.nesterov.unwrap_or(false),
            m: (0..n).map(|_| None).collect(),
            v: (0..n).map(|_| None).collect(),
            step: 0,
        }
    }

    /// Clears the gradients.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// One update with learning rate `lr`; `momentum` overrides SGD's momentum or Adam's beta1
    /// (OneCycle cycles it).
    pub fn step(&mut self, lr: f64, momentum: Option<f64>) -> Result<(), JobError> {
        self.step += 1;
        let _guard = tch::no_grad_guard();
        for i in 0..self.params.len() {
            let p = &mut self.params[i];
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            let g = if self.weight_decay != 0.0 {
                g.f_add(&p.f_mul_scalar(self.weight_decay)?)?
            } else {
                g
            };
            match self.kind {
                OptimizerKind::Adam => {
                    // torch.optim.Adam's single-tensor update, in place wherever tch allows
                    // (two temporaries per parameter instead of seven: a 75 M-parameter conv of
                    // a pixel-wise head made each step allocate gigabytes).
                    let beta1 = momentum.unwrap_or(ADAM_BETA1);
                    let m = self.m[i].get_or_insert_with(|| g.zeros_like());
                    let _ = m.f_lerp_(&g, 1.0 - beta1)?;
                    let v = self.v[i].get_or_insert_with(|| g.zeros_like());
                    let _ = v.f_mul_scalar_(ADAM_BETA2)?;
                    let _ = v.f_addcmul_(&g, &g.f_mul_scalar(1.0 - ADAM_BETA2)?)?;
                    let bc1 = 1.0 - beta1.powi(self.step);
                    let bc2 = 1.0 - ADAM_BETA2.powi(self.step);
                    let mut denom = v.f_sqrt()?;
                    let _ = denom.f_div_scalar_(bc2.sqrt())?;
                    let _ = denom.f_add_scalar_(ADAM_EPS)?;
                    // p += m / (denom / -(lr / bc1)), i.e. p -= lr / bc1 * m / denom.
                    let _ = denom.f_div_scalar_(-(lr / bc1))?;
                    let _ = p.f_addcdiv_(m, &denom)?;
                }
                OptimizerKind::Sgd => {
                    let mom = momentum.unwrap_or(self.momentum);
                    let d = if mom != 0.0 {
                        let buf = match self.m[i].take() {
                            None => g.f_detach_copy()?,
                            Some(mut b) => {
                                let _ = b.f_mul_scalar_(mom)?;
                                let _ = b.f_add_(&g)?;
                                b
                            }
                        };
                        let d = if self.nesterov {
                            g.f_add(&buf.f_mul_scalar(mom)?)?
                        } else {
                            buf.shallow_clone()
                        };
                        self.m[i] = Some(buf);
                        d
                    } else {
                        g
                    };
                    let _ = p.f_sub_(&d.f_mul_scalar(lr)?)?;
                }
            }
        }
        Ok(())
    }
}

/// The learning rate (and cycled momentum) at each step.
pub struct Schedule {
    lr: f64,
    scheduler: Option<SchedulerConfig>,
    epochs: u32,
    total_steps: u64,
}

impl Schedule {
    /// The schedule of `cfg` over `epochs` epochs of `steps_per_epoch` optimiser steps.
    pub fn new(cfg: &TrainingConfig, epochs: u32, steps_per_epoch: u64) -> Self {
        Schedule {
            lr: cfg.lr,
            scheduler: cfg.scheduler.clone(),
            epochs,
            total_steps: epochs as u64 * steps_per_epoch,
        }
    }

    /// `(lr, momentum override)` for global optimiser step `step`, in epoch `epoch` (0-based).
    pub fn at(&self, epoch: u32, step: u64) -> (f64, Option<f64>) {
        match &self.scheduler {
            None => (self.lr, None),
            Some(SchedulerConfig::StepLR { step_size, gamma }) => {
                (self.lr * gamma.powi((epoch / step_size) as i32), None)
            }
            Some(SchedulerConfig::Poly { exponent }) => {
                let frac = 1.0 - step.min(self.total_steps) as f64 / self.total_steps.max(1) as f64;
                (self.lr * frac.max(0.0).powf(*exponent), None)
            }
            Some(SchedulerConfig::OneCycle {
                pct_start,
                div_factor,
                final_div_factor,
            }) => {
                // torch.optim.lr_scheduler.OneCycleLR(total_steps=epochs, anneal_strategy="linear",
                // cycle_momentum=True, base_momentum=0.85, max_momentum=0.95), stepped per epoch.
                let initial = self.lr / div_factor;
                let min = initial / final_div_factor;
                let total = self.epochs as f64;
                let phases = [
                    (pct_start * total - 1.0, initial, self.lr, 0.95, 0.85),
                    (total - 1.0, self.lr, min, 0.85, 0.95),
                ];
                let s = epoch as f64;
                let mut start_step = 0.0;
                for (i, (end_step, lr0, lr1, m0, m1)) in phases.iter().enumerate() {
                    if s <= *end_step || i == phases.len() - 1 {
                        let span = end_step - start_step;
                        let pct = if span == 0.0 {
                            1.0
                        } else {
                            (s - start_step) / span
                        };
                        return (lr0 + (lr1 - lr0) * pct, Some(m0 + (m1 - m0) * pct));
                    }
                    start_step = *end_step;
                }
                (self.lr, None)
            }
        }
    }
}

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
    opt: Optimizer,
    schedule: Schedule,
    stop: Option<Stop>,
    history: Vec<EpochRecord>,
    step: u64,
    busy_s: f64,
    /// This epoch's per-step losses (on the device) and batch sizes: read once at the end of the
    /// epoch, so that training never waits for the device between steps.
    epoch_losses: Vec<(Tensor, i64)>,
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
            epoch_losses: Vec::new(),
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

    fn scalar(&mut self, tag: &str, step: i64, value: f64) {
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
            .push((loss.f_detach().map_err(|e| failed(e.into()))?, len));
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
        let losses = std::mem::take(&mut self.epoch_losses);
        let failed = |e: tch::TchError| Stop::Failed {
            reason: JobError::from(e).to_string(),
        };
        let first_step = self.step - losses.len() as u64;
        let tensors: Vec<Tensor> = losses.iter().map(|(t, _)| t.shallow_clone()).collect();
        let values: Vec<f64> = if tensors.is_empty() {
            Vec::new()
        } else {
            let stacked = Tensor::f_stack(&tensors, 0)
                .and_then(|t| t.f_to_kind(Kind::Double))
                .and_then(|t| t.f_to_device(Device::Cpu))
                .map_err(failed)?;
            Vec::<f64>::try_from(&stacked).map_err(failed)?
        };
        let (mut sum, mut count) = (0.0, 0i64);
        for (i, (value, (_, len))) in values.iter().zip(&losses).enumerate() {
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

fn scalar(t: &Tensor) -> Result<f64, JobError> {
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
        let trainees_len = trainees.iter().filter(|t| t.active()).count();
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
            let work = trainees.iter_mut().zip(metrics.iter_mut());
            if pass.device == Device::Cpu && trainees_len > 1 {
                work.collect::<Vec<_>>().into_par_iter().for_each(step);
            } else {
                work.for_each(step);
            }
            Ok(())
        };
        train.for_each_batch(&order, bs as usize, pass.device, context, &mut sink)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(scheduler: Option<SchedulerConfig>) -> TrainingConfig {
        TrainingConfig {
            optimizer: OptimizerKind::Sgd,
            lr: 0.1,
            momentum: None,
            weight_decay: None,
            nesterov: None,
            scheduler,
        }
    }

    #[test]
    fn step_lr_decays_per_epoch() {
        let s = Schedule::new(
            &cfg(Some(SchedulerConfig::StepLR {
                step_size: 2,
                gamma: 0.5,
            })),
            6,
            3,
        );
        let lrs: Vec<f64> = (0..6).map(|e| s.at(e, 0).0).collect();
        assert_eq!(lrs, vec![0.1, 0.1, 0.05, 0.05, 0.025, 0.025]);
    }

    #[test]
    fn poly_reaches_zero_only_after_last_step() {
        let s = Schedule::new(&cfg(Some(SchedulerConfig::Poly { exponent: 1.0 })), 2, 5);
        assert!((s.at(0, 0).0 - 0.1).abs() < 1e-12);
        assert!((s.at(1, 9).0 - 0.01).abs() < 1e-12);
    }

    #[test]
    fn one_cycle_peaks_then_anneals() {
        let s = Schedule::new(
            &cfg(Some(SchedulerConfig::OneCycle {
                pct_start: 0.3,
                div_factor: 25.0,
                final_div_factor: 1e4,
            })),
            10,
            1,
        );
        let (first, m0) = s.at(0, 0);
        assert!((first - 0.004).abs() < 1e-12);
        assert_eq!(m0, Some(0.95));
        let (peak, _) = s.at(2, 0);
        assert!((peak - 0.1).abs() < 1e-12);
        let (last, m_last) = s.at(9, 0);
        assert!((last - 0.004 / 1e4).abs() < 1e-15);
        assert!((m_last.unwrap_or(0.0) - 0.95).abs() < 1e-12);
    }
}
