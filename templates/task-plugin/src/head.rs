//! The head (a linear probe on the encoder's `embedding`), its loss (cross-entropy) and its
//! metrics (top-1 accuracy and mean per-class accuracy over a whole split).
use tch::nn::{self, Module};
use virb_plugin_api::{
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RResult, RSlice, RString, RVec},
    },
    guard, parse_device, ForwardContext, Head, HeadRequest, Metric, MetricBox, NamedTensor,
    NamedTensorRef, PluginError, Tensor, TensorRef,
};

/// `Linear(D, C)` over the embedding, parameters `head.weight` `[C, D]` and `head.bias` `[C]`
/// (PyTorch's default initialisation, seeded by the request).
pub struct LinearHead {
    vs: nn::VarStore,
    linear: nn::Linear,
    width: i64,
    classes: usize,
}

impl LinearHead {
    /// A fresh head for `request`, whose features must include a `[D]` `embedding`.
    pub fn new(request: &HeadRequest) -> Result<Self, PluginError> {
        let spec = request
            .features
            .iter()
            .find(|f| f.name.as_str() == "embedding")
            .ok_or_else(|| {
                PluginError::invalid_input("the encoder provides no `embedding` output").with_help(
                    "use an encoder whose outputs include `embedding` (virb-host encoders)",
                )
            })?;
        let width = match spec.shape.as_slice() {
            [d] if *d > 0 => *d,
            other => {
                return Err(PluginError::invalid_input(format!(
                    "embedding has per-sample shape {other:?}; this head takes [D]"
                )))
            }
        };
        if request.num_outputs < 2 {
            return Err(PluginError::invalid_input(format!(
                "a classifier needs at least 2 classes, the data set has {}",
                request.num_outputs
            )));
        }
        let device = parse_device(request.device.as_str())?;
        tch::manual_seed(request.seed as i64);
        let vs = nn::VarStore::new(device);
        let classes = i64::from(request.num_outputs);
        // PyTorch's nn.Linear initialisation: U(-1/sqrt(width), 1/sqrt(width)) for the weight and
        // the bias. tch's `Default::default()` draws the weight sqrt(6) times wider, which trains
        // differently from the PyTorch probe a researcher compares with.
        let bound = 1.0 / (width as f64).sqrt();
        let uniform = nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let config = nn::LinearConfig {
            ws_init: uniform,
            bs_init: Some(uniform),
            bias: true,
        };
        let linear = nn::linear(vs.root() / "head", width, classes, config);
        Ok(LinearHead {
            vs,
            linear,
            width,
            classes: request.num_outputs as usize,
        })
    }

    fn sorted(&self) -> Vec<(String, tch::Tensor)> {
        let mut vars: Vec<_> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }
}

impl Head for LinearHead {
    fn parameters(&self) -> RResult<RVec<NamedTensor>, PluginError> {
        // Handles sharing storage and gradients: the host's optimiser updates them in place.
        guard(|| {
            Ok(self
                .sorted()
                .into_iter()
                .filter(|(_, t)| t.requires_grad())
                .map(|(n, t)| NamedTensor::new(n, t))
                .collect())
        })
    }

    fn state(&self) -> RResult<RVec<NamedTensor>, PluginError> {
        guard(|| {
            Ok(self
                .sorted()
                .into_iter()
                .map(|(n, t)| NamedTensor::new(n, t.detach().copy()))
                .collect())
        })
    }

    fn load_state(&mut self, state: RVec<NamedTensor>) -> RResult<(), PluginError> {
        guard(|| {
            let mut own = self.vs.variables();
            let expected = own.len();
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
            if seen.len() != expected {
                let missing: Vec<&String> = own.keys().filter(|k| !seen.contains(*k)).collect();
                return Err(PluginError::invalid_input(format!(
                    "head state lacks {missing:?}"
                )));
            }
            Ok(())
        })
    }

    fn forward(
        &self,
        features: RSlice<'_, NamedTensorRef<'_>>,
        _context: ForwardContext,
    ) -> RResult<Tensor, PluginError> {
        guard(|| {
            let emb = features
                .iter()
                .find(|f| f.name.as_str() == "embedding")
                .ok_or_else(|| PluginError::invalid_input("no `embedding` feature given"))?
                .tensor
                .shallow_clone()
                .f_to_kind(tch::Kind::Float)?;
            if emb.dim() != 2 || emb.size()[1] != self.width {
                return Err(PluginError::tensor(format!(
                    "the head takes embeddings [B, {}], got {:?}",
                    self.width,
                    emb.size()
                )));
            }
            Ok(Tensor::new(self.linear.forward(&emb)))
        })
    }

