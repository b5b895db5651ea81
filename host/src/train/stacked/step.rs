//! A training step of the stacks: the joint forward and backward pass of the stacks of one input,
//! then each stack's update and bookkeeping ([`Stack::finish_step`]).
use super::Stack;
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
        let (losses, out, y) = &joint;
        let total: i64 = group.iter().map(|&i| stacks[i].members.len() as i64).sum();
        let mut row = 0;
        for &i in &group {
            let s = &mut stacks[i];
            let heads = s.members.len() as i64;
            let first = row;
            row += heads;
            let outcome = losses
                .f_narrow(0, first, heads)
                .and_then(|l| Ok((l, out.f_narrow(1, first * s.classes, heads * s.classes)?)));
            // The shared pass's time is shared by the group's heads.
            let share = seconds * heads as f64 / total.max(1) as f64;
            let outcome = outcome
                .map_err(JobError::from)
                .and_then(|(l, o)| s.finish_step(trainees, metrics, (&l, &o, y), epoch, share));
            if let Err(e) = outcome {
                failed.push((i, e));
            }
        }
    }
    failed
}

/// The group's joint forward and backward: its heads' losses `[H]`, logits `[n, H*C]` and the
/// targets, checked against the classes.
fn forward_backward(
    stacks: &[Stack],
    group: &[usize],
    features: &[NamedTensorRef<'_>],
    target: TensorRef<'_>,
) -> Result<(Tensor, Tensor, Tensor), JobError> {
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
    let (lo, hi) = (i64::try_from(&y.f_min()?)?, i64::try_from(&y.f_max()?)?);
    if lo < 0 || hi >= classes {
        return Err(JobError::Other(format!(
            "class index {} out of range for a head with {classes} outputs",
            if lo < 0 { lo } else { hi }
        )));
    }
    let (weight, bias) = if group.len() == 1 {
        let s = &stacks[group[0]];
        (s.weight.shallow_clone(), s.bias.shallow_clone())
    } else {
        let w: Vec<&Tensor> = group.iter().map(|&i| &stacks[i].weight).collect();
        let b: Vec<&Tensor> = group.iter().map(|&i| &stacks[i].bias).collect();
        (Tensor::f_cat(&w, 0)?, Tensor::f_cat(&b, 0)?)
    };
    let heads = weight.size()[0] / classes.max(1);
    let out = bias.f_addmm(&x, &weight.f_tr()?)?;
    let picked = out
        .f_view([n, heads, classes])?
        .f_log_softmax(-1, Kind::Float)?
        .f_gather(
            2,
            &y.f_view([n, 1, 1])?.f_expand([n, heads, 1], false)?,
            false,
        )?
        .f_squeeze_dim(2)?;
    let losses = picked.f_mean_dim(0, false, Kind::Float)?.f_neg()?;
    losses.f_sum(Kind::Float)?.f_backward()?;
    Ok((losses.f_detach()?, out.f_detach()?, y))
}
