//! The network, written the tch way with path segments named like torchvision's `state_dict`.
use crate::blocks::{build, Block, BN_EPS, STEM};
use crate::folded::{ConvBn, Folded};
use crate::weights;
use std::path::Path;
use std::sync::Mutex;
use tch::nn;
use virb_plugin_api::PluginError;

pub use crate::arch::{Arch, OUTPUT_NAMES};

/// Loading options.
pub struct ResNetOptions {
    /// Use channels-last memory layout for weights and activations.
    pub channels_last: bool,
    /// The type weights and activations are computed in (`Float`, `BFloat16`, `Half`); outputs
    /// are always float32. Anything but `Float` is for a frozen encoder only.
    pub kind: tch::Kind,
}

/// Whether the frozen forward runs the folded network (`folded.rs`).
enum Fold {
    /// Not folded yet: the first frozen forward folds.
    Later,
    /// Folded.
    Done(Folded),
    /// Never: the network trains (fine-tuning), so its own modules run.
    Never,
}

/// A torchvision ResNet: frozen after loading, trainable once [`ResNet::trainable_parameters`]
/// has been called.
pub struct ResNet {
    vs: nn::VarStore,
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    layers: Vec<Vec<Block>>,
    arch: Arch,
    channels_last: bool,
    kind: tch::Kind,
    fold: Mutex<Fold>,
}

/// Converts a 4-D tensor to channels-last strides (same shape, NHWC memory order).
fn to_channels_last(t: &tch::Tensor) -> Result<tch::Tensor, tch::TchError> {
    t.f_permute([0, 2, 3, 1])?
        .f_contiguous()?
        .f_permute([0, 3, 1, 2])
}

/// Orders torchvision names the way a person reads them: numeric segments by value
/// (`layer3.2` before `layer3.10`), the others alphabetically.
fn natural_key(name: &str) -> Vec<(u64, &str)> {
    name.split('.')
        .map(|seg| (seg.parse::<u64>().unwrap_or(u64::MAX), seg))
        .collect()
}

/// A detached, contiguous copy of `t` (its own storage: later training does not change it).
fn snapshot(t: &tch::Tensor) -> Result<tch::Tensor, tch::TchError> {
    let src = t.f_detach()?.f_contiguous()?;
    let mut out = src.f_empty_like()?;
    out.f_copy_(&src)?;
    Ok(out)
}

/// The names and shapes of every tensor `arch` loads (torchvision names, no `fc.*` or
/// `num_batches_tracked`), built on the CPU.
pub fn expected_shapes(arch: Arch) -> Vec<(String, Vec<i64>)> {
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let _ = build(&vs.root(), arch);
    let mut shapes: Vec<(String, Vec<i64>)> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| (name, t.size()))
        .collect();
    shapes.sort_by(|a, b| natural_key(&a.0).cmp(&natural_key(&b.0)));
    shapes
}

impl ResNet {
    /// Builds the network and loads `path` strictly.
    pub fn load(
        path: &Path,
        arch: Arch,
        device: tch::Device,
        options: ResNetOptions,
    ) -> Result<Self, PluginError> {
        if path.as_os_str().is_empty() {
            return Err(PluginError::weights("no weights file given").with_help(
                "give the path of a ResNet weights file in the experiment list (virb never downloads weights)",
            ));
        }
        if path.is_dir() {
            return Err(PluginError::weights(format!(
                "weights file {} is a folder, not a weights file",
                path.display()
            ))
            .with_help("give the path of the .pt/.pth or .safetensors file inside it"));
        }
        if !path.is_file() {
            return Err(
                PluginError::weights(format!("weights file {} not found", path.display()))
                    .with_help("paths in an experiment list are relative to the working directory"),
            );
        }
        let mut vs = nn::VarStore::new(device);
        let (conv1, bn1, layers) = build(&vs.root(), arch);
        vs.freeze();
        weights::copy_weights(path, &vs)?;
        if options.channels_last {
            tch::no_grad(|| -> Result<(), PluginError> {
                for (_, mut t) in vs.variables() {
                    if t.dim() == 4 {
                        let cl = to_channels_last(&t)?;
                        t.set_data(&cl);
                    }
                }
                Ok(())
            })?;
        }
        if options.kind != tch::Kind::Float {
            tch::no_grad(|| -> Result<(), PluginError> {
                for (_, mut t) in vs.variables() {
                    let cast = t.f_to_kind(options.kind)?;
                    t.set_data(&cast);
                }
                Ok(())
            })?;
        }
        Ok(ResNet {
            vs,
            conv1,
            bn1,
            layers,
            arch,
            channels_last: options.channels_last,
            kind: options.kind,
            fold: Mutex::new(Fold::Later),
        })
    }

    /// Runs the frozen network (eval mode, no gradients) and returns the `wanted` outputs
    /// (stopping at the deepest one needed).
    pub fn forward(
        &self,
        images: &tch::Tensor,
        wanted: &[&str],
    ) -> Result<Vec<(String, tch::Tensor)>, PluginError> {
        tch::no_grad(|| self.run(images, wanted, false))
    }

    /// Runs the network in training mode (batch norm uses the batch's statistics and updates its
    /// running statistics, as after `model.train()` in PyTorch), recording the autograd graph.
    /// Gradients reach the parameters once [`ResNet::trainable_parameters`] has been called.
    pub fn forward_train(
        &self,
        images: &tch::Tensor,
        wanted: &[&str],
    ) -> Result<Vec<(String, tch::Tensor)>, PluginError> {
        if self.kind != tch::Kind::Float {
            return Err(PluginError::invalid_input(format!(
                "cannot fine-tune an encoder loaded with precision {:?}",
                self.kind
            ))
            .with_help("fine-tuning (train_encoder: true) needs `precision: fp32` (the default)"));
        }
        self.run(images, wanted, true)
    }

