//! Slurm submission: virb scales past one machine by handing its units of work (one experiment's
//! job each) to Slurm as job arrays, not by scheduling them itself.
//!
//! [`submit`] writes a submission folder `<out>/.slurm/<timestamp>-<n>/` holding
//! - `units.txt`: one `experiment/job` per line; training units first (line i+1 is the training
//!   array's task i), then the eval-only units (line n_train+i+1 is the eval-only array's task i);
//! - `job.sh`: the batch script. `#SBATCH` lines carry the options; the body picks its unit's line
//!   with `sed` from the array task id plus the offset given as the script's first argument and
//!   runs the worker command line with `--only <experiment/job>`. Every word is shell-quoted, so
//!   paths with spaces or quotes survive;
//! - `logs/%A_%a.out`: each task's output;
//! - `submission.json`: the job ids, the units with the config hashes that mark them complete,
//!   the sbatch commands and the time. [`status`] reads it back.
//!
//! Training units form one array; eval-only units (they read heads that training units write) form
//! a second array submitted with `--dependency=afterany:<training array>`: `afterany`, not
//! `afterok`, so one failed training task does not cancel every evaluation (an eval-only unit whose
//! heads are missing fails on its own, with a message). `sbatch --parsable` gives the ids.
//! Completion is read from `<out>` itself (results.json hashes, claim files), not from Slurm's
//! accounting, which a cluster may not keep.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

mod script;
mod status;
pub use script::{job_script, shell_quote};
pub use status::status;

/// One unit of work the array runs: an (experiment, job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// The experiment (encoder checkpoint) name.
    pub experiment: String,
    /// The job name.
    pub job: String,
    /// Whether the job only evaluates heads that training units write.
    pub eval_only: bool,
    /// config name -> config hash expected in results.json's `config_hash` when complete
    pub configs: Vec<(String, String)>,
}

impl Unit {
    /// `experiment/job`, the value of the worker's `--only`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.experiment, self.job)
    }
}

