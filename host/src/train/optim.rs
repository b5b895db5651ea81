//! Optimisers and learning-rate schedules with PyTorch's semantics: Adam and SGD (momentum,
//! weight decay, Nesterov) updated in place, StepLR and OneCycle per epoch, Poly per batch.
use crate::config::{OptimizerKind, SchedulerConfig, TrainingConfig};
use crate::error::JobError;
use tch::Tensor;

/// Adam or SGD over a list of parameters, updated in place.
pub struct Optimizer {
    pub(super) params: Vec<Tensor>,
    pub(super) kind: OptimizerKind,
    pub(super) weight_decay: f64,
    pub(super) momentum: f64,
    pub(super) nesterov: bool,
    /// Adam: first and second moments; SGD: momentum buffers (first only).
    pub(super) m: Vec<Option<Tensor>>,
    pub(super) v: Vec<Option<Tensor>>,
    pub(super) step: i32,
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