    fn loss(&self, output: TensorRef<'_>, target: TensorRef<'_>) -> RResult<Tensor, PluginError> {
        guard(|| {
            let logits = output.shallow_clone();
            let target = checked_labels(&target.shallow_clone(), self.classes)?
                .f_to_device(logits.device())?;
            Ok(Tensor::new(logits.f_cross_entropy_loss::<tch::Tensor>(
                &target,
                None,
                tch::Reduction::Mean,
                -100,
                0.0,
            )?))
        })
    }

    fn new_metric(&self) -> RResult<MetricBox, PluginError> {
        RResult::ROk(MetricBox::from_value(
            ClassAccuracy::new(self.classes),
            TD_Opaque,
        ))
    }
}

/// Class indices as int64 on the CPU, or an error naming one outside `0..classes`.
fn checked_labels(target: &tch::Tensor, classes: usize) -> Result<tch::Tensor, PluginError> {
    let labels = target.f_to_kind(tch::Kind::Int64)?.f_flatten(0, -1)?;
    let values: Vec<i64> = Vec::<i64>::try_from(&labels.f_to_device(tch::Device::Cpu)?)?;
    if let Some(bad) = values.iter().find(|&&v| v < 0 || v as usize >= classes) {
        return Err(PluginError::tensor(format!(
            "class index {bad} out of range for a head with {classes} outputs"
        )));
    }
    Ok(labels)
}

/// Counts, per true class, the samples seen and the samples predicted right.
pub struct ClassAccuracy {
    seen: Vec<u64>,
    right: Vec<u64>,
}

impl ClassAccuracy {
    /// An empty accumulator for `classes` classes.
    pub fn new(classes: usize) -> Self {
        ClassAccuracy {
            seen: vec![0; classes],
            right: vec![0; classes],
        }
    }

    fn per_class(&self) -> Vec<Option<f64>> {
        self.seen
            .iter()
            .zip(&self.right)
            .map(|(&n, &r)| (n > 0).then(|| r as f64 / n as f64))
            .collect()
    }
}

impl Metric for ClassAccuracy {
    fn update(&mut self, output: TensorRef<'_>, target: TensorRef<'_>) -> RResult<(), PluginError> {
        guard(|| {
            let logits = output.shallow_clone();
            let classes = self.seen.len();
            if logits.dim() != 2 || logits.size()[1] != classes as i64 {
                return Err(PluginError::tensor(format!(
                    "the metric takes logits [B, {classes}], got {:?}",
                    logits.size()
                )));
            }
            let predicted: Vec<i64> =
                Vec::<i64>::try_from(&logits.f_argmax(-1, false)?.f_to_device(tch::Device::Cpu)?)?;
            let truth = checked_labels(&target.shallow_clone(), classes)?;
            let truth: Vec<i64> = Vec::<i64>::try_from(&truth.f_to_device(tch::Device::Cpu)?)?;
            if truth.len() != predicted.len() {
                return Err(PluginError::tensor(format!(
                    "{} targets for {} outputs",
                    truth.len(),
                    predicted.len()
                )));
            }
            for (t, p) in truth.iter().zip(&predicted) {
                let t = *t as usize;
                self.seen[t] += 1;
                self.right[t] += u64::from(*p as usize == t);
            }
            Ok(())
        })
    }

    fn compute(&self) -> RResult<RVec<f64>, PluginError> {
        guard(|| {
            let total: u64 = self.seen.iter().sum();
            if total == 0 {
                return Err(PluginError::invalid_input("no sample was scored"));
            }
            let top1 = self.right.iter().sum::<u64>() as f64 / total as f64;
            let present: Vec<f64> = self.per_class().into_iter().flatten().collect();
            let mean_class = present.iter().sum::<f64>() / present.len() as f64;
            Ok(vec![top1, mean_class].into())
        })
    }

