//! A virb encoder plugin built outside the virb workspace, as a template to copy.
//!
//! Encoder `template-tinyconv`: a two-layer convolutional network ([`model`]) whose weights load,
//! strictly, from a safetensors file written by PyTorch. It serves every image-level task of virb
//! (the `embedding` output) and exposes two feature maps (`block1`, `block2`). It does not
//! implement fine-tuning: `Encoder`'s default methods answer that it is not supported, so a job
//! with `train_encoder: true` fails with that message and the others run.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod model;

use std::path::Path;
use virb_plugin_api::{
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RResult, RSlice, RString, RVec},
    },
    device_name, guard, parse_device, Encoder, EncoderBox, EncoderFactory, EncoderFactoryBox,
    EncoderInfo, EncoderRequest, FeatureSpec, NamedTensor, OutputSpec, PluginError, TensorRef,
};

/// The encoder's name, as experiment lists write it in `encoder:`.
pub const ENCODER: &str = "template-tinyconv";

/// Builds [`TinyConvEncoder`]s from weights files.
pub struct TinyConvFactory;

/// A loaded encoder.
pub struct TinyConvEncoder {
    model: model::TinyConv,
    device: tch::Device,
}

fn outputs() -> Vec<OutputSpec> {
    let spec = |name: &str, channels, stride| OutputSpec {
        name: name.into(),
        channels,
        stride,
    };
    vec![
        spec("embedding", model::BLOCK2, 0),
        spec("block1", model::BLOCK1, 2),
        spec("block2", model::BLOCK2, 4),
    ]
}

impl EncoderFactory for TinyConvFactory {
    fn info(&self) -> RResult<EncoderInfo, PluginError> {
        guard(|| {
            Ok(EncoderInfo {
                name: ENCODER.into(),
                description: "template: two 3x3 stride-2 convolutions and average pooling".into(),
                outputs: outputs().into(),
                weight_formats: "safetensors with conv1.{weight,bias}, conv2.{weight,bias}".into(),
            })
        })
    }

    fn load(&self, request: EncoderRequest) -> RResult<EncoderBox, PluginError> {
        guard(|| {
            let options: serde_json::Value = serde_json::from_str(request.options_json.as_str())
                .map_err(|e| PluginError::invalid_input(format!("options are not JSON: {e}")))?;
            if let Some(key) = options.as_object().and_then(|m| m.keys().next()) {
                return Err(PluginError::invalid_input(format!(
                    "unknown option `{key}` for encoder {ENCODER}"
                ))
                .with_help(format!("{ENCODER} takes no options; remove `options:`")));
            }
            let device = parse_device(request.device.as_str())?;
            let model = model::TinyConv::load(Path::new(request.weights.as_str()), device)?;
            Ok(EncoderBox::from_value(
                TinyConvEncoder { model, device },
                TD_Opaque,
            ))
        })
    }
}

impl Encoder for TinyConvEncoder {
    fn device(&self) -> RResult<RString, PluginError> {
        guard(|| Ok(device_name(self.device).into()))
    }

    fn output_shapes(&self, height: i64, width: i64) -> RResult<RVec<FeatureSpec>, PluginError> {
        guard(|| {
            if height < 1 || width < 1 {
                return Err(PluginError::invalid_input(format!(
                    "input size {height}x{width} is empty"
                )));
            }
            let (h1, w1) = (model::conv_side(height), model::conv_side(width));
            let (h2, w2) = (model::conv_side(h1), model::conv_side(w1));
            let spec = |name: &str, shape: Vec<i64>| FeatureSpec {
                name: name.into(),
                shape: shape.into(),
            };
            Ok(vec![
                spec("embedding", vec![model::BLOCK2]),
                spec("block1", vec![model::BLOCK1, h1, w1]),
                spec("block2", vec![model::BLOCK2, h2, w2]),
            ]
            .into())
        })
    }

    fn forward(
        &self,
        images: TensorRef<'_>,
        outputs: RSlice<'_, RString>,
    ) -> RResult<RVec<NamedTensor>, PluginError> {
        guard(|| {
            let (block1, block2, embedding) = self.model.forward(&images.shallow_clone())?;
            outputs
                .iter()
                .map(|name| {
                    let tensor = match name.as_str() {
                        "embedding" => embedding.shallow_clone(),
                        "block1" => block1.shallow_clone(),
                        "block2" => block2.shallow_clone(),
                        other => {
                            return Err(PluginError::invalid_input(format!(
                            "{ENCODER} has no output `{other}` (it has embedding, block1, block2)"
                        )))
                        }
                    };
                    Ok(NamedTensor::new(name.as_str(), tensor))
                })
                .collect()
        })
    }
}

virb_plugin_api::export_encoder_plugin!(vec![EncoderFactoryBox::from_value(
    TinyConvFactory,
    TD_Opaque
)]);

#[cfg(test)]
mod tests;