/// sbatch options (from the site file's `[slurm]` table and the command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmOptions {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--gres`, e.g. `gpu:1`.
    pub gres: Option<String>,
    /// `--time`, e.g. `12:00:00`.
    pub time: Option<String>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--mem`, e.g. `64G`.
    pub mem: Option<String>,
    /// Passed to sbatch verbatim, before the script.
    pub extra_args: Vec<String>,
    /// At most this many tasks of an array run at once (`--array=0-N%K`).
    pub max_parallel: Option<u32>,
    /// The sbatch program: `sbatch` (found on PATH) by default.
    pub sbatch: PathBuf,
}

impl Default for SlurmOptions {
    fn default() -> Self {
        SlurmOptions {
            partition: None,
            account: None,
            gres: None,
            time: None,
            cpus_per_task: None,
            mem: None,
            extra_args: Vec::new(),
            max_parallel: None,
            sbatch: PathBuf::from("sbatch"),
        }
    }
}

/// What [`submit`] submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The submission folder, `<out>/.slurm/<timestamp>-<n>`.
    pub dir: PathBuf,
    /// The job id of each array: training first, then eval-only (when there are both).
    pub job_ids: Vec<String>,
    /// Number of units submitted.
    pub units: usize,
}

/// Why a submission or a status query failed.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// `submit` was given no units.
    #[error("nothing to submit: no units to run (every selected config is already complete?)")]
    NothingToSubmit,
    /// The worker command line is empty.
    #[error("nothing to submit: the worker command line is empty")]
    NoWorker,
    /// A unit's name cannot be written to units.txt.
    #[error("cannot submit unit {unit:?}: {why}")]
    BadUnit {
        /// `experiment/job`.
        unit: String,
        /// What is wrong.
        why: String,
    },
    /// A file or folder could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`write`, `create`, `read`).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// sbatch could not be run, failed, or printed no job id.
    #[error("`{command}` {problem}\n  {hint}")]
    Sbatch {
        /// The command line, shell-quoted.
        command: String,
        /// What went wrong, with sbatch's stderr.
        problem: String,
        /// What to do.
        hint: String,
    },
    /// The training array was submitted but the eval-only one failed.
    #[error("{source}\n  job {} was already submitted (recorded in {}/submission.json): let it run and submit again for the rest, or cancel it with `scancel {}`", submitted.join(", "), dir.display(), submitted.join(" "))]
    Partial {
        /// Job ids already submitted.
        submitted: Vec<String>,
        /// The submission folder.
        dir: PathBuf,
        /// Why the next sbatch failed.
        source: Box<SlurmError>,
    },
}

fn write_record(path: &Path, record: &SubmissionRecord) -> Result<(), SlurmError> {
    let text = serde_json::to_string_pretty(record).map_err(|e| io("write", path)(e.into()))?;
    std::fs::write(path, text + "\n").map_err(io("write", path))
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SlurmError + 'a {
    move |source| SlurmError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// One sbatch call, as recorded in submission.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ArrayRecord {
    /// Slurm's job id of the array.
    pub job_id: String,
    /// `train` or `eval-only`.
    pub kind: String,
    /// 0-based index in units.txt of the array's task 0.
    pub first_unit: usize,
    /// Number of tasks.
    pub tasks: usize,
    /// The sbatch command line.
    pub command: Vec<String>,
}

/// submission.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SubmissionRecord {
    /// The arrays submitted, training first.
    pub arrays: Vec<ArrayRecord>,
    /// Every unit, in units.txt order, with its config hashes.
    pub units: Vec<Unit>,
    /// The worker command line before `--only`.
    pub worker_argv: Vec<String>,
    /// When it was submitted (RFC 3339, UTC).
    pub submitted_at: String,
    /// Set when an array was submitted but a later one failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Creates a fresh `<out>/.slurm/<timestamp>-<n>` folder (n counts submissions in one second).
fn new_submission_dir(out: &Path, stamp: &str) -> Result<PathBuf, SlurmError> {
    let root = out.join(".slurm");
    std::fs::create_dir_all(&root).map_err(io("create", &root))?;
    for n in 1..10_000 {
        let dir = root.join(format!("{stamp}-{n}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io("create", &dir)(e)),
        }
    }
    Err(io("create", &root)(std::io::Error::other(
        "10000 submissions in one second",
    )))
}

/// Runs one `sbatch --parsable` and returns the job id.
fn run_sbatch(argv: &[String]) -> Result<String, SlurmError> {
    let command = argv
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let err = |problem: String, hint: &str| SlurmError::Sbatch {
        command: command.clone(),
        problem,
        hint: hint.to_string(),
    };
    let output = Command::new(&argv[0]).args(&argv[1..]).output().map_err(|e| {
        err(
            format!("could not be run: {e}"),
            "submit from a machine where Slurm's sbatch is installed and on PATH (a cluster login node)",
        )
    })?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if !output.status.success() {
        return Err(err(
            format!("failed ({}): {stderr}", output.status),
            "check the Slurm options (virb.toml's [slurm] table or the command-line flags: partition, account, gres, time, mem) against `sinfo` and your cluster's documentation",
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    // --parsable prints `<id>` or `<id>;<cluster>`.
    let id = stdout
        .trim()
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(err(
            format!(
                "printed {:?}, not a job id (stderr: {stderr})",
                stdout.trim()
            ),
            "check that the program is Slurm's sbatch",
        ));
    }
    Ok(id)
}

/// Submits the units as job arrays: training units as one array (task i runs units[i]),
/// eval-only units (they read heads the training units write) as a second array with
/// `--dependency=afterany:<first array id>` (see the module documentation for the files written).
/// `worker_argv` is the full command line each task runs before `--only`. Nothing is submitted
/// when `units` is empty ([`SlurmError::NothingToSubmit`]).
pub fn submit(
    out: &Path,
    units: &[Unit],
    worker_argv: &[String],
    opts: &SlurmOptions,
) -> Result<Submission, SlurmError> {
    if units.is_empty() {
        return Err(SlurmError::NothingToSubmit);
    }
    if worker_argv.is_empty() {
        return Err(SlurmError::NoWorker);
    }
    for u in units {
        let bad = |s: &str| s.is_empty() || s.contains('/') || s.chars().any(char::is_control);
        if bad(&u.experiment) || bad(&u.job) {
            let why =
                "experiment and job names must be non-empty, without `/` or control characters";
            return Err(SlurmError::BadUnit {
                unit: u.key(),
                why: why.into(),
            });
        }
    }
    let cwd = std::env::current_dir().map_err(io("read", Path::new(".")))?;
    let out = if out.is_absolute() {
        out.to_path_buf()
    } else {
        cwd.join(out)
    };
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let stamp: String = now.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let dir = new_submission_dir(&out, &stamp)?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(io("create", &logs))?;

    // Training units first, eval-only after: units.txt's order.
    let ordered: Vec<Unit> = units
        .iter()
        .filter(|u| !u.eval_only)
        .chain(units.iter().filter(|u| u.eval_only))
        .cloned()
        .collect();
    let n_train = ordered.iter().filter(|u| !u.eval_only).count();
    let list: String = ordered.iter().map(|u| u.key() + "\n").collect();
    let units_file = dir.join("units.txt");
    std::fs::write(&units_file, list).map_err(io("write", &units_file))?;
    let script = dir.join("job.sh");
    std::fs::write(&script, job_script(&dir, &cwd, worker_argv, opts))
        .map_err(io("write", &script))?;

    let mut record = SubmissionRecord {
        arrays: Vec::new(),
        units: ordered.clone(),
        worker_argv: worker_argv.to_vec(),
        submitted_at: now,
        error: None,
    };
    let groups = [
        ("train", 0, n_train),
        ("eval-only", n_train, ordered.len() - n_train),
    ];
    let mut result = Ok(());
    for (kind, first, tasks) in groups {
        if tasks == 0 {
            continue;
        }
        let mut argv = vec![opts.sbatch.display().to_string(), "--parsable".to_string()];
        let limit = opts
            .max_parallel
            .map(|k| format!("%{k}"))
            .unwrap_or_default();
        argv.push(format!("--array=0-{}{limit}", tasks - 1));
        if let Some(train) = record.arrays.first() {
            argv.push(format!("--dependency=afterany:{}", train.job_id));
        }
        argv.extend(opts.extra_args.iter().cloned());
        argv.push(script.display().to_string());
        argv.push(first.to_string());
        match run_sbatch(&argv) {
            Ok(job_id) => record.arrays.push(ArrayRecord {
                job_id,
                kind: kind.into(),
                first_unit: first,
                tasks,
                command: argv,
            }),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let json = dir.join("submission.json");
    if let Err(e) = result {
        if record.arrays.is_empty() {
            // Nothing was submitted: leave no submission behind for `status` to report.
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        record.error = Some(e.to_string());
        write_record(&json, &record)?;
        let submitted = record.arrays.into_iter().map(|a| a.job_id).collect();
        return Err(SlurmError::Partial {
            submitted,
            dir,
            source: Box::new(e),
        });
    }
    write_record(&json, &record)?;
    Ok(Submission {
        dir,
        job_ids: record.arrays.into_iter().map(|a| a.job_id).collect(),
        units: ordered.len(),
    })
}

#[cfg(test)]
mod status_tests;
#[cfg(test)]
mod tests;