    fn details(&self) -> RResult<RString, PluginError> {
        // `results.json` gets `test_details: {"per_class_accuracy": [...]}` (null: no sample).
        guard(|| {
            Ok(
                serde_json::json!({ "per_class_accuracy": self.per_class() })
                    .to_string()
                    .into(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virb_plugin_api::FeatureSpec;

    fn request(classes: u32) -> HeadRequest {
        HeadRequest {
            features: vec![FeatureSpec {
                name: "embedding".into(),
                shape: vec![4i64].into(),
            }]
            .into(),
            num_outputs: classes,
            device: "cpu".into(),
            seed: 3,
            options_json: "{}".into(),
            input_height: 32,
            input_width: 32,
            encoder_state: RVec::new(),
        }
    }

    #[test]
    fn metric_counts_every_sample_of_the_split() {
        let mut m = ClassAccuracy::new(3);
        // Class 0: 2 of 3 right; class 1: 1 of 1; class 2: never seen.
        let logits = tch::Tensor::from_slice(&[
            5.0f32, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 5.0, 0.0,
        ])
        .view([4, 3]);
        let target = tch::Tensor::from_slice(&[0i64, 0, 0, 1]);
        m.update(TensorRef::of(&logits), TensorRef::of(&target))
            .into_result()
            .unwrap();
        let values = m.compute().into_result().unwrap();
        assert_eq!(values.as_slice(), &[0.75, (2.0 / 3.0 + 1.0) / 2.0]);
        let details = m.details().into_result().unwrap();
        assert_eq!(
            details.as_str(),
            r#"{"per_class_accuracy":[0.6666666666666666,1.0,null]}"#
        );
        let bad = tch::Tensor::from_slice(&[3i64, 0, 0, 0]);
        let err = m
            .update(TensorRef::of(&logits), TensorRef::of(&bad))
            .into_result()
            .unwrap_err();
        assert!(err.message.contains("class index 3 out of range"), "{err}");
    }

    #[test]
    fn loss_is_pytorch_cross_entropy_and_reaches_the_parameters() {
        let head = LinearHead::new(&request(3)).unwrap();
        let x =
            tch::Tensor::from_slice(&[1.0f32, -2.0, 0.5, 3.0, 0.0, 1.0, 1.0, -1.0]).view([2, 4]);
        let feats = [NamedTensorRef {
            name: "embedding".into(),
            tensor: TensorRef::of(&x),
        }];
        let ctx = ForwardContext {
            train: true,
            input_height: 32,
            input_width: 32,
        };
        let out = head
            .forward(feats.as_slice().into(), ctx)
            .into_result()
            .unwrap()
            .into_tch();
        let target = tch::Tensor::from_slice(&[2i64, 0]);
        let loss = head
            .loss(TensorRef::of(&out), TensorRef::of(&target))
            .into_result()
            .unwrap()
            .into_tch();
        // -mean(log_softmax(out)[i, target_i]), written out.
        let logp = out.log_softmax(-1, tch::Kind::Float);
        let expected = -(logp.double_value(&[0, 2]) + logp.double_value(&[1, 0])) / 2.0;
        assert!((loss.double_value(&[]) - expected).abs() < 1e-6);
        loss.backward();
        let params = head.parameters().into_result().unwrap();
        let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["head.bias", "head.weight"]);
        for p in params {
            let grad = p.tensor.into_tch().grad();
            assert!(grad.defined() && grad.abs().sum(tch::Kind::Float).double_value(&[]) > 0.0);
        }
    }

    #[test]
    fn state_loads_back_strictly() {
        let a = LinearHead::new(&request(3)).unwrap();
        let mut b = LinearHead::new(&HeadRequest {
            seed: 9,
            ..request(3)
        })
        .unwrap();
        b.load_state(a.state().into_result().unwrap())
            .into_result()
            .unwrap();
        for (x, y) in a.sorted().iter().zip(b.sorted()) {
            assert!(x.1.equal(&y.1), "{}", x.0);
        }
        let mut short = a.state().into_result().unwrap();
        short.pop();
        let err = b.load_state(short).into_result().unwrap_err();
        assert!(
            err.message.contains("head state lacks [\"head.weight\"]"),
            "{err}"
        );
        let wrong = LinearHead::new(&request(4))
            .unwrap()
            .state()
            .into_result()
            .unwrap();
        let err = b.load_state(wrong).into_result().unwrap_err();
        assert!(err.message.contains("has shape [4]"), "{err}");
    }
}
