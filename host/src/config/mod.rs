//! Experiment lists and virb configs: ViRB's YAML files load unchanged; unknown keys and bad values
//! are errors naming the file, line, job and key.
mod defaults;
mod job;
mod validate;

pub use defaults::TopLevelDefault;
pub use job::{JobConfig, OptimizerKind, SchedulerConfig, TrainingConfig, MAX_REPEATS};
pub use validate::check_job_for_task;

use crate::names::{self, NameKind};
use crate::yaml_index::YamlIndex;
use defaults::{apply_defaults, JobEntry};
use indexmap::IndexMap;
use serde::{de, Deserialize, Deserializer};
use std::{
    fmt,
    path::{Path, PathBuf},
};
use validate::validate;

/// A configuration error: where it is and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file at fault.
    pub file: PathBuf,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong, naming the job and key.
    pub message: String,
}

/// The encoder used when an experiment list gives a plain weights path (as in ViRB).
pub const DEFAULT_ENCODER: &str = "resnet50";

/// One experiment: a named encoder with its weights.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// The experiment name (output folder).
    pub name: String,
    /// Encoder name, as an encoder plugin provides it.
    pub encoder: String,
    /// Weights file.
    pub weights: PathBuf,
    /// Encoder options, as a JSON object: those of the entry and, for a frozen encoder, the
    /// run's precision where the entry sets none ([`crate::precision`]).
    pub options: serde_json::Value,
    /// The entry's options as written: what a fine-tuned copy is loaded with (fine-tuning trains
    /// in fp32 whatever the run's precision).
    pub written_options: serde_json::Value,
    /// The line of its entry in the experiment list.
    pub line: Option<usize>,
}

