//! Classification heads with PyTorch's default initialisation and cross-entropy loss.
use crate::metrics::Accuracy;
use tch::nn::{self, Module};
use virb_plugin_api::{
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{ROption, RResult, RSlice, RStr, RVec},
    },
    guard, no_extension, parse_device, ExtensionCall, ExtensionReply, ExtensionResult,
    ForwardContext, Head, HeadRequest, MetricBox, NamedTensor, NamedTensorRef, PluginError, Tensor,
    TensorRef, HEAD_LINEAR_CLASSIFIER,
};

/// A classifier over the `embedding` output: `Linear(D, C)` when the sample has one frame (ViRB's
/// `ClassificationHead`), or `Linear(T*D, 512) -> ReLU -> Linear(512, C)` over the frames'
/// concatenated embeddings (ViRB's `MultiEmbeddingClassificationHead`). Parameter names follow
/// ViRB's state dicts (`head.weight`, or `head.0.*` and `head.2.*`).
pub struct ClassifierHead {
    vs: nn::VarStore,
    net: nn::Sequential,
    input_width: i64,
    /// One frame: a single `Linear` layer (which the host may stack with others').
    linear: bool,
}

impl ClassifierHead {
    /// Builds the head for a [`HeadRequest`] whose features include `embedding`.
    pub fn new(request: &HeadRequest) -> Result<Self, PluginError> {
        let spec = request
            .features
            .iter()
            .find(|f| f.name.as_str() == "embedding")
            .ok_or_else(|| {
                PluginError::invalid_input("the encoder provides no `embedding` output")
            })?;
        let (frames, width) = match spec.shape.as_slice() {
            [d] => (1, *d),
            [t, d] => (*t, *d),
            other => {
                return Err(PluginError::invalid_input(format!(
                    "embedding has per-sample shape {other:?}; expected [D] or [T, D]"
                )))
            }
        };
        if request.num_outputs == 0 {
            return Err(PluginError::invalid_input(
                "a classifier needs at least one class",
            ));
        }
        let device = parse_device(request.device.as_str())?;
        tch::manual_seed(request.seed as i64);
        let vs = nn::VarStore::new(device);
        let root = vs.root() / "head";
        let classes = request.num_outputs as i64;
        let net = if frames == 1 {
            nn::seq().add(torch_linear(&root, width, classes))
        } else {
            nn::seq()
                .add(torch_linear(&root / "0", frames * width, 512))
                .add_fn(|x| x.relu())
                .add(torch_linear(&root / "2", 512, classes))
        };
        Ok(ClassifierHead {
            vs,
            net,
            input_width: frames * width,
            linear: frames == 1,
        })
    }

    /// Boxes the head for the plugin boundary.
    pub fn boxed(self) -> virb_plugin_api::HeadBox {
        virb_plugin_api::HeadBox::from_value(self, TD_Opaque)
    }
}

