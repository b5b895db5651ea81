//! Dataset-level metrics.
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RVec},
    guard, Metric, PluginError, TensorRef,
};

/// Top-1 accuracy over every sample seen (correct / total), not a mean of batch accuracies.
#[derive(Default)]
pub struct Accuracy {
    correct: u64,
    total: u64,
}

impl Metric for Accuracy {
    fn update(&mut self, output: TensorRef<'_>, target: TensorRef<'_>) -> RResult<(), PluginError> {
        guard(|| {
            let output = output.shallow_clone();
            let target = target.shallow_clone();
            let pred = output.f_argmax(-1, false)?;
            let target = target.f_to_device(pred.device())?;
            if pred.size() != target.size() {
                return Err(PluginError::tensor(format!(
                    "accuracy: predictions have shape {:?} but targets {:?}",
                    pred.size(),
                    target.size()
                )));
            }
            let correct = pred.f_eq_tensor(&target)?.f_sum(tch::Kind::Int64)?;
            self.correct += i64::try_from(&correct)? as u64;
            self.total += target.numel() as u64;
            Ok(())
        })
    }

    fn compute(&self) -> RResult<RVec<f64>, PluginError> {
        let acc = if self.total == 0 {
            f64::NAN
        } else {
            self.correct as f64 / self.total as f64
        };
        RResult::ROk(vec![acc].into())
    }
}
