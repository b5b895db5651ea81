//! Result records: a finished training turned into the typed [`ResultRecord`] /
//! [`RunRecord`] of `virb-records` (the schema reports read too), a complete result recognised
//! on resume, and the rows of the final table.
use crate::encode::EncodeTimings;
use crate::error::JobError;
use crate::hashing::sha256_file;
use crate::outdir;
use crate::plan::{Ctx, ExpCtx};
use crate::plugins::TaskEntry;
use crate::table::Row;
use crate::train::{RunOutcome, Stop};
use std::{collections::BTreeMap, path::Path};
use virb_plugin_api::{device_name, LIBTORCH_VERSION, PLUGIN_API_VERSION};
use virb_records::{
    EncoderRecord, Metrics, PluginRef, ResultRecord, RunRecord, TaskRecord, Timings,
    ValidationRecord, Versions, SCHEMA,
};

/// The task's metric names, headline first.
pub(crate) fn metric_names(task: &TaskEntry) -> Vec<String> {
    task.info
        .metrics
        .iter()
        .map(|m| m.name.to_string())
        .collect()
}

/// Whether larger is better for the task's headline metric.
pub(crate) fn higher_is_better(task: &TaskEntry) -> bool {
    task.info
        .metrics
        .first()
        .map(|m| m.higher_is_better)
        .unwrap_or(true)
}

/// The row of a (job, config) that failed.
pub(crate) fn failed_row(experiment: &str, job: &str, cfg: &str, error: &str) -> Row {
    Row {
        experiment: experiment.to_string(),
        job: job.to_string(),
        config: cfg.to_string(),
        metric: "FAILED".to_string(),
        value: "-".to_string(),
        note: error.lines().next().unwrap_or_default().to_string(),
        selected: false,
    }
}

/// The row of a result read from or written to `path`.
pub(crate) fn row_of(r: &ResultRecord, path: &Path, prefix: &str) -> Row {
    let primary = if r.primary_metric.is_empty() {
        "metric".to_string()
    } else {
        r.primary_metric.clone()
    };
    let value = match (r.is_ok(), r.test_value()) {
        (false, _) => r.status.clone(),
        (true, Some(v)) => match r.test_metrics_std.get(&primary) {
            Some(sd) => format!("{v:.4} ± {sd:.4}"),
            None => format!("{v:.4}"),
        },
        (true, None) => "-".to_string(),
    };
    Row {
        experiment: r.experiment.clone(),
        job: r.job.clone(),
        config: r.config.clone(),
        metric: primary,
        value,
        note: format!("{prefix}{}", path.display()),
        selected: false,
    }
}

/// The complete result in `dir` written for `hash`, if there is one. Complete means the result
/// was written for these settings and every head it names is still the file it was written
/// with; a result whose head was deleted or changed is redone (and says so).
pub(crate) fn complete_result(dir: &Path, hash: &str) -> Option<ResultRecord> {
    let path = outdir::results_file(dir);
    let r = ResultRecord::read(&path).ok()?;
    if r.config_hash != hash {
        return None;
    }
    if let Err(why) = verify_heads(dir, &r) {
        eprintln!("{}: {why}; redoing it", path.display());
        return None;
    }
    Some(r)
}

/// The row of a result that [`complete_result`] verified earlier in this process (the survey):
/// its hash is checked again, its heads are not hashed a second time.
pub(crate) fn verified_row(dir: &Path, hash: &str) -> Option<Row> {
    let path = outdir::results_file(dir);
    let r = ResultRecord::read(&path).ok()?;
    (r.config_hash == hash).then(|| row_of(&r, &r.path, crate::table::DONE_EARLIER))
}

/// The row of [`complete_result`].
pub(crate) fn complete_row(dir: &Path, hash: &str) -> Option<Row> {
    complete_result(dir, hash).map(|r| row_of(&r, &r.path, crate::table::DONE_EARLIER))
}

/// Checks every head a result names against the SHA-256 recorded with it.
fn verify_heads(dir: &Path, r: &ResultRecord) -> Result<(), String> {
    for run in &r.runs {
        let (Some(file), Some(sha)) = (&run.head_file, &run.head_sha256) else {
            continue;
        };
        let head = dir.join(file);
        match sha256_file(&head) {
            Ok(actual) if actual == *sha => {}
            Ok(_) => {
                return Err(format!(
                    "its head {} was changed since it was written",
                    head.display()
                ))
            }
            Err(_) => return Err(format!("its head {} is missing", head.display())),
        }
    }
    Ok(())
}

