//! Dataset-level metrics of pixel-wise tasks, with the definitions of the dense-probe codebases
//! (mmsegmentation, the depth toolbox DINOv2/v3 use, RAFT), accumulated over a whole split:
//!
//! * [`Segmentation`]: one confusion matrix over every pixel of the split (an ignored label
//!   excluded); IoU per class = TP / (TP + FP + FN); mIoU = mean over the classes present in the
//!   ground truth or the predictions (a class absent from both is skipped, not scored 1 as ViRB
//!   did); pixel accuracy. For a binary task, the IoU of the positive class.
//! * [`Depth`]: per image over its valid pixels (ground truth finite and within `(min, max)`; the
//!   prediction clamped to `[min, max]`), then averaged over images: L1 (ViRB's metric, here on
//!   valid pixels), RMSE, AbsRel, and δ1, δ2, δ3 (share of pixels with max(p/g, g/p) < 1.25^k).
//!   Images without a valid pixel are skipped and counted; non-finite ground truth is counted.
//! * [`Flow`]: end-point error per image over valid pixels, averaged over images (EPE), and
//!   Fl-all, 100 × the pooled share of valid pixels whose error is > 3 px and > 5% of the true
//!   flow's length; in pixels of the original frame when the targets carry the scale factors.
use tch::{Kind, Tensor};
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RVec},
    guard, Metric, PluginError, TensorRef,
};

fn shape_error(what: &str, output: &Tensor, target: &Tensor, expected: &str) -> PluginError {
    PluginError::tensor(format!(
        "{what}: output has shape {:?} and target {:?}; expected {expected}",
        output.size(),
        target.size()
    ))
}

/// Segmentation: a confusion matrix over a whole split.
pub struct Segmentation {
    classes: usize,
    ignore: Option<i64>,
    positive: Option<usize>,
    /// `confusion[t * classes + p]`: pixels of true class `t` predicted as `p`.
    confusion: Vec<u64>,
}

impl Segmentation {
    /// A multi-class accumulator over `classes` classes; pixels whose target is `ignore` are not
    /// counted. [`Metric::compute`] returns `[mIoU, pixel accuracy]`.
    pub fn new(classes: usize, ignore: Option<i64>) -> Self {
        Segmentation {
            classes,
            ignore,
            positive: None,
            confusion: vec![0; classes * classes],
        }
    }

    /// A binary accumulator whose headline is the IoU of class `positive` (the pet, the
    /// walkable floor); [`Metric::compute`] returns `[IoU of positive, pixel accuracy]`.
    pub fn binary(positive: usize, ignore: Option<i64>) -> Self {
        Segmentation {
            positive: Some(positive),
            ..Segmentation::new(2, ignore)
        }
    }

    /// Adds predicted labels `pred` and targets `target` of the same shape (any, e.g. `[N, H, W]`).
    pub fn add_labels(&mut self, pred: &Tensor, target: &Tensor) -> Result<(), PluginError> {
        if pred.size() != target.size() {
            return Err(shape_error(
                "segmentation",
                pred,
                target,
                "labels of the same shape",
            ));
        }
        let c = self.classes as i64;
        let pred = pred.f_to_kind(Kind::Int64)?.f_flatten(0, -1)?;
        let target = target
            .f_to_device(pred.device())?
            .f_to_kind(Kind::Int64)?
            .f_flatten(0, -1)?;
        let keep = match self.ignore {
            Some(i) => target.f_ne(i)?,
            None => target.f_ones_like()?.f_to_kind(Kind::Bool)?,
        };
        let (pred, target) = (pred.f_masked_select(&keep)?, target.f_masked_select(&keep)?);
        let out_of_range = |t: &Tensor| -> Result<bool, PluginError> {
            Ok(t.numel() > 0
                && (t.f_min()?.int64_value(&[]) < 0 || t.f_max()?.int64_value(&[]) >= c))
        };
        if out_of_range(&target)? {
            return Err(PluginError::tensor(format!(
                "segmentation: a target class id is outside 0..{} (ids {}..={})",
                c - 1,
                target.f_min()?.int64_value(&[]),
                target.f_max()?.int64_value(&[])
            )));
        }
        if out_of_range(&pred)? {
            return Err(PluginError::tensor(format!(
                "segmentation: a predicted class id is outside 0..{}",
                c - 1
            )));
        }
        let cells = target.f_mul_scalar(c)?.f_add(&pred)?;
        let counts = cells
            .f_bincount(None::<Tensor>, c * c)?
            .f_to_device(tch::Device::Cpu)?;
        let counts: Vec<i64> = Vec::<i64>::try_from(&counts)?;
        for (acc, n) in self.confusion.iter_mut().zip(counts) {
            *acc += n as u64;
        }
        Ok(())
    }

