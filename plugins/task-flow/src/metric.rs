//! The task's losses and metrics, for each [`Target`].
//!
//! * `flow`: the loss is L1 over valid pixels, mean over those pixels and both components of
//!   |p − g| (RAFT's training loss; its gradient is defined at zero error, unlike EPE's). The
//!   metrics are the kit's [`Flow`]: EPE per image over valid pixels averaged over images (the
//!   headline, lower is better) and Fl-all, in pixels of the original frame (frames are never
//!   resized).
//! * `viz` (ViRB's protocol): the loss is L1 over non-zero target pixels. The score is ViRB's
//!   "neighbour error", an accuracy: the share of non-zero target pixels with |p − g| ≤ 0.05,
//!   pooled over the whole split (ViRB averaged per batch). It is no flow, so the task's metrics
//!   `epe` and `fl_all` are NaN (reported as null) and the accuracy is in `Metric::details()`
//!   as `viz_accuracy` (results.json's `test_details`).
use crate::options::Target;
use tch::{Kind, Tensor as T};
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RString, RVec},
    guard, Metric, MetricSpec, PluginError, TensorRef,
};
use virb_plugin_kit::dense_metrics::Flow;

/// The task's metrics (headline first), the same for both targets.
pub fn metric_specs() -> Vec<MetricSpec> {
    ["epe", "fl_all"]
        .into_iter()
        .map(|name| MetricSpec {
            name: name.into(),
            higher_is_better: false,
        })
        .collect()
}

/// ViRB's tolerance for a correct viz pixel.
pub const VIZ_TOLERANCE: f64 = 0.05;

fn check(what: &str, output: &T, target: &T, out_c: i64, target_c: i64) -> Result<(), PluginError> {
    let (o, t) = (output.size(), target.size());
    if o.len() == 4
        && t.len() == 4
        && o[0] == t[0]
        && o[1] == out_c
        && t[1] == target_c
        && o[2..] == t[2..]
    {
        return Ok(());
    }
    Err(PluginError::tensor(format!(
        "{what}: output has shape {o:?} and target {t:?}; expected [B, {out_c}, H, W] and [B, {target_c}, H, W]"
    )))
}

/// The training loss of `output` against `target` for `target_kind`.
pub fn loss(target_kind: Target, output: &T, target: &T) -> Result<T, PluginError> {
    let target = target
        .f_to_device(output.device())?
        .f_to_kind(Kind::Float)?;
    let (diff, mask, channels) = match target_kind {
        Target::Flow => {
            check("flow loss", output, &target, 2, 3)?;
            let diff = output.f_sub(&target.f_narrow(1, 0, 2)?)?.f_abs()?;
            (diff, target.f_narrow(1, 2, 1)?.f_gt(0.5)?, 2)
        }
        Target::Viz => {
            check("viz loss", output, &target, 1, 1)?;
            (output.f_sub(&target)?.f_abs()?, target.f_ne(0.0)?, 1)
        }
    };
    let n = mask.f_sum(Kind::Int64)?.int64_value(&[]);
    if n == 0 {
        // No pixel to learn from: a zero that keeps the graph.
        return Ok(output.f_sum(Kind::Float)?.f_mul_scalar(0.0)?);
    }
    let masked = diff.f_mul(&mask.f_to_kind(Kind::Float)?)?;
    Ok(masked
        .f_sum(Kind::Float)?
        .f_div_scalar((n * channels) as f64)?)
}

/// The metric accumulator of a [`Target`].
pub enum FlowMetric {
    /// EPE and Fl-all.
    Flow(Flow),
    /// ViRB's accuracy: pixels within the tolerance and non-zero target pixels.
    Viz {
        /// Non-zero target pixels with |p − g| ≤ 0.05.
        hits: u64,
        /// Non-zero target pixels.
        pixels: u64,
    },
}

impl FlowMetric {
    /// A fresh accumulator.
    pub fn new(target: Target) -> Self {
        match target {
            Target::Flow => FlowMetric::Flow(Flow::new()),
            Target::Viz => FlowMetric::Viz { hits: 0, pixels: 0 },
        }
    }

    /// Adds one batch.
    pub fn add(&mut self, output: &T, target: &T) -> Result<(), PluginError> {
        match self {
            FlowMetric::Flow(flow) => {
                check("flow metric", output, target, 2, 3)?;
                flow.add(output, target)
            }
            FlowMetric::Viz { hits, pixels } => {
                check("viz metric", output, target, 1, 1)?;
                let o = output
                    .f_to_kind(Kind::Double)?
                    .f_to_device(tch::Device::Cpu)?;
                let t = target
                    .f_to_kind(Kind::Double)?
                    .f_to_device(tch::Device::Cpu)?;
                let mask = t.f_ne(0.0)?;
                let close = o
                    .f_sub(&t)?
                    .f_abs()?
                    .f_le(VIZ_TOLERANCE)?
                    .f_logical_and(&mask)?;
                *hits += close.f_sum(Kind::Int64)?.int64_value(&[]) as u64;
                *pixels += mask.f_sum(Kind::Int64)?.int64_value(&[]) as u64;
                Ok(())
            }
        }
    }

    /// ViRB's viz accuracy (NaN before any non-zero pixel).
    pub fn viz_accuracy(&self) -> f64 {
        match self {
            FlowMetric::Viz { hits, pixels } if *pixels > 0 => *hits as f64 / *pixels as f64,
            _ => f64::NAN,
        }
    }

