//! The worker loop: a worker walks the surveyed units longest first and does each one that no
//! other worker holds. Several workers (processes on one machine, one per device, or Slurm
//! array tasks on many machines) share one `--out`:
//!
//! * a unit is claimed before any work on it (`<out>/<exp>/.claims/<job>.claim`, a lease kept
//!   by a heartbeat; a dead worker's claim is taken over, see [`crate::claims`]), and checked
//!   again once claimed, since another worker may just have finished it;
//! * when a unit ends, its owner writes `<out>/<exp>/.claims/<job>.done` with the run's id
//!   (`VIRB_RUN_ID`, shared by every worker of a run) and the outcome: a unit that failed in
//!   this run is not retried by another worker of it, and is retried by the next run;
//! * an eval-only unit waits until the units whose heads it evaluates have ended (in any worker),
//!   unless none of them is claimed or still to do here (it then runs, and says what is missing);
//! * a unit that fails because the device ran out of memory is retried once with half the
//!   batch size, and then fails, saying so.
//!
//! When nothing is left that this worker can start, it waits for the units others hold, and
//! takes over the claims of workers that died.
use crate::claims::{self, Attempt, LeaseOptions};
use crate::config::JobConfig;
use crate::drive::run_job;
use crate::outdir;
use crate::plan::{Ctx, ExpCtx};
use crate::records::{complete_result, complete_row, failed_row, row_of, verified_row};
use crate::survey::{Survey, Unit};
use crate::table::Row;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, time::Duration};

/// What `<job>.done` holds.
#[derive(Serialize, Deserialize)]
pub(crate) struct DoneMarker {
    /// The run's id.
    pub run_id: String,
    /// The worker that did it.
    pub worker: String,
    /// `ok` or `failed`.
    pub outcome: String,
    /// The first error, when failed.
    pub error: Option<String>,
    /// Unix seconds.
    pub at: u64,
}

/// How often a worker looks again at units others hold.
const POLL: Duration = Duration::from_millis(500);

/// The done marker of a unit, if one was written by this run.
pub(crate) fn done_marker(
    out: &std::path::Path,
    exp: &str,
    job: &str,
    run_id: &str,
) -> Option<DoneMarker> {
    let text = std::fs::read_to_string(outdir::done_file(out, exp, job)).ok()?;
    let m: DoneMarker = serde_json::from_str(&text).ok()?;
    (m.run_id == run_id).then_some(m)
}

/// Whether the out-of-memory message of libtorch (CUDA, or the CPU allocator) is in `text`.
pub(crate) fn is_out_of_memory(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("out of memory") || t.contains("cublas_status_alloc_failed")
}

