//! Extensions: how plugin-api grows between breaking releases.
//!
//! abi_stable's load-time layout check refuses a library whose vtables or root module have fewer
//! entries than the loading host expects, so no method can be added to a trait of this crate in a
//! compatible release. Instead, every trait object (and each root module) answers
//! `extension(name, call)`: a later plugin-api names a new capability (a constant string such as
//! `virb.head.describe/v1`), documents the JSON and tensors it takes and returns, and
//!
//! * a host of that later version asks for it and, when the plugin answers `None` (it was built
//!   before the capability existed, or does not offer it), does what it did before;
//! * a plugin of that later version offers it, and a host that predates it simply never asks.
//!
//! So a host and a plugin one patch apart (while 0.y: `0.3.0` and `0.3.1`) always load each
//! other. A capability's name carries its own version: once published, its contract never changes;
//! a different contract is a new name (`…/v2`).
use crate::{NamedTensor, PluginError};
use abi_stable::{
    std_types::{ROption, RResult, RString, RVec},
    StableAbi,
};

/// What the caller passes to an extension: a JSON value and tensors, as the capability defines.
#[repr(C)]
#[derive(StableAbi, Default)]
pub struct ExtensionCall {
    /// A JSON value (`null` when the capability takes none).
    pub json: RString,
    /// Tensors, moved to the callee.
    pub tensors: RVec<NamedTensor>,
}

impl ExtensionCall {
    /// A call with a JSON value and no tensors.
    pub fn json(json: impl Into<String>) -> Self {
        ExtensionCall {
            json: json.into().into(),
            tensors: RVec::new(),
        }
    }
}

/// What an extension answers: a JSON value and tensors, as the capability defines.
#[repr(C)]
#[derive(StableAbi, Default)]
pub struct ExtensionReply {
    /// A JSON value (`null` when the capability returns none).
    pub json: RString,
    /// Tensors, moved to the caller.
    pub tensors: RVec<NamedTensor>,
}

impl ExtensionReply {
    /// A reply with a JSON value and no tensors.
    pub fn json(json: impl Into<String>) -> Self {
        ExtensionReply {
            json: json.into().into(),
            tensors: RVec::new(),
        }
    }
}

/// The result of an extension call: `ROk(RNone)` means "not offered" (the caller falls back),
/// `RErr` that the capability is offered but failed.
pub type ExtensionResult = RResult<ROption<ExtensionReply>, PluginError>;

/// The answer of an object that offers no extensions (the default body of every `extension`).
pub fn no_extension() -> ExtensionResult {
    RResult::ROk(ROption::RNone)
}

/// Encoder-factory capability: checks a weights file against the architecture, as the strict
/// load would, without keeping an encoder. Call JSON: `{"weights": "<path>"}`. Reply JSON:
/// `{"fits": bool, "missing": [name], "unexpected": [name], "mismatched": [text]}` (names as the
/// plugin's loader sees them, after any prefix it strips; `mismatched` says what is wrong with
/// each tensor of the wrong shape or type); a plugin may add fields. A file the plugin cannot read
/// at all is an `RErr`. `virb-host inspect` asks every encoder factory for it, and falls back to a
/// strict `load` on the CPU (and its error text) when a plugin answers "not offered".
pub const ENCODER_CHECK_WEIGHTS: &str = "virb.encoder.check_weights/v1";

/// Head capability: the head is exactly a linear classifier, so the host may train several of
/// them (a grid's configs) as one stacked computation instead of calling each head. Call JSON:
/// `null`. Reply JSON: `{"input": "<feature name>", "weight": "<parameter name>", "bias":
/// "<parameter name>"}`, promising that
///
/// * `forward` flattens the named feature to `[B, D]` in float32 and returns
///   `x · weightᵀ + bias` (`weight` `[C, D]`, `bias` `[C]`, both among `parameters()`, and
///   the only ones);
/// * `loss` is the mean softmax cross-entropy of those logits against class indices `[B]` (an
///   index outside `0..C` is an error);
/// * the metric only reads the logits and targets it is given, and is dataset-level: one update
///   with several batches' logits and targets, concatenated, equals one update per batch (the
///   host gives it many batches at once).
///
/// A head that cannot promise all of it (another architecture, several frames, a custom loss)
/// answers "not offered", and the host calls it one by one.
pub const HEAD_LINEAR_CLASSIFIER: &str = "virb.head.linear_classifier/v1";

/// Encoder-factory capability: the encoder takes the option `precision`, the type its frozen
/// forward runs in. Call JSON: `{"encoder": "<name>"}`. Reply JSON: `{"precisions": ["fp32",
/// ...]}`, the values it accepts (`fp32` always among them). The host then fills in an
/// experiment's `precision` from the run's `--precision` (by default the device's fastest exact
/// enough type: `bf16` where the device computes it natively, else `fp32`) when the experiment
/// list does not set it, so that the precision is part of every cache key and result. A factory
/// that does not answer keeps its options as written.
pub const ENCODER_PRECISIONS: &str = "virb.encoder.precisions/v1";
