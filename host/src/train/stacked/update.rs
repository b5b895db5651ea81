//! The optimiser step of a stack: PyTorch's Adam and SGD (as `optim.rs` does for one head), over
//! the concatenated parameters. On the CPU it is one pass over the memory (`fused.rs`); elsewhere
//! (a GPU) libtorch calls with each head's hyperparameters in per-row tensors, kept while their
//! values stay the same (most schedules change them per epoch), so a step costs about as many
//! libtorch calls as one head's.
use super::fused::{self, Hyper, Rule};
use super::Stack;
use crate::config::OptimizerKind;
use crate::error::JobError;
use crate::train::trainee::Trainee;
use tch::Tensor;

const ADAM_BETA1: f64 = 0.9;
const ADAM_BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;

/// Which per-head value a cached row tensor holds.
#[derive(Clone, Copy)]
pub(super) enum Slot {
    Decay = 0,
    OneMinusBeta1 = 1,
    Scale = 2,
    Momentum = 3,
    Lr = 4,
}

/// Slots of [`Slot`].
pub(super) const SLOTS: usize = 5;

/// A per-head value for every row: `[H*C]` for the bias and `[H*C, 1]` for the weight.
pub(super) struct Rows {
    values: Vec<f64>,
    flat: Tensor,
    wide: Tensor,
}

impl Clone for Rows {
    fn clone(&self) -> Self {
        Rows {
            values: self.values.clone(),
            flat: self.flat.shallow_clone(),
            wide: self.wide.shallow_clone(),
        }
    }
}

impl Rows {
    fn of(&self, p: &Tensor) -> &Tensor {
        if p.dim() == 2 {
            &self.wide
        } else {
            &self.flat
        }
    }
}

impl Stack {
    /// The row tensors of `values` in `slot`, made again only when the values changed.
    fn rows(&mut self, slot: Slot, values: &[f64]) -> Result<Rows, JobError> {
        if let Some(r) = &self.row_cache[slot as usize] {
            if r.values == values {
                return Ok(r.clone());
            }
        }
        let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
        let flat = Tensor::f_from_slice(&v)?
            .f_to_device(self.weight.device())?
            .f_repeat_interleave_self_int(self.classes, 0, None)?;
        let rows = Rows {
            values: values.to_vec(),
            wide: flat.f_unsqueeze(1)?,
            flat,
        };
        self.row_cache[slot as usize] = Some(rows.clone());
        Ok(rows)
    }

