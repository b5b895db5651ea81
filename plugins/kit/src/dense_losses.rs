//! Training losses of pixel-wise tasks, with PyTorch's definitions:
//!
//! * [`cross_entropy`]: softmax cross-entropy over `[B, C, H, W]` logits and `[B, H, W]` class
//!   ids, optionally with class weights (EgoHands) and an ignored id (void): PyTorch's
//!   `F.cross_entropy(weight=, ignore_index=)`, the weighted mean sum(w_y * nll) / sum(w_y).
//! * [`masked_l1`]: mean |p - g| over the pixels whose target is finite and positive (missing
//!   depth is 0 in the data sets; KITTI's invalid flow is masked the same way), so that missing
//!   values are never trained on. With no valid pixel the loss is a zero that keeps the graph.
use tch::{Kind, Reduction, Tensor};
use virb_plugin_api::PluginError;

/// PyTorch's `F.cross_entropy(logits, target, weight, ignore_index)` for dense outputs.
pub fn cross_entropy(
    logits: &Tensor,
    target: &Tensor,
    weights: Option<&[f64]>,
    ignore: Option<i64>,
) -> Result<Tensor, PluginError> {
    let (ls, ts) = (logits.size(), target.size());
    if ls.len() != 4 || ts.len() != 3 || ls[0] != ts[0] || ls[2..] != ts[1..] {
        return Err(PluginError::tensor(format!(
            "pixel cross-entropy: logits {ls:?} and targets {ts:?}; expected [B, C, H, W] and [B, H, W]"
        )));
    }
    let classes = ls[1];
    let target = target
        .f_to_device(logits.device())?
        .f_to_kind(Kind::Int64)?;
    let counted = match ignore {
        Some(i) => target.f_masked_select(&target.f_ne(i)?)?,
        None => target.f_flatten(0, -1)?,
    };
    if counted.numel() > 0 {
        let (lo, hi) = (
            counted.f_min()?.int64_value(&[]),
            counted.f_max()?.int64_value(&[]),
        );
        if lo < 0 || hi >= classes {
            return Err(PluginError::tensor(format!(
                "pixel cross-entropy: class id {} is outside 0..{} (the head's {classes} classes)",
                if lo < 0 { lo } else { hi },
                classes - 1
            )));
        }
    }
    let weight = match weights {
        Some(w) if w.len() as i64 != classes => {
            return Err(PluginError::invalid_input(format!(
                "pixel cross-entropy: {} class weights for {classes} classes",
                w.len()
            )))
        }
        Some(w) => Some(
            Tensor::from_slice(w)
                .f_to_kind(Kind::Float)?
                .f_to_device(logits.device())?,
        ),
        None => None,
    };
    Ok(logits.f_log_softmax(1, Kind::Float)?.f_nll_loss_nd(
        &target,
        weight.as_ref(),
        Reduction::Mean,
        ignore.unwrap_or(-100),
    )?)
}

/// Mean absolute error over the pixels whose target is finite and > 0; `pred` and `target` of
/// the same shape (a `[B, 1, H, W]` prediction is matched to a `[B, H, W]` target).
pub fn masked_l1(pred: &Tensor, target: &Tensor) -> Result<Tensor, PluginError> {
    let target = target.f_to_device(pred.device())?.f_to_kind(Kind::Float)?;
    let pred = if pred.dim() == target.dim() + 1 && pred.size()[1] == 1 {
        pred.f_squeeze_dim(1)?
    } else {
        pred.shallow_clone()
    };
    if pred.size() != target.size() {
        return Err(PluginError::tensor(format!(
            "masked L1: prediction {:?} and target {:?} differ",
            pred.size(),
            target.size()
        )));
    }
    let valid = target.f_isfinite()?.f_logical_and(&target.f_gt(0.0)?)?;
    let n = valid.f_sum(Kind::Int64)?.int64_value(&[]);
    if n == 0 {
        return Ok(pred.f_sum(Kind::Float)?.f_mul_scalar(0.0)?);
    }
    let diff = pred
        .f_masked_select(&valid)?
        .f_sub(&target.f_masked_select(&valid)?)?;
    Ok(diff.f_abs()?.f_mean(Kind::Float)?)
}
