//! virb encoder plugin: torchvision's ResNets, the bottleneck ResNet-50, -101 and -152 (v1.5:
//! stride in the 3x3 convolution) and the basic-block ResNet-18 and -34, frozen, in eval mode; or
//! fine-tuned with the head, when the host asks for `Encoder::trainable_parameters` and trains
//! through `Encoder::forward_train`.
//!
//! Weights are read from `torch.save(model.state_dict())` files as torchvision and ViRB write them
//! (keys with or without a `model.` or `module.` prefix, zip or legacy format) and from safetensors
//! files. Loading is strict: a missing, unexpected or mis-shaped tensor is an error that names it;
//! only `fc.*` (the unused classifier) and `*.num_batches_tracked` are ignored. When the file is a
//! self-supervised project's checkpoint (MoCo, SwAV, VISSL, ...), the error says which and gives
//! the `virb-host convert` command that extracts the trunk.
//!
//! Each factory offers the `virb.encoder.check_weights/v1` capability
//! ([`virb_plugin_api::ENCODER_CHECK_WEIGHTS`]): the strict load's comparison as data.
//!
//! Outputs: `embedding` `[N, 2048]` (`[N, 512]` for ResNet-18/34; global average pool) and the
//! pyramid `conv` (stem, before max-pool), `block1`..`block4` (after each stage).
#![allow(non_local_definitions)]

pub mod arch;
mod blocks;
mod folded;
pub mod model;
pub mod weights;

use model::{Arch, ResNet, ResNetOptions};
use serde::Deserialize;
use std::path::Path;
use virb_plugin_api::{
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{ROption, RResult, RSlice, RStr, RString, RVec},
    },
    device_name, guard, no_extension, parse_device, Encoder, EncoderBox, EncoderFactory,
    EncoderFactoryBox, EncoderInfo, EncoderRequest, ExtensionCall, ExtensionReply, ExtensionResult,
    FeatureSpec, NamedTensor, OutputSpec, PluginError, TensorRef, ENCODER_CHECK_WEIGHTS,
    ENCODER_PRECISIONS,
};

/// The factory of one ResNet (`resnet50`, ...).
pub struct ResNetFactory {
    name: &'static str,
    arch: Arch,
}

/// Options an experiment list may give (`options:` mapping).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Options {
    /// Run convolutions in channels-last memory layout (faster on CPUs and recent GPUs; same
    /// numbers up to float rounding). Default: true.
    channels_last: Option<bool>,
    /// `fp32`, `bf16` or `fp16`: the type the frozen network computes in (its outputs are
    /// float32). bf16 is fast on GPUs and on CPUs with bf16 instructions (`virb-host devices`
    /// says); fp16 is for GPUs. Unset here it is fp32, but virb-host fills it in from its
    /// `--precision` (plugin-api's `ENCODER_PRECISIONS`). Part of the feature cache's key and of every result's
    /// `encoder_options`, like every option.
    precision: Option<String>,
}

impl EncoderFactory for ResNetFactory {
    fn info(&self) -> RResult<EncoderInfo, PluginError> {
        guard(|| {
            Ok(EncoderInfo {
            name: self.name.into(),
            description: format!(
                "torchvision {} (v1.5), frozen or fine-tuned; outputs embedding and the conv/block1..block4 pyramid",
                self.name
            )
            .into(),
            outputs: self.arch.outputs()
                .iter()
                .map(|(name, channels, stride)| OutputSpec {
                    name: (*name).into(),
                    channels: *channels,
                    stride: *stride,
                })
                .collect(),
            weight_formats: "torch.save(state_dict) .pt/.pth (zip or legacy; keys with or without `model.`/`module.`), .safetensors".into(),
        })
        })
    }

