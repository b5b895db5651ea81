//! [`CacheKey`]: everything that determines the features in one cache file.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::FORMAT_VERSION;

/// Everything that determines the features of one data set split encoded by one encoder.
///
/// Two keys name the same cache file exactly when their [`canonical_json`](Self::canonical_json)
/// is equal: every field counts, the order of keys inside `encoder_options` does not (objects are
/// sorted recursively), the order of `outputs` does. The crate's [`FORMAT_VERSION`] is part of
/// the canonical form, so a format change invalidates every old file by key.
///
/// Build it with a struct literal; all fields are public.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheKey {
    /// Name of the encoder plugin (its library's declared name).
    pub encoder_plugin: String,
    /// Version of the encoder plugin.
    pub encoder_plugin_version: String,
    /// Name of the encoder inside the plugin, e.g. `resnet50`.
    pub encoder: String,
    /// The encoder's options as given to the plugin; canonicalised (object keys sorted) before
    /// hashing. Numbers are compared as JSON numbers: `1` and `1.0` are different keys.
    pub encoder_options: Value,
    /// SHA-256 (hex) of the encoder's weights file; case does not matter.
    pub weights_sha256: String,
    /// Name of the task, e.g. `cifar10`.
    pub task: String,
    /// Name of the task plugin.
    pub task_plugin: String,
    /// Version of the task plugin.
    pub task_plugin_version: String,
    /// Data set split: `train`, `test`, ...
    pub split: String,
    /// Side length in pixels of the images given to the encoder.
    pub image_size: u32,
    /// Frames per sample given to the encoder (1 for still images).
    pub frames: u32,
    /// Names of the encoder outputs that were cached, in order.
    pub outputs: Vec<String>,
    /// Fingerprint of the data set as the host computes it (location, sample count, class
    /// names, modification times, ...); opaque to this crate.
    pub dataset_fingerprint: String,
}

impl CacheKey {
    /// The canonical JSON text of the key: compact, object keys sorted at every level,
    /// `weights_sha256` lower-cased, and a `format_version` member holding [`FORMAT_VERSION`].
    ///
    /// This text is what [`digest`](Self::digest) hashes and what every cache file's header
    /// stores, so changing how it is built invalidates every existing cache file (harmlessly:
    /// they are re-encoded).
    pub fn canonical_json(&self) -> String {
        self.canonical_value().to_string()
    }

    /// Hex SHA-256 of [`canonical_json`](Self::canonical_json) (64 lower-case hex digits); the
    /// cache file is `<digest>.vfc`.
    pub fn digest(&self) -> String {
        hex(&Sha256::digest(self.canonical_json().as_bytes()))
    }

    /// One human-readable line naming the key, for logs, e.g.
    /// `resnet50 (encoder-resnet 0.1.0, weights 0123abcd…) on cifar10/train (task-classification
    /// 0.1.0), 224 px, 1 frame, outputs [pooled], options {"pool":"avg"}, data 1f2e…`.
    pub fn describe(&self) -> String {
        let frames = if self.frames == 1 {
            "1 frame".to_string()
        } else {
            format!("{} frames", self.frames)
        };
        format!(
            "{} ({} {}, weights {}) on {}/{} ({} {}), {} px, {}, outputs [{}], options {}, data {}",
            self.encoder,
            self.encoder_plugin,
            self.encoder_plugin_version,
            abbreviate(&self.weights_sha256.to_ascii_lowercase(), 12),
            self.task,
            self.split,
            self.task_plugin,
            self.task_plugin_version,
            self.image_size,
            frames,
            self.outputs.join(", "),
            canonicalize(&self.encoder_options),
            abbreviate(&self.dataset_fingerprint, 40),
        )
    }

    /// The canonical form as a JSON value (see [`canonical_json`](Self::canonical_json)).
    pub(crate) fn canonical_value(&self) -> Value {
        // Built by hand rather than through serde so that it cannot fail and so that adding a
        // field to the struct forces a deliberate decision here (the destructuring is exhaustive).
        let CacheKey {
            encoder_plugin,
            encoder_plugin_version,
            encoder,
            encoder_options,
            weights_sha256,
            task,
            task_plugin,
            task_plugin_version,
            split,
            image_size,
            frames,
            outputs,
            dataset_fingerprint,
        } = self;
        let entries: [(&str, Value); 14] = [
            ("format_version", Value::from(FORMAT_VERSION)),
            ("encoder_plugin", Value::from(encoder_plugin.as_str())),
            (
                "encoder_plugin_version",
                Value::from(encoder_plugin_version.as_str()),
            ),
            ("encoder", Value::from(encoder.as_str())),
            ("encoder_options", encoder_options.clone()),
            (
                "weights_sha256",
                Value::from(weights_sha256.to_ascii_lowercase()),
            ),
            ("task", Value::from(task.as_str())),
            ("task_plugin", Value::from(task_plugin.as_str())),
            (
                "task_plugin_version",
                Value::from(task_plugin_version.as_str()),
            ),
            ("split", Value::from(split.as_str())),
            ("image_size", Value::from(*image_size)),
            ("frames", Value::from(*frames)),
            (
                "outputs",
                Value::Array(outputs.iter().map(|o| Value::from(o.as_str())).collect()),
            ),
            (
                "dataset_fingerprint",
                Value::from(dataset_fingerprint.as_str()),
            ),
        ];
        let map: Map<String, Value> = entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        canonicalize(&Value::Object(map))
    }
}

/// A copy of `value` whose objects, at every level, hold their members in sorted key order
/// (also when serde_json's `preserve_order` feature is enabled somewhere in the build).
pub(crate) fn canonicalize(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), canonicalize(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonicalize).collect()),
        other => other.clone(),
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// At most `max` characters of `s`, with `…` when cut.
fn abbreviate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}
