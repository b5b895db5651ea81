//! The head, loss and metrics every task of this plugin shares.
//!
//! * Head: ViRB's `PixelWisePredictionHead(out)` ([`PixelDecoder`], state `up1.0.*` ..
//!   `up5.0.*`) over `conv`, `block1` .. `block4`, channels from the encoder's
//!   [`HeadRequest::features`]. Its output has twice `conv`'s size; when that differs from the
//!   batch's input (odd sizes), it is resized bilinearly (align_corners false) to
//!   [`ForwardContext`]'s `input_height` x `input_width`.
//! * Loss: mean L1 over the valid pixels of the batch ([`Validity`]): NYU's missing depth (0) and
//!   any NaN/inf are never trained on.
//! * Metrics ([`Scoring`]): per image over its valid pixels, then averaged over images (the depth
//!   toolboxes' convention, not a pooled mean over all pixels), with the kit's
//!   [`virb_plugin_kit::dense_metrics::Depth`]; `Metric::details()` states the protocol and counts
//!   the images without a valid pixel and the non-finite target pixels.
use tch::{nn, Kind, Tensor as T};
use virb_plugin_api::{
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RResult, RSlice, RString, RVec},
    },
    guard, parse_device, ForwardContext, Head, HeadBox, HeadRequest, Metric, MetricBox, MetricSpec,
    NamedTensor, NamedTensorRef, OptionSpec, PluginError, TaskInfo, Tensor, TensorRef,
};
use virb_plugin_kit::{
    dense_losses::masked_l1,
    dense_metrics::Depth,
    pixel_heads::{level_channels, PixelDecoder},
};

/// The pyramid levels the head consumes, shallow to deep.
pub const LEVELS: [&str; 5] = ["conv", "block1", "block2", "block3", "block4"];

/// Which target pixels the loss trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// Finite values (THOR's normalised depth lies in [−2, 2], so 0 and negatives are valid).
    Finite,
    /// Finite and > 0 (NYU: 0 is missing depth), the kit's `masked_l1`.
    FinitePositive,
}

/// A task's metrics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scoring {
    /// Depth in metres: `l1`, `rmse`, `abs_rel`, `delta1` over ground truth in `(min, max)`,
    /// predictions clamped to `[min, max]` (NYU: 0.001 to 10 m).
    Metres {
        /// Smallest valid depth (exclusive).
        min: f64,
        /// Largest valid depth (exclusive).
        max: f64,
    },
    /// THOR: `l1` and `rmse` on ViRB's normalised target t = (x − 0.5)/0.25 (the paper's unit);
    /// `abs_rel` and `delta1` on the de-normalised depth x = 0.25 t + 0.5 in [0, 1] (grey/255),
    /// over pixels with x > 0.5/255 (a ratio needs a positive depth), predictions clamped to
    /// (0.5/255, 1].
    Thor,
    /// `l1` and `rmse` over finite pixels (TaskonomyDepth: per-image min–max scaling removes
    /// scale and offset, so ratio metrics would be meaningless).
    L1Rmse,
    /// `l1` over finite pixels (TaskonomyEdges).
    L1,
    /// `hole_l1` (over the zeroed centre square, see [`hole`]) and `l1` (whole image, ViRB's),
    /// on the normalised 3-channel image.
    Inpainting,
}

impl Scoring {
    /// The metric names and directions, the headline first.
    pub fn metrics(self) -> Vec<MetricSpec> {
        let spec = |name: &str, higher_is_better| MetricSpec {
            name: name.into(),
            higher_is_better,
        };
        match self {
            Scoring::Metres { .. } | Scoring::Thor => vec![
                spec("l1", false),
                spec("rmse", false),
                spec("abs_rel", false),
                spec("delta1", true),
            ],
            Scoring::L1Rmse => vec![spec("l1", false), spec("rmse", false)],
            Scoring::L1 => vec![spec("l1", false)],
            Scoring::Inpainting => vec![spec("hole_l1", false), spec("l1", false)],
        }
    }

    fn protocol(self) -> &'static str {
        match self {
            Scoring::Metres { .. } => "per image over pixels with finite ground truth in (min_depth, max_depth) metres, predictions clamped to [min_depth, max_depth], then averaged over images; l1 = mean |p - g|, rmse = sqrt(mean (p - g)^2) per image, abs_rel = mean |p - g| / g, delta1 = share of max(p/g, g/p) < 1.25",
            Scoring::Thor => "per image, then averaged over images; l1 and rmse over finite pixels of ViRB's normalised target t = (grey/255 - 0.5)/0.25; abs_rel and delta1 on the de-normalised depth x = 0.25 t + 0.5 (grey/255) over pixels with x > 0.5/255, predictions clamped to [0.5/255, 1]",
            Scoring::L1Rmse | Scoring::L1 => "per image over finite target pixels, then averaged over images",
            Scoring::Inpainting => "per image on the normalised image, then averaged over images; hole_l1 over the zeroed centre square (all 3 channels), l1 over the whole image (ViRB's)",
        }
    }
}