/// Runs the units this worker can take; returns the rows of every unit of the survey (those
/// others did are read from `--out`).
pub(crate) fn work(ctx: &Ctx<'_>, survey: &Survey<'_>) -> Vec<Row> {
    let opts = ctx.opts;
    let lease = LeaseOptions::new(opts.lease);
    let mut ended: BTreeMap<usize, Vec<Row>> = BTreeMap::new();
    // The experiment whose encoder is loaded (one at a time: device memory).
    let mut current: Option<(usize, ExpCtx<'_>)> = None;
    let mut waiting_said: Vec<usize> = Vec::new();
    loop {
        let mut started = false;
        let mut left = false;
        for (i, u) in survey.units.iter().enumerate() {
            if ended.contains_key(&i) {
                continue;
            }
            let exp = survey.experiments[u.exp].exp;
            let label = survey.label(u);
            // A unit the survey found a problem with was reported before the run started.
            if u.problem.is_some() || survey.experiments[u.exp].ready.is_err() {
                ended.insert(i, rows_on_disk(ctx, survey, u, None));
                continue;
            }
            if let Some(rows) = settled(ctx, survey, u) {
                ended.insert(i, rows);
                continue;
            }
            left = true;
            if u.eval_only && sources_pending(ctx, survey, u, &ended) {
                continue;
            }
            let claim_path = outdir::claim_file(&opts.out, &exp.name, u.job_name);
            let claim = match claims::try_claim(&claim_path, &label, &lease) {
                Ok(Attempt::Acquired(c)) => c,
                Ok(Attempt::Held(h)) => {
                    if !waiting_said.contains(&i) {
                        eprintln!(
                            "{label}: held by worker {} on {} (pid {}); doing other work meanwhile",
                            h.worker, h.host, h.pid
                        );
                        waiting_said.push(i);
                    }
                    continue;
                }
                Err(e) => {
                    let e = format!(
                        "cannot claim it ({}: {e}); check that --out is writable",
                        claim_path.display()
                    );
                    ended.insert(i, failed_rows(survey, u, &e));
                    continue;
                }
            };
            // Another worker may have finished it between the look above and the claim.
            if let Some(rows) = settled(ctx, survey, u) {
                claim.release();
                ended.insert(i, rows);
                continue;
            }
            started = true;
            eprintln!("{label}: claimed by worker {}", claims::worker_id());
            let ec = match &current {
                Some((e, _)) if *e == u.exp => current.take(),
                _ => {
                    // Free the previous experiment's encoder before loading another.
                    drop(current.take());
                    match &survey.experiments[u.exp].ready {
                        Ok((entry, _, sha)) => Some((
                            u.exp,
                            ExpCtx {
                                exp,
                                entry,
                                weights_sha256: sha.clone(),
                                encoder: std::cell::OnceCell::new(),
                            },
                        )),
                        Err(_) => None,
                    }
                }
            };
            let rows = match &ec {
                Some((_, ec)) => run_unit(ctx, ec, u),
                None => rows_on_disk(ctx, survey, u, None),
            };
            current = ec;
            let failed: Vec<&Row> = rows.iter().filter(|r| r.metric == "FAILED").collect();
            if claim.is_held() {
                let marker = DoneMarker {
                    run_id: opts.run_id.clone(),
                    worker: claims::worker_id().to_string(),
                    outcome: if failed.is_empty() { "ok" } else { "failed" }.into(),
                    error: failed.first().map(|r| r.note.clone()),
                    at: unix_now(),
                };
                let path = outdir::done_file(&opts.out, &exp.name, u.job_name);
                if let Err(e) = outdir::write_json(&path, &marker) {
                    eprintln!("warning: {label}: cannot write {}: {e}", path.display());
                }
            } else {
                eprintln!(
                    "warning: {label}: another worker took this unit over while it ran (was this worker stopped for longer than --lease?); it finishes it ({})",
                    claim.path().display()
                );
            }
            claim.release();
            ended.insert(i, rows);
            // Look again from the longest unit: while this one ran, others may have freed up.
            break;
        }
        if !left {
            break;
        }
        // Nothing this worker can start: help encode another worker's large split, or wait.
        if !started && !crate::shards::help(ctx, survey) {
            std::thread::sleep(POLL);
        }
    }
    ended.into_values().flatten().collect()
}

/// The rows of a unit that needs nothing more from this worker: complete for the same settings,
/// or ended in this run (in another worker); None when there is work left.
fn settled(ctx: &Ctx<'_>, survey: &Survey<'_>, u: &Unit<'_>) -> Option<Vec<Row>> {
    let exp = &survey.experiments[u.exp].exp.name;
    if let Some(marker) = done_marker(&ctx.opts.out, exp, u.job_name, &ctx.opts.run_id) {
        return Some(rows_on_disk(ctx, survey, u, Some(&marker)));
    }
    // Held by a live worker: not settled, and not worth reading (verifying a result hashes
    // its heads, hundreds of MB for a pixel-wise head) until it is released.
    let held = claims::holder(&outdir::claim_file(&ctx.opts.out, exp, u.job_name))
        .ok()
        .flatten()
        .is_some_and(|h| {
            h.worker != claims::worker_id()
                && !claims::is_stale(&h, &LeaseOptions::new(ctx.opts.lease))
        });
    if held {
        return None;
    }
    if u.problem.is_none() && !ctx.opts.force && !u.configs.is_empty() {
        let rows: Option<Vec<Row>> = u
            .configs
            .iter()
            .map(|c| {
                let dir = outdir::result_dir(&ctx.opts.out, exp, u.job_name, &c.name);
                // The survey verified this result's heads already.
                if c.done {
                    verified_row(&dir, &c.hash)
                } else {
                    complete_row(&dir, &c.hash)
                }
            })
            .collect();
        if let Some(rows) = rows {
            return Some(with_selection(ctx, exp, u.job_name, rows));
        }
    }
    None
}

/// Whether an eval-only unit must wait: one of the units whose heads it evaluates is still to
/// do here or held by a live worker.
fn sources_pending(
    ctx: &Ctx<'_>,
    survey: &Survey<'_>,
    u: &Unit<'_>,
    ended: &BTreeMap<usize, Vec<Row>>,
) -> bool {
    let exp = &survey.experiments[u.exp].exp.name;
    survey.units.iter().enumerate().any(|(i, s)| {
        s.exp == u.exp
            && u.sources.contains(&s.job_name)
            && !ended.contains_key(&i)
            && settled(ctx, survey, s).is_none()
    }) || u.sources.iter().any(|src| {
        // A source outside this worker's units (`--only`) that another worker holds.
        !survey
            .units
            .iter()
            .any(|s| s.exp == u.exp && s.job_name == *src)
            && claims::holder(&outdir::claim_file(&ctx.opts.out, exp, src))
                .ok()
                .flatten()
                .is_some_and(|h| !claims::is_stale(&h, &LeaseOptions::new(ctx.opts.lease)))
    })
}

/// Runs one unit; a failure for lack of device memory is retried once with half the batch.
fn run_unit(ctx: &Ctx<'_>, ec: &ExpCtx<'_>, u: &Unit<'_>) -> Vec<Row> {
    let exp = &ec.exp.name;
    let attempt = |job: &JobConfig| -> Vec<Row> {
        let injected = std::env::var("VIRB_FAULT_OOM_ABOVE_BATCH")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|limit| job.batch_size > *limit);
        let outcome = match injected {
            Some(limit) => Err(crate::error::JobError::Other(format!(
                "CUDA out of memory (injected: batch {} > VIRB_FAULT_OOM_ABOVE_BATCH={limit})",
                job.batch_size
            ))),
            None => run_job(ctx, ec, u.job_name, job),
        };
        match outcome {
            Ok(rows) => rows,
            Err(e) => fail_job(exp, u.job_name, job, &e.to_string()),
        }
    };
    let rows = attempt(u.job);
    let oom = rows
        .iter()
        .any(|r| r.metric == "FAILED" && is_out_of_memory(&r.note));
    if !oom || u.job.batch_size < 2 {
        return rows;
    }
    let mut halved = u.job.clone();
    halved.batch_size = u.job.batch_size / 2;
    halved.test_batch_size = Some((u.job.eval_batch_size() / 2).max(1));
    eprintln!(
        "{exp}/{}: out of memory on {} at batch size {}; retrying at {} (the result records the batch size it used)",
        u.job_name,
        virb_plugin_api::device_name(ctx.opts.device),
        u.job.batch_size,
        halved.batch_size
    );
    let rows = attempt(&halved);
    rows.into_iter()
        .map(|mut r| {
            if r.metric == "FAILED" && is_out_of_memory(&r.note) {
                r.note = format!(
                    "out of memory on {} at batch size {} and again at {}: lower batch_size or use a device with more memory",
                    virb_plugin_api::device_name(ctx.opts.device),
                    u.job.batch_size,
                    halved.batch_size
                );
                eprintln!("error: {exp}/{}: {}", u.job_name, r.note);
            }
            r
        })
        .collect()
}

