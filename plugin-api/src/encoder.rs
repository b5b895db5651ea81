//! What an encoder plugin provides.
use crate::{FeatureSpec, NamedTensor, PluginError, TensorRef};
use abi_stable::{
    sabi_trait,
    std_types::{RBox, RResult, RSlice, RString, RVec},
    StableAbi,
};

/// One output an encoder can produce.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct OutputSpec {
    /// The output's name (`embedding`, `conv`, `block1`..`block4`).
    pub name: RString,
    /// Number of channels (the embedding width for `embedding`).
    pub channels: i64,
    /// Spatial stride relative to the input, or 0 for a pooled vector.
    pub stride: i64,
}

/// Describes an encoder architecture.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct EncoderInfo {
    /// The encoder's name, as experiment lists name it (`resnet50`).
    pub name: RString,
    /// One line for `virb-host plugins`.
    pub description: RString,
    /// The outputs its forward pass can produce.
    pub outputs: RVec<OutputSpec>,
    /// The weight file formats it reads, in words.
    pub weight_formats: RString,
}

/// How the host asks for an encoder instance.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct EncoderRequest {
    /// Path of the weights file (absolute, or relative to the working directory).
    pub weights: RString,
    /// Device to load onto: `cpu`, `cuda:N`.
    pub device: RString,
    /// Encoder-specific options as a JSON object (`{}` when none).
    pub options_json: RString,
}

/// A family of encoders that can be instantiated from weight files.
#[sabi_trait]
pub trait EncoderFactory: Send + Sync {
    /// What this encoder is.
    fn info(&self) -> RResult<EncoderInfo, PluginError>;

    /// Builds the encoder and loads its weights, strictly: a missing, unexpected or mis-shaped
    /// tensor is an error naming it.
    #[sabi(last_prefix_field)]
    fn load(&self, request: EncoderRequest) -> RResult<EncoderBox, PluginError>;
}

/// A frozen encoder instance with its weights loaded on a device.
#[sabi_trait]
pub trait Encoder: Send {
    /// The device its weights live on (`cpu`, `cuda:N`); inputs must be moved there.
    fn device(&self) -> RResult<RString, PluginError>;

    /// Per-sample shapes of the outputs for an input of `height` x `width`.
    fn output_shapes(&self, height: i64, width: i64) -> RResult<RVec<FeatureSpec>, PluginError>;

    /// Runs the frozen encoder (eval mode, no gradients) on `images` `[B, 3, H, W]`, normalised,
    /// float32, on [`Encoder::device`]. Returns the requested outputs, moved to the caller, each
    /// with the batch as its first dimension.
    #[sabi(last_prefix_field)]
    fn forward(
        &self,
        images: TensorRef<'_>,
        outputs: RSlice<'_, RString>,
    ) -> RResult<RVec<NamedTensor>, PluginError>;
}

/// An owned encoder factory trait object.
pub type EncoderFactoryBox = EncoderFactory_TO<'static, RBox<()>>;
/// An owned encoder trait object.
pub type EncoderBox = Encoder_TO<'static, RBox<()>>;