    /// IoU of each class; `None` for a class absent from both targets and predictions.
    pub fn per_class_iou(&self) -> Vec<Option<f64>> {
        let c = self.classes;
        (0..c)
            .map(|k| {
                let tp = self.confusion[k * c + k];
                let gt: u64 = (0..c).map(|p| self.confusion[k * c + p]).sum();
                let pr: u64 = (0..c).map(|t| self.confusion[t * c + k]).sum();
                let union = gt + pr - tp;
                (union > 0).then(|| tp as f64 / union as f64)
            })
            .collect()
    }

    /// Mean IoU over the classes present in targets or predictions (NaN when none is).
    pub fn miou(&self) -> f64 {
        let present: Vec<f64> = self.per_class_iou().into_iter().flatten().collect();
        if present.is_empty() {
            f64::NAN
        } else {
            present.iter().sum::<f64>() / present.len() as f64
        }
    }

    /// Correct pixels / counted pixels.
    pub fn pixel_accuracy(&self) -> f64 {
        let c = self.classes;
        let total: u64 = self.confusion.iter().sum();
        let correct: u64 = (0..c).map(|k| self.confusion[k * c + k]).sum();
        if total == 0 {
            f64::NAN
        } else {
            correct as f64 / total as f64
        }
    }
}

impl Metric for Segmentation {
    /// `output`: logits `[N, C, H, W]` (the arg-max over `C` is the prediction); `target`:
    /// class ids `[N, H, W]`.
    fn update(&mut self, output: TensorRef<'_>, target: TensorRef<'_>) -> RResult<(), PluginError> {
        guard(|| {
            let (output, target) = (output.shallow_clone(), target.shallow_clone());
            if output.dim() != 4 || output.size()[1] != self.classes as i64 {
                return Err(shape_error(
                    "segmentation",
                    &output,
                    &target,
                    &format!("logits [N, {}, H, W] and targets [N, H, W]", self.classes),
                ));
            }
            self.add_labels(&output.f_argmax(1, false)?, &target)
        })
    }

    fn compute(&self) -> RResult<RVec<f64>, PluginError> {
        let headline = match self.positive {
            Some(k) => self.per_class_iou()[k].unwrap_or(f64::NAN),
            None => self.miou(),
        };
        RResult::ROk(vec![headline, self.pixel_accuracy()].into())
    }
}

/// Depth: per-image errors over valid pixels, averaged over images.
pub struct Depth {
    min: f64,
    max: f64,
    /// Per image: L1, RMSE, AbsRel, δ1, δ2, δ3.
    sums: [f64; 6],
    images: u64,
    /// Images without a valid pixel.
    pub empty_images: u64,
    /// Ground-truth pixels that were NaN or infinite (never trained on, never scored).
    pub non_finite: u64,
}

impl Depth {
    /// Valid ground truth lies in `(min, max)`; predictions are clamped to `[min, max]`.
    pub fn new(min: f64, max: f64) -> Self {
        Depth {
            min,
            max,
            sums: [0.0; 6],
            images: 0,
            empty_images: 0,
            non_finite: 0,
        }
    }

    /// Adds predictions and targets of shape `[N, H, W]` (or `[N, 1, H, W]`).
    pub fn add(&mut self, pred: &Tensor, target: &Tensor) -> Result<(), PluginError> {
        let squeeze = |t: &Tensor| -> Result<Tensor, PluginError> {
            Ok(match t.dim() {
                4 if t.size()[1] == 1 => t.f_squeeze_dim(1)?,
                _ => t.shallow_clone(),
            })
        };
        let (p, g) = (squeeze(pred)?, squeeze(target)?);
        if p.size() != g.size() || p.dim() != 3 {
            return Err(shape_error(
                "depth",
                pred,
                target,
                "[N, H, W] or [N, 1, H, W] for both",
            ));
        }
        let p = p.f_to_kind(Kind::Double)?.f_to_device(tch::Device::Cpu)?;
        let g = g.f_to_kind(Kind::Double)?.f_to_device(tch::Device::Cpu)?;
        let finite = g.f_isfinite()?;
        self.non_finite +=
            (finite.numel() as i64 - finite.f_sum(Kind::Int64)?.int64_value(&[])) as u64;
        let valid = finite
            .f_logical_and(&g.f_gt(self.min)?)?
            .f_logical_and(&g.f_lt(self.max)?)?;
        for i in 0..p.size()[0] {
            let m = valid.f_get(i)?;
            let gi = g.f_get(i)?.f_masked_select(&m)?;
            if gi.numel() == 0 {
                self.empty_images += 1;
                continue;
            }
            let pi = p
                .f_get(i)?
                .f_masked_select(&m)?
                .f_clamp(self.min, self.max)?;
            let diff = pi.f_sub(&gi)?;
            let ratio = pi.f_div(&gi)?.f_maximum(&gi.f_div(&pi)?)?;
            let mean = |t: Tensor| -> Result<f64, PluginError> {
                Ok(t.f_mean(Kind::Double)?.double_value(&[]))
            };
            let delta = |k: i32| -> Result<f64, PluginError> {
                mean(ratio.f_lt(1.25f64.powi(k))?.f_to_kind(Kind::Double)?)
            };
            let values = [
                mean(diff.f_abs()?)?,
                mean(diff.f_square()?)?.sqrt(),
                mean(diff.f_abs()?.f_div(&gi)?)?,
                delta(1)?,
                delta(2)?,
                delta(3)?,
            ];
            for (s, v) in self.sums.iter_mut().zip(values) {
                *s += v;
            }
            self.images += 1;
        }
        Ok(())
    }