/// Converts a finished trainee's outcome to a run record (metrics by name).
pub(crate) fn run_record(outcome: &RunOutcome, names: &[String]) -> RunRecord {
    let by_name =
        |values: &[f64]| -> Metrics { names.iter().cloned().zip(values.iter().copied()).collect() };
    let last = outcome.last();
    let best = outcome
        .best_epoch
        .and_then(|e| outcome.history.iter().find(|h| h.epoch == e));
    let (status, error) = match &outcome.stop {
        Some(Stop::Diverged { reason }) => ("diverged", Some(reason.clone())),
        Some(Stop::Failed { reason }) => ("failed", Some(reason.clone())),
        None => ("ok", None),
    };
    RunRecord {
        seed: outcome.seed,
        status: status.to_string(),
        error,
        test_metrics: by_name(&outcome.test_metrics),
        test_loss: outcome.test_loss,
        train_metrics: last.map(|l| by_name(&l.train_metrics)).unwrap_or_default(),
        train_loss: last.map(|l| l.train_loss),
        val_metrics: last.and_then(|l| l.val_metrics.as_deref().map(by_name)),
        best_epoch: outcome.best_epoch,
        best_val_metrics: best.and_then(|b| b.val_metrics.as_deref().map(by_name)),
        last_epoch: last.map(|l| l.epoch),
        steps: outcome.steps,
        final_lr: last.map(|l| l.lr),
        head_file: None,
        head_sha256: None,
        test_details: outcome.test_details.clone(),
        train_s: outcome.train_s,
        eval_s: outcome.eval_s,
    }
}

/// Mean and sample standard deviation of each metric over runs (std only with 2+ values).
pub fn mean_std(values: &[&Metrics]) -> (Metrics, Option<Metrics>) {
    let mut mean = BTreeMap::new();
    let mut std = BTreeMap::new();
    let Some(first) = values.first() else {
        return (mean, None);
    };
    for name in first.keys() {
        let xs: Vec<f64> = values.iter().filter_map(|m| m.get(name).copied()).collect();
        let n = xs.len() as f64;
        let mu = xs.iter().sum::<f64>() / n;
        mean.insert(name.clone(), mu);
        if xs.len() > 1 {
            let var = xs.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / (n - 1.0);
            std.insert(name.clone(), var.sqrt());
        }
    }
    let std = (values.len() > 1).then_some(std);
    (mean, std)
}

/// The parts of a `results.json` that differ between training and eval-only jobs.
pub struct RecordParts<'a> {
    pub(crate) job_name: &'a str,
    pub(crate) cfg_name: &'a str,
    pub(crate) config_hash: String,
    pub(crate) hyper: serde_json::Value,
    pub(crate) train_encoder: bool,
    pub(crate) epochs: u32,
    pub(crate) runs: Vec<RunRecord>,
    pub(crate) train_size: i64,
    pub(crate) test_size: i64,
    /// `(fraction, size, stratified)` of the validation split.
    pub(crate) validation: Option<(f64, i64, bool)>,
    pub(crate) num_outputs: u32,
    pub(crate) timings: EncodeTimings,
    /// How the train and test split were served (`""` for a split not used).
    pub(crate) features: [&'static str; 2],
    pub(crate) evaluated_head: Option<String>,
}

