//! Values of a job that serde's types cannot refuse by themselves: ranges, combinations, and
//! what depends on the kind of task. Each error names the key (as a path below the job).
use super::{JobConfig, OptimizerKind, SchedulerConfig, MAX_REPEATS};
use std::fmt;

/// A key (as a path below the job) and what is wrong with it.
pub(super) type Invalid = (Vec<String>, String);

/// Checks what depends on the kind of task: a training task needs training configs and epochs;
/// an eval-only task trains nothing. Returns `(key, message)` on error.
pub fn check_job_for_task(job: &JobConfig, eval_only: bool) -> Result<(), (&'static str, String)> {
    if eval_only {
        if !job.training_configs.is_empty() {
            return Err((
                "training_configs",
                "the task is eval-only (it evaluates heads trained by another job); remove training_configs".into(),
            ));
        }
        for (key, set) in [
            ("repeats", job.repeats != 1),
            ("validation_fraction", job.validation_fraction.is_some()),
            ("train_encoder", job.train_encoder),
        ] {
            if set {
                return Err((
                    key,
                    "does not apply to an eval-only task: it evaluates every seed's head of the job it names; remove the key".into(),
                ));
            }
        }
        return Ok(());
    }
    if job.training_configs.is_empty() {
        return Err((
            "training_configs",
            "needs at least one training config".into(),
        ));
    }
    if job.num_epochs == 0 {
        return Err(("num_epochs", "must be at least 1".into()));
    }
    if job.train_encoder && job.validation_fraction.is_some() {
        return Err((
            "validation_fraction",
            "is not supported with `train_encoder: true` yet; remove one of them".into(),
        ));
    }
    Ok(())
}

fn bad(key: &str, message: impl Into<String>) -> Invalid {
    (vec![key.to_string()], message.into())
}

pub(super) fn validate(job: &JobConfig) -> Result<(), Invalid> {
    if job.batch_size == 0 {
        return Err(bad("batch_size", "must be at least 1"));
    }
    if job.test_batch_size == Some(0) {
        return Err(bad("test_batch_size", "must be at least 1"));
    }
    if !(16..=4096).contains(&job.image_size) {
        return Err(bad("image_size", "must be between 16 and 4096 pixels"));
    }
    if job.num_dataset_repeats != 1 {
        return Err(bad(
            "num_dataset_repeats",
            "only 1 is supported: cached features are not augmented, so repeats would only duplicate samples",
        ));
    }
    if !(1..=MAX_REPEATS).contains(&job.repeats) {
        return Err(bad(
            "repeats",
            format!("must be between 1 and {MAX_REPEATS}, got {}", job.repeats),
        ));
    }
    if let Some(f) = job.validation_fraction {
        if !(f.is_finite() && f > 0.0 && f <= 0.5) {
            return Err(bad(
                "validation_fraction",
                format!("must be in (0, 0.5] (the share of the training split held out), got {f}"),
            ));
        }
    }
    for (name, cfg) in &job.training_configs {
        let bad = |k: &str, message: &dyn fmt::Display| -> Invalid {
            let mut path = vec!["training_configs".to_string(), name.clone()];
            path.extend(k.split('.').map(String::from));
            (path, message.to_string())
        };
        if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
            return Err(bad(
                "lr",
                &format!("must be a positive number, got {}", cfg.lr),
            ));
        }
        if let Some(m) = cfg.momentum {
            if !(0.0..1.0).contains(&m) {
                return Err(bad("momentum", &format!("must be in [0, 1), got {m}")));
            }
            if cfg.optimizer == OptimizerKind::Adam {
                return Err(bad(
                    "momentum",
                    &"applies to `sgd` only (Adam uses fixed betas)",
                ));
            }
        }
        if let Some(wd) = cfg.weight_decay {
            if !(wd.is_finite() && wd >= 0.0) {
                return Err(bad("weight_decay", &format!("must be >= 0, got {wd}")));
            }
        }
        if cfg.nesterov == Some(true)
            && (cfg.optimizer != OptimizerKind::Sgd || cfg.momentum.unwrap_or(0.0) <= 0.0)
        {
            return Err(bad(
                "nesterov",
                &"needs `optimizer: sgd` with a positive momentum",
            ));
        }
        match &cfg.scheduler {
            Some(SchedulerConfig::StepLR { step_size, gamma }) => {
                if *step_size == 0 {
                    return Err(bad("scheduler.step_size", &"must be at least 1"));
                }
                if !(gamma.is_finite() && *gamma > 0.0) {
                    return Err(bad("scheduler.gamma", &"must be positive"));
                }
            }
            Some(SchedulerConfig::OneCycle {
                pct_start,
                div_factor,
                final_div_factor,
            }) => {
                if !(*pct_start > 0.0 && *pct_start < 1.0) {
                    return Err(bad("scheduler.pct_start", &"must be in (0, 1)"));
                }
                if !(*div_factor > 0.0 && *final_div_factor > 0.0) {
                    return Err(bad("scheduler", &"div factors must be positive"));
                }
            }
            Some(SchedulerConfig::Poly { exponent })
                if !(exponent.is_finite() && *exponent > 0.0) =>
            {
                return Err(bad("scheduler.exponent", &"must be positive"));
            }
            Some(SchedulerConfig::Poly { .. }) | None => {}
        }
    }
    Ok(())
}