/// An experiment list entry: `name: path` (ViRB) or `name: {weights, encoder, options}`.
#[derive(Debug)]
struct ExperimentEntry {
    weights: String,
    encoder: Option<String>,
    options: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentEntryFull {
    weights: String,
    encoder: Option<String>,
    options: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for ExperimentEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = ExperimentEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a weights path, or a mapping with `weights`, `encoder`, `options`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ExperimentEntry {
                    weights: v.to_string(),
                    encoder: None,
                    options: None,
                })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let full =
                    ExperimentEntryFull::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ExperimentEntry {
                    weights: full.weights,
                    encoder: full.encoder,
                    options: full.options,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads an experiment list.
pub fn load_experiment_list(path: &Path) -> Result<Vec<Experiment>, ConfigError> {
    let text = read(path)?;
    let index = YamlIndex::new(&text);
    check_duplicates(path, &index, "experiment")?;
    let entries: IndexMap<String, ExperimentEntry> =
        serde_yaml::from_str(&text).map_err(|e| yaml_error(path, e))?;
    for name in entries.keys() {
        names::check(NameKind::Experiment, name).map_err(|message| ConfigError {
            file: path.to_path_buf(),
            line: index.line(&[name]),
            message,
        })?;
    }
    if entries.is_empty() {
        return Err(ConfigError {
            file: path.to_path_buf(),
            line: None,
            message: "the experiment list is empty; add `name: path/to/weights.pt` lines".into(),
        });
    }
    Ok(entries
        .into_iter()
        .map(|(name, e)| Experiment {
            line: index.line(&[&name]),
            name,
            encoder: e.encoder.unwrap_or_else(|| DEFAULT_ENCODER.to_string()),
            weights: PathBuf::from(e.weights),
            options: e
                .options
                .clone()
                .unwrap_or(serde_json::Value::Object(Default::default())),
            written_options: e
                .options
                .unwrap_or(serde_json::Value::Object(Default::default())),
        })
        .collect())
}

/// A virb config file: jobs in file order.
#[derive(Debug)]
pub struct VirbConfig {
    /// The file.
    pub path: PathBuf,
    /// Jobs by name (the task key).
    pub jobs: IndexMap<String, JobConfig>,
    /// Where each key is in the file.
    pub index: YamlIndex,
    /// Top-level scalars applied as defaults to every job that does not set them, for the run
    /// to say so once.
    pub defaults: Vec<TopLevelDefault>,
}

impl VirbConfig {
    /// A [`names::PlanError`] at the line of the entry at fault.
    pub fn plan_error(&self, e: names::PlanError) -> ConfigError {
        let mut path = vec![e.at.job.as_str()];
        if let Some(c) = &e.at.config {
            path.extend(["training_configs", c.as_str()]);
        }
        ConfigError {
            file: self.path.clone(),
            line: self.index.line(&path),
            message: e.message,
        }
    }

    /// An error at `key` (a path below the job, e.g. `["training_configs", "a", "lr"]`) of job
    /// `job`, with the line of the key (or of its deepest ancestor in the file).
    pub fn error(&self, job: &str, key: &[&str], message: impl std::fmt::Display) -> ConfigError {
        let mut path = vec![job];
        path.extend_from_slice(key);
        ConfigError {
            file: self.path.clone(),
            line: self.index.line(&path),
            message: if key.is_empty() {
                format!("job `{job}`: {message}")
            } else {
                format!("job `{job}`: `{}`: {message}", key.join("."))
            },
        }
    }
}

/// Reads and validates a virb config.
pub fn load_virb_config(path: &Path) -> Result<VirbConfig, ConfigError> {
    let text = read(path)?;
    let index = YamlIndex::new(&text);
    check_duplicates(path, &index, "job")?;
    let entries: IndexMap<String, JobEntry> =
        serde_yaml::from_str(&text).map_err(|e| yaml_error(path, e))?;
    let (jobs, defaults) = apply_defaults(path, &index, entries)?;
    let config = VirbConfig {
        path: path.to_path_buf(),
        jobs,
        index,
        defaults,
    };
    if config.jobs.is_empty() {
        return Err(ConfigError {
            file: path.to_path_buf(),
            line: None,
            message: "the virb config has no jobs".into(),
        });
    }
    let name_error = |key: &[&str], message: String| ConfigError {
        file: path.to_path_buf(),
        line: config.index.line(key),
        message,
    };
    for (name, job) in &config.jobs {
        names::check(NameKind::Job, name).map_err(|m| name_error(&[name], m))?;
        for cfg in job.training_configs.keys() {
            names::check(NameKind::Config, cfg).map_err(|m| {
                name_error(
                    &[name, "training_configs", cfg],
                    format!("job `{name}`: {m}"),
                )
            })?;
        }
        validate(job).map_err(|(key, message)| {
            let key: Vec<&str> = key.iter().map(String::as_str).collect();
            config.error(name, &key, message)
        })?;
    }
    names::plan_collisions(config.jobs.iter().flat_map(|(job, j)| {
        j.training_configs
            .keys()
            .map(move |c| (job.as_str(), c.as_str()))
    }))
    .map_err(|e| config.plan_error(e))?;
    Ok(config)
}

/// Refuses a key given twice in one mapping (serde_yaml would keep the last one silently).
/// `top` names what the top-level keys are (`job`, `experiment`).
fn check_duplicates(path: &Path, index: &YamlIndex, top: &str) -> Result<(), ConfigError> {
    let Some(d) = index.duplicates.first() else {
        return Ok(());
    };
    let what = match d.path.as_slice() {
        [name] => format!("{top} `{name}`"),
        [job, tc, cfg] if top == "job" && tc == "training_configs" => {
            format!("training config `{cfg}` of job `{job}`")
        }
        [first, rest @ ..] => format!("key `{}` of {top} `{first}`", rest.join(".")),
        [] => "a key".to_string(),
    };
    Err(ConfigError {
        file: path.to_path_buf(),
        line: Some(d.second),
        message: format!(
            "{what} is given twice (lines {} and {}); YAML would keep only the last one, so rename or remove one",
            d.first, d.second
        ),
    })
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        message: format!("cannot read: {e}"),
    })
}