/// Assembles the result of one config from its runs: the mean (and std) over the seeds that
/// finished, validation, timings, identities and versions.
pub(crate) fn build_record(
    ctx: &Ctx<'_>,
    ec: &ExpCtx<'_>,
    task: &TaskEntry,
    p: RecordParts<'_>,
) -> ResultRecord {
    let exp = ec.exp;
    let names = metric_names(task);
    let primary = names
        .first()
        .cloned()
        .unwrap_or_else(|| "metric".to_string());
    let finished: Vec<&RunRecord> = p.runs.iter().filter(|r| r.is_ok()).collect();
    let diverged = p.runs.iter().find(|r| r.status == "diverged");
    let (test_metrics, test_metrics_std) =
        mean_std(&finished.iter().map(|r| &r.test_metrics).collect::<Vec<_>>());
    let (train_metrics, _) = mean_std(
        &finished
            .iter()
            .map(|r| &r.train_metrics)
            .collect::<Vec<_>>(),
    );
    let mean_of = |f: &dyn Fn(&RunRecord) -> Option<f64>| -> Option<f64> {
        let xs: Vec<f64> = finished.iter().filter_map(|r| f(r)).collect();
        (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
    };
    let validation = p.validation.map(|(fraction, size, stratified)| {
        let last: Vec<&Metrics> = finished
            .iter()
            .filter_map(|r| r.val_metrics.as_ref())
            .collect();
        let best: Vec<&Metrics> = finished
            .iter()
            .filter_map(|r| r.best_val_metrics.as_ref())
            .collect();
        ValidationRecord {
            fraction,
            size,
            stratified,
            metrics: mean_std(&last).0,
            best_metrics: mean_std(&best).0,
        }
    });
    let timings = Timings {
        decode: p.timings.decode_s,
        encode: p.timings.encode_s,
        encode_wall: p.timings.wall_s,
        from_cache: p.timings.from_cache,
        features: [("train", p.features[0]), ("test", p.features[1])]
            .into_iter()
            .filter(|(_, how)| !how.is_empty())
            .map(|(split, how)| (split.to_string(), how.to_string()))
            .collect(),
        train: p.runs.iter().map(|r| r.train_s).sum(),
        eval: p.runs.iter().map(|r| r.eval_s).sum(),
    };
    let first = p.runs.first();
    ResultRecord {
        schema: SCHEMA.to_string(),
        status: if diverged.is_some() { "diverged" } else { "ok" }.to_string(),
        error: diverged.and_then(|r| r.error.clone()),
        experiment: exp.name.clone(),
        job: p.job_name.to_string(),
        config: p.cfg_name.to_string(),
        config_hash: p.config_hash,
        task: TaskRecord {
            name: task.info.name.to_string(),
            family: task.info.family.to_string(),
            plugin: PluginRef {
                name: task.plugin.name.clone(),
                version: task.plugin.version.clone(),
            },
        },
        encoder: EncoderRecord {
            name: exp.encoder.clone(),
            plugin: PluginRef {
                name: ec.entry.plugin.name.clone(),
                version: ec.entry.plugin.version.clone(),
            },
            weights: exp.weights.display().to_string(),
            weights_sha256: ec.weights_sha256.clone(),
            options: crate::plan::encoder_options(exp, p.train_encoder).clone(),
        },
        hyperparameters: p.hyper,
        train_encoder: p.train_encoder,
        primary_metric: primary.clone(),
        higher_is_better: higher_is_better(task),
        repeats: p.runs.len() as u32,
        test_accuracy: test_metrics.get(&primary).copied(),
        train_accuracy: train_metrics.get(&primary).copied(),
        test_metrics,
        test_metrics_std: test_metrics_std.unwrap_or_default(),
        train_metrics,
        test_loss: mean_of(&|r| r.test_loss),
        train_loss: mean_of(&|r| r.train_loss),
        validation,
        epochs: p.epochs,
        train_size: p.train_size,
        test_size: p.test_size,
        num_outputs: p.num_outputs,
        timings_s: timings,
        device: device_name(ctx.opts.device),
        versions: Versions {
            virb: env!("CARGO_PKG_VERSION").to_string(),
            plugin_api: PLUGIN_API_VERSION.to_string(),
            libtorch: LIBTORCH_VERSION.to_string(),
        },
        test_details: finished
            .first()
            .map(|r| r.test_details.clone())
            .unwrap_or_default(),
        head_file: first.and_then(|r| r.head_file.clone()),
        head_sha256: first.and_then(|r| r.head_sha256.clone()),
        runs: p.runs,
        evaluated_head: p.evaluated_head,
        finished_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        path: Default::default(),
    }
}

/// Writes `results.json` of one config (last, atomically: its presence means the result is
/// complete) and returns its row.
pub(crate) fn write_record(
    ctx: &Ctx<'_>,
    ec: &ExpCtx<'_>,
    task: &TaskEntry,
    p: RecordParts<'_>,
) -> Result<Row, JobError> {
    let dir = outdir::result_dir(&ctx.opts.out, &ec.exp.name, p.job_name, p.cfg_name);
    let record = build_record(ctx, ec, task, p);
    let path = outdir::results_file(&dir);
    outdir::write_json(&path, &record).map_err(|e| {
        JobError::Other(format!(
            "cannot write results.json in {}: {e}",
            dir.display()
        ))
    })?;
    Ok(row_of(&record, &path, ""))
}
