//! The tasks' heads, losses and metrics behind the plugin's `Head`:
//!
//! * DeepLab ([`virb_plugin_kit::deeplab`], Cityscapes and EgoHands) on `block1` and `block3`,
//!   its `layer4` replica copied from the encoder's state, with softmax cross-entropy (optional
//!   class weights) over the pixels whose target is not [`IGNORE`];
//! * PixelWise ([`virb_plugin_kit::pixel_heads::PixelDecoder`] through [`crate::pixel`],
//!   Pets-Detection and NYUWalkable) on `conv`, `block1`..`block4` with one output and
//!   BCE-with-logits over the non-ignored pixels.
//!
//! The output is `[B, C, H, W]` at the batch's input size ([`ForwardContext`]): DeepLab resizes
//! to it itself; the PixelWise decoder's output (twice the `conv` level) is resized bilinearly
//! (align_corners false) when it differs, as for odd input sizes.
use crate::dense::IGNORE;
use crate::metric::{Scoring, SegMetric};
use crate::pixel::PixelNet;
use tch::{nn, Kind, Reduction, Tensor as T};
use virb_plugin_api::{
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RResult, RSlice, RVec},
    },
    guard, parse_device, ForwardContext, Head, HeadBox, HeadRequest, MetricBox, NamedTensor,
    NamedTensorRef, PluginError, Tensor, TensorRef,
};
use virb_plugin_kit::{
    deeplab::{DeepLab, DeepLabConfig},
    dense_losses,
    pixel_heads::level_channels,
};

/// The levels the DeepLab head reads.
pub const DEEPLAB_LEVELS: [&str; 2] = ["block1", "block3"];
/// The levels the PixelWise head reads, shallow to deep.
pub const PIXEL_LEVELS: [&str; 5] = ["conv", "block1", "block2", "block3", "block4"];

/// The first tensor of the encoder's `layer4` the DeepLab head reads its width from.
const LAYER4_FIRST: &str = "layer4.0.conv1.weight";

enum Net {
    DeepLab(Box<DeepLab>),
    Pixel(PixelNet),
}

/// The training loss.
#[derive(Debug, Clone)]
pub enum Loss {
    /// Softmax cross-entropy with optional class weights, [`IGNORE`] excluded.
    CrossEntropy(Option<Vec<f64>>),
    /// BCE-with-logits on one channel, [`IGNORE`] excluded.
    Binary,
}

/// A dense head, its loss and its metric.
pub struct DenseHead {
    vs: nn::VarStore,
    net: Net,
    loss: Loss,
    scoring: Scoring,
}

/// The encoder's `layer4` tensor that the DeepLab replica's variable `name` starts from.
fn layer4_source(name: &str) -> Option<String> {
    let rest = name.strip_prefix("block4.")?;
    if let Some(r) = rest.strip_prefix("upsample_layer.") {
        Some(format!("layer4.0.{r}"))
    } else if let Some(r) = rest.strip_prefix("conv.0.") {
        Some(format!("layer4.1.{r}"))
    } else {
        rest.strip_prefix("conv.1.")
            .map(|r| format!("layer4.2.{r}"))
    }
}

impl DenseHead {
    /// ViRB's DeepLabV3+ head with `classes` outputs, sized from the pyramid and the encoder's
    /// `layer4`, whose weights it starts from.
    pub fn deeplab(
        task: &str,
        request: &HeadRequest,
        loss: Loss,
        scoring: Scoring,
    ) -> Result<Self, PluginError> {
        let ch = level_channels(&request.features, &DEEPLAB_LEVELS, 1)?;
        let state: Vec<(String, tch::Tensor)> = request
            .encoder_state
            .iter()
            .map(|n| (n.name.to_string(), n.tensor.shallow_clone().into_tch()))
            .collect();
        let missing = |name: &str| {
            PluginError::invalid_input(format!(
                "{task}: the DeepLab head starts from a ResNet's layer4, but the encoder's state has no `{name}` ({} tensors given)",
                state.len()
            ))
            .with_help("use a torchvision-style ResNet encoder (resnet50, resnet101, resnet152) that gives its state to the head")
        };
        let first = state
            .iter()
            .find(|(n, _)| n == LAYER4_FIRST)
            .ok_or_else(|| missing(LAYER4_FIRST))?;
        let width = first.1.size().first().copied().unwrap_or(0);
        let classes = i64::from(request.num_outputs);
        let config = DeepLabConfig {
            low_channels: ch[0],
            mid_channels: ch[1],
            width,
            bn_momentum: crate::options::bn_momentum(task, request.options_json.as_str())?,
            ..DeepLabConfig::resnet50(classes)
        };
        let device = parse_device(request.device.as_str())?;
        tch::manual_seed(request.seed as i64);
        let mut vs = nn::VarStore::new(device);
        let net = DeepLab::new(&vs.root(), config);
        let mut own: Vec<String> = vs
            .variables()
            .into_keys()
            .filter_map(|n| layer4_source(&n))
            .collect();
        own.sort();
        if let Some(name) = own.iter().find(|src| !state.iter().any(|(n, _)| n == *src)) {
            return Err(missing(name));
        }
        DeepLab::load_layer4(&mut vs, "", &state)?;
        Ok(DenseHead {
            vs,
            net: Net::DeepLab(Box::new(net)),
            loss,
            scoring,
        })
    }