/// The rows of a unit as `--out` has them: each config's complete result (done in this run when
/// the unit's `marker` of this run says so, else "done earlier"), or the unit's error, or "not
/// done".
pub(crate) fn rows_on_disk(
    ctx: &Ctx<'_>,
    survey: &Survey<'_>,
    u: &Unit<'_>,
    marker: Option<&DoneMarker>,
) -> Vec<Row> {
    let error = marker.and_then(|m| m.error.as_deref());
    let prefix = if marker.is_some() {
        ""
    } else {
        crate::table::DONE_EARLIER
    };
    let exp = &survey.experiments[u.exp].exp.name;
    if let Some(p) = &u.problem {
        return failed_rows(survey, u, p);
    }
    if let Err(why) = &survey.experiments[u.exp].ready {
        return failed_rows(survey, u, why);
    }
    let rows = u
        .configs
        .iter()
        .map(|c| {
            let dir = outdir::result_dir(&ctx.opts.out, exp, u.job_name, &c.name);
            complete_result(&dir, &c.hash)
                .map(|r| row_of(&r, &r.path, prefix))
                .unwrap_or_else(|| {
                    failed_row(
                        exp,
                        u.job_name,
                        &c.name,
                        error.unwrap_or("not done: no complete result"),
                    )
                })
        })
        .collect();
    with_selection(ctx, exp, u.job_name, rows)
}

/// Marks the selected config (from `<job>.selection.json`).
fn with_selection(ctx: &Ctx<'_>, exp: &str, job: &str, mut rows: Vec<Row>) -> Vec<Row> {
    let selected = std::fs::read_to_string(outdir::selection_file(&ctx.opts.out, exp, job))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("selected_config")?.as_str().map(str::to_string));
    for r in rows.iter_mut() {
        r.selected = selected.as_deref() == Some(r.config.as_str());
    }
    rows
}

/// One failed row per config of a unit (one `-` row when it has none), already reported.
pub(crate) fn failed_rows(survey: &Survey<'_>, u: &Unit<'_>, error: &str) -> Vec<Row> {
    let exp = &survey.experiments[u.exp].exp.name;
    job_rows(exp, u.job_name, u.job, error)
}

/// The failed rows of a job this worker ran, reported.
fn fail_job(exp: &str, job_name: &str, job: &JobConfig, error: &str) -> Vec<Row> {
    eprintln!("error: experiment `{exp}`, job `{job_name}`: {error}");
    job_rows(exp, job_name, job, error)
}

fn job_rows(exp: &str, job_name: &str, job: &JobConfig, error: &str) -> Vec<Row> {
    if job.training_configs.is_empty() {
        return vec![failed_row(exp, job_name, "-", error)];
    }
    job.training_configs
        .keys()
        .map(|cfg| failed_row(exp, job_name, cfg, error))
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A run id for a run started here (workers it starts share it through `VIRB_RUN_ID`).
pub(crate) fn new_run_id() -> String {
    std::env::var("VIRB_RUN_ID")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{}-{}", unix_now(), claims::worker_id().replace(':', "-")))
}