    /// Makes every weight and bias require gradients from now on and returns them (handles
    /// sharing storage and `grad` with the network's own), torchvision names, in natural order.
    /// Batch-norm running statistics are buffers, not parameters: they are not returned.
    pub fn trainable_parameters(&self) -> Result<Vec<(String, tch::Tensor)>, PluginError> {
        if let Ok(mut fold) = self.fold.lock() {
            *fold = Fold::Never;
        }
        for t in self.vs.trainable_variables() {
            let _ = t.f_set_requires_grad(true)?;
        }
        let mut params: Vec<(String, tch::Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| natural_key(&a.0).cmp(&natural_key(&b.0)));
        Ok(params)
    }

    /// Every parameter and batch-norm running statistic (no `num_batches_tracked`), detached
    /// contiguous copies, torchvision names, in natural order: what `state_dict()` holds minus
    /// `fc.*` and `num_batches_tracked`.
    pub fn state(&self) -> Result<Vec<(String, tch::Tensor)>, PluginError> {
        let mut state = self
            .vs
            .variables()
            .into_iter()
            .map(|(name, t)| Ok((name, snapshot(&t.f_to_kind(tch::Kind::Float)?)?)))
            .collect::<Result<Vec<_>, tch::TchError>>()?;
        state.sort_by(|a, b| natural_key(&a.0).cmp(&natural_key(&b.0)));
        Ok(state)
    }

    /// The folded network for the frozen forward, folded on first use; `None` once the network
    /// trains.
    fn folded(&self) -> Result<Option<Folded>, PluginError> {
        let Ok(mut fold) = self.fold.lock() else {
            return Ok(None);
        };
        if let Fold::Later = &*fold {
            let stem = (&self.conv1, STEM.0, STEM.1);
            let folded = tch::no_grad(|| -> Result<Folded, tch::TchError> {
                Ok(Folded {
                    stem: ConvBn::fold(stem, &self.bn1, BN_EPS)?,
                    layers: self
                        .layers
                        .iter()
                        .map(|l| l.iter().map(Block::fold).collect())
                        .collect::<Result<_, _>>()?,
                })
            })?;
            *fold = Fold::Done(folded);
        }
        Ok(match &*fold {
            Fold::Done(f) => Some(f.shallow_clone()),
            _ => None,
        })
    }

    fn run(
        &self,
        images: &tch::Tensor,
        wanted: &[&str],
        train: bool,
    ) -> Result<Vec<(String, tch::Tensor)>, PluginError> {
        let size = images.size();
        if size.len() != 4 || size[1] != 3 {
            return Err(PluginError::tensor(format!(
                "resnet input must be [N, 3, H, W], got {size:?}"
            )));
        }
        for w in wanted {
            if !OUTPUT_NAMES.contains(w) {
                return Err(PluginError::invalid_input(format!(
                    "resnet has no output `{w}`; it provides embedding, conv, block1..block4"
                )));
            }
        }
        let depth = wanted
            .iter()
            .filter_map(|w| OUTPUT_NAMES.iter().position(|n| n == w))
            .map(|i| if i == 0 { OUTPUT_NAMES.len() } else { i })
            .max()
            .unwrap_or(0);
        if train && depth > 0 {
            // Training-mode batch norm needs more than one value per channel; the deepest stage run
            // has the fewest.
            let shapes = self.arch.output_shapes(size[2], size[3]);
            let (name, shape) = &shapes[depth.min(OUTPUT_NAMES.len() - 1)];
            if size[0] * shape[1] * shape[2] < 2 {
                return Err(PluginError::invalid_input(format!(
                    "cannot train on a batch of {} image(s) of {}x{}: `{name}` would be {}x{}, one \
                     value per channel, and training-mode batch norm needs more",
                    size[0], size[2], size[3], shape[1], shape[2]
                ))
                .with_help("use batches of at least 2 images, or larger images"));
            }
        }
        let mut out = Vec::new();
        let mut keep = |name: &str, t: &tch::Tensor| -> Result<(), PluginError> {
            if wanted.contains(&name) {
                out.push((
                    name.to_string(),
                    t.f_to_kind(tch::Kind::Float)?.f_contiguous()?,
                ));
            }
            Ok(())
        };
        let mut body = || -> Result<(), PluginError> {
            let x = images.f_to_kind(self.kind)?;
            let x = if self.channels_last {
                to_channels_last(&x)?
            } else {
                x
            };
            let folded = if train { None } else { self.folded()? };
            let mut x = match &folded {
                Some(f) => f.stem.forward_relu(&x)?,
                None => x.apply(&self.conv1).apply_t(&self.bn1, train).relu(),
            };
            keep("conv", &x)?;
            if depth <= 1 {
                return Ok(());
            }
            x = x.f_max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)?;
            for (i, layer) in self.layers.iter().enumerate() {
                for (j, block) in layer.iter().enumerate() {
                    x = match folded.as_ref().and_then(|f| f.layers.get(i)?.get(j)) {
                        Some(b) => b.forward(&x)?,
                        None => block.forward(&x, train),
                    };
                }
                keep(&format!("block{}", i + 1), &x)?;
                if depth <= i + 2 {
                    return Ok(());
                }
            }
            let emb = x.f_mean_dim(&[-2i64, -1][..], false, tch::Kind::Float)?;
            keep("embedding", &emb)
        };
        body()?;
        Ok(out)
    }
}
