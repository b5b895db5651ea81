//! ViRB's pixel-wise decoders with its state-dict names, sized from the encoder's pyramid instead
//! of ResNet-50's hard-coded 64/256/512/1024/2048 channels:
//!
//! * [`PixelDecoder`] (ViRB's `PixelWisePredictionHead`): from the deepest level up, each
//!   `upN` block is a 3x3 conv (to 4x the next level's channels, with bias), PixelShuffle(2) and
//!   LeakyReLU(0.01) (none after the last); the result is resized bilinearly (align_corners
//!   false) to the next level's size when it differs, and that level is added. Levels are given
//!   shallow to deep (`conv`, `block1` .. `block4` for a ResNet); the output has twice the
//!   shallowest level's resolution.
//! * [`SiameseFusion`] (the front of ViRB's `SiamesePixelWisePredictionHead`): each level of a
//!   frame pair `[B, 2, C, h, w]` becomes `[B, 2C, h, w]` (frame A's channels first) and a 1x1
//!   conv with bias (`fusion1` for the deepest level .. `fusion5` for the shallowest) brings it
//!   back to `C` channels before the decoder.
use tch::{nn, Tensor};
use virb_plugin_api::{FeatureSpec, PluginError};

/// A conv layer with PyTorch's default initialisation (kaiming-uniform with a = sqrt(5) for the
/// weight, which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias), padded
/// to keep the size (`dilation * (k / 2)`). Shared by the kit's pixel-wise heads.
pub(crate) fn conv(
    vs: nn::Path,
    cin: i64,
    cout: i64,
    k: i64,
    dilation: i64,
    bias: bool,
) -> nn::Conv2D {
    let bound = 1.0 / ((cin * k * k) as f64).sqrt();
    let init = nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    nn::conv2d(
        vs,
        cin,
        cout,
        k,
        nn::ConvConfig {
            padding: dilation * (k / 2),
            dilation,
            bias,
            ws_init: init,
            bs_init: init,
            ..Default::default()
        },
    )
}

/// A 3x3 conv padded to keep the size (`conv(.., 3, 1, ..)`), the same numbers as
/// `x.apply(conv)`. On a level smaller than 3 pixels on a side (ResNet's `block4` of a 64-px
/// input is 2x2) the zero padding is made explicit and the conv runs unpadded: oneDNN's backward
/// pass of a padded 3x3 conv on a 2x2 input takes a slow path (measured with PyTorch 2.11 on
/// this project's 2-core CPU, 2048 -> 4096 channels, batch 6: 18.6 s against 0.75 s padded
/// first; at 3x3 and above both are alike).
pub(crate) fn conv_same(conv: &nn::Conv2D, x: &Tensor) -> Result<Tensor, PluginError> {
    let s = x.size();
    let small = s.len() == 4 && (s[2] < 3 || s[3] < 3);
    if !small {
        return Ok(x.apply(conv));
    }
    let padded = x.f_constant_pad_nd([1, 1, 1, 1])?;
    Ok(padded.f_conv2d(&conv.ws, conv.bs.as_ref(), [1, 1], [0, 0], [1, 1], 1)?)
}

/// Channels and per-sample shape `[C, h, w]` (or `[T, C, h, w]`) of each named level.
pub fn level_channels(
    features: &[FeatureSpec],
    levels: &[&str],
    frames: usize,
) -> Result<Vec<i64>, PluginError> {
    levels
        .iter()
        .map(|name| {
            let spec = features
                .iter()
                .find(|f| f.name.as_str() == *name)
                .ok_or_else(|| {
                    PluginError::invalid_input(format!(
                        "the pixel-wise head needs the encoder output `{name}`, which it does not provide"
                    ))
                })?;
            match (frames, spec.shape.as_slice()) {
                (1, [c, _, _]) => Ok(*c),
                (t, [n, c, _, _]) if *n as usize == t => Ok(*c),
                (_, other) => Err(PluginError::invalid_input(format!(
                    "encoder output `{name}` has per-sample shape {other:?}; a pixel-wise head needs {}",
                    if frames == 1 { "[C, h, w]".to_string() } else { format!("[{frames}, C, h, w]") }
                ))),
            }
        })
        .collect()
}