/// The centre square ViRB zeroes for inpainting, `[lo, hi)` along a side of `side` pixels: rows
/// and columns 64..160 of 224 (the middle 96/224), scaled and rounded.
pub fn hole(side: i64) -> (i64, i64) {
    ((side * 64 + 112) / 224, (side * 160 + 112) / 224)
}

/// The description of one of this plugin's tasks.
pub fn task_info(
    name: &str,
    data_dir: &str,
    layout: &str,
    scoring: Scoring,
    options: Vec<OptionSpec>,
) -> TaskInfo {
    TaskInfo {
        name: name.into(),
        family: "depth".into(),
        data_dir: data_dir.into(),
        layout: layout.into(),
        metrics: scoring.metrics().into(),
        required_outputs: LEVELS.iter().map(|l| RString::from(*l)).collect(),
        frames: 1,
        encodable: true,
        evaluates_heads_of: RString::new(),
        pixel_wise: true,
        wants_encoder_state: false,
        options: options.into(),
    }
}

/// Mean |p − g| over the pixels whose target is finite (shapes as the kit's `masked_l1`).
pub fn finite_l1(pred: &T, target: &T) -> Result<T, PluginError> {
    let target = target.f_to_device(pred.device())?.f_to_kind(Kind::Float)?;
    let pred = if pred.dim() == target.dim() + 1 && pred.size()[1] == 1 {
        pred.f_squeeze_dim(1)?
    } else {
        pred.shallow_clone()
    };
    if pred.size() != target.size() {
        return Err(PluginError::tensor(format!(
            "L1 loss: prediction {:?} and target {:?} differ",
            pred.size(),
            target.size()
        )));
    }
    let valid = target.f_isfinite()?;
    if valid.f_sum(Kind::Int64)?.int64_value(&[]) == 0 {
        return Ok(pred.f_sum(Kind::Float)?.f_mul_scalar(0.0)?);
    }
    let diff = pred
        .f_masked_select(&valid)?
        .f_sub(&target.f_masked_select(&valid)?)?;
    Ok(diff.f_abs()?.f_mean(Kind::Float)?)
}

/// ViRB's PixelWise head with this task's loss and metrics.
pub struct PixelHead {
    vs: nn::VarStore,
    decoder: PixelDecoder,
    channels: Vec<i64>,
    validity: Validity,
    scoring: Scoring,
}

impl PixelHead {
    /// Builds a freshly initialised head with `request.num_outputs` output channels.
    pub fn build(
        request: &HeadRequest,
        validity: Validity,
        scoring: Scoring,
    ) -> Result<HeadBox, PluginError> {
        let channels = level_channels(&request.features, &LEVELS, 1)?;
        if request.num_outputs == 0 {
            return Err(PluginError::invalid_input(
                "a pixel-wise head needs at least one output channel",
            ));
        }
        tch::manual_seed(request.seed as i64);
        let vs = nn::VarStore::new(parse_device(request.device.as_str())?);
        let decoder = PixelDecoder::new(&vs.root(), &channels, request.num_outputs as i64)?;
        let head = PixelHead {
            vs,
            decoder,
            channels,
            validity,
            scoring,
        };
        Ok(HeadBox::from_value(head, TD_Opaque))
    }

    fn variables(&self) -> Vec<(String, T)> {
        let mut vars: Vec<_> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }
}

impl Head for PixelHead {
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
            let expected = own.len();
            let mut seen = 0;
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
                seen += 1;
            }
            if seen != expected {
                return Err(PluginError::invalid_input(format!(
                    "head state has {seen} of {expected} tensors"
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
            let mut levels = Vec::with_capacity(LEVELS.len());
            for (name, &c) in LEVELS.iter().zip(&self.channels) {
                let t = features
                    .iter()
                    .find(|f| f.name.as_str() == *name)
                    .ok_or_else(|| {
                        PluginError::invalid_input(format!(
                            "no `{name}` feature given to the pixel-wise head"
                        ))
                    })?
                    .tensor
                    .shallow_clone();
                let s = t.size();
                if s.len() != 4 || s[1] != c {
                    return Err(PluginError::tensor(format!(
                        "feature `{name}` has shape {s:?}; the head was built for [B, {c}, h, w]"
                    )));
                }
                levels.push(t.f_to_kind(Kind::Float)?);
            }
            let mut x = self.decoder.forward(&levels)?;
            let (h, w) = (context.input_height as i64, context.input_width as i64);
            if h > 0 && w > 0 && x.size()[2..] != [h, w] {
                x = x.f_upsample_bilinear2d([h, w], false, None, None)?;
            }
            Ok(Tensor::new(x))
        })
    }

    fn loss(&self, output: TensorRef<'_>, target: TensorRef<'_>) -> RResult<Tensor, PluginError> {
        guard(|| {
            let (p, g) = (output.shallow_clone(), target.shallow_clone());
            let loss = match self.validity {
                Validity::FinitePositive => masked_l1(&p, &g)?,
                Validity::Finite => finite_l1(&p, &g)?,
            };
            Ok(Tensor::new(loss))
        })
    }

    fn new_metric(&self) -> RResult<MetricBox, PluginError> {
        guard(|| {
            Ok(MetricBox::from_value(
                DenseMetric::new(self.scoring),
                TD_Opaque,
            ))
        })
    }
}

