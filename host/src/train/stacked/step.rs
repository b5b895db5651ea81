//! A training step of the stacks: the joint forward and backward pass of the stacks of one input,
//! then each stack's update and bookkeeping ([`Stack::finish_step`]).
use super::{xent, Stack};
use crate::error::JobError;
use crate::train::trainee::Trainee;
use std::time::Instant;
use tch::{Kind, Tensor};
use virb_plugin_api::{MetricBox, NamedTensorRef, TensorRef};

/// One optimiser step of every stacked head on a batch. Stacks of one input and shape share the
/// forward and backward pass (one product over all their heads' rows); each stack then updates
/// with its own optimiser family. An error stops every head of the stacks it concerns (the same
/// error would have stopped each of them alone).
pub(in crate::train) fn train_step(
    stacks: &mut [Stack],
    trainees: &mut [Trainee],
    metrics: &mut [Option<MetricBox>],
    features: &[NamedTensorRef<'_>],
    target: TensorRef<'_>,
    epoch: u32,
) -> Vec<(usize, JobError)> {
    let mut failed = Vec::new();
    let mut done = vec![false; stacks.len()];
    for first in 0..stacks.len() {
        if done[first] {
            continue;
        }
        let group: Vec<usize> = (first..stacks.len())
            .filter(|&i| {
                !done[i]
                    && stacks[i].key.input == stacks[first].key.input
                    && stacks[i].key.shape == stacks[first].key.shape
                    && stacks[i].active(trainees)
            })
            .collect();
        for &i in &group {
            done[i] = true;
        }
        if group.is_empty() {
            continue;
        }
        let t0 = Instant::now();
        let joint = match forward_backward(stacks, &group, features, target) {
            Ok(j) => j,
            Err(e) => {
                failed.extend(group.iter().map(|&i| (i, JobError::Other(e.to_string()))));
                continue;
            }
        };
        let seconds = t0.elapsed().as_secs_f64();
        let (losses, out, y, dw, db) = &joint;
        let total: i64 = group.iter().map(|&i| stacks[i].members.len() as i64).sum();
        let mut row = 0;
        for &i in &group {
            let s = &mut stacks[i];
            let heads = s.members.len() as i64;
            let first = row;
            row += heads;
            let (rows, len) = (first * s.classes, heads * s.classes);
            let outcome = (|| -> Result<_, tch::TchError> {
                Ok((
                    losses.f_narrow(0, first, heads)?,
                    out.f_narrow(1, rows, len)?,
                    (dw.f_narrow(0, rows, len)?, db.f_narrow(0, rows, len)?),
                ))
            })();
            // The shared pass's time is shared by the group's heads.
            let share = seconds * heads as f64 / total.max(1) as f64;
            let outcome = outcome.map_err(JobError::from).and_then(|(l, o, grads)| {
                s.finish_step(trainees, metrics, (&l, &o, y), grads, epoch, share)
            });
            if let Err(e) = outcome {
                failed.push((i, e));
            }
        }
    }
    failed
}

/// The group's joint forward and backward: its heads' losses `[H]`, logits `[n, H*C]`, the
/// targets (checked against the classes), and the gradients of the summed losses with respect
/// to the weight `[H*C, D]` and bias `[H*C]`. The gradients are written out rather than taken from
/// autograd: for a linear layer under softmax cross-entropy they are two products, and the
/// stacked parameters then need no autograd graph, no gradient accumulation and no zeroing.
#[allow(clippy::type_complexity)]
fn forward_backward(
    stacks: &[Stack],
    group: &[usize],
    features: &[NamedTensorRef<'_>],
    target: TensorRef<'_>,
) -> Result<(Tensor, Tensor, Tensor, Tensor, Tensor), JobError> {
    let _guard = tch::no_grad_guard();
    let key = &stacks[group[0]].key;
    let classes = stacks[group[0]].classes;
    let emb = features
        .iter()
        .find(|f| f.name.as_str() == key.input)
        .ok_or_else(|| JobError::Other(format!("no `{}` feature given", key.input)))?
        .tensor
        .shallow_clone();
    let n = emb.size().first().copied().unwrap_or(0);
    let x = emb.f_to_kind(Kind::Float)?.f_reshape([n, -1])?;
    if x.size().get(1) != key.shape.get(1) {
        return Err(JobError::Other(format!(
            "head expects {:?} input features per sample, got embedding of shape {:?}",
            key.shape.get(1),
            emb.size()
        )));
    }
    let y = target
        .shallow_clone()
        .f_to_device(x.device())?
        .f_to_kind(Kind::Int64)?
        .f_detach_copy()?;
    let (weight, bias) = joint_parameters(stacks, group)?;
    let heads = weight.size()[0] / classes.max(1);
    let out = bias.f_addmm(&x, &weight.f_tr()?)?;
    let fused = match super::cpu_kernels() {
        true => xent::cpu(&out, &y, heads, classes)?,
        false => None,
    };
    let (losses, d_out) = match fused {
        Some(done) => done,
        None => libtorch_xent(&out, &y, heads, classes)?,
    };
    let dw = d_out.f_tr()?.f_mm(&x)?;
    let db = d_out.f_sum_dim_intlist(0, false, Kind::Float)?;
    Ok((losses, out, y, dw, db))
}

/// [`xent::cpu`] in libtorch calls, for the tensors on a GPU.
pub(super) fn libtorch_xent(
    out: &Tensor,
    y: &Tensor,
    heads: i64,
    classes: i64,
) -> Result<(Tensor, Tensor), JobError> {
    let (lo, hi) = (i64::try_from(&y.f_min()?)?, i64::try_from(&y.f_max()?)?);
    if lo < 0 || hi >= classes {
        return Err(JobError::Other(format!(
            "class index {} out of range for a head with {classes} outputs",
            if lo < 0 { lo } else { hi }
        )));
    }
    let n = y.size().first().copied().unwrap_or(0);
    let log_p = out
        .f_view([n, heads, classes])?
        .f_log_softmax(-1, Kind::Float)?;
    let losses = log_p
        .f_gather(
            2,
            &y.f_view([n, 1, 1])?.f_expand([n, heads, 1], false)?,
            false,
        )?
        .f_squeeze_dim(2)?
        .f_mean_dim(0, false, Kind::Float)?
        .f_neg()?;
    // d(sum of the heads' mean losses)/d logits = (softmax - one-hot) / n, per head; tiny
    // probabilities become zero as in `xent.rs`.
    let one_hot = y
        .f_one_hot(classes)?
        .f_to_kind(Kind::Float)?
        .f_unsqueeze(1)?;
    let mut d_out = log_p.f_exp()?;
    let _ = d_out.f_threshold_(xent::TINY as f64 * n.max(1) as f64, 0.0)?;
    let _ = d_out.f_sub_(&one_hot)?;
    let _ = d_out.f_mul_scalar_(1.0 / n.max(1) as f64)?;
    Ok((losses, d_out.f_view([n, heads * classes])?))
}

/// The group's weight `[H*C, D]` and bias `[H*C]`: the stacks' shared tensors when the group is
/// exactly the stacks built on them (always, until a stack fails), else their concatenation.
fn joint_parameters(stacks: &[Stack], group: &[usize]) -> Result<(Tensor, Tensor), JobError> {
    let s = &stacks[group[0]];
    if group.len() == 1 {
        return Ok((s.weight.shallow_clone(), s.bias.shallow_clone()));
    }
    if let Some(joint) = &s.joint {
        let built = stacks
            .iter()
            .filter(|t| t.joint.as_ref().is_some_and(|j| j.id == joint.id))
            .count();
        let same = group
            .iter()
            .all(|&i| stacks[i].joint.as_ref().is_some_and(|j| j.id == joint.id));
        if same && built == group.len() {
            return Ok((joint.weight.shallow_clone(), joint.bias.shallow_clone()));
        }
    }
    let w: Vec<&Tensor> = group.iter().map(|&i| &stacks[i].weight).collect();
    let b: Vec<&Tensor> = group.iter().map(|&i| &stacks[i].bias).collect();
    Ok((Tensor::f_cat(&w, 0)?, Tensor::f_cat(&b, 0)?))
}
