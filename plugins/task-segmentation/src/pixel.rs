//! The forward pass of ViRB's PixelWise decoder ([`PixelDecoder`], whose parameters and
//! initialisation it uses), with one change of method, not of result: on the CPU, a 3x3 conv on
//! a map of at most [`SMALL_MAP`] pixels runs as `im2col` and a matrix product.
//!
//! Why: libtorch's oneDNN convolution takes ~25x longer in the backward pass of `up1` (3x3,
//! 2048 -> 4096 channels) on a 2x2 map — the deepest level of a 64-pixel input — than the same
//! computation as a matrix product (measured with PyTorch 2.11 on 2 cores: ~55 s against ~2 s
//! for a batch of 4), which made small-image training of this head impractical. Results equal
//! the kit's decoder (checked by a unit test).
use tch::{nn, Tensor};
use virb_plugin_api::PluginError;
use virb_plugin_kit::pixel_heads::PixelDecoder;

/// Largest map (in pixels) whose 3x3 convs run as a matrix product on the CPU.
pub const SMALL_MAP: i64 = 16;

/// A 3x3 conv, stride 1, padding 1, with bias; `x` is `[B, C, h, w]`.
pub fn conv3x3(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor, PluginError> {
    let s = x.size();
    let (h, w) = (s[2], s[3]);
    let cout = weight.size()[0];
    if x.device() != tch::Device::Cpu || h * w > SMALL_MAP {
        return Ok(x.f_conv2d(weight, Some(bias), [1, 1], [1, 1], [1, 1], 1)?);
    }
    let cols = x.f_im2col([3, 3], [1, 1], [1, 1], [1, 1])?;
    let y = weight.f_reshape([cout, -1])?.f_matmul(&cols)?;
    Ok(y.f_reshape([s[0], cout, h, w])?
        .f_add(&bias.f_reshape([1, cout, 1, 1])?)?)
}

/// The decoder's parameters, deepest block first (`up1`), sharing storage with the var store.
pub struct PixelNet {
    ups: Vec<(Tensor, Tensor)>,
}

impl PixelNet {
    /// Builds a [`PixelDecoder`] under the root of `vs` (its names `up1.0.*` .. `upN.0.*` and
    /// initialisation) and keeps handles to its parameters.
    pub fn new(vs: &nn::VarStore, channels: &[i64], out: i64) -> Result<Self, PluginError> {
        PixelDecoder::new(&vs.root(), channels, out)?;
        let vars = vs.variables();
        let get = |name: String| {
            vars.get(&name).map(Tensor::shallow_clone).ok_or_else(|| {
                PluginError::tensor(format!("the pixel-wise decoder has no parameter `{name}`"))
            })
        };
        let ups = (1..=channels.len())
            .map(|i| {
                Ok((
                    get(format!("up{i}.0.weight"))?,
                    get(format!("up{i}.0.bias"))?,
                ))
            })
            .collect::<Result<Vec<_>, PluginError>>()?;
        Ok(PixelNet { ups })
    }

    /// `levels`: `[B, C_k, h_k, w_k]`, shallow to deep; the output has twice the shallowest
    /// level's resolution.
    pub fn forward(&self, levels: &[Tensor]) -> Result<Tensor, PluginError> {
        let n = self.ups.len();
        if levels.len() != n {
            return Err(PluginError::tensor(format!(
                "the decoder has {n} levels but got {}",
                levels.len()
            )));
        }
        let mut x = levels[n - 1].shallow_clone();
        for (i, (w, b)) in self.ups.iter().enumerate() {
            x = conv3x3(&x, w, b)?.f_pixel_shuffle(2)?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tch::Kind;

    #[test]
    fn small_map_conv_equals_libtorch_conv() {
        for side in [1, 2, 3, 4, 5] {
            let x = Tensor::randn([2, 6, side, side + 1], (Kind::Float, tch::Device::Cpu));
            let w = Tensor::randn([5, 6, 3, 3], (Kind::Float, tch::Device::Cpu));
            let b = Tensor::randn([5], (Kind::Float, tch::Device::Cpu));
            let want = x.conv2d(&w, Some(&b), [1, 1], [1, 1], [1, 1], 1);
            let got = conv3x3(&x, &w, &b).unwrap();
            assert!(got.allclose(&want, 1e-5, 1e-5, false), "side {side}");
        }
    }

    #[test]
    fn forward_equals_the_kit_decoder() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = PixelNet::new(&vs, &[4, 6, 8], 3).unwrap();
        // The kit's decoder over the same parameters (a second store loaded from the first).
        let mut other = nn::VarStore::new(tch::Device::Cpu);
        let kit = PixelDecoder::new(&other.root(), &[4, 6, 8], 3).unwrap();
        other.copy(&vs).unwrap();
        for (h, w) in [(16, 16), (9, 13)] {
            let down = |n: i64, t: u32| (0..t).fold(n, |n, _| (n - 1) / 2 + 1);
            let levels: Vec<Tensor> = [(4, 0), (6, 1), (8, 2)]
                .iter()
                .map(|(c, t)| {
                    Tensor::randn(
                        [2, *c, down(h, *t), down(w, *t)],
                        (Kind::Float, tch::Device::Cpu),
                    )
                })
                .collect();
            let (a, b) = (net.forward(&levels).unwrap(), kit.forward(&levels).unwrap());
            assert_eq!(a.size(), b.size());
            assert!(a.allclose(&b, 1e-5, 1e-5, false), "{h}x{w}");
        }
    }
}
