//! Progress of the submissions under `<out>/.slurm`, read from `<out>` itself (results.json
//! hashes and the workers' claim files) plus one `squeue` call for what Slurm still holds.
//! A unit submitted more than once is reported once, under its latest submission.
use super::{io, shell_quote, SlurmError, SubmissionRecord, Unit};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where one unit stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UnitState {
    /// Every config's results.json holds the expected hash.
    Done,
    /// `.claims/<job>.done` says it failed: the first line of its `error`.
    Failed(String),
    /// `.claims/<job>.claim` exists: the worker's host.
    Running(String),
    /// None of the above: how many configs are complete already.
    Pending(usize),
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// The state of `unit` from the files under `out`.
pub(crate) fn unit_state(out: &Path, unit: &Unit) -> UnitState {
    let done = unit
        .configs
        .iter()
        .filter(|(config, hash)| {
            let dir = crate::outdir::result_dir(out, &unit.experiment, &unit.job, config);
            read_json(&crate::outdir::results_file(&dir))
                .and_then(|v| {
                    v.get("config_hash")
                        .and_then(|h| h.as_str())
                        .map(|h| h == hash)
                })
                .unwrap_or(false)
        })
        .count();
    if done == unit.configs.len() {
        return UnitState::Done;
    }
    let claim = crate::outdir::claim_file(out, &unit.experiment, &unit.job);
    let ended = crate::outdir::done_file(out, &unit.experiment, &unit.job);
    if let Some(marker) = read_json(&ended).filter(|m| m["outcome"] == "failed") {
        if !claim.exists() {
            let error = marker
                .get("error")
                .and_then(|e| e.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| format!("(no `error` in {})", ended.display()));
            return UnitState::Failed(error.lines().next().unwrap_or("").to_string());
        }
    }
    if claim.exists() {
        let host = read_json(&claim)
            .and_then(|v| v.get("host").and_then(|h| h.as_str()).map(str::to_string))
            .unwrap_or_else(|| "an unknown host".to_string());
        return UnitState::Running(host);
    }
    UnitState::Pending(done)
}

/// Submission folders under `<out>/.slurm`, oldest first (`<timestamp>-<n>`, n numeric).
fn submissions(root: &Path) -> Result<Vec<PathBuf>, SlurmError> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("read", root)(e)),
    };
    let mut dirs: Vec<(String, u64, PathBuf)> = Vec::new();
    for entry in entries {
        let path = entry.map_err(io("read", root))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if let Some((stamp, n)) = name.rsplit_once('-') {
            if let Ok(n) = n.parse() {
                dirs.push((stamp.to_string(), n, path));
            }
        }
    }
    dirs.sort();
    Ok(dirs.into_iter().map(|(_, _, p)| p).collect())
}

/// The queue line for `ids`, from `squeue -h -j <ids> -o '%i %T %R'`.
fn queue(squeue: &Path, ids: &[String]) -> Vec<String> {
    if ids.is_empty() {
        return Vec::new();
    }
    let argv = [
        squeue.display().to_string(),
        "-h".into(),
        "-j".into(),
        ids.join(","),
        "-o".into(),
        "%i %T %R".into(),
    ];
    let command = argv
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    match Command::new(&argv[0]).args(&argv[1..]).output() {
        Err(e) => vec![format!("squeue not available: `{command}`: {e}")],
        Ok(o) if !o.status.success() => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let first = stderr.lines().next().unwrap_or("").trim().to_string();
            // Slurm forgets finished jobs after MinJobAge: not an error worth more than a line.
            vec![format!(
                "squeue not available: `{command}` failed ({}): {first}",
                o.status
            )]
        }
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            let lines: Vec<String> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| format!("  queue: {}", l.trim()))
                .collect();
            if lines.is_empty() {
                vec![format!(
                    "queue: no task of job {} is queued or running",
                    ids.join(", ")
                )]
            } else {
                let mut all = vec!["queue (job state reason):".to_string()];
                all.extend(lines);
                all
            }
        }
    }
}

/// Progress of every submission in `<out>/.slurm`: per unit, from `<out>`: done (every config's
/// `<out>/<exp>/<job>-<cfg>/results.json` holds `"config_hash": <hash>`), failed
/// (`<out>/<exp>/.claims/<job>.done` says `failed`: its `error`'s first line), running (a claim
/// `<out>/<exp>/.claims/<job>.claim`, its `host`), else pending; then the queue from `squeue`
/// (or "squeue not available: <why>"); last, "N done, M running, K failed, P pending".
pub fn status(out: &Path, squeue: &Path) -> Result<Vec<String>, SlurmError> {
    let root = out.join(".slurm");
    let dirs = submissions(&root)?;
    let mut lines = Vec::new();
    if dirs.is_empty() {
        lines.push(format!("no submissions under {}", root.display()));
    }
    let mut records: Vec<(PathBuf, SubmissionRecord)> = Vec::new();
    for dir in dirs {
        let file = dir.join("submission.json");
        let parsed = std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<SubmissionRecord>(&t).map_err(|e| e.to_string()));
        match parsed {
            Ok(record) => records.push((dir, record)),
            Err(e) => lines.push(format!("skipped {}: {e}", file.display())),
        }
    }
    // The latest submission of a unit is the one that counts.
    let mut seen = BTreeSet::new();
    let mut shown: Vec<Vec<(Unit, UnitState)>> = vec![Vec::new(); records.len()];
    for (i, (_, record)) in records.iter().enumerate().rev() {
        for unit in &record.units {
            if seen.insert(unit.key()) {
                shown[i].push((unit.clone(), unit_state(out, unit)));
            }
        }
    }
    let (mut done, mut running, mut failed, mut pending) = (0, 0, 0, 0);
    let mut ids = Vec::new();
    for ((dir, record), units) in records.iter().zip(shown) {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let arrays: Vec<String> = record
            .arrays
            .iter()
            .map(|a| format!("job {} ({}, {} tasks)", a.job_id, a.kind, a.tasks))
            .collect();
        lines.push(format!(
            "submission {name} at {}: {}",
            record.submitted_at,
            arrays.join(", ")
        ));
        if let Some(error) = &record.error {
            lines.push(format!(
                "  submission error: {}",
                error.lines().next().unwrap_or("")
            ));
        }
        ids.extend(record.arrays.iter().map(|a| a.job_id.clone()));
        if units.is_empty() {
            lines.push("  (every unit was submitted again later)".to_string());
        }
        // Back to units.txt order (they were collected newest-first).
        let mut units = units;
        units.sort_by_key(|(u, _)| record.units.iter().position(|r| r == u));
        for (unit, state) in units {
            let key = unit.key();
            lines.push(match state {
                UnitState::Done => {
                    done += 1;
                    format!("  done     {key}")
                }
                UnitState::Failed(error) => {
                    failed += 1;
                    format!("  failed   {key}: {error}")
                }
                UnitState::Running(host) => {
                    running += 1;
                    format!("  running  {key} on {host}")
                }
                UnitState::Pending(n) => {
                    pending += 1;
                    format!("  pending  {key} ({n}/{} configs done)", unit.configs.len())
                }
            });
        }
    }
    lines.extend(queue(squeue, &ids));
    lines.push(format!(
        "{done} done, {running} running, {failed} failed, {pending} pending"
    ));
    Ok(lines)
}
