//! Checks a run makes before any encoding or training: the output folder is a writable folder,
//! and the folders that eval-only jobs will write do not collide. (Names and the folders of
//! training jobs are checked when the config is loaded, in `config`.)
use crate::config::{ConfigError, VirbConfig};
use crate::names;
use crate::plan::SetupError;
use crate::plugins::Registry;
use std::path::Path;

/// `--out` is (or can be made) a folder that this process can write in: checked up front, so that
/// a bad `--out` fails in a second instead of after all the encoding and training.
pub fn check_out_dir(out: &Path) -> Result<(), SetupError> {
    let fail = |what: String| SetupError::Other(format!("--out {}: {what}", out.display()));
    if out.exists() && !out.is_dir() {
        return Err(fail(
            "is a file, not a folder; give a folder (it is created if missing)".into(),
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| {
        fail(format!(
            "cannot create the folder: {e}; choose another --out"
        ))
    })?;
    let probe = out.join(format!(".virb-write-test-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe);
    match written {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(fail(format!(
            "cannot write in the folder: {e}; fix its permissions or choose another --out"
        ))),
    }
}

/// An eval-only job `E` writes `<E>-<config>` for each config of the jobs whose heads it
/// evaluates. Two such jobs with a config of the same name would share that folder, and the
/// folders must not collide with those of the training jobs.
pub fn check_eval_only_names(virb: &VirbConfig, registry: &Registry) -> Result<(), ConfigError> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for (job, j) in &virb.jobs {
        for cfg in j.training_configs.keys() {
            entries.push((job.clone(), cfg.clone()));
        }
    }
    for (eval_job, j) in &virb.jobs {
        let Ok(task) = registry.task(&j.task) else {
            continue;
        };
        let source = task.info.evaluates_heads_of.as_str();
        if source.is_empty() {
            continue;
        }
        let mut sources: Vec<(&str, &str)> = Vec::new();
        for (job, other) in &virb.jobs {
            if other.task != source {
                continue;
            }
            for cfg in other.training_configs.keys() {
                if let Some((first, _)) = sources.iter().find(|(_, c)| *c == cfg.as_str()) {
                    return Err(virb.error(
                        eval_job,
                        &[],
                        format!(
                            "evaluates the heads of jobs `{first}` and `{job}`, which both have a config `{cfg}`: both results would be written to `{}`; rename one of the configs",
                            names::result_folder(eval_job, cfg)
                        ),
                    ));
                }
                sources.push((job, cfg));
                entries.push((eval_job.clone(), cfg.clone()));
            }
        }
    }
    names::plan_collisions(entries.iter().map(|(j, c)| (j.as_str(), c.as_str())))
        .map_err(|e| virb.plan_error(e))
}

/// Every key of a job's `task_options` is one its task lists (`virb-host tasks` shows them): a
/// misspelt option is an error naming the key, the job, the line and the task's options, not an
/// option silently ignored.
pub fn check_task_options(virb: &VirbConfig, registry: &Registry) -> Result<(), ConfigError> {
    for (job, j) in &virb.jobs {
        let Ok(task) = registry.task(&j.task) else {
            continue;
        };
        for key in j.task_options.keys() {
            if task.info.options.iter().any(|o| o.name.as_str() == key) {
                continue;
            }
            let known: Vec<String> = task
                .info
                .options
                .iter()
                .map(|o| format!("`{}` ({})", o.name, o.help))
                .collect();
            let known = if known.is_empty() {
                format!("{} takes no options", j.task)
            } else {
                format!("{} takes {}", j.task, known.join("; "))
            };
            return Err(virb.error(
                job,
                &["task_options", key],
                format!("unknown task option `{key}`: {known}"),
            ));
        }
    }
    Ok(())
}