    /// ViRB's PixelWise head with one output per channel of `request.num_outputs`.
    pub fn pixel(request: &HeadRequest, loss: Loss, scoring: Scoring) -> Result<Self, PluginError> {
        let ch = level_channels(&request.features, &PIXEL_LEVELS, 1)?;
        let device = parse_device(request.device.as_str())?;
        tch::manual_seed(request.seed as i64);
        let vs = nn::VarStore::new(device);
        let net = PixelNet::new(&vs, &ch, i64::from(request.num_outputs))?;
        Ok(DenseHead {
            vs,
            net: Net::Pixel(net),
            loss,
            scoring,
        })
    }

    /// Boxes the head for the plugin boundary.
    pub fn boxed(self) -> HeadBox {
        HeadBox::from_value(self, TD_Opaque)
    }

    fn sorted_variables(&self) -> Vec<(String, tch::Tensor)> {
        let mut vars: Vec<_> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// The forward pass on named features (`[B, C, h, w]` each).
    pub fn run(
        &self,
        features: &[(&str, tch::Tensor)],
        context: ForwardContext,
    ) -> Result<tch::Tensor, PluginError> {
        let level = |name: &str| -> Result<tch::Tensor, PluginError> {
            let t = features
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| {
                    PluginError::invalid_input(format!(
                        "the head needs the feature `{name}`, which was not given"
                    ))
                })?;
            if t.dim() != 4 {
                return Err(PluginError::tensor(format!(
                    "feature `{name}` has shape {:?}; expected [B, C, h, w]",
                    t.size()
                )));
            }
            Ok(t.f_to_kind(Kind::Float)?)
        };
        let size = [
            i64::from(context.input_height),
            i64::from(context.input_width),
        ];
        match &self.net {
            Net::DeepLab(net) => {
                let (b1, b3) = (level("block1")?, level("block3")?);
                if context.train && b3.size()[0] == 1 {
                    // The pooled ASPP branch's batch norm needs two values per channel in
                    // training mode: a lone sample goes through as a pair of itself.
                    let (b1, b3) = (b1.f_repeat([2, 1, 1, 1])?, b3.f_repeat([2, 1, 1, 1])?);
                    return Ok(net.forward(&b1, &b3, size, true)?.f_narrow(0, 0, 1)?);
                }
                net.forward(&b1, &b3, size, context.train)
            }
            Net::Pixel(net) => {
                let levels = PIXEL_LEVELS
                    .iter()
                    .map(|n| level(n))
                    .collect::<Result<Vec<_>, _>>()?;
                let out = net.forward(&levels)?;
                if out.size()[2..] == size {
                    Ok(out)
                } else {
                    Ok(out.f_upsample_bilinear2d(size, false, None, None)?)
                }
            }
        }
    }

    /// The loss of `output` against `target` `[B, H, W]`.
    pub fn loss_of(
        &self,
        output: &tch::Tensor,
        target: &tch::Tensor,
    ) -> Result<tch::Tensor, PluginError> {
        let target = target
            .f_to_device(output.device())?
            .f_to_kind(Kind::Int64)?;
        let counted = target.f_ne(i64::from(IGNORE))?;
        if counted.f_sum(Kind::Int64)?.int64_value(&[]) == 0 {
            // Nothing to learn from in this batch (all void or padding): a zero with the graph.
            return Ok(output.f_sum(Kind::Float)?.f_mul_scalar(0.0)?);
        }
        match &self.loss {
            Loss::CrossEntropy(weights) => dense_losses::cross_entropy(
                output,
                &target,
                weights.as_deref(),
                Some(i64::from(IGNORE)),
            ),
            Loss::Binary => {
                let (os, ts) = (output.size(), target.size());
                if os.len() != 4
                    || os[1] != 1
                    || ts.len() != 3
                    || os[0] != ts[0]
                    || os[2..] != ts[1..]
                {
                    return Err(PluginError::tensor(format!(
                        "binary pixel loss: output {os:?} and target {ts:?}; expected [B, 1, H, W] and [B, H, W]"
                    )));
                }
                let t = target.f_masked_select(&counted)?;
                if t.f_gt(1)?.f_any()?.int64_value(&[]) != 0
                    || t.f_lt(0)?.f_any()?.int64_value(&[]) != 0
                {
                    return Err(PluginError::tensor(
                        "binary pixel loss: a target is neither 0, 1 nor the ignored id 255",
                    ));
                }
                let logits = output.f_select(1, 0)?.f_masked_select(&counted)?;
                Ok(logits.f_binary_cross_entropy_with_logits::<T>(
                    &t.f_to_kind(Kind::Float)?,
                    None,
                    None,
                    Reduction::Mean,
                )?)
            }
        }
    }
}

