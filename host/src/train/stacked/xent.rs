//! The stacked heads' softmax cross-entropy and its gradient with respect to the logits, in one
//! pass over the logits on the CPU. The logits of a batch are small (`n x H*C` floats); libtorch
//! would take eight calls over them (log-softmax, gather, mean, one-hot, exp, ...), each costing
//! more in dispatch than in arithmetic.
use crate::error::JobError;
use tch::{Device, Kind, Tensor};

/// Softmax probabilities below this (times the batch size) become zero in the gradient: a
/// subnormal float there makes the weight gradient's matrix product many times slower, and
/// changes it by less than 1e-37.
pub(super) const TINY: f32 = f32::MIN_POSITIVE;

/// Each head's mean loss `[H]` and d(sum of the losses)/d logits `[n, H*C]`, for logits `out`
/// `[n, H*C]` and classes `y` `[n]`; `None` when the tensors are not on the CPU (the caller then
/// takes libtorch's path). An error names a class outside `0..classes`.
pub(super) fn cpu(
    out: &Tensor,
    y: &Tensor,
    heads: i64,
    classes: i64,
) -> Result<Option<(Tensor, Tensor)>, JobError> {
    if out.device() != Device::Cpu || out.kind() != Kind::Float || y.device() != Device::Cpu {
        return Ok(None);
    }
    let n = y.size().first().copied().unwrap_or(0);
    let logits = Vec::<f32>::try_from(&out.f_contiguous()?.f_view([-1])?)?;
    let targets = Vec::<i64>::try_from(&y.f_to_kind(Kind::Int64)?.f_view([-1])?)?;
    let (h, c) = (heads as usize, classes as usize);
    if logits.len() != n as usize * h * c || targets.len() != n as usize {
        return Err(JobError::Other(format!(
            "logits of shape {:?} for {n} targets, {heads} heads of {classes} classes",
            out.size()
        )));
    }
    let inv = 1.0 / n.max(1) as f32;
    let tiny = TINY * n.max(1) as f32;
    let mut losses = vec![0f64; h];
    let mut grad = vec![0f32; logits.len()];
    for (i, &t) in targets.iter().enumerate() {
        if t < 0 || t >= classes {
            return Err(JobError::Other(format!(
                "class index {t} out of range for a head with {classes} outputs"
            )));
        }
        let t = t as usize;
        for (j, loss) in losses.iter_mut().enumerate() {
            let at = (i * h + j) * c;
            let row = &logits[at..at + c];
            let d = &mut grad[at..at + c];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (d, &x) in d.iter_mut().zip(row) {
                *d = (x - max).exp();
                sum += *d;
            }
            // -log_softmax(row)[t], as libtorch computes log_softmax: x - max - log(sum).
            *loss -= f64::from(row[t] - max - sum.ln());
            let scale = 1.0 / sum;
            for d in d.iter_mut() {
                let p = *d * scale;
                *d = if p < tiny { 0.0 } else { p };
            }
            d[t] -= 1.0;
            for d in d.iter_mut() {
                *d *= inv;
            }
        }
    }
    let losses: Vec<f32> = losses
        .iter()
        .map(|l| (l / n.max(1) as f64) as f32)
        .collect();
    Ok(Some((
        Tensor::f_from_slice(&losses)?,
        Tensor::f_from_slice(&grad)?.f_view([n, heads * classes])?,
    )))
}