/// ViRB's U-shaped PixelShuffle decoder over a pyramid.
pub struct PixelDecoder {
    ups: Vec<nn::Conv2D>,
}

impl PixelDecoder {
    /// `channels`: the levels' channels, shallow to deep (at least 2); `out`: output channels.
    /// Parameters are `up1.0.*` (deepest) .. `upN.0.*` under `vs`.
    pub fn new(vs: &nn::Path, channels: &[i64], out: i64) -> Result<Self, PluginError> {
        if channels.len() < 2 || out < 1 {
            return Err(PluginError::invalid_input(
                "a pixel-wise decoder needs at least two pyramid levels and one output channel",
            ));
        }
        let n = channels.len();
        let ups = (0..n)
            .map(|i| {
                let cin = channels[n - 1 - i];
                let cout = if i + 1 < n { channels[n - 2 - i] } else { out };
                conv(vs / format!("up{}", i + 1) / "0", cin, 4 * cout, 3, 1, true)
            })
            .collect();
        Ok(PixelDecoder { ups })
    }

    /// `levels`: `[B, C_k, h_k, w_k]`, shallow to deep.
    pub fn forward(&self, levels: &[Tensor]) -> Result<Tensor, PluginError> {
        let n = self.ups.len();
        if levels.len() != n {
            return Err(PluginError::tensor(format!(
                "the decoder has {n} levels but got {}",
                levels.len()
            )));
        }
        let mut x = levels[n - 1].shallow_clone();
        for (i, up) in self.ups.iter().enumerate() {
            x = conv_same(up, &x)?.f_pixel_shuffle(2)?;
            if i + 1 == n {
                break;
            }
            x = x.f_leaky_relu()?;
            let skip = &levels[n - 2 - i];
            let (h, w) = (skip.size()[2], skip.size()[3]);
            if x.size()[2..] != [h, w] {
                x = x.f_upsample_bilinear2d([h, w], false, None, None)?;
            }
            x = x.f_add(skip)?;
        }
        Ok(x)
    }
}

/// The 1x1 fusion of frame pairs, level by level.
pub struct SiameseFusion {
    fusions: Vec<nn::Conv2D>,
}

impl SiameseFusion {
    /// `channels`: the levels' channels of one frame, shallow to deep; parameters `fusion1.*`
    /// (deepest) .. `fusionN.*`.
    pub fn new(vs: &nn::Path, channels: &[i64]) -> Self {
        let n = channels.len();
        let fusions = (0..n)
            .map(|i| {
                let c = channels[n - 1 - i];
                conv(vs / format!("fusion{}", i + 1), 2 * c, c, 1, 1, true)
            })
            .collect::<Vec<_>>();
        // Stored deepest first; `forward` takes levels shallow to deep.
        SiameseFusion {
            fusions: fusions.into_iter().rev().collect(),
        }
    }

    /// `levels`: `[B, 2, C_k, h_k, w_k]`, shallow to deep; returns `[B, C_k, h_k, w_k]`.
    pub fn forward(&self, levels: &[Tensor]) -> Result<Vec<Tensor>, PluginError> {
        if levels.len() != self.fusions.len() {
            return Err(PluginError::tensor(format!(
                "the fusion has {} levels but got {}",
                self.fusions.len(),
                levels.len()
            )));
        }
        levels
            .iter()
            .zip(&self.fusions)
            .map(|(x, f)| {
                let s = x.size();
                if s.len() != 5 || s[1] != 2 {
                    return Err(PluginError::tensor(format!(
                        "a siamese level must be [B, 2, C, h, w], got {s:?}"
                    )));
                }
                Ok(x.f_reshape([s[0], 2 * s[2], s[3], s[4]])?.apply(f))
            })
            .collect()
    }
}
