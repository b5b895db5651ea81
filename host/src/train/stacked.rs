//! A grid's linear classifier heads trained as one stacked computation: the heads that answer
//! plugin-api's [`HEAD_LINEAR_CLASSIFIER`] and share an optimiser family form a stack, with its
//! heads' learning rates, momentum, weight decay and bias corrections per head; the stacks of one
//! input keep their parameters in one pair of tensors. Each batch is then one matrix product for
//! the logits of every head, the softmax cross-entropy and its gradient written out (no autograd:
//! for a linear layer it is two products), one product for the weight gradient, and one optimiser
//! update per stack. On the CPU the cross-entropy (`xent.rs`) and the update (`fused.rs`) are single
//! passes over the memory; on a GPU they are libtorch calls. Each head keeps its own loss,
//! metric, schedule, TensorBoard scalars and step count; after every epoch the parameters and
//! optimiser state are written back to the heads, so validation, checkpoints, selection and
//! results see plain heads.
//!
//! The arithmetic is PyTorch's Adam and SGD, element for element, and its cross-entropy; the
//! summation order of the loss and of the gradients differs from a head trained alone, and
//! softmax probabilities under 1.2e-38 times the batch size are zero in the gradient (a subnormal
//! there makes the product many times slower), so the numbers agree to float rounding (tests
//! compare them), not bit for bit. `VIRB_STACK_HEADS=0` trains every head one by one,
//! bit-identical to a config trained alone.
use super::optim::Optimizer;
use super::trainee::Trainee;
use crate::config::OptimizerKind;
use crate::error::{plugin, JobError};
use std::time::Instant;
use tch::{Kind, Tensor};
use virb_plugin_api::{
    abi_stable::std_types::{ROption, RResult, RStr},
    ExtensionCall, MetricBox, TensorRef, HEAD_LINEAR_CLASSIFIER,
};

/// Set to `0` to train every head one by one.
pub const ENV: &str = "VIRB_STACK_HEADS";

/// Set to `libtorch` to run the stacked step in libtorch calls on the CPU too (as on a GPU):
/// how the tests check that path on machines without one.
pub const KERNELS_ENV: &str = "VIRB_STACK_KERNELS";

/// Whether the CPU's own kernels (`xent.rs`, `fused.rs`) may run.
fn cpu_kernels() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| !std::env::var(KERNELS_ENV).is_ok_and(|v| v == "libtorch"))
}

/// What a head answered to [`HEAD_LINEAR_CLASSIFIER`].
#[derive(serde::Deserialize)]
struct Linear {
    input: String,
    weight: String,
    bias: String,
}

/// One head of a stack: its trainee and the positions of its weight and bias among the
/// optimiser's parameters.
struct Member {
    trainee: usize,
    weight: usize,
    bias: usize,
}

/// Heads that can share one update: the same optimiser family and state, input and shapes.
#[derive(PartialEq, Clone)]
struct Key {
    kind: OptimizerKind,
    nesterov: bool,
    uses_momentum: bool,
    weight_decay: bool,
    has_state: bool,
    input: String,
    shape: Vec<i64>,
}

/// Several heads' parameters and optimiser state, concatenated along the classes.
pub(super) struct Stack {
    members: Vec<Member>,
    key: Key,
    classes: i64,
    weight: Tensor,
    bias: Tensor,
    /// Adam's first moments or SGD's momentum buffers (weight, bias).
    m: Option<(Tensor, Tensor)>,
    /// Adam's second moments (weight, bias).
    v: Option<(Tensor, Tensor)>,
    step: i32,
    /// Each step's losses `[H]` and batch size, handed to the heads at the end of the epoch.
    losses: super::losses::LossLog,
    /// Logits `[n, H*C]` and targets not yet given to the heads' metrics, and their bytes.
    pending: Vec<(Tensor, Tensor)>,
    pending_bytes: usize,
    /// Per-row hyperparameter tensors, by [`update::Slot`], kept while their values stay.
    row_cache: [Option<update::Rows>; update::SLOTS],
    /// The parameters of all the stacks of this one's input and shape, when there are several:
    /// `weight` and `bias` are rows of these, so the joint pass needs no concatenation.
    joint: Option<Joint>,
}