impl Head for DenseHead {
    fn parameters(&self) -> RResult<RVec<NamedTensor>, PluginError> {
        guard(|| {
            Ok(self
                .sorted_variables()
                .into_iter()
                .filter(|(_, t)| t.requires_grad())
                .map(|(n, t)| NamedTensor::new(n, t))
                .collect())
        })
    }

    fn state(&self) -> RResult<RVec<NamedTensor>, PluginError> {
        guard(|| {
            Ok(self
                .sorted_variables()
                .into_iter()
                .map(|(n, t)| NamedTensor::new(n, t))
                .collect())
        })
    }

    fn load_state(&mut self, state: RVec<NamedTensor>) -> RResult<(), PluginError> {
        guard(|| {
            let mut own = self.vs.variables();
            let mut seen = std::collections::BTreeSet::new();
            for named in state {
                let name = named.name.to_string();
                let src = named.tensor.into_tch();
                let dst = own.get_mut(&name).ok_or_else(|| {
                    PluginError::invalid_input(format!("unexpected tensor `{name}` in head state"))
                })?;
                if dst.size() != src.size() {
                    return Err(PluginError::invalid_input(format!(
                        "head tensor `{name}` has shape {:?}, expected {:?}",
                        src.size(),
                        dst.size()
                    )));
                }
                tch::no_grad(|| dst.f_copy_(&src))?;
                seen.insert(name);
            }
            if let Some(name) = own.keys().find(|n| !seen.contains(*n)) {
                return Err(PluginError::invalid_input(format!(
                    "head state has {} of {} tensors; `{name}` is missing",
                    seen.len(),
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
            let named: Vec<(&str, tch::Tensor)> = features
                .iter()
                .map(|f| (f.name.as_str(), f.tensor.shallow_clone()))
                .collect();
            Ok(Tensor::new(self.run(&named, context)?))
        })
    }

    fn loss(&self, output: TensorRef<'_>, target: TensorRef<'_>) -> RResult<Tensor, PluginError> {
        guard(|| {
            Ok(Tensor::new(self.loss_of(
                &output.shallow_clone(),
                &target.shallow_clone(),
            )?))
        })
    }

    fn new_metric(&self) -> RResult<MetricBox, PluginError> {
        guard(|| {
            Ok(MetricBox::from_value(
                SegMetric::new(self.scoring.clone()),
                TD_Opaque,
            ))
        })
    }
}

/// The description shared by the four tasks: family `segmentation`, pixel-wise, encodable,
/// `[headline, pixel_accuracy]` (both higher-is-better), and the levels of the head.
pub fn task_info(
    name: &str,
    data_dir: &str,
    layout: &str,
    headline: &str,
    deeplab: bool,
) -> virb_plugin_api::TaskInfo {
    use virb_plugin_api::{abi_stable::std_types::RString, MetricSpec};
    let levels: &[&str] = if deeplab {
        &DEEPLAB_LEVELS
    } else {
        &PIXEL_LEVELS
    };
    virb_plugin_api::TaskInfo {
        name: name.into(),
        family: "segmentation".into(),
        data_dir: data_dir.into(),
        layout: layout.into(),
        metrics: [headline, "pixel_accuracy"]
            .into_iter()
            .map(|m| MetricSpec {
                name: m.into(),
                higher_is_better: true,
            })
            .collect(),
        required_outputs: levels.iter().map(|l| RString::from(*l)).collect(),
        frames: 1,
        encodable: true,
        evaluates_heads_of: RString::new(),
        pixel_wise: true,
        wants_encoder_state: deeplab,
        options: if deeplab {
            vec![crate::options::bn_momentum_spec()].into()
        } else {
            RVec::new()
        },
    }
}
