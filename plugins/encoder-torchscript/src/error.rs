//! The plugin's errors, each naming the file, output or shape at fault, and what to do.
use virb_plugin_api::PluginError;

/// Where to read the contract.
const CONTRACT: &str = "see README.md, section \"TorchScript encoders\"";

/// Everything that can go wrong with a TorchScript encoder.
#[derive(Debug, thiserror::Error)]
pub enum TorchScriptError {
    /// The experiment's `options:` cannot be used.
    #[error("torchscript encoder options: {0}")]
    Options(String),
    /// libtorch cannot load the file as a TorchScript module.
    #[error("{path} is not a TorchScript archive that libtorch can load ({reason})")]
    NotTorchScript {
        /// The weights file.
        path: String,
        /// libtorch's reason.
        reason: String,
    },
    /// The file is a `torch.save` checkpoint (legacy pickle, or a zip with `data.pkl` and no
    /// `code/`): weights without the model's code.
    #[error("{path} is a torch.save checkpoint (weights without the model's code), not a TorchScript archive")]
    Checkpoint {
        /// The weights file.
        path: String,
    },
    /// The model's forward pass raised an error.
    #[error("the TorchScript model {path} fails on a batch of shape {shape:?}: {reason}")]
    Forward {
        /// The model file.
        path: String,
        /// The input batch's shape, as the model received it.
        shape: Vec<i64>,
        /// libtorch's (or the model's own) reason.
        reason: String,
        /// Whether `input_size` was set.
        resized: bool,
    },
    /// The model returned something other than a tensor or a dict with `embedding`.
    #[error("the TorchScript model {path} returns {what}; virb needs a tensor [N, D] (the embedding) or a dict with `embedding` [N, D] (and, for pixel-wise tasks, `conv`, `block1`..`block4` [N, C, h, w])")]
    Output {
        /// The model file.
        path: String,
        /// What it returned, in words.
        what: String,
    },
    /// An output a task asks for is not among the model's outputs.
    #[error("the TorchScript model {path} has no `{name}` output (it returns {available}); the task needs it")]
    Missing {
        /// The model file.
        path: String,
        /// The output's virb name.
        name: String,
        /// The outputs the model gives.
        available: String,
    },
    /// An output has the wrong number of dimensions or batch size.
    #[error("the TorchScript model {path}: output `{name}` has shape {shape:?} for a batch of {batch}; expected {expected}")]
    Shape {
        /// The model file.
        path: String,
        /// The output's virb name.
        name: String,
        /// Its shape.
        shape: Vec<i64>,
        /// The batch size.
        batch: i64,
        /// The expected shape, in words.
        expected: &'static str,
    },
    /// An output's width (dimension 1) differs from an earlier batch's.
    #[error("the TorchScript model {path}: output `{name}` has {now} channels in this batch (shape {shape:?}) but {first} in an earlier one; an encoder's widths must not change between batches")]
    Width {
        /// The model file.
        path: String,
        /// The output's virb name.
        name: String,
        /// The width seen first.
        first: i64,
        /// The width now.
        now: i64,
        /// This batch's shape of the output.
        shape: Vec<i64>,
    },
    /// A tensor operation of the plugin itself failed.
    #[error("{0}")]
    Tensor(String),
}

impl From<tch::TchError> for TorchScriptError {
    fn from(e: tch::TchError) -> Self {
        TorchScriptError::Tensor(reason(&e))
    }
}

impl From<TorchScriptError> for PluginError {
    fn from(e: TorchScriptError) -> Self {
        let message = e.to_string();
        match e {
            TorchScriptError::Options(_) => {
                PluginError::invalid_input(message).with_help(crate::options::OPTIONS_HELP)
            }
            TorchScriptError::Checkpoint { .. } => PluginError::weights(message).with_help(format!(
                "for a torchvision ResNet state dict use `encoder: resnet50` (or resnet18/34/101/152; `virb-host convert` extracts the ResNet trunk of a MoCo, SwAV, ... checkpoint); for another model, build it in Python, load the state dict and save torch.jit.trace(model, example) with torch.jit.save; {CONTRACT}"
            )),
            TorchScriptError::NotTorchScript { .. } => PluginError::weights(message).with_help(format!(
                "export the model from Python with torch.jit.trace or torch.jit.script and save it with torch.jit.save; {CONTRACT}"
            )),
            TorchScriptError::Forward { resized, .. } => {
                let what = if resized {
                    "check `input_size`, `mean` and `std` in the experiment's options against what the model was exported for"
                } else {
                    "if the model only runs at the size it was exported for (most ViTs), set `input_size: <that size>` in the experiment's options; a model traced with fixed sizes needs torch.jit.script or a re-export"
                };
                PluginError::tensor(message).with_help(format!("{what}; {CONTRACT}"))
            }
            TorchScriptError::Output { .. }
            | TorchScriptError::Missing { .. }
            | TorchScriptError::Shape { .. }
            | TorchScriptError::Width { .. } => PluginError::invalid_input(message).with_help(
                format!("re-export the model so that its forward returns what virb needs (or map its dict keys with `outputs:`); {CONTRACT}"),
            ),
            TorchScriptError::Tensor(_) => PluginError::tensor(message),
        }
    }
}

/// The useful line of a libtorch error: TorchScript errors carry the interpreter's traceback and
/// put the model's own message (`RuntimeError: ...`) last; plain ones a C++ backtrace after it.
pub fn reason(e: &tch::TchError) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let raised = lines.iter().rev().find(|l| {
        l.split_once(": ")
            .is_some_and(|(kind, _)| kind.ends_with("Error") && !kind.contains(' '))
    });
    let line = raised
        .or_else(|| lines.first())
        .copied()
        .unwrap_or("libtorch error");
    let line = line.split(" Exception raised from ").next().unwrap_or(line);
    let mut line = line.to_string();
    if line.len() > 400 {
        let mut cut = 400;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    line
}