/// Parameters shared by the stacks of one input and shape, concatenated in the stacks' order.
struct Joint {
    /// Which group of stacks.
    id: usize,
    weight: Tensor,
    bias: Tensor,
}

/// Logits held back for the metrics at most (then they are given to the metrics at once).
const PENDING_BYTES: usize = 64 << 20;

/// The stacks of this epoch: groups of two or more active heads that can share an update (a
/// head alone gains nothing and trains as before). Empty when `VIRB_STACK_HEADS=0`.
pub(super) fn build(trainees: &[Trainee], epoch: u32) -> Result<Vec<Stack>, JobError> {
    if std::env::var(ENV).is_ok_and(|v| v == "0") {
        return Ok(Vec::new());
    }
    let mut groups: Vec<(Key, Vec<Member>)> = Vec::new();
    for (i, t) in trainees.iter().enumerate() {
        if !t.active() {
            continue;
        }
        let Some((key, member)) = describe(t, i, epoch)? else {
            continue;
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(member),
            None => groups.push((key, vec![member])),
        }
    }
    let mut stacks = Vec::new();
    for (key, members) in groups.into_iter().filter(|(_, m)| m.len() > 1) {
        stacks.push(Stack::new(trainees, key, members)?);
    }
    share_parameters(&mut stacks)?;
    Ok(stacks)
}

/// Puts the parameters of the stacks of one input and shape in one pair of tensors (the stacks'
/// own become rows of it), in the stacks' order, as the joint pass of `step.rs` takes them.
fn share_parameters(stacks: &mut [Stack]) -> Result<(), JobError> {
    for first in 0..stacks.len() {
        if stacks[first].joint.is_some() {
            continue;
        }
        let key = stacks[first].key.clone();
        let same: Vec<usize> = (first..stacks.len())
            .filter(|&i| stacks[i].key.input == key.input && stacks[i].key.shape == key.shape)
            .collect();
        if same.len() < 2 {
            continue;
        }
        let w: Vec<&Tensor> = same.iter().map(|&i| &stacks[i].weight).collect();
        let b: Vec<&Tensor> = same.iter().map(|&i| &stacks[i].bias).collect();
        let (weight, bias) = (Tensor::f_cat(&w, 0)?, Tensor::f_cat(&b, 0)?);
        let mut row = 0;
        for &i in &same {
            let rows = stacks[i].weight.size()[0];
            stacks[i].weight = weight.f_narrow(0, row, rows)?;
            stacks[i].bias = bias.f_narrow(0, row, rows)?;
            row += rows;
            stacks[i].joint = Some(Joint {
                id: first,
                weight: weight.shallow_clone(),
                bias: bias.shallow_clone(),
            });
        }
    }
    Ok(())
}

/// A trainee's key and member entry, when its head is a plain linear classifier.
fn describe(t: &Trainee, index: usize, epoch: u32) -> Result<Option<(Key, Member)>, JobError> {
    let reply = match t.head.extension(
        RStr::from(HEAD_LINEAR_CLASSIFIER),
        ExtensionCall::json("null"),
    ) {
        RResult::ROk(ROption::RSome(reply)) => reply,
        RResult::ROk(ROption::RNone) => return Ok(None),
        RResult::RErr(e) => return Err(JobError::Plugin(e)),
    };
    let Ok(linear) = serde_json::from_str::<Linear>(reply.json.as_str()) else {
        return Ok(None);
    };
    let names: Vec<String> = plugin(t.head.parameters())?
        .iter()
        .map(|nt| nt.name.to_string())
        .collect();
    let opt = &t.opt;
    let find = |n: &str| names.iter().position(|x| x == n);
    let (Some(weight), Some(bias)) = (find(&linear.weight), find(&linear.bias)) else {
        return Ok(None);
    };
    if names.len() != 2 || opt.params.len() != 2 {
        return Ok(None);
    }
    let (w, b) = (&opt.params[weight], &opt.params[bias]);
    let shape = w.size();
    if shape.len() != 2 || b.size() != [shape[0]] || w.kind() != Kind::Float {
        return Ok(None);
    }
    let (_, momentum) = t.schedule.at(epoch, t.step);
    let key = Key {
        kind: opt.kind,
        nesterov: opt.nesterov,
        uses_momentum: momentum.unwrap_or(opt.momentum) != 0.0,
        weight_decay: opt.weight_decay != 0.0,
        has_state: opt.m[weight].is_some(),
        input: linear.input,
        shape,
    };
    Ok(Some((
        key,
        Member {
            trainee: index,
            weight,
            bias,
        },
    )))
}