/// THOR's de-normalised depth must exceed this to enter a ratio (grey 0 cannot).
const THOR_MIN_DEPTH: f64 = 0.5 / 255.0;

/// Accumulates a task's metrics over a split.
pub struct DenseMetric {
    scoring: Scoring,
    /// L1 and RMSE (all metrics for [`Scoring::Metres`]); also counts non-finite targets.
    main: Depth,
    /// THOR's AbsRel and δ1 on the de-normalised depth.
    ratio: Depth,
    /// Inpainting: sums over images of the hole's and the whole image's mean L1.
    inpaint: [f64; 2],
    images: u64,
}

impl DenseMetric {
    /// A fresh accumulator.
    pub fn new(scoring: Scoring) -> Self {
        let main = match scoring {
            Scoring::Metres { min, max } => Depth::new(min, max),
            _ => Depth::new(f64::NEG_INFINITY, f64::INFINITY),
        };
        DenseMetric {
            scoring,
            main,
            ratio: Depth::new(THOR_MIN_DEPTH, 1.0 + 1e-6),
            inpaint: [0.0; 2],
            images: 0,
        }
    }

    /// Adds a batch of outputs and targets (`[B, C, H, W]` both).
    pub fn add(&mut self, output: &T, target: &T) -> Result<(), PluginError> {
        let (os, ts) = (output.size(), target.size());
        if os.len() != 4 || os != ts {
            return Err(PluginError::tensor(format!(
                "metric: output {os:?} and target {ts:?}; expected the same [B, C, H, W]"
            )));
        }
        self.images += os[0] as u64;
        match self.scoring {
            Scoring::Inpainting => {
                let p = output
                    .f_to_kind(Kind::Double)?
                    .f_to_device(tch::Device::Cpu)?;
                let g = target
                    .f_to_kind(Kind::Double)?
                    .f_to_device(tch::Device::Cpu)?;
                let diff = p.f_sub(&g)?.f_abs()?;
                let ((r0, r1), (c0, c1)) = (hole(os[2]), hole(os[3]));
                let inside = diff.f_narrow(2, r0, r1 - r0)?.f_narrow(3, c0, c1 - c0)?;
                for (k, part) in [inside, diff].iter().enumerate() {
                    let per_image = part.f_flatten(1, -1)?.f_mean_dim(1, false, Kind::Double)?;
                    self.inpaint[k] += per_image.f_sum(Kind::Double)?.double_value(&[]);
                }
            }
            Scoring::Thor => {
                self.main.add(output, target)?;
                let denorm = |t: &T| -> Result<T, PluginError> {
                    Ok(t.f_mul_scalar(0.25)?.f_add_scalar(0.5)?)
                };
                self.ratio.add(&denorm(output)?, &denorm(target)?)?;
            }
            _ => self.main.add(output, target)?,
        }
        Ok(())
    }

    /// The values, in [`Scoring::metrics`] order.
    pub fn values(&self) -> Vec<f64> {
        let m = self.main.values();
        match self.scoring {
            Scoring::Metres { .. } => m[..4].to_vec(),
            Scoring::Thor => {
                let r = self.ratio.values();
                vec![m[0], m[1], r[2], r[3]]
            }
            Scoring::L1Rmse => m[..2].to_vec(),
            Scoring::L1 => m[..1].to_vec(),
            Scoring::Inpainting => {
                if self.images == 0 {
                    return vec![f64::NAN; 2];
                }
                self.inpaint
                    .iter()
                    .map(|s| s / self.images as f64)
                    .collect()
            }
        }
    }

    /// The protocol and the counts, as a JSON object.
    pub fn details_json(&self) -> serde_json::Value {
        let mut d = serde_json::json!({
            "protocol": self.scoring.protocol(),
            "images": self.images,
            "images_without_valid_pixels": self.main.empty_images,
            "non_finite_target_pixels": self.main.non_finite,
        });
        if let Scoring::Metres { min, max } = self.scoring {
            d["min_depth"] = min.into();
            d["max_depth"] = max.into();
        }
        if self.scoring == Scoring::Thor {
            d["images_without_ratio_pixels"] = self.ratio.empty_images.into();
        }
        d
    }
}

impl Metric for DenseMetric {
    fn update(&mut self, output: TensorRef<'_>, target: TensorRef<'_>) -> RResult<(), PluginError> {
        guard(|| self.add(&output.shallow_clone(), &target.shallow_clone()))
    }

    fn compute(&self) -> RResult<RVec<f64>, PluginError> {
        guard(|| Ok(self.values().into()))
    }

    fn details(&self) -> RResult<RString, PluginError> {
        guard(|| Ok(self.details_json().to_string().into()))
    }
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
