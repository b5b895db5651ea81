//! The DeepLab tasks' one option, `bn_momentum`: the BatchNorm momentum (PyTorch's meaning) of
//! the head's ASPP, reducer and decoder. The default, 0.0003, is the value ViRB meant (DeepLab's
//! decay 0.9997); the running statistics then settle over thousands of steps, as in a full run
//! (Cityscapes: ~18,600). A short run (a smoke test, a small data set) scores in eval mode with
//! statistics that have barely moved from their start; a larger momentum (0.1, PyTorch's
//! default) fits them to the run. The PixelWise tasks have no options (the host refuses any).
use virb_plugin_api::{OptionSpec, PluginError};
use virb_plugin_kit::deeplab::BN_MOMENTUM;

/// The option's key.
pub const BN_MOMENTUM_KEY: &str = "bn_momentum";

/// The task options as a JSON object; any key but `allowed` is an error naming it.
fn object(
    task: &str,
    options_json: &str,
    allowed: &[&str],
) -> Result<serde_json::Map<String, serde_json::Value>, PluginError> {
    let json: serde_json::Value = serde_json::from_str(options_json).map_err(|e| {
        PluginError::invalid_input(format!(
            "{task}: the task options are not JSON ({e}): {options_json}"
        ))
    })?;
    let serde_json::Value::Object(map) = json else {
        return Err(PluginError::invalid_input(format!(
            "{task}: the task options must be a JSON object, not {json}"
        )));
    };
    if let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(PluginError::invalid_input(format!(
            "{task}: unknown task option `{key}`; its options are {}",
            allowed.join(", ")
        ))
        .with_help(format!("remove `{key}` from the job's task_options")));
    }
    Ok(map)
}

/// The DeepLab head's BatchNorm momentum from a job's task options: [`BN_MOMENTUM`] unless
/// `bn_momentum` is given, a number in (0, 1].
pub fn bn_momentum(task: &str, options_json: &str) -> Result<f64, PluginError> {
    let map = object(task, options_json, &[BN_MOMENTUM_KEY])?;
    match map.get(BN_MOMENTUM_KEY) {
        None => Ok(BN_MOMENTUM),
        Some(v) => match v.as_f64() {
            Some(m) if m > 0.0 && m <= 1.0 => Ok(m),
            _ => Err(PluginError::invalid_input(format!(
                "{task}: task option `{BN_MOMENTUM_KEY}: {v}` must be a number in (0, 1]"
            ))
            .with_help(format!(
                "leave it out for ViRB's {BN_MOMENTUM}, or give e.g. 0.1 (PyTorch's default) for a short run"
            ))),
        },
    }
}

/// The option as [`virb_plugin_api::TaskInfo::options`] lists it.
pub fn bn_momentum_spec() -> OptionSpec {
    OptionSpec {
        name: BN_MOMENTUM_KEY.into(),
        help: format!(
            "BatchNorm momentum of the DeepLab head's ASPP, reducer and decoder, in (0, 1] (default {BN_MOMENTUM}, ViRB's; its running statistics settle over thousands of steps: a short run wants e.g. 0.1)"
        )
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bn_momentum_defaults_to_virbs_and_checks_its_value() {
        assert_eq!(bn_momentum("EgoHands", "{}").ok(), Some(BN_MOMENTUM));
        assert_eq!(
            bn_momentum("EgoHands", r#"{"bn_momentum": 0.1}"#).ok(),
            Some(0.1)
        );
        for bad in [
            r#"{"bn_momentum": 0}"#,
            r#"{"bn_momentum": 1.5}"#,
            r#"{"bn_momentum": "x"}"#,
        ] {
            let msg = bn_momentum("EgoHands", bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(msg.contains("must be a number in (0, 1]"), "{bad}: {msg}");
        }
        let msg = bn_momentum("EgoHands", r#"{"momentum": 0.1}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains("`momentum`") && msg.contains("bn_momentum"),
            "{msg}"
        );
    }
}
