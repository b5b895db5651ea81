//! What an encoder plugin provides.
use crate::{
    no_extension, ExtensionCall, ExtensionResult, FeatureSpec, NamedTensor, PluginError, TensorRef,
};
use abi_stable::{
    sabi_trait,
    std_types::{RBox, RResult, RSlice, RStr, RString, RVec},
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
    fn load(&self, request: EncoderRequest) -> RResult<EncoderBox, PluginError>;

    /// A capability added after plugin-api 0.3.0, by name (see [`crate::extension`]).
    #[sabi(last_prefix_field)]
    fn extension(&self, name: RStr<'_>, call: ExtensionCall) -> ExtensionResult {
        let _ = (name, call);
        no_extension()
    }
}

/// An encoder instance with its weights loaded on a device: frozen (eval mode, no gradients)
/// unless the host fine-tunes it through [`Encoder::trainable_parameters`].
#[sabi_trait]
pub trait Encoder: Send {
    /// The device its weights live on (`cpu`, `cuda:N`); inputs must be moved there.
    fn device(&self) -> RResult<RString, PluginError>;

    /// Per-sample shapes of the outputs for an input of `height` x `width`.
    fn output_shapes(&self, height: i64, width: i64) -> RResult<RVec<FeatureSpec>, PluginError>;

    /// Runs the frozen encoder (eval mode, no gradients) on `images` `[B, 3, H, W]`, normalised,
    /// float32, on [`Encoder::device`]. Returns the requested outputs, moved to the caller, each
    /// with the batch as its first dimension.
    fn forward(
        &self,
        images: TensorRef<'_>,
        outputs: RSlice<'_, RString>,
    ) -> RResult<RVec<NamedTensor>, PluginError>;

    // Fine-tuning. These methods have default bodies, so an encoder that does not implement them
    // answers with [`fine_tuning_unsupported`].

    /// Makes the encoder trainable from now on (its parameters require gradients) and returns its
    /// trainable parameters, named like PyTorch's `named_parameters()` (torchvision names for
    /// torchvision architectures). Each tensor is a handle to the encoder's own parameter (same
    /// storage, same `grad`): the host's optimiser updates them in place, under `no_grad`, and
    /// zeroes their gradients itself. Calling it again returns the same parameters.
    ///
    /// Batch-norm running statistics are not parameters: [`Encoder::forward_train`] updates them.
    fn trainable_parameters(&self) -> RResult<RVec<NamedTensor>, PluginError> {
        RResult::RErr(fine_tuning_unsupported("trainable_parameters"))
    }

    /// Like [`Encoder::forward`], but in training mode (as `model.train()` in PyTorch: batch norm
    /// normalises with the batch's statistics and updates its running statistics; dropout, if any,
    /// is active) and recording the autograd graph, so that a loss computed from the outputs can
    /// be back-propagated into the parameters [`Encoder::trainable_parameters`] returned.
    /// [`Encoder::forward`] stays in eval mode, without gradients, after fine-tuning started.
    fn forward_train(
        &self,
        images: TensorRef<'_>,
        outputs: RSlice<'_, RString>,
    ) -> RResult<RVec<NamedTensor>, PluginError> {
        let _ = (images, outputs);
        RResult::RErr(fine_tuning_unsupported("forward_train"))
    }

    /// Every parameter and buffer (batch-norm `running_mean` / `running_var`; bookkeeping buffers
    /// such as `num_batches_tracked` may be left out), detached copies on the encoder's device,
    /// named like PyTorch's `state_dict()`, so that the saved file loads back with the plugin's own
    /// loader (and, for torchvision architectures, into torchvision with `strict=False`).
    fn state(&self) -> RResult<RVec<NamedTensor>, PluginError> {
        RResult::RErr(fine_tuning_unsupported("state"))
    }

    /// A capability added after plugin-api 0.3.0, by name (see [`crate::extension`]).
    #[sabi(last_prefix_field)]
    fn extension(&self, name: RStr<'_>, call: ExtensionCall) -> ExtensionResult {
        let _ = (name, call);
        no_extension()
    }
}

/// The error [`Encoder`]'s fine-tuning methods return by default: the encoder's plugin does not
/// implement them.
pub fn fine_tuning_unsupported(method: &str) -> PluginError {
    PluginError::invalid_input(format!(
        "this encoder does not support fine-tuning (its plugin does not implement \
         `Encoder::{method}`)"
    ))
    .with_help(
        "set `train_encoder: false` for this job, or rebuild the encoder plugin against \
         an encoder plugin that supports fine-tuning",
    )
}

/// An owned encoder factory trait object.
pub type EncoderFactoryBox = EncoderFactory_TO<'static, RBox<()>>;
/// An owned encoder trait object.
pub type EncoderBox = Encoder_TO<'static, RBox<()>>;

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::{sabi_trait::TD_Opaque, std_types::RResult::ROk};

    /// An encoder written before fine-tuning existed: only the prefix methods.
    struct Frozen;

    impl Encoder for Frozen {
        fn device(&self) -> RResult<RString, PluginError> {
            ROk("cpu".into())
        }

        fn output_shapes(&self, _: i64, _: i64) -> RResult<RVec<FeatureSpec>, PluginError> {
            ROk(RVec::new())
        }

        fn forward(
            &self,
            _: TensorRef<'_>,
            _: RSlice<'_, RString>,
        ) -> RResult<RVec<NamedTensor>, PluginError> {
            ROk(RVec::new())
        }
    }

    #[test]
    fn fine_tuning_methods_default_to_an_error() {
        let encoder = EncoderBox::from_value(Frozen, TD_Opaque);
        let images = tch::Tensor::zeros([1, 3, 8, 8], (tch::Kind::Float, tch::Device::Cpu));
        let wanted = [RString::from("embedding")];
        let errors = [
            encoder.trainable_parameters().map(|_| ()),
            encoder
                .forward_train(TensorRef::of(&images), wanted.as_slice().into())
                .map(|_| ()),
            encoder.state().map(|_| ()),
        ];
        for (result, method) in
            errors
                .into_iter()
                .zip(["trainable_parameters", "forward_train", "state"])
        {
            let err = result.into_result().expect_err(method);
            assert_eq!(err.kind(), Some(crate::ErrorKind::InvalidInput));
            assert!(
                err.message.contains("does not support fine-tuning")
                    && err.message.contains(&format!("`Encoder::{method}`")),
                "{err}"
            );
            assert!(err.help.contains("train_encoder: false"), "{err}");
        }
    }
}
