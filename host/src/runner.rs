//! `virb-host run`: units = experiments x virb-config jobs.
//!
//! Everything that can be checked is checked before any work starts: the configs (tasks, task
//! options, names and the folders they lead to, encoders, `--out`) stop the run at the first
//! mistake, with its file and line; then the survey ([`crate::survey`]) looks at every weights
//! file and data folder of the whole run and lists every problem at once. Then the units run
//! ([`crate::schedule`]): configs whose `results.json` is complete for the same settings are
//! skipped, the encoder is loaded only when something is left to do, and each seed's run is
//! saved as soon as it finishes. A failing job or config is reported and skipped; the others go
//! on.
use crate::config::{self, ConfigError};
use crate::plan::{Ctx, RunOptions, RunSummary, SetupError};
use crate::plugins::Registry;

/// Loads and checks the run's configuration, surveys it ([`crate::survey`]) and hands the
/// survey to `then`; an invalid configuration is an error before anything else.
pub fn surveyed<T>(
    opts: &RunOptions,
    registry: &Registry,
    then: impl FnOnce(&Ctx<'_>, &crate::survey::Survey<'_>) -> T,
) -> Result<T, SetupError> {
    let mut experiments = config::load_experiment_list(&opts.experiment_list)?;
    for note in crate::precision::apply(&mut experiments, registry, &opts.precision) {
        eprintln!("note: {note}");
    }
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
    // A pattern that selects nothing is a typo, not a run with nothing to do.
    for pattern in &opts.only {
        let hits = experiments.iter().any(|e| {
            virb.jobs
                .keys()
                .any(|j| crate::survey::selected(std::slice::from_ref(pattern), &e.name, j))
        });
        if !hits {
            let exps: Vec<&str> = experiments.iter().map(|e| e.name.as_str()).collect();
            let jobs: Vec<&str> = virb.jobs.keys().map(String::as_str).collect();
            return Err(SetupError::Other(format!(
                "--only {pattern}: no (experiment, job) matches; experiments: {}; jobs: {} (write EXP/JOB, EXP or */JOB)",
                exps.join(", "),
                jobs.join(", ")
            )));
        }
    }
    let survey = crate::survey::survey(&ctx, &experiments, &virb);
    Ok(then(&ctx, &survey))
}

/// What a run does once surveyed: with problems, lists them all and starts nothing (unless
/// `--keep-going`); else this process works (one device), or starts one worker per device and
/// reads every result from `--out` when they end.
pub fn run(
    opts: &RunOptions,
    registry: &Registry,
    workers: Option<&crate::workers::Launch<'_>>,
) -> Result<RunSummary, SetupError> {
    surveyed(opts, registry, |ctx, survey| {
        let problems = survey.problems();
        if !problems.is_empty() {
            if !opts.keep_going {
                return Err(SetupError::Problems(problems));
            }
            eprintln!(
                "{} problem(s); --keep-going: running the rest",
                problems.len()
            );
            problems.iter().for_each(|p| eprintln!("  {p}"));
        }
        let rows = match workers {
            None => crate::schedule::work(ctx, survey),
            Some(launch) => {
                let outcome =
                    crate::workers::run_workers(launch, &opts.run_id).map_err(SetupError::Other)?;
                for (dev, code) in &outcome.exits {
                    if *code == Some(2) || code.is_none() {
                        eprintln!(
                            "error: the worker on {dev} {}; its units were left to the others or are reported below",
                            code.map(|c| format!("exited with status {c}"))
                                .unwrap_or_else(|| "was killed".into())
                        );
                    }
                }
                survey
                    .units
                    .iter()
                    .flat_map(|u| {
                        let exp = &survey.experiments[u.exp].exp.name;
                        let marker =
                            crate::schedule::done_marker(&opts.out, exp, u.job_name, &opts.run_id);
                        crate::schedule::rows_on_disk(ctx, survey, u, marker.as_ref())
                    })
                    .collect()
            }
        };
        let failures = rows.iter().filter(|r| r.metric == "FAILED").count();
        Ok(RunSummary { rows, failures })
    })?
}
