//! The options an experiment list may give a `torchscript` encoder (`options:` mapping).
use crate::error::TorchScriptError;
use std::collections::BTreeMap;

/// ImageNet channel means: the normalisation every virb task applies to its images.
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// The names virb's tasks ask encoders for: the pooled `embedding` and the pyramid.
pub const KNOWN_OUTPUTS: [&str; 6] = ["embedding", "conv", "block1", "block2", "block3", "block4"];

/// What `options:` may hold, as JSON. Unknown keys are refused.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// The channel means the model was trained with, on pixels scaled to [0, 1] (default:
    /// ImageNet's, which is what the tasks give).
    pub mean: Option<[f64; 3]>,
    /// The channel standard deviations the model was trained with (default: ImageNet's).
    pub std: Option<[f64; 3]>,
    /// Resize every batch bilinearly (antialiased) to `input_size` x `input_size` before the
    /// model (for models exported for one size, such as most ViTs). Default: the task's size.
    pub input_size: Option<i64>,
    /// Run the model on channels-last inputs, with its 4-D parameters converted to channels-last
    /// (faster convolutions on CPUs and recent GPUs). Default: false, because a model that calls
    /// `.view` on a convolution's output fails on channels-last tensors.
    pub channels_last: Option<bool>,
    /// Which key of the model's output dict gives each of virb's outputs, as
    /// `{virb name: model key}` (for example `{embedding: pooled}`); unmapped names are looked up
    /// under their own name.
    pub outputs: Option<BTreeMap<String, String>>,
}

/// The options' help line: every key and what it takes.
pub const OPTIONS_HELP: &str = "torchscript options: `mean: [r, g, b]` and `std: [r, g, b]` \
    (the model's normalisation, on [0, 1] pixels; default ImageNet's), `input_size: N` (resize \
    batches to N x N), `channels_last: true|false` (default false), `outputs: {virb name: model \
    key}`";

/// Options checked and turned into what the forward pass applies.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Per-channel `(scale, shift)` turning ImageNet-normalised input into the model's
    /// normalisation (`x * scale + shift`), or `None` when the model uses ImageNet's.
    pub affine: Option<([f64; 3], [f64; 3])>,
    /// Square side to resize batches to.
    pub input_size: Option<i64>,
    /// Channels-last inputs and parameters.
    pub channels_last: bool,
    /// `(virb name, model key)` renames.
    pub outputs: Vec<(String, String)>,
}

