//! The tasks' metrics over a whole split, from one confusion matrix
//! ([`virb_plugin_kit::dense_metrics::Segmentation`]; pixels whose target is
//! [`IGNORE`](crate::dense::IGNORE) are not counted):
//!
//! * multi-class (Cityscapes, EgoHands): `miou`, the mean IoU over the *scored* classes (the 19
//!   real Cityscapes classes; EgoHands' four hands, background excluded as in ViRB) that occur in
//!   the targets or the predictions, and `pixel_accuracy` over every counted pixel;
//! * binary (Pets-Detection, NYUWalkable): `iou` of the positive class (logit > 0 predicts it)
//!   and `pixel_accuracy`.
//!
//! [`Metric::details`] gives `{"per_class_iou": {"<class>": IoU or null}}` for the scored
//! classes (binary: both), null for a class absent from both the predictions and the targets.
use crate::dense::IGNORE;
use tch::Kind;
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RString, RVec},
    guard, Metric, PluginError, TensorRef,
};
use virb_plugin_kit::dense_metrics::Segmentation;

/// What a [`SegMetric`] scores.
#[derive(Debug, Clone)]
pub enum Scoring {
    /// Arg-max over `names.len()` logits; mIoU over the classes `scored`.
    MultiClass {
        /// Class names in id order.
        names: &'static [&'static str],
        /// Classes that enter the mIoU and the details.
        scored: std::ops::Range<usize>,
    },
    /// One logit; class 1 (`names[1]`) is predicted where it is positive.
    Binary {
        /// `[negative, positive]` class names.
        names: [&'static str; 2],
    },
}

/// A task's dataset-level segmentation metric.
pub struct SegMetric {
    scoring: Scoring,
    confusion: Segmentation,
}

impl SegMetric {
    /// A fresh accumulator.
    pub fn new(scoring: Scoring) -> Self {
        let confusion = match &scoring {
            Scoring::MultiClass { names, .. } => {
                Segmentation::new(names.len(), Some(i64::from(IGNORE)))
            }
            Scoring::Binary { .. } => Segmentation::binary(1, Some(i64::from(IGNORE))),
        };
        SegMetric { scoring, confusion }
    }

    /// Adds logits `[N, C, H, W]` against targets `[N, H, W]`.
    pub fn add(&mut self, output: &tch::Tensor, target: &tch::Tensor) -> Result<(), PluginError> {
        let s = output.size();
        let channels = match &self.scoring {
            Scoring::MultiClass { names, .. } => names.len() as i64,
            Scoring::Binary { .. } => 1,
        };
        if s.len() != 4 || s[1] != channels {
            return Err(PluginError::tensor(format!(
                "segmentation metric: output has shape {s:?} and target {:?}; expected logits [N, {channels}, H, W] and targets [N, H, W]",
                target.size()
            )));
        }
        let pred = match self.scoring {
            Scoring::MultiClass { .. } => output.f_argmax(1, false)?,
            Scoring::Binary { .. } => output.f_select(1, 0)?.f_gt(0.0)?.f_to_kind(Kind::Int64)?,
        };
        self.confusion.add_labels(&pred, target)
    }

    /// `[headline, pixel accuracy]`.
    pub fn values(&self) -> [f64; 2] {
        let per_class = self.confusion.per_class_iou();
        let headline = match &self.scoring {
            Scoring::MultiClass { scored, .. } => {
                let present: Vec<f64> = per_class[scored.clone()]
                    .iter()
                    .flatten()
                    .copied()
                    .collect();
                if present.is_empty() {
                    f64::NAN
                } else {
                    present.iter().sum::<f64>() / present.len() as f64
                }
            }
            Scoring::Binary { .. } => per_class[1].unwrap_or(f64::NAN),
        };
        [headline, self.confusion.pixel_accuracy()]
    }

    /// `{"per_class_iou": {...}}`.
    pub fn details_json(&self) -> serde_json::Value {
        let per_class = self.confusion.per_class_iou();
        let entries: Vec<(&str, Option<f64>)> = match &self.scoring {
            Scoring::MultiClass { names, scored } => {
                scored.clone().map(|k| (names[k], per_class[k])).collect()
            }
            Scoring::Binary { names } => vec![(names[0], per_class[0]), (names[1], per_class[1])],
        };
        let map: serde_json::Map<String, serde_json::Value> = entries
            .into_iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    v.map_or(serde_json::Value::Null, serde_json::Value::from),
                )
            })
            .collect();
        serde_json::json!({ "per_class_iou": map })
    }
}

impl Metric for SegMetric {
    fn update(&mut self, output: TensorRef<'_>, target: TensorRef<'_>) -> RResult<(), PluginError> {
        guard(|| self.add(&output.shallow_clone(), &target.shallow_clone()))
    }

    fn compute(&self) -> RResult<RVec<f64>, PluginError> {
        guard(|| Ok(self.values().to_vec().into()))
    }

    fn details(&self) -> RResult<RString, PluginError> {
        guard(|| Ok(self.details_json().to_string().into()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tch::Tensor;

    #[test]
    fn multi_class_skips_unscored_and_ignored_pixels() {
        // Classes: 0 void (unscored), 1 a, 2 b, 3 c (absent everywhere).
        const NAMES: &[&str] = &["void", "a", "b", "c"];
        let mut m = SegMetric::new(Scoring::MultiClass {
            names: NAMES,
            scored: 1..4,
        });
        let target = Tensor::from_slice(&[1i64, 1, 2, 255]).view([1, 2, 2]);
        // Predictions: 1, 2, 2, 1 (the last pixel is ignored).
        let pred = Tensor::from_slice(&[1i64, 2, 2, 1]).view([1, 2, 2]);
        let logits = pred.one_hot(4).permute([0, 3, 1, 2]).to_kind(Kind::Float);
        m.add(&logits, &target).unwrap();
        let [miou, acc] = m.values();
        // IoU a = 1/2, b = 1/2; c absent; void not scored.
        assert!((miou - 0.5).abs() < 1e-12, "{miou}");
        assert!((acc - 2.0 / 3.0).abs() < 1e-12, "{acc}");
        let d = m.details_json();
        assert_eq!(d["per_class_iou"]["a"], 0.5);
        assert!(d["per_class_iou"]["c"].is_null());
        assert!(d["per_class_iou"].get("void").is_none());
    }

    #[test]
    fn binary_scores_the_positive_class() {
        let mut m = SegMetric::new(Scoring::Binary {
            names: ["background", "pet"],
        });
        let target = Tensor::from_slice(&[1i64, 1, 0, 255]).view([1, 2, 2]);
        let logits = Tensor::from_slice(&[2.0f32, -1.0, 3.0, 5.0]).view([1, 1, 2, 2]);
        m.add(&logits, &target).unwrap();
        let [iou, acc] = m.values();
        // Pet: TP 1, FN 1, FP 1.
        assert!((iou - 1.0 / 3.0).abs() < 1e-12);
        assert!((acc - 1.0 / 3.0).abs() < 1e-12);
        assert!(m.add(&logits.repeat([1, 2, 1, 1]), &target).is_err());
    }
}