    fn load(&self, request: EncoderRequest) -> RResult<EncoderBox, PluginError> {
        guard(|| {
            let options: Options = if request.options_json.trim().is_empty() {
                Options::default()
            } else {
                serde_json::from_str(&request.options_json).map_err(|e| {
                    PluginError::invalid_input(format!("{} encoder options: {e}", self.name))
                        .with_help("the options are `channels_last: true|false` and `precision: fp32|bf16|fp16`")
                })?
            };
            let kind = match options.precision.as_deref().unwrap_or("fp32") {
                "fp32" => tch::Kind::Float,
                "bf16" => tch::Kind::BFloat16,
                "fp16" => tch::Kind::Half,
                other => {
                    return Err(PluginError::invalid_input(format!(
                        "{} encoder options: unknown precision `{other}`",
                        self.name
                    ))
                    .with_help("use `precision: fp32`, `bf16` or `fp16`"))
                }
            };
            let device = parse_device(&request.device)?;
            let path = Path::new(request.weights.as_str());
            let net = ResNet::load(
                path,
                self.arch,
                device,
                ResNetOptions {
                    channels_last: options.channels_last.unwrap_or(true),
                    kind,
                },
            )?;
            Ok(EncoderBox::from_value(
                LoadedResNet {
                    net,
                    device,
                    arch: self.arch,
                },
                TD_Opaque,
            ))
        })
    }

    fn extension(&self, name: RStr<'_>, call: ExtensionCall) -> ExtensionResult {
        if name.as_str() == ENCODER_PRECISIONS {
            return RResult::ROk(ROption::RSome(ExtensionReply::json(
                r#"{"precisions": ["fp32", "bf16", "fp16"]}"#,
            )));
        }
        if name.as_str() != ENCODER_CHECK_WEIGHTS {
            return no_extension();
        }
        guard(|| {
            #[derive(Deserialize)]
            struct Call {
                weights: String,
            }
            let call: Call = serde_json::from_str(&call.json).map_err(|e| {
                PluginError::invalid_input(format!("{ENCODER_CHECK_WEIGHTS}: bad call: {e}"))
                    .with_help("pass {\"weights\": \"<path>\"}")
            })?;
            let reply = weights::check(Path::new(&call.weights), self.arch)?;
            Ok(ROption::RSome(ExtensionReply::json(reply.to_string())))
        })
    }
}

struct LoadedResNet {
    net: ResNet,
    device: tch::Device,
    arch: Arch,
}

impl Encoder for LoadedResNet {
    fn device(&self) -> RResult<RString, PluginError> {
        guard(|| Ok(device_name(self.device).into()))
    }

    fn output_shapes(&self, height: i64, width: i64) -> RResult<RVec<FeatureSpec>, PluginError> {
        guard(|| {
            Ok(self
                .arch
                .output_shapes(height, width)
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
            Ok(named(self.net.forward(&images, &wanted)?))
        })
    }

    fn trainable_parameters(&self) -> RResult<RVec<NamedTensor>, PluginError> {
        guard(|| Ok(named(self.net.trainable_parameters()?)))
    }

    fn forward_train(
        &self,
        images: TensorRef<'_>,
        outputs: RSlice<'_, RString>,
    ) -> RResult<RVec<NamedTensor>, PluginError> {
        guard(|| {
            let images = images.shallow_clone();
            let wanted: Vec<&str> = outputs.iter().map(|s| s.as_str()).collect();
            Ok(named(self.net.forward_train(&images, &wanted)?))
        })
    }

    fn state(&self) -> RResult<RVec<NamedTensor>, PluginError> {
        guard(|| Ok(named(self.net.state()?)))
    }
}

fn named(tensors: Vec<(String, tch::Tensor)>) -> RVec<NamedTensor> {
    tensors
        .into_iter()
        .map(|(name, t)| NamedTensor::new(name, t))
        .collect()
}

/// The encoders this plugin exports (`resnet50`, `resnet101`, `resnet152`, `resnet18`,
/// `resnet34`), as the host sees them.
pub fn factories() -> Vec<EncoderFactoryBox> {
    [
        ("resnet50", Arch::RESNET50),
        ("resnet101", Arch::RESNET101),
        ("resnet152", Arch::RESNET152),
        ("resnet18", Arch::RESNET18),
        ("resnet34", Arch::RESNET34),
    ]
    .into_iter()
    .map(|(name, arch)| EncoderFactoryBox::from_value(ResNetFactory { name, arch }, TD_Opaque))
    .collect()
}

virb_plugin_api::export_encoder_plugin!(factories());
