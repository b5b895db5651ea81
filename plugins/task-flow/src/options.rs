//! The task's one option, `target`: what the head regresses and how it is scored.
//!
//! * `flow` (the default): the real optical flow of `training/flow_occ/<id>_10.png` (KITTI's
//!   devkit encoding), 2 outputs (u, v) in pixels, scored by EPE and Fl-all.
//! * `viz`: ViRB's protocol, kept so that the paper's number can be reproduced: the grey level
//!   (luma / 255) of the flow's colour visualisation `training/viz_flow_occ/<id>_10.png`, 1
//!   output, L1 over non-zero target pixels, scored by the share of those pixels within 0.05. It is
//!   not optical flow: the grey level of a colour wheel mixes direction and length.
use virb_plugin_api::{OptionSpec, PluginError};

/// The option's key.
pub const KEY: &str = "target";

/// The values `target` takes.
pub const CHOICES: [&str; 2] = ["flow", "viz"];

/// What the head regresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The real flow (u, v) in pixels, with KITTI's valid mask.
    Flow,
    /// ViRB's target: the luma of the colour visualisation, / 255.
    Viz,
}

impl Target {
    /// Output channels of the head (and channels of the regressed part of the target).
    pub fn outputs(self) -> u32 {
        match self {
            Target::Flow => 2,
            Target::Viz => 1,
        }
    }

    /// The option value (`flow`, `viz`).
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Flow => "flow",
            Target::Viz => "viz",
        }
    }

    /// The folder below `training/` that holds this target's files.
    pub fn folder(self) -> &'static str {
        match self {
            Target::Flow => "flow_occ",
            Target::Viz => "viz_flow_occ",
        }
    }

    /// Reads the target from a job's task options (`{}` or `{"target": "viz"}`). Any other key,
    /// a value that is not a string or an unknown value is an error that names it and the
    /// choices.
    pub fn from_options(task: &str, options_json: &str) -> Result<Target, PluginError> {
        let json: serde_json::Value = serde_json::from_str(options_json).map_err(|e| {
            PluginError::invalid_input(format!(
                "{task}: the task options are not JSON ({e}): {options_json}"
            ))
        })?;
        let map = json.as_object().ok_or_else(|| {
            PluginError::invalid_input(format!(
                "{task}: the task options must be a JSON object, not {json}"
            ))
        })?;
        if let Some(key) = map.keys().find(|k| k.as_str() != KEY) {
            return Err(PluginError::invalid_input(format!(
                "{task}: unknown task option `{key}`; the only option is `{KEY}`"
            ))
            .with_help(format!("remove `{key}` from the job's task_options")));
        }
        match map.get(KEY) {
            None => Ok(Target::Flow),
            Some(serde_json::Value::String(s)) if s == "flow" => Ok(Target::Flow),
            Some(serde_json::Value::String(s)) if s == "viz" => Ok(Target::Viz),
            Some(other) => Err(PluginError::invalid_input(format!(
                "{task}: task option `{KEY}: {other}` is not one of {}",
                CHOICES.join(", ")
            ))
            .with_help(format!(
                "set `task_options: {{{KEY}: flow}}` (the real optical flow, the default) or `{{{KEY}: viz}}` (ViRB's protocol on the colour visualisation)"
            ))),
        }
    }

    /// The option as [`virb_plugin_api::TaskInfo::options`] lists it.
    pub fn spec() -> OptionSpec {
        OptionSpec {
            name: KEY.into(),
            help: "flow (default): regress the real flow of training/flow_occ (u, v in pixels), scored by EPE and Fl-all; viz: ViRB's protocol, the grey level of training/viz_flow_occ (not flow), scored by ViRB's accuracy in the results' test_details".into(),
        }
    }
}

#[cfg(test)]
mod flow_option_tests {
    use super::*;

    #[test]
    fn flow_is_the_default_and_viz_is_reachable() {
        assert_eq!(Target::from_options("KITTI", "{}").ok(), Some(Target::Flow));
        assert_eq!(
            Target::from_options("KITTI", r#"{"target":"flow"}"#).ok(),
            Some(Target::Flow)
        );
        assert_eq!(
            Target::from_options("KITTI", r#"{"target":"viz"}"#).ok(),
            Some(Target::Viz)
        );
        assert_eq!(Target::Flow.outputs(), 2);
        assert_eq!(Target::Viz.outputs(), 1);
    }

    #[test]
    fn flow_option_errors_name_the_value_and_the_choices() {
        let err = Target::from_options("KITTI", r#"{"target":"depth"}"#).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("\"depth\"") && msg.contains("flow, viz"),
            "{msg}"
        );
        let msg = Target::from_options("KITTI", r#"{"target":3}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains("target: 3") && msg.contains("flow, viz"),
            "{msg}"
        );
        let msg = Target::from_options("KITTI", r#"{"scale":2}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("`scale`"), "{msg}");
        assert!(Target::from_options("KITTI", "[1]").is_err());
        assert!(Target::from_options("KITTI", "not json").is_err());
    }
}