fn sorted_variables(vs: &nn::VarStore) -> Vec<(String, tch::Tensor)> {
    let mut vars: Vec<_> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// A linear layer initialised as PyTorch's `nn.Linear` is: the weight by `kaiming_uniform_` with
/// `a = sqrt(5)` (U(-b, b) with b = sqrt(3) * gain / sqrt(fan_in), gain = sqrt(2 / (1 + a^2)),
/// computed in the same order, so the bound is PyTorch's to the last bit), then the bias from
/// U(-1/sqrt(fan_in), 1/sqrt(fan_in)), in that order. After the same `manual_seed` the values are
/// PyTorch's. tch's own default (`LinearConfig::default()`) draws the weight with ReLU's gain,
/// sqrt(6) times wider than PyTorch's (it trained a probe to 0.58 top-1 where PyTorch's reached
/// 0.96 at a small learning rate), and the bias first.
pub fn torch_linear<'a, T: std::borrow::Borrow<nn::Path<'a>>>(
    path: T,
    in_dim: i64,
    out_dim: i64,
) -> nn::Linear {
    let fan_in = in_dim as f64;
    let a = 5f64.sqrt();
    let gain = (2.0 / (1.0 + a * a)).sqrt();
    let w_bound = 3f64.sqrt() * (gain / fan_in.sqrt());
    let b_bound = 1.0 / fan_in.sqrt();
    // Weight first, then bias, as PyTorch draws them (tch's `nn::linear` draws the bias first).
    let path = path.borrow();
    let ws = path.var(
        "weight",
        &[out_dim, in_dim],
        nn::Init::Uniform {
            lo: -w_bound,
            up: w_bound,
        },
    );
    let bs = path.var(
        "bias",
        &[out_dim],
        nn::Init::Uniform {
            lo: -b_bound,
            up: b_bound,
        },
    );
    nn::Linear { ws, bs: Some(bs) }
}

impl Head for ClassifierHead {
    fn parameters(&self) -> RResult<RVec<NamedTensor>, PluginError> {
        guard(|| {
            Ok(sorted_variables(&self.vs)
                .into_iter()
                .filter(|(_, t)| t.requires_grad())
                .map(|(n, t)| NamedTensor::new(n, t))
                .collect())
        })
    }

    fn state(&self) -> RResult<RVec<NamedTensor>, PluginError> {
        guard(|| {
            Ok(sorted_variables(&self.vs)
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
            if seen != own.len() {
                return Err(PluginError::invalid_input(format!(
                    "head state has {seen} of {} tensors",
                    own.len()
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
                .shallow_clone();
            let batch = emb.size().first().copied().unwrap_or(0);
            let x = emb.f_to_kind(tch::Kind::Float)?.f_reshape([batch, -1])?;
            if x.size().get(1).copied() != Some(self.input_width) {
                return Err(PluginError::tensor(format!(
                    "head expects {} input features per sample, got embedding of shape {:?}",
                    self.input_width,
                    emb.size()
                )));
            }
            Ok(Tensor::new(self.net.forward(&x)))
        })
    }

    fn loss(&self, output: TensorRef<'_>, target: TensorRef<'_>) -> RResult<Tensor, PluginError> {
        guard(|| {
            Ok(Tensor::new(cross_entropy(
                &output.shallow_clone(),
                &target.shallow_clone(),
            )?))
        })
    }

    fn new_metric(&self) -> RResult<MetricBox, PluginError> {
        RResult::ROk(MetricBox::from_value(Accuracy::default(), TD_Opaque))
    }

    fn extension(&self, name: RStr<'_>, _call: ExtensionCall) -> ExtensionResult {
        if name.as_str() == HEAD_LINEAR_CLASSIFIER && self.linear {
            return RResult::ROk(ROption::RSome(ExtensionReply::json(
                r#"{"input": "embedding", "weight": "head.weight", "bias": "head.bias"}"#,
            )));
        }
        no_extension()
    }
}

/// Mean softmax cross-entropy of logits `[B, C]` against class indices `[B]`.
pub fn cross_entropy(
    logits: &tch::Tensor,
    target: &tch::Tensor,
) -> Result<tch::Tensor, PluginError> {
    let target = target
        .f_to_device(logits.device())?
        .f_to_kind(tch::Kind::Int64)?;
    let classes = logits.size().last().copied().unwrap_or(0);
    let max = i64::try_from(&target.f_max()?).unwrap_or(0);
    let min = i64::try_from(&target.f_min()?).unwrap_or(0);
    if min < 0 || max >= classes {
        return Err(PluginError::tensor(format!(
            "class index {} out of range for a head with {classes} outputs",
            if min < 0 { min } else { max }
        )));
    }
    Ok(logits
        .f_log_softmax(-1, tch::Kind::Float)?
        .f_nll_loss::<tch::Tensor>(&target, None, tch::Reduction::Mean, -100)?)
}
