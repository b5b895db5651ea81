//! ViRB's `SiamesePixelWisePredictionHead`: the kit's [`SiameseFusion`] (`fusion1` for the
//! deepest level .. `fusion5`) then its [`PixelDecoder`] (`up1` .. `up5`), channels taken from the
//! encoder's [`HeadRequest::features`] (per-sample shapes `[2, C, h, w]`). The decoder's output has
//! twice `conv`'s size; when that differs from the batch's input (odd sizes), it is resized
//! bilinearly (align_corners false) to [`ForwardContext`]'s `input_height` x `input_width`.
use crate::{
    metric::{loss, FlowMetric},
    options::Target,
};
use tch::{nn, Kind, Tensor as T};
use virb_plugin_api::{
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RResult, RSlice, RVec},
    },
    guard, parse_device, ForwardContext, Head, HeadBox, HeadRequest, MetricBox, NamedTensor,
    NamedTensorRef, PluginError, Tensor, TensorRef,
};
use virb_plugin_kit::pixel_heads::{level_channels, PixelDecoder, SiameseFusion};

/// The pyramid levels the head consumes, shallow to deep.
pub const LEVELS: [&str; 5] = ["conv", "block1", "block2", "block3", "block4"];

/// The siamese pixel-wise head with the loss and metric of its [`Target`].
pub struct SiameseHead {
    vs: nn::VarStore,
    fusion: SiameseFusion,
    decoder: PixelDecoder,
    target: Target,
}

impl SiameseHead {
    /// A freshly initialised head (PyTorch's default initialisation, seeded by the request).
    pub fn new(request: &HeadRequest, target: Target) -> Result<Self, PluginError> {
        if request.num_outputs != target.outputs() {
            return Err(PluginError::invalid_input(format!(
                "KITTI: the data set has {} outputs but target `{}` needs {}",
                request.num_outputs,
                target.as_str(),
                target.outputs()
            ))
            .with_help("give the job's data set and head the same task_options"));
        }
        let channels = level_channels(&request.features, &LEVELS, 2)?;
        tch::manual_seed(request.seed as i64);
        let vs = nn::VarStore::new(parse_device(request.device.as_str())?);
        let root = vs.root();
        let fusion = SiameseFusion::new(&root, &channels);
        let decoder = PixelDecoder::new(&root, &channels, i64::from(target.outputs()))?;
        Ok(SiameseHead {
            vs,
            fusion,
            decoder,
            target,
        })
    }

    /// Boxes the head for the plugin boundary.
    pub fn boxed(self) -> HeadBox {
        HeadBox::from_value(self, TD_Opaque)
    }

    fn variables(&self) -> Vec<(String, T)> {
        let mut vars: Vec<_> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// The forward pass on `[B, 2, C, h, w]` levels (shallow to deep), to `[B, out, H, W]` with
    /// `(H, W) = size` (the decoder's own size when `size` has a zero).
    pub fn run(&self, levels: &[T], size: (i64, i64)) -> Result<T, PluginError> {
        let levels = levels
            .iter()
            .map(|l| l.f_to_kind(Kind::Float))
            .collect::<Result<Vec<_>, _>>()?;
        let fused = self.fusion.forward(&levels)?;
        let out = self.decoder.forward(&fused)?;
        let (h, w) = size;
        if h > 0 && w > 0 && out.size()[2..] != [h, w] {
            return Ok(out.f_upsample_bilinear2d([h, w], false, None, None)?);
        }
        Ok(out)
    }
}

impl Head for SiameseHead {
    fn parameters(&self) -> RResult<RVec<NamedTensor>, PluginError> {
        guard(|| {
            Ok(self
                .variables()
                .into_iter()
                .filter(|(_, t)| t.requires_grad())
                .map(|(n, t)| NamedTensor::new(n, t))
                .collect())
        })
    }

    fn state(&self) -> RResult<RVec<NamedTensor>, PluginError> {
        guard(|| {
            Ok(self
                .variables()
                .into_iter()
                .map(|(n, t)| NamedTensor::new(n, t))
                .collect())
        })
    }

    fn load_state(&mut self, state: RVec<NamedTensor>) -> RResult<(), PluginError> {
        guard(|| {
            let mut own = self.vs.variables();
            let mut seen = 0;
            for named in state {
                let name = named.name.to_string();
                let src = named.tensor.into_tch();
                let dst = own.get_mut(&name).ok_or_else(|| {
                    PluginError::invalid_input(format!(
                        "unexpected tensor `{name}` in the KITTI head's state"
                    ))
                })?;
                if dst.size() != src.size() {
                    return Err(PluginError::invalid_input(format!(
                        "KITTI head tensor `{name}` has shape {:?}, expected {:?}",
                        src.size(),
                        dst.size()
                    )));
                }
                tch::no_grad(|| dst.f_copy_(&src))?;
                seen += 1;
            }
            if seen != own.len() {
                return Err(PluginError::invalid_input(format!(
                    "the KITTI head's state has {seen} of its {} tensors",
                    own.len()
                )));
            }
            Ok(())
        })
    }

