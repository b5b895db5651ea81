//! Top-level scalars of a virb config: ViRB's own `imagenetv2.yaml` has `batch_size: 32` outside
//! its job's block (an indentation slip); such a scalar is the default of that key for every job
//! that does not set it, and the run says so once.
use super::{ConfigError, JobConfig};
use crate::yaml_index::YamlIndex;
use indexmap::IndexMap;
use serde::{de, Deserialize, Deserializer};
use std::{fmt, path::Path};

/// A top-level `key: value` of a virb config, used as a default for every job.
#[derive(Debug, Clone)]
pub struct TopLevelDefault {
    /// The job key.
    pub key: String,
    /// Its value, as written.
    pub value: String,
    /// Its line.
    pub line: Option<usize>,
    /// The jobs it was applied to (those that do not set the key themselves).
    pub jobs: Vec<String>,
}

impl fmt::Display for TopLevelDefault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "top-level `{}: {}` is not a job; it is the default of every job that does not set `{}` ({})",
            self.key,
            self.value,
            self.key,
            if self.jobs.is_empty() {
                "none here".to_string()
            } else {
                self.jobs.join(", ")
            }
        )
    }
}

/// A top-level entry of a virb config: a job (a mapping), or a scalar that ViRB's own
/// `imagenetv2.yaml` has by an indentation slip (`batch_size: 32` at the top level), taken as a
/// default for every job.
pub(super) enum JobEntry {
    Job(Box<JobConfig>),
    Default(serde_yaml::Value),
}

impl<'de> Deserialize<'de> for JobEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = JobEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a job (a mapping with `task`, `training_configs`, ...) or a default value for every job")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                JobConfig::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|j| JobEntry::Job(Box::new(j)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(JobEntry::Default(v.into()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(JobEntry::Default(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(JobEntry::Default(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(JobEntry::Default(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JobEntry::Default(v.into()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Splits jobs from top-level defaults and sets each default in every job that does not give
/// the key itself (the index says which keys a job's block has).
pub(super) fn apply_defaults(
    path: &Path,
    index: &YamlIndex,
    entries: IndexMap<String, JobEntry>,
) -> Result<(IndexMap<String, JobConfig>, Vec<TopLevelDefault>), ConfigError> {
    let mut jobs = IndexMap::new();
    let mut defaults = Vec::new();
    for (name, entry) in entries {
        match entry {
            JobEntry::Job(j) => {
                jobs.insert(name, *j);
            }
            JobEntry::Default(v) => defaults.push((name, v)),
        }
    }
    let mut applied = Vec::new();
    for (key, value) in defaults {
        let line = index.line(&[&key]);
        let bad = |message: String| ConfigError {
            file: path.to_path_buf(),
            line,
            message,
        };
        if !DEFAULTABLE.contains(&key.as_str()) {
            return Err(bad(format!(
                "top-level `{key}` is neither a job (a mapping) nor a key that can default every job ({}); indent it under a job or remove it",
                DEFAULTABLE.join(", ")
            )));
        }
        let mut to = Vec::new();
        for (job, cfg) in jobs.iter_mut() {
            if index.has(&[job, &key]) {
                continue; // the job sets it
            }
            let mut doc = serde_yaml::to_value(&*cfg).map_err(|e| bad(e.to_string()))?;
            if let serde_yaml::Value::Mapping(m) = &mut doc {
                m.insert(key.clone().into(), value.clone());
            }
            *cfg = serde_yaml::from_value(doc).map_err(|e| {
                bad(format!(
                    "top-level `{key}` as a default for job `{job}`: {e}"
                ))
            })?;
            to.push(job.clone());
        }
        let value = serde_yaml::to_string(&value)
            .map(|v| v.trim().to_string())
            .unwrap_or_default();
        applied.push(TopLevelDefault {
            key,
            value,
            line,
            jobs: to,
        });
    }
    Ok((jobs, applied))
}

/// Job keys a top-level scalar may set for every job.
const DEFAULTABLE: &[&str] = &[
    "num_epochs",
    "batch_size",
    "test_batch_size",
    "image_size",
    "pre_encode",
    "num_dataset_repeats",
    "seed",
    "repeats",
    "validation_fraction",
    "train_encoder",
];
