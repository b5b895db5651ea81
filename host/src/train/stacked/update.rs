//! The optimiser step of a stack: PyTorch's Adam and SGD (as `optim.rs` does for one head), over
//! the concatenated parameters, with each head's hyperparameters in per-row tensors.
use super::Stack;
use crate::config::OptimizerKind;
use crate::error::JobError;
use crate::train::trainee::Trainee;
use tch::Tensor;

const ADAM_BETA1: f64 = 0.9;
const ADAM_BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;

impl Stack {
    /// The optimiser step over the stacked parameters (see `optim.rs` for one head's).
    pub(super) fn update(
        &mut self,
        trainees: &[Trainee],
        lr: &[f64],
        momentum: &[Option<f64>],
    ) -> Result<(), JobError> {
        self.step += 1;
        let _guard = tch::no_grad_guard();
        let opts: Vec<_> = self
            .members
            .iter()
            .map(|m| &trainees[m.trainee].opt)
            .collect();
        let decay = self
            .key
            .weight_decay
            .then(|| opts.iter().map(|o| o.weight_decay).collect::<Vec<f64>>());
        let decay = decay.map(|d| self.rows(&d)).transpose()?;
        let grads = [self.weight.grad(), self.bias.grad()];
        let mut grads: Vec<Tensor> = grads
            .into_iter()
            .zip([&self.weight, &self.bias])
            .map(|(g, p)| match &decay {
                Some(d) => {
                    let d = if p.dim() == 2 {
                        d.f_unsqueeze(1)?
                    } else {
                        d.shallow_clone()
                    };
                    Ok(g.f_add(&p.f_mul(&d)?)?)
                }
                None => Ok(g),
            })
            .collect::<Result<_, JobError>>()?;
        let widen = |t: Tensor, p: &Tensor| -> Result<Tensor, JobError> {
            Ok(if p.dim() == 2 { t.f_unsqueeze(1)? } else { t })
        };
        match self.key.kind {
            OptimizerKind::Adam => {
                let beta1: Vec<f64> = momentum.iter().map(|m| m.unwrap_or(ADAM_BETA1)).collect();
                let lerp = self.rows(&beta1.iter().map(|b| 1.0 - b).collect::<Vec<_>>())?;
                let scale = self.rows(
                    &beta1
                        .iter()
                        .zip(lr)
                        .map(|(b, l)| -(l / (1.0 - b.powi(self.step))))
                        .collect::<Vec<_>>(),
                )?;
                let bc2 = 1.0 - ADAM_BETA2.powi(self.step);
                let zeros = |p: &Tensor| p.f_zeros_like();
                if self.m.is_none() {
                    self.m = Some((zeros(&self.weight)?, zeros(&self.bias)?));
                }
                if self.v.is_none() {
                    self.v = Some((zeros(&self.weight)?, zeros(&self.bias)?));
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
                    let _ = m.f_lerp_tensor_(g, &widen(lerp.shallow_clone(), p)?)?;
                    let _ = v.f_mul_scalar_(ADAM_BETA2)?;
                    let _ = v.f_addcmul_(g, &g.f_mul_scalar(1.0 - ADAM_BETA2)?)?;
                    let mut denom = v.f_sqrt()?;
                    let _ = denom.f_div_scalar_(bc2.sqrt())?;
                    let _ = denom.f_add_scalar_(ADAM_EPS)?;
                    let _ = denom.f_div_(&widen(scale.shallow_clone(), p)?)?;
                    let _ = p.f_addcdiv_(m, &denom)?;
                }
            }
            OptimizerKind::Sgd => {
                let moms: Vec<f64> = momentum
                    .iter()
                    .zip(&opts)
                    .map(|(m, o)| m.unwrap_or(o.momentum))
                    .collect();
                let mom = self.rows(&moms)?;
                let lr = self.rows(lr)?;
                if self.key.uses_momentum {
                    let bufs = match self.m.take() {
                        None => (grads[0].f_detach_copy()?, grads[1].f_detach_copy()?),
                        Some((mut bw, mut bb)) => {
                            for (b, g) in [&mut bw, &mut bb].into_iter().zip(&grads) {
                                let _ = b.f_mul_(&widen(mom.shallow_clone(), g)?)?;
                                let _ = b.f_add_(g)?;
                            }
                            (bw, bb)
                        }
                    };
                    for (g, b) in grads.iter_mut().zip([&bufs.0, &bufs.1]) {
                        *g = if self.key.nesterov {
                            g.f_add(&b.f_mul(&widen(mom.shallow_clone(), g)?)?)?
                        } else {
                            b.shallow_clone()
                        };
                    }
                    self.m = Some(bufs);
                }
                for (p, d) in [&mut self.weight, &mut self.bias].into_iter().zip(&grads) {
                    let step = d.f_mul(&widen(lr.shallow_clone(), p)?)?;
                    let _ = p.f_sub_(&step)?;
                }
            }
        }
        for p in [&mut self.weight, &mut self.bias] {
            p.zero_grad();
        }
        Ok(())
    }
}