    fn forward(
        &self,
        features: RSlice<'_, NamedTensorRef<'_>>,
        context: ForwardContext,
    ) -> RResult<Tensor, PluginError> {
        guard(|| {
            let levels = LEVELS
                .iter()
                .map(|name| {
                    features
                        .iter()
                        .find(|f| f.name.as_str() == *name)
                        .map(|f| f.tensor.shallow_clone())
                        .ok_or_else(|| {
                            PluginError::invalid_input(format!(
                                "the KITTI head needs the feature `{name}`, which was not given"
                            ))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let size = (
                i64::from(context.input_height),
                i64::from(context.input_width),
            );
            Ok(Tensor::new(self.run(&levels, size)?))
        })
    }

    fn loss(&self, output: TensorRef<'_>, target: TensorRef<'_>) -> RResult<Tensor, PluginError> {
        guard(|| {
            Ok(Tensor::new(loss(
                self.target,
                &output.shallow_clone(),
                &target.shallow_clone(),
            )?))
        })
    }

    fn new_metric(&self) -> RResult<MetricBox, PluginError> {
        guard(|| {
            Ok(MetricBox::from_value(
                FlowMetric::new(self.target),
                TD_Opaque,
            ))
        })
    }
}

#[cfg(test)]
mod flow_head_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use virb_plugin_api::FeatureSpec;

    /// ResNet's spatial rule: each of conv, max-pool, layer2..4 maps n to ⌊(n − 1)/2⌋ + 1.
    fn pyramid(h: i64, w: i64, channels: &[i64]) -> Vec<(i64, i64, i64)> {
        let half = |n: i64| (n - 1) / 2 + 1;
        let mut size = (half(h), half(w));
        channels
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                if i > 0 {
                    size = (half(size.0), half(size.1));
                }
                (c, size.0, size.1)
            })
            .collect()
    }

    fn request(channels: &[i64], outputs: u32) -> HeadRequest {
        HeadRequest {
            features: LEVELS
                .iter()
                .zip(pyramid(64, 64, channels))
                .map(|(n, (c, h, w))| FeatureSpec {
                    name: (*n).into(),
                    shape: vec![2, c, h, w].into(),
                })
                .collect(),
            num_outputs: outputs,
            device: "cpu".into(),
            seed: 3,
            options_json: "{}".into(),
            input_height: 64,
            input_width: 64,
            encoder_state: RVec::new(),
        }
    }

    const CHANNELS: [i64; 5] = [4, 8, 8, 16, 16];

    fn features(b: i64, h: i64, w: i64) -> Vec<T> {
        pyramid(h, w, &CHANNELS)
            .into_iter()
            .map(|(c, fh, fw)| T::randn([b, 2, c, fh, fw], (Kind::Half, tch::Device::Cpu)))
            .collect()
    }

    #[test]
    fn flow_head_output_has_the_input_size_for_odd_and_even_sizes() {
        let head = SiameseHead::new(&request(&CHANNELS, 2), Target::Flow).unwrap();
        for (h, w) in [(64, 64), (65, 63), (375, 66)] {
            let out = head.run(&features(3, h, w), (h, w)).unwrap();
            assert_eq!(out.size(), [3, 2, h, w], "input {h}x{w}");
        }
        let viz = SiameseHead::new(&request(&CHANNELS, 1), Target::Viz).unwrap();
        assert_eq!(
            viz.run(&features(1, 33, 40), (33, 40)).unwrap().size(),
            [1, 1, 33, 40]
        );
    }

    #[test]
    fn flow_head_has_virbs_state_names() {
        let head = SiameseHead::new(&request(&CHANNELS, 2), Target::Flow).unwrap();
        let names: Vec<String> = head.variables().into_iter().map(|(n, _)| n).collect();
        for k in 1..=5 {
            for p in ["weight", "bias"] {
                assert!(names.contains(&format!("fusion{k}.{p}")), "{names:?}");
                assert!(names.contains(&format!("up{k}.0.{p}")), "{names:?}");
            }
        }
        assert_eq!(names.len(), 20);
        let sizes: Vec<Vec<i64>> = head.variables().iter().map(|(_, t)| t.size()).collect();
        // fusion1 fuses the deepest level (16 + 16 -> 16); up5 ends in 4 x 2 outputs.
        let i = names.iter().position(|n| n == "fusion1.weight").unwrap();
        assert_eq!(sizes[i], [16, 32, 1, 1]);
        let i = names.iter().position(|n| n == "up5.0.weight").unwrap();
        assert_eq!(sizes[i], [8, 4, 3, 3]);
    }

    #[test]
    fn flow_head_refuses_mismatched_requests() {
        assert!(SiameseHead::new(&request(&CHANNELS, 1), Target::Flow).is_err());
        let mut r = request(&CHANNELS, 2);
        r.features.truncate(4);
        let msg = SiameseHead::new(&r, Target::Flow)
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("block4"), "{msg}");
        let mut r = request(&CHANNELS, 2);
        r.features[0].shape = vec![4, 32, 32].into();
        assert!(SiameseHead::new(&r, Target::Flow).is_err());
    }
}
