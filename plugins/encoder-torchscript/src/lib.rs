//! virb encoder plugin `torchscript`: any model exported from Python with `torch.jit.trace` or
//! `torch.jit.script` and saved with `torch.jit.save`, frozen (eval mode, no gradients), used
//! without writing Rust.
//!
//! Contract (README.md, "TorchScript encoders"): `forward` takes one tensor `[N, 3, H, W]`,
//! float32, normalised with the model's mean and std (virb's tasks give ImageNet-normalised
//! images; the `mean` / `std` options convert them in one affine op, and `input_size` resizes
//! them), and returns either a tensor `[N, D]` (the `embedding`) or a dict of tensors with
//! `embedding` `[N, D]` and, for pixel-wise tasks, the pyramid `conv`, `block1`..`block4`, each
//! `[N, C, h, w]`. Their widths are discovered with one probe forward per input size
//! ([`model::TorchScriptModel::output_shapes`]) and must not change between batches.
//!
//! Fine-tuning is not supported (the `Encoder` defaults answer with a clear error), and neither
//! are the DeepLab heads, which copy ResNet-50's `layer4` from the encoder's state.
#![allow(non_local_definitions)]

pub mod error;
pub mod model;
pub mod options;

use model::TorchScriptModel;
use options::{Options, KNOWN_OUTPUTS};
use std::path::Path;
use virb_plugin_api::{
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RResult, RSlice, RString, RVec},
    },
    device_name, guard, parse_device, Encoder, EncoderBox, EncoderFactory, EncoderFactoryBox,
    EncoderInfo, EncoderRequest, FeatureSpec, NamedTensor, OutputSpec, PluginError, TensorRef,
};

/// The `torchscript` encoder factory.
pub struct TorchScriptFactory;

impl EncoderFactory for TorchScriptFactory {
    fn info(&self) -> RResult<EncoderInfo, PluginError> {
        guard(|| {
            Ok(EncoderInfo {
                name: "torchscript".into(),
                description: "any TorchScript model (torch.jit.trace / torch.jit.script), frozen; \
                    outputs the model's `embedding` and, if it returns them, `conv`, \
                    `block1`..`block4`, whose channels (shown as 0 here) and strides come from \
                    the loaded model"
                    .into(),
                // Channels and strides are unknown until a model is loaded: the host checks the
                // names here and takes the shapes from `Encoder::output_shapes` or the features.
                outputs: KNOWN_OUTPUTS
                    .iter()
                    .map(|name| OutputSpec {
                        name: (*name).into(),
                        channels: 0,
                        stride: 0,
                    })
                    .collect(),
                weight_formats: "TorchScript archive (torch.jit.save of torch.jit.trace or torch.jit.script); options: mean, std, input_size, channels_last, outputs".into(),
            })
        })
    }

    fn load(&self, request: EncoderRequest) -> RResult<EncoderBox, PluginError> {
        guard(|| {
            let options = Options::parse(&request.options_json)?.resolve()?;
            let device = parse_device(&request.device)?;
            let model =
                TorchScriptModel::load(Path::new(request.weights.as_str()), device, options)?;
            Ok(EncoderBox::from_value(LoadedModel { model }, TD_Opaque))
        })
    }
}

struct LoadedModel {
    model: TorchScriptModel,
}

impl Encoder for LoadedModel {
    fn device(&self) -> RResult<RString, PluginError> {
        guard(|| Ok(device_name(self.model.device()).into()))
    }

    fn output_shapes(&self, height: i64, width: i64) -> RResult<RVec<FeatureSpec>, PluginError> {
        guard(|| {
            Ok(self
                .model
                .output_shapes(height, width)?
                .into_iter()
                .map(|(name, shape)| FeatureSpec {
                    name: name.into(),
                    shape: shape.into(),
                })
                .collect())
        })
    }

    fn forward(
        &self,
        images: TensorRef<'_>,
        outputs: RSlice<'_, RString>,
    ) -> RResult<RVec<NamedTensor>, PluginError> {
        guard(|| {
            let images = images.shallow_clone();
            let wanted: Vec<&str> = outputs.iter().map(|s| s.as_str()).collect();
            Ok(self
                .model
                .forward(&images, &wanted)?
                .into_iter()
                .map(|(name, t)| NamedTensor::new(name, t))
                .collect())
        })
    }
}

/// The encoders this plugin exports (`torchscript`), as the host sees them.
pub fn factories() -> Vec<EncoderFactoryBox> {
    vec![EncoderFactoryBox::from_value(TorchScriptFactory, TD_Opaque)]
}

virb_plugin_api::export_encoder_plugin!(factories());