fn cat(parts: &[Tensor]) -> Result<Tensor, JobError> {
    Ok(Tensor::f_cat(parts, 0)?.f_detach()?)
}

impl Stack {
    fn new(trainees: &[Trainee], key: Key, members: Vec<Member>) -> Result<Stack, JobError> {
        let take = |f: &dyn Fn(&Optimizer, &Member) -> Option<Tensor>| {
            let parts: Option<Vec<Tensor>> = members
                .iter()
                .map(|m| f(&trainees[m.trainee].opt, m))
                .collect();
            parts.map(|p| cat(&p)).transpose()
        };
        let weight = take(&|o, m| Some(o.params[m.weight].shallow_clone()))?
            .ok_or_else(|| JobError::Other("empty stack".into()))?;
        let bias = take(&|o, m| Some(o.params[m.bias].shallow_clone()))?
            .ok_or_else(|| JobError::Other("empty stack".into()))?;
        let pair = |a: Option<Tensor>, b: Option<Tensor>| a.zip(b);
        let m = pair(
            take(&|o, m| o.m[m.weight].as_ref().map(Tensor::shallow_clone))?,
            take(&|o, m| o.m[m.bias].as_ref().map(Tensor::shallow_clone))?,
        );
        let v = pair(
            take(&|o, m| o.v[m.weight].as_ref().map(Tensor::shallow_clone))?,
            take(&|o, m| o.v[m.bias].as_ref().map(Tensor::shallow_clone))?,
        );
        let step = trainees[members[0].trainee].opt.step;
        let heads = members.len() as i64;
        Ok(Stack {
            classes: key.shape[0],
            members,
            key,
            weight,
            bias,
            m,
            v,
            step,
            losses: super::losses::LossLog::new(heads),
            pending: Vec::new(),
            pending_bytes: 0,
            row_cache: Default::default(),
            joint: None,
        })
    }

    /// Heads in the stack.
    pub(super) fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether trainee `i` trains in this stack.
    pub(super) fn holds(&self, i: usize) -> bool {
        self.members.iter().any(|m| m.trainee == i)
    }

    /// Whether the stack still trains (an error of an earlier batch stops all its heads).
    fn active(&self, trainees: &[Trainee]) -> bool {
        trainees[self.members[0].trainee].active()
    }

    /// After the joint forward and backward ([`train_step`]): this stack's update with its
    /// gradients (weight, bias), and each of its heads' losses `[H]`, logits `[n, H*C]`, learning
    /// rates and steps.
    fn finish_step(
        &mut self,
        trainees: &mut [Trainee],
        metrics: &mut [Option<MetricBox>],
        (losses, out, y): (&Tensor, &Tensor, &Tensor),
        grads: (Tensor, Tensor),
        epoch: u32,
        seconds: f64,
    ) -> Result<(), JobError> {
        let t0 = Instant::now();
        let heads = self.members.len() as i64;
        let n = y.size().first().copied().unwrap_or(0);
        let mut lr = Vec::with_capacity(heads as usize);
        let mut momentum = Vec::with_capacity(heads as usize);
        for m in &self.members {
            let t = &trainees[m.trainee];
            let (l, mom) = t.schedule.at(epoch, t.step);
            lr.push(l);
            momentum.push(mom);
        }
        self.update(trainees, &lr, &momentum, grads)?;
        // The metrics are dataset-level (plugin-api's contract): the logits of many batches go
        // to each head's metric in one update, not one update per head per batch.
        self.losses.push(losses, n)?;
        self.pending_bytes += (n * heads * self.classes) as usize * 4;
        self.pending.push((out.f_detach()?, y.shallow_clone()));
        if self.pending_bytes > PENDING_BYTES {
            self.flush_metrics(metrics)?;
        }
        let share = (seconds + t0.elapsed().as_secs_f64()) / heads as f64;
        for (j, m) in self.members.iter().enumerate() {
            let t = &mut trainees[m.trainee];
            let step = t.step as i64;
            t.scalar("batch/lr", step, lr[j]);
            if let Some(mom) = momentum[j] {
                t.scalar("batch/momentum", step, mom);
            }
            t.step += 1;
            t.busy_s += share;
        }
        Ok(())
    }