impl Options {
    /// Parses the JSON the host passes (`{}`, `null` or empty when the experiment has none).
    /// Errors name the option at fault.
    pub fn parse(json: &str) -> Result<Options, TorchScriptError> {
        if json.trim().is_empty() {
            return Ok(Options::default());
        }
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| TorchScriptError::Options(e.to_string()))?;
        let map = match value {
            serde_json::Value::Null => return Ok(Options::default()),
            serde_json::Value::Object(map) => map,
            other => {
                return Err(TorchScriptError::Options(format!(
                    "`options:` must be a mapping, got `{other}`"
                )))
            }
        };
        const KEYS: [&str; 5] = ["mean", "std", "input_size", "channels_last", "outputs"];
        if let Some(unknown) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(TorchScriptError::Options(format!(
                "unknown option `{unknown}` (expected one of {})",
                KEYS.join(", ")
            )));
        }
        fn field<T: serde::de::DeserializeOwned>(
            map: &serde_json::Map<String, serde_json::Value>,
            key: &str,
        ) -> Result<Option<T>, TorchScriptError> {
            map.get(key)
                .map(|v| {
                    serde_json::from_value(v.clone())
                        .map_err(|e| TorchScriptError::Options(format!("`{key}`: {e}")))
                })
                .transpose()
        }
        Ok(Options {
            mean: field(&map, "mean")?,
            std: field(&map, "std")?,
            input_size: field(&map, "input_size")?,
            channels_last: field(&map, "channels_last")?,
            outputs: field(&map, "outputs")?,
        })
    }

    /// Checks the values and computes the normalisation change.
    pub fn resolve(&self) -> Result<Resolved, TorchScriptError> {
        let mean = self.mean.unwrap_or(IMAGENET_MEAN);
        let std = self.std.unwrap_or(IMAGENET_STD);
        if let Some(bad) = mean.iter().find(|m| !m.is_finite()) {
            return Err(TorchScriptError::Options(format!(
                "`mean` must be 3 finite numbers, got {bad}"
            )));
        }
        if let Some(bad) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(TorchScriptError::Options(format!(
                "`std` must be 3 positive numbers, got {bad}"
            )));
        }
        // Input x = (p - m0) / s0; the model wants y = (p - m) / s = x * s0/s + (m0 - m)/s.
        let affine = if mean == IMAGENET_MEAN && std == IMAGENET_STD {
            None
        } else {
            let mut scale = [0.0; 3];
            let mut shift = [0.0; 3];
            for c in 0..3 {
                scale[c] = IMAGENET_STD[c] / std[c];
                shift[c] = (IMAGENET_MEAN[c] - mean[c]) / std[c];
            }
            Some((scale, shift))
        };
        if let Some(size) = self.input_size {
            if !(8..=4096).contains(&size) {
                return Err(TorchScriptError::Options(format!(
                    "`input_size` must be a side in pixels from 8 to 4096, got {size}"
                )));
            }
        }
        let mut outputs = Vec::new();
        for (virb, key) in self.outputs.iter().flatten() {
            if !KNOWN_OUTPUTS.contains(&virb.as_str()) {
                return Err(TorchScriptError::Options(format!(
                    "`outputs` maps `{virb}`, which is not an output virb asks for (one of {})",
                    KNOWN_OUTPUTS.join(", ")
                )));
            }
            outputs.push((virb.clone(), key.clone()));
        }
        Ok(Resolved {
            affine,
            input_size: self.input_size,
            channels_last: self.channels_last.unwrap_or(false),
            outputs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_leave_the_input_alone() {
        let r = Options::parse("{}").and_then(|o| o.resolve());
        let r = r.map_err(|e| e.to_string());
        assert_eq!(
            r,
            Ok(Resolved {
                affine: None,
                input_size: None,
                channels_last: false,
                outputs: Vec::new(),
            })
        );
    }

    #[test]
    fn mean_and_std_become_one_affine_map() {
        let o = Options::parse(r#"{"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}"#);
        let Ok(Resolved {
            affine: Some((scale, shift)),
            ..
        }) = o.and_then(|o| o.resolve())
        else {
            panic!("no affine map");
        };
        for c in 0..3 {
            // A pixel p: ImageNet-normalised x, mapped, equals (p - 0.5) / 0.5.
            let p = 0.8;
            let x = (p - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            assert!((x * scale[c] + shift[c] - (p - 0.5) / 0.5).abs() < 1e-12);
        }
    }

    #[test]
    fn bad_options_are_named() {
        let err = |json: &str| match Options::parse(json).and_then(|o| o.resolve()) {
            Ok(_) => panic!("{json} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err(r#"{"size": 3}"#).contains("unknown option `size` (expected one of mean, std"));
        assert!(err("[1]").contains("must be a mapping"));
        assert!(err(r#"{"std": [0.5, 0, 0.5]}"#).contains("`std` must be 3 positive numbers"));
        assert!(err(r#"{"mean": [0.5, 0.5]}"#).contains("`mean`: invalid length 2"));
        assert!(err(r#"{"channels_last": "yes"}"#).contains("`channels_last`: invalid type"));
        assert!(err(r#"{"input_size": 2}"#).contains("`input_size` must be"));
        assert!(err(r#"{"outputs": {"logits": "x"}}"#).contains("`logits`"));
    }
}