    /// The optimiser step over the stacked parameters with their gradients `grads` (weight,
    /// bias); see `optim.rs` for one head's. On the CPU one pass over the memory
    /// (`fused.rs`), elsewhere libtorch calls over the whole stack.
    pub(super) fn update(
        &mut self,
        trainees: &[Trainee],
        lr: &[f64],
        momentum: &[Option<f64>],
        grads: (Tensor, Tensor),
    ) -> Result<(), JobError> {
        self.step += 1;
        let _guard = tch::no_grad_guard();
        let opts: Vec<_> = self
            .members
            .iter()
            .map(|m| &trainees[m.trainee].opt)
            .collect();
        let decay: Vec<f64> = opts.iter().map(|o| o.weight_decay).collect();
        let moms: Vec<f64> = momentum
            .iter()
            .zip(&opts)
            .map(|(m, o)| m.unwrap_or(o.momentum))
            .collect();
        if self.fused_update(lr, momentum, &decay, &moms, &grads)? {
            return Ok(());
        }
        let decay = match self.key.weight_decay {
            true => Some(self.rows(Slot::Decay, &decay)?),
            false => None,
        };
        let mut grads_out = Vec::with_capacity(2);
        for (p, g) in [&self.weight, &self.bias]
            .into_iter()
            .zip([grads.0, grads.1])
        {
            grads_out.push(match &decay {
                Some(d) => g.f_add(&p.f_mul(d.of(p))?)?,
                None => g,
            });
        }
        let mut grads = grads_out;
        match self.key.kind {
            OptimizerKind::Adam => {
                let beta1: Vec<f64> = momentum.iter().map(|m| m.unwrap_or(ADAM_BETA1)).collect();
                let lerp = self.rows(
                    Slot::OneMinusBeta1,
                    &beta1.iter().map(|b| 1.0 - b).collect::<Vec<_>>(),
                )?;
                // p -= lr / (1 - beta1^t) * m / denom: with one beta1 for every head (all but
                // OneCycle) the bias correction is a scalar and the rows (-lr) stay the same.
                let uniform = beta1.iter().all(|b| *b == beta1[0]);
                let (scale, correction) = if uniform {
                    let neg: Vec<f64> = lr.iter().map(|l| -l).collect();
                    (
                        self.rows(Slot::Scale, &neg)?,
                        1.0 - beta1[0].powi(self.step),
                    )
                } else {
                    let step = self.step;
                    let per: Vec<f64> = beta1
                        .iter()
                        .zip(lr)
                        .map(|(b, l)| -(l / (1.0 - b.powi(step))))
                        .collect();
                    (self.rows(Slot::Scale, &per)?, 1.0)
                };
                let bc2 = 1.0 - ADAM_BETA2.powi(self.step);
                if self.m.is_none() {
                    self.m = Some((self.weight.f_zeros_like()?, self.bias.f_zeros_like()?));
                }
                if self.v.is_none() {
                    self.v = Some((self.weight.f_zeros_like()?, self.bias.f_zeros_like()?));
                }
                let (Some((mw, mb)), Some((vw, vb))) = (&mut self.m, &mut self.v) else {
                    return Err(JobError::Other("stacked Adam without moments".into()));
                };
                for (((p, g), m), v) in [&mut self.weight, &mut self.bias]
                    .into_iter()
                    .zip(&grads)
                    .zip([mw, mb])
                    .zip([vw, vb])
                {
                    let _ = m.f_lerp_tensor_(g, lerp.of(p))?;
                    let _ = v.f_mul_scalar_(ADAM_BETA2)?;
                    let _ = v.f_addcmul_(g, &g.f_mul_scalar(1.0 - ADAM_BETA2)?)?;
                    let mut denom = v.f_sqrt()?;
                    let _ = denom.f_div_scalar_(bc2.sqrt())?;
                    let _ = denom.f_add_scalar_(ADAM_EPS)?;
                    let _ = denom.f_div_(scale.of(p))?;
                    if correction != 1.0 {
                        let _ = denom.f_mul_scalar_(correction)?;
                    }
                    let _ = p.f_addcdiv_(m, &denom)?;
                }
            }
            OptimizerKind::Sgd => {
                let mom = self.rows(Slot::Momentum, &moms)?;
                let lr = self.rows(Slot::Lr, lr)?;
                if self.key.uses_momentum {
                    let bufs = match self.m.take() {
                        None => (grads[0].f_detach_copy()?, grads[1].f_detach_copy()?),
                        Some((mut bw, mut bb)) => {
                            for (b, g) in [&mut bw, &mut bb].into_iter().zip(&grads) {
                                let _ = b.f_mul_(mom.of(g))?;
                                let _ = b.f_add_(g)?;
                            }
                            (bw, bb)
                        }
                    };
                    for (g, b) in grads.iter_mut().zip([&bufs.0, &bufs.1]) {
                        *g = if self.key.nesterov {
                            g.f_add(&b.f_mul(mom.of(g))?)?
                        } else {
                            b.shallow_clone()
                        };
                    }
                    self.m = Some(bufs);
                }
                for (p, d) in [&mut self.weight, &mut self.bias].into_iter().zip(&grads) {
                    let step = d.f_mul(lr.of(p))?;
                    let _ = p.f_sub_(&step)?;
                }
            }
        }
        Ok(())
    }

    /// The CPU's update (`fused.rs`); false when the tensors do not qualify (then nothing changed
    /// but the state allocated, and the libtorch path runs).
    fn fused_update(
        &mut self,
        lr: &[f64],
        momentum: &[Option<f64>],
        decay: &[f64],
        moms: &[f64],
        grads: &(Tensor, Tensor),
    ) -> Result<bool, JobError> {
        if !super::cpu_kernels() || !fused::qualifies(&self.weight) {
            return Ok(false);
        }
        let (rule, beta) = match self.key.kind {
            OptimizerKind::Adam => {
                let beta1: Vec<f64> = momentum.iter().map(|m| m.unwrap_or(ADAM_BETA1)).collect();
                for state in [&mut self.m, &mut self.v] {
                    if state.is_none() {
                        *state = Some((self.weight.f_zeros_like()?, self.bias.f_zeros_like()?));
                    }
                }
                (Rule::Adam { step: self.step }, beta1)
            }
            OptimizerKind::Sgd => {
                let first = self.key.uses_momentum && self.m.is_none();
                if first {
                    self.m = Some((self.weight.f_empty_like()?, self.bias.f_empty_like()?));
                }
                let rule = Rule::Sgd {
                    momentum: self.key.uses_momentum,
                    nesterov: self.key.nesterov,
                    first,
                };
                (rule, moms.to_vec())
            }
        };
        let heads: Vec<Hyper> = (0..lr.len())
            .map(|j| Hyper {
                lr: lr[j],
                decay: decay[j],
                momentum: beta[j],
            })
            .collect();
        let states: Vec<Vec<&Tensor>> = match (rule, &self.m, &self.v) {
            (Rule::Adam { .. }, Some((mw, mb)), Some((vw, vb))) => vec![vec![mw, vw], vec![mb, vb]],
            (Rule::Sgd { momentum: true, .. }, Some((bw, bb)), _) => vec![vec![bw], vec![bb]],
            _ => vec![vec![], vec![]],
        };
        let done = fused::update(
            &[&self.weight, &self.bias],
            &[&grads.0, &grads.1],
            &states,
            &heads,
            rule,
        );
        if !done && matches!(rule, Rule::Sgd { first: true, .. }) {
            // The libtorch path sets the buffers from the gradients.
            self.m = None;
        }
        Ok(done)
    }
}