    /// Gives the logits held back to each head's metric.
    fn flush_metrics(&mut self, metrics: &mut [Option<MetricBox>]) -> Result<(), JobError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (outs, targets): (Vec<Tensor>, Vec<Tensor>) =
            std::mem::take(&mut self.pending).into_iter().unzip();
        self.pending_bytes = 0;
        let out = Tensor::f_cat(&outs, 0)?;
        let target = Tensor::f_cat(&targets, 0)?;
        for (j, m) in self.members.iter().enumerate() {
            if let Some(metric) = metrics[m.trainee].as_mut() {
                let logits = out.f_narrow(1, j as i64 * self.classes, self.classes)?;
                plugin(metric.update(TensorRef::of(&logits), TensorRef::of(&target)))?;
            }
        }
        Ok(())
    }

    /// At the end of the epoch's batches: the metrics get the logits held back, each head its
    /// losses, and each head its parameters and optimiser state ([`Stack::write_back`]).
    pub(super) fn end_epoch(
        &mut self,
        trainees: &mut [Trainee],
        metrics: &mut [Option<MetricBox>],
    ) -> Result<(), JobError> {
        if trainees[self.members[0].trainee].active() {
            if let Err(e) = self.flush_metrics(metrics) {
                self.fail(trainees, &e.to_string());
            }
        }
        if let Some((all, lens)) = self.losses.take()? {
            for (j, m) in self.members.iter().enumerate() {
                trainees[m.trainee]
                    .epoch_loss_columns
                    .push((all.f_select(1, j as i64)?, lens.clone()));
            }
        }
        self.write_back(trainees)
    }

    /// Writes each head's parameters, moments and step count back to its trainee.
    fn write_back(&self, trainees: &mut [Trainee]) -> Result<(), JobError> {
        let _guard = tch::no_grad_guard();
        let classes = self.classes;
        for (j, m) in self.members.iter().enumerate() {
            let rows = |t: &Tensor| t.f_narrow(0, j as i64 * classes, classes);
            let opt = &mut trainees[m.trainee].opt;
            opt.params[m.weight].f_copy_(&rows(&self.weight)?)?;
            opt.params[m.bias].f_copy_(&rows(&self.bias)?)?;
            if let Some((w, b)) = &self.m {
                opt.m[m.weight] = Some(rows(w)?.f_contiguous()?.f_detach_copy()?);
                opt.m[m.bias] = Some(rows(b)?.f_contiguous()?.f_detach_copy()?);
            }
            if let Some((w, b)) = &self.v {
                opt.v[m.weight] = Some(rows(w)?.f_contiguous()?.f_detach_copy()?);
                opt.v[m.bias] = Some(rows(b)?.f_contiguous()?.f_detach_copy()?);
            }
            opt.step = self.step;
        }
        Ok(())
    }

    /// Stops every head of the stack with `reason`.
    pub(super) fn fail(&self, trainees: &mut [Trainee], reason: &str) {
        for m in &self.members {
            trainees[m.trainee].stop = Some(super::trainee::Stop::Failed {
                reason: reason.to_string(),
            });
        }
    }
}

mod fused;
mod step;
#[cfg(test)]
mod tests;
mod update;
mod xent;

pub(super) use step::train_step;