fn yaml_error(path: &Path, e: serde_yaml::Error) -> ConfigError {
    let line = e.location().map(|l| l.line());
    let mut message = e.to_string();
    // serde_yaml appends " at line X column Y"; the location is already in the prefix.
    if let Some(idx) = message.find(" at line ") {
        message.truncate(idx);
    }
    ConfigError {
        file: path.to_path_buf(),
        line,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn virb_grid_search_file_loads_unchanged() {
        let f = write(
            r#"
Imagenet:
 task: "Imagenet"
 training_configs:
   adam-0.0001:
     optimizer: "adam"
     lr: 0.0001
   sgd-0.01-StepLR:
     optimizer: "sgd"
     lr: 0.01
     scheduler:
       type: "StepLR"
       step_size: 50
       gamma: 0.1
   sgd-0.01-OneCycle:
     optimizer: "SGD"
     lr: 0.01
     scheduler:
       type: "OneCycle"
   sgd-0.01-Poly:
     optimizer: "sgd"
     lr: 0.001
     scheduler:
       type: "Poly"
       exponent: 0.9
 num_epochs: 100
 batch_size: 32
"#,
        );
        let cfg = load_virb_config(f.path()).expect("loads");
        let job = &cfg.jobs["Imagenet"];
        assert_eq!(job.training_configs.len(), 4);
        assert_eq!(job.eval_batch_size(), 32);
        assert_eq!(job.image_size, 224);
        assert!(matches!(
            job.training_configs["sgd-0.01-OneCycle"].scheduler,
            Some(SchedulerConfig::OneCycle { pct_start, .. }) if pct_start == 0.3
        ));
    }

    #[test]
    fn unknown_key_names_job_key_and_line() {
        let f = write("CalTech-101:\n  task: CalTech-101\n  training_configs:\n    a:\n      optimizer: adam\n      lrate: 0.1\n  num_epochs: 1\n");
        let err = load_virb_config(f.path()).expect_err("unknown key");
        let text = err.to_string();
        assert!(text.contains("unknown field `lrate`"), "{text}");
        assert_eq!(err.line, Some(6), "{text}");
    }

    #[test]
    fn bad_value_names_job_and_key() {
        let f = write("J:\n  task: T\n  training_configs:\n    a:\n      optimizer: adam\n      lr: -1\n  num_epochs: 1\n");
        let err = load_virb_config(f.path()).expect_err("bad lr");
        assert!(
            err.message.contains("job `J`: `training_configs.a.lr`"),
            "{err}"
        );
        assert_eq!(err.line, Some(6));
    }

    #[test]
    fn virb_imagenetv2_top_level_batch_size_is_a_default() {
        // ViRB's imagenetv2.yaml, verbatim: `batch_size` slipped out of the job's block.
        let f = write("Imagenetv2:\n  task: \"Imagenetv2\"\n  task_head_weights_path: \"out/%s/Imagenet*/model_head.pt\"\nbatch_size: 32\nOwn:\n  task: Imagenet\n  training_configs:\n    a: {optimizer: adam, lr: 0.1}\n  num_epochs: 1\n  batch_size: 8\n");
        let cfg = load_virb_config(f.path()).expect("loads");
        assert_eq!(cfg.jobs.len(), 2);
        assert_eq!(cfg.jobs["Imagenetv2"].batch_size, 32);
        assert_eq!(cfg.jobs["Own"].batch_size, 8, "a job's own value wins");
        assert_eq!(cfg.defaults.len(), 1);
        assert_eq!(
            cfg.defaults[0].to_string(),
            "top-level `batch_size: 32` is not a job; it is the default of every job that does not set `batch_size` (Imagenetv2)"
        );
        assert_eq!(cfg.defaults[0].line, Some(4));
        let f = write("J:\n  task: T\n  training_configs:\n    a: {optimizer: adam, lr: 0.1}\n  num_epochs: 1\nlearning_rate: 3\n");
        let err = load_virb_config(f.path()).expect_err("not a job key");
        assert_eq!(err.line, Some(6));
        assert!(
            err.message.starts_with("top-level `learning_rate` is neither a job (a mapping) nor a key that can default every job"),
            "{err}"
        );
        let f = write("J:\n  task: T\n  training_configs:\n    a: {optimizer: adam, lr: 0.1}\n  num_epochs: 1\nbatch_size: many\n");
        let err = load_virb_config(f.path()).expect_err("bad value");
        assert!(
            err.message
                .contains("top-level `batch_size` as a default for job `J`"),
            "{err}"
        );
    }

    #[test]
    fn experiment_list_forms() {
        let f = write("SWAV_800: 'pretrained_weights/SWAV_800.pt'\nother:\n  weights: w.safetensors\n  options: {channels_last: false}\n");
        let list = load_experiment_list(f.path()).expect("loads");
        assert_eq!(list[0].name, "SWAV_800");
        assert_eq!(list[0].encoder, DEFAULT_ENCODER);
        assert_eq!(list[1].weights, PathBuf::from("w.safetensors"));
        assert_eq!(
            list[1].options["channels_last"],
            serde_json::Value::Bool(false)
        );
        let f = write("x:\n  weights: a\n  wieghts: b\n");
        let err = load_experiment_list(f.path()).expect_err("unknown key");
        assert!(err.to_string().contains("unknown field `wieghts`"), "{err}");
    }
}
