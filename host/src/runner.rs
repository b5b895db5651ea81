//! `virb-host run`: jobs = experiments x virb-config entries.
//!
//! Everything that can be checked is checked before any work starts (configs, tasks, task
//! options, names and the folders they lead to, encoders, `--out`). Then per experiment the
//! weights are hashed, and each job runs through its driver ([`crate::drive`]): configs whose
//! `results.json` is complete for the same settings are skipped, the encoder is loaded only when
//! something is left to do, and each seed's run is saved as soon as it finishes. A failing job
//! or config is reported and skipped; the others go on.
use crate::config::{self, ConfigError, Experiment, JobConfig};
use crate::drive::run_job;
use crate::error::JobError;
use crate::hashing::sha256_file;
use crate::plan::{Ctx, ExpCtx, RunOptions, RunSummary, SetupError};
use crate::plugins::Registry;
use crate::records::failed_row;
use crate::table::Row;

/// Runs every job; returns the table rows, or an error when the configuration is invalid.
pub fn run(opts: &RunOptions, registry: &Registry) -> Result<RunSummary, SetupError> {
    let experiments = config::load_experiment_list(&opts.experiment_list)?;
    let mut virb = config::load_virb_config(&opts.virb_configs)?;
    if let Some(max) = opts.max_epochs {
        let capped: Vec<String> = virb
            .jobs
            .iter_mut()
            .filter(|(_, j)| j.num_epochs > max)
            .map(|(name, j)| {
                j.num_epochs = max;
                name.clone()
            })
            .collect();
        if !capped.is_empty() {
            eprintln!(
                "note: --max-epochs {max}: {} train for {max} epoch(s) only (a smoke test: schedules are compressed and the numbers are not those of the full run)",
                capped.join(", ")
            );
        }
    }
    for d in &virb.defaults {
        let at = d.line.map(|l| format!(":{l}")).unwrap_or_default();
        eprintln!("note: {}{at}: {d}", virb.path.display());
    }
    // Check everything that can be checked before any work starts.
    for (name, job) in &virb.jobs {
        let entry = registry
            .task(&job.task)
            .map_err(|e| virb.error(name, &["task"], e))?;
        let eval_only = !entry.info.evaluates_heads_of.is_empty();
        config::check_job_for_task(job, eval_only)
            .map_err(|(key, message)| virb.error(name, &[key], message))?;
    }
    crate::preflight::check_eval_only_names(&virb, registry)?;
    crate::preflight::check_task_options(&virb, registry)?;
    // Eval-only jobs evaluate heads that training jobs write: run them last.
    let mut jobs: Vec<(&String, &JobConfig)> = virb.jobs.iter().collect();
    jobs.sort_by_key(|(_, job)| {
        registry
            .task(&job.task)
            .map(|t| !t.info.evaluates_heads_of.is_empty())
            .unwrap_or(false)
    });
    for exp in &experiments {
        // With a refused plugin (built for another plugin-api or libtorch), the unknown encoder
        // may be one it provides: that experiment fails alone, with the reason, and the others
        // run. Without one, an unknown encoder is a mistake in the list and nothing runs.
        if registry.rejected.is_empty() {
            registry.encoder(&exp.encoder).map_err(|e| ConfigError {
                file: opts.experiment_list.clone(),
                line: exp.line,
                message: format!("experiment `{}`: {e}", exp.name),
            })?;
        }
    }
    crate::preflight::check_out_dir(&opts.out)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.decode_workers.max(1))
        .thread_name(|i| format!("virb-decode-{i}"))
        .build()
        .map_err(|e| SetupError::Other(format!("cannot start decoding threads: {e}")))?;
    let ctx = Ctx {
        opts,
        registry,
        pool,
    };
    let mut rows = Vec::new();
    for exp in &experiments {
        let prepared = registry
            .encoder(&exp.encoder)
            .map_err(JobError::Other)
            .and_then(|entry| {
                let what = if exp.weights.is_dir() {
                    "is a folder, not a weights file"
                } else if !exp.weights.exists() {
                    "not found"
                } else if !exp.weights.is_file() {
                    "is not a regular file"
                } else {
                    ""
                };
                if !what.is_empty() {
                    return Err(JobError::Other(format!(
                        "weights file {} {what} (experiment `{}` in {}); fix the path in the experiment list",
                        exp.weights.display(),
                        exp.name,
                        opts.experiment_list.display()
                    )));
                }
                Ok((entry, sha256_file(&exp.weights)?))
            });
        match prepared {
            Ok((entry, weights_sha256)) => {
                let ec = ExpCtx {
                    exp,
                    entry,
                    weights_sha256,
                    encoder: std::cell::OnceCell::new(),
                };
                for &(job_name, job) in &jobs {
                    match run_job(&ctx, &ec, job_name, job) {
                        Ok(job_rows) => rows.extend(job_rows),
                        Err(e) => rows.extend(failed_rows(exp, job_name, job, &e.to_string())),
                    }
                }
            }
            Err(e) => {
                for &(job_name, job) in &jobs {
                    rows.extend(failed_rows(exp, job_name, job, &e.to_string()));
                }
            }
        }
    }
    let failures = rows.iter().filter(|r| r.metric == "FAILED").count();
    Ok(RunSummary { rows, failures })
}

fn failed_rows(exp: &Experiment, job_name: &str, job: &JobConfig, error: &str) -> Vec<Row> {
    eprintln!(
        "error: experiment `{}`, job `{job_name}`: {error}",
        exp.name
    );
    if job.training_configs.is_empty() {
        return vec![failed_row(&exp.name, job_name, "-", error)];
    }
    job.training_configs
        .keys()
        .map(|cfg| failed_row(&exp.name, job_name, cfg, error))
        .collect()
}
