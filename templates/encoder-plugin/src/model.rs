//! The network: `conv1` (3 -> 16, 3x3, stride 2, padding 1) -> ReLU -> `conv2` (16 -> 32, 3x3,
//! stride 2, padding 1) -> ReLU -> global average pooling. Outputs: `block1` (after the first
//! ReLU, stride 2), `block2` (after the second, stride 4) and `embedding` (the pooled `block2`).
//! Written in PyTorch as
//!
//! ```python
//! class TinyConv(nn.Module):
//!     def __init__(self):
//!         super().__init__()
//!         self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
//!         self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
//!     def forward(self, x):
//!         return F.relu(self.conv2(F.relu(self.conv1(x)))).mean((2, 3))
//! ```
//!
//! and saved with `safetensors.torch.save_file(model.state_dict(), "tinyconv.safetensors")`.
use std::{collections::BTreeMap, path::Path};
use virb_plugin_api::PluginError;

/// Every tensor of the weights file: name and shape.
pub const PARAMETERS: [(&str, &[i64]); 4] = [
    ("conv1.weight", &[16, 3, 3, 3]),
    ("conv1.bias", &[16]),
    ("conv2.weight", &[32, 16, 3, 3]),
    ("conv2.bias", &[32]),
];
/// Channels of `block1`.
pub const BLOCK1: i64 = 16;
/// Channels of `block2` and width of `embedding`.
pub const BLOCK2: i64 = 32;

/// The weights, float32, on one device.
pub struct TinyConv {
    tensors: BTreeMap<String, tch::Tensor>,
}

/// The side of a 3x3, stride 2, padding 1 convolution's output.
pub fn conv_side(side: i64) -> i64 {
    (side - 1).div_euclid(2) + 1
}

impl TinyConv {
    /// Loads a safetensors file strictly: every tensor of [`PARAMETERS`] with its shape and a
    /// floating-point type, nothing else. Errors name the file and the tensor.
    pub fn load(path: &Path, device: tch::Device) -> Result<TinyConv, PluginError> {
        let help = "write the file from the PyTorch model in this crate's src/model.rs: \
                    safetensors.torch.save_file(model.state_dict(), path)";
        if !path.is_file() {
            return Err(PluginError::weights(format!(
                "weights file {} not found (or not a file)",
                path.display()
            ))
            .with_help("fix the path in the experiment list"));
        }
        let found = tch::Tensor::read_safetensors(path).map_err(|e| {
            let why = e.to_string();
            PluginError::weights(format!(
                "cannot read {} as safetensors: {}",
                path.display(),
                why.lines().next().unwrap_or("unknown error")
            ))
            .with_help(help)
        })?;
        let mut tensors = BTreeMap::new();
        for (name, tensor) in found {
            let Some((_, shape)) = PARAMETERS.iter().find(|(n, _)| *n == name) else {
                return Err(PluginError::weights(format!(
                    "{}: unexpected tensor `{name}` (this encoder has {})",
                    path.display(),
                    PARAMETERS.map(|(n, _)| n).join(", ")
                ))
                .with_help(help));
            };
            if tensor.size() != *shape {
                return Err(PluginError::weights(format!(
                    "{}: tensor `{name}` has shape {:?}, expected {shape:?}",
                    path.display(),
                    tensor.size()
                ))
                .with_help(help));
            }
            if !tensor.is_floating_point() {
                return Err(PluginError::weights(format!(
                    "{}: tensor `{name}` is {:?}, not floating point",
                    path.display(),
                    tensor.kind()
                ))
                .with_help(help));
            }
            let tensor = tensor.f_to_kind(tch::Kind::Float)?.f_to_device(device)?;
            tensors.insert(name, tensor);
        }
        if let Some((missing, _)) = PARAMETERS.iter().find(|(n, _)| !tensors.contains_key(*n)) {
            return Err(PluginError::weights(format!(
                "{}: tensor `{missing}` is missing",
                path.display()
            ))
            .with_help(help));
        }
        Ok(TinyConv { tensors })
    }

    fn get(&self, name: &str) -> Result<&tch::Tensor, PluginError> {
        // `load` guarantees every parameter; this only guards against a programming error.
        self.tensors
            .get(name)
            .ok_or_else(|| PluginError::tensor(format!("tensor `{name}` not loaded")))
    }

    /// Runs the network on `[B, 3, H, W]` without gradients: `(block1, block2, embedding)`.
    pub fn forward(
        &self,
        images: &tch::Tensor,
    ) -> Result<(tch::Tensor, tch::Tensor, tch::Tensor), PluginError> {
        if images.dim() != 4 || images.size()[1] != 3 {
            return Err(PluginError::tensor(format!(
                "the encoder takes images [B, 3, H, W], got {:?}",
                images.size()
            )));
        }
        let conv = |x: &tch::Tensor, layer: &str| -> Result<tch::Tensor, PluginError> {
            let weight = self.get(&format!("{layer}.weight"))?;
            let bias = self.get(&format!("{layer}.bias"))?;
            Ok(x.f_conv2d(weight, Some(bias), [2, 2], [1, 1], [1, 1], 1)?
                .f_relu()?)
        };
        tch::no_grad(|| {
            let x = images.f_to_kind(tch::Kind::Float)?;
            let block1 = conv(&x, "conv1")?;
            let block2 = conv(&block1, "conv2")?;
            let embedding = block2.f_mean_dim([2i64, 3].as_slice(), false, tch::Kind::Float)?;
            Ok((block1, block2, embedding))
        })
    }
}