    /// `[epe, fl_all]` (NaN for viz, which predicts no flow).
    pub fn values(&self) -> [f64; 2] {
        match self {
            FlowMetric::Flow(flow) => flow.values(),
            FlowMetric::Viz { .. } => [f64::NAN; 2],
        }
    }

    /// The protocol and counts, as a JSON object.
    pub fn details(&self) -> serde_json::Value {
        match self {
            FlowMetric::Flow(flow) => serde_json::json!({
                "target": "flow",
                "protocol": "real optical flow (training/flow_occ); epe = end-point error per image over valid pixels, averaged over images; fl_all = 100 x the pooled share of valid pixels with error > 3 px and > 5% of the true flow's length; frames are never resized, so both are in pixels of the original frame",
                "images_without_valid_pixels": flow.empty_images,
            }),
            FlowMetric::Viz { hits, pixels } => {
                let acc = self.viz_accuracy();
                serde_json::json!({
                    "target": "viz",
                    "protocol": "ViRB's protocol, not optical flow: the target is the grey level (luma / 255) of the flow's colour visualisation (training/viz_flow_occ); viz_accuracy = share of non-zero target pixels with |output - target| <= 0.05, pooled over the split (higher is better); epe and fl_all do not apply and are null",
                    "viz_accuracy": if acc.is_finite() { serde_json::json!(acc) } else { serde_json::Value::Null },
                    "viz_pixels": pixels,
                    "viz_hits": hits,
                })
            }
        }
    }
}

impl Metric for FlowMetric {
    fn update(&mut self, output: TensorRef<'_>, target: TensorRef<'_>) -> RResult<(), PluginError> {
        guard(|| self.add(&output.shallow_clone(), &target.shallow_clone()))
    }

    fn compute(&self) -> RResult<RVec<f64>, PluginError> {
        guard(|| Ok(self.values().to_vec().into()))
    }

    fn details(&self) -> RResult<RString, PluginError> {
        guard(|| Ok(self.details().to_string().into()))
    }
}

#[cfg(test)]
mod flow_metric_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn flow_target(u: f32, v: f32, valid: &[f32]) -> T {
        let n = valid.len() as i64;
        let uv = T::from_slice(&[u, v])
            .view([1, 2, 1, 1])
            .expand([1, 2, 1, n], false);
        T::cat(&[uv, T::from_slice(valid).view([1, 1, 1, n])], 1)
    }

    #[test]
    fn flow_loss_is_l1_over_valid_pixels_only() {
        let target = flow_target(2.0, -1.0, &[1.0, 1.0, 0.0]);
        let out = T::zeros([1, 2, 1, 3], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let l = loss(Target::Flow, &out, &target).unwrap();
        // (|0 - 2| + |0 + 1|) / 2 on both valid pixels; the invalid one is ignored.
        assert!((l.double_value(&[]) - 1.5).abs() < 1e-6);
        l.backward();
        let g = out.grad();
        assert_eq!(
            g.double_value(&[0, 0, 0, 2]),
            0.0,
            "no gradient from an invalid pixel"
        );
        assert!(g.double_value(&[0, 0, 0, 0]) < 0.0);
        let none = flow_target(2.0, -1.0, &[0.0, 0.0, 0.0]);
        assert_eq!(
            loss(Target::Flow, &out, &none).unwrap().double_value(&[]),
            0.0
        );
        assert!(loss(
            Target::Flow,
            &out,
            &T::zeros([1, 1, 1, 3], (Kind::Float, tch::Device::Cpu))
        )
        .is_err());
    }

    #[test]
    fn viz_loss_and_accuracy_follow_virb() {
        let target = T::from_slice(&[0.0f32, 0.5, 0.5, 0.9]).view([1, 1, 1, 4]);
        let out = T::from_slice(&[0.7f32, 0.52, 0.6, 0.9]).view([1, 1, 1, 4]);
        let l = loss(Target::Viz, &out, &target).unwrap().double_value(&[]);
        assert!((l - (0.02 + 0.1 + 0.0) / 3.0).abs() < 1e-6, "{l}");
        let mut m = FlowMetric::new(Target::Viz);
        m.add(&out, &target).unwrap();
        assert!((m.viz_accuracy() - 2.0 / 3.0).abs() < 1e-12);
        assert!(
            m.values().iter().all(|v| v.is_nan()),
            "epe and fl_all do not apply to viz"
        );
        assert_eq!(m.details()["viz_pixels"], 3);
    }

    #[test]
    fn flow_metric_reports_epe_first() {
        let target = flow_target(3.0, 4.0, &[1.0, 1.0]);
        let out = T::zeros([1, 2, 1, 2], (Kind::Float, tch::Device::Cpu));
        let mut m = FlowMetric::new(Target::Flow);
        m.add(&out, &target).unwrap();
        let [epe, fl] = m.values();
        assert!(
            (epe - 5.0).abs() < 1e-9 && (fl - 100.0).abs() < 1e-9,
            "{epe} {fl}"
        );
        assert!(m
            .add(
                &T::zeros([1, 1, 1, 2], (Kind::Float, tch::Device::Cpu)),
                &target
            )
            .is_err());
    }
}