    /// `[L1, RMSE, AbsRel, δ1, δ2, δ3]` averaged over the images with a valid pixel.
    pub fn values(&self) -> [f64; 6] {
        if self.images == 0 {
            return [f64::NAN; 6];
        }
        self.sums.map(|s| s / self.images as f64)
    }
}

impl Metric for Depth {
    fn update(&mut self, output: TensorRef<'_>, target: TensorRef<'_>) -> RResult<(), PluginError> {
        guard(|| self.add(&output.shallow_clone(), &target.shallow_clone()))
    }

    fn compute(&self) -> RResult<RVec<f64>, PluginError> {
        RResult::ROk(self.values().to_vec().into())
    }
}

/// Optical flow: EPE per image averaged over images, and Fl-all over all valid pixels.
#[derive(Default)]
pub struct Flow {
    epe_sum: f64,
    images: u64,
    outliers: u64,
    valid: u64,
    /// Images without a valid pixel.
    pub empty_images: u64,
}

impl Flow {
    /// A fresh accumulator.
    pub fn new() -> Self {
        Flow::default()
    }

    /// `pred`: `[N, 2, H, W]` (u, v); `target`: `[N, 3, H, W]` (u, v, valid) or `[N, 5, H, W]`
    /// whose channels 3 and 4 are the factors that turn u and v into pixels of the original
    /// frame (applied to both prediction and target).
    pub fn add(&mut self, pred: &Tensor, target: &Tensor) -> Result<(), PluginError> {
        let (ps, ts) = (pred.size(), target.size());
        let ok = ps.len() == 4
            && ts.len() == 4
            && ps[1] == 2
            && (ts[1] == 3 || ts[1] == 5)
            && ps[0] == ts[0]
            && ps[2..] == ts[2..];
        if !ok {
            return Err(shape_error(
                "flow",
                pred,
                target,
                "[N, 2, H, W] and [N, 3 or 5, H, W] (u, v, valid[, u scale, v scale])",
            ));
        }
        let p = pred
            .f_to_kind(Kind::Double)?
            .f_to_device(tch::Device::Cpu)?;
        let t = target
            .f_to_kind(Kind::Double)?
            .f_to_device(tch::Device::Cpu)?;
        let (mut du, mut dv) = (
            p.f_select(1, 0)?.f_sub(&t.f_select(1, 0)?)?,
            p.f_select(1, 1)?.f_sub(&t.f_select(1, 1)?)?,
        );
        let (mut gu, mut gv) = (t.f_select(1, 0)?, t.f_select(1, 1)?);
        if ts[1] == 5 {
            let (su, sv) = (t.f_select(1, 3)?, t.f_select(1, 4)?);
            du = du.f_mul(&su)?;
            dv = dv.f_mul(&sv)?;
            gu = gu.f_mul(&su)?;
            gv = gv.f_mul(&sv)?;
        }
        let epe = du.f_square()?.f_add(&dv.f_square()?)?.f_sqrt()?;
        let mag = gu.f_square()?.f_add(&gv.f_square()?)?.f_sqrt()?;
        let valid = t.f_select(1, 2)?.f_gt(0.5)?;
        let outlier = epe
            .f_gt(3.0)?
            .f_logical_and(&epe.f_gt_tensor(&mag.f_mul_scalar(0.05)?)?)?
            .f_logical_and(&valid)?;
        self.outliers += outlier.f_sum(Kind::Int64)?.int64_value(&[]) as u64;
        for i in 0..ps[0] {
            let e = epe.f_get(i)?.f_masked_select(&valid.f_get(i)?)?;
            if e.numel() == 0 {
                self.empty_images += 1;
                continue;
            }
            self.valid += e.numel() as u64;
            self.epe_sum += e.f_mean(Kind::Double)?.double_value(&[]);
            self.images += 1;
        }
        Ok(())
    }

    /// `[EPE, Fl-all (%)]`.
    pub fn values(&self) -> [f64; 2] {
        if self.images == 0 {
            return [f64::NAN; 2];
        }
        [
            self.epe_sum / self.images as f64,
            100.0 * self.outliers as f64 / self.valid as f64,
        ]
    }
}

impl Metric for Flow {
    fn update(&mut self, output: TensorRef<'_>, target: TensorRef<'_>) -> RResult<(), PluginError> {
        guard(|| self.add(&output.shallow_clone(), &target.shallow_clone()))
    }

    fn compute(&self) -> RResult<RVec<f64>, PluginError> {
        RResult::ROk(self.values().to_vec().into())
    }
}
