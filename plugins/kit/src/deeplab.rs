//! ViRB's DeepLabV3+ head (Cityscapes, EgoHands) with its state-dict names, sized from the
//! encoder's pyramid, and with its BatchNorm mistakes fixed:
//!
//! 1. `block4`: a replica of ResNet's `layer4` at stride 1 on `block3` (three bottlenecks, 3x3
//!    dilations 2, 4, 2), initialised from the encoder's `layer4` weights ([`DeepLab::load_layer4`]:
//!    `layer4.0.*` -> `block4.upsample_layer.*`, `layer4.1.*` -> `block4.conv.0.*`, `layer4.2.*`
//!    -> `block4.conv.1.*`). Its batch norms keep the encoder's running statistics (always in
//!    eval mode, as in ViRB) while its weights train.
//! 2. `aspp`: 1x1 and 3x3 convs with dilations 6, 12, 18 and a global-pool branch (each conv
//!    without bias, BN, ReLU), concatenated and projected by a 1x1 conv, BN, ReLU. ViRB passed
//!    the intended momentum 0.0003 as BN's eps; here it is the momentum, with eps 1e-5.
//! 3. The ASPP output is resized (bilinear, align_corners true) to `block1`'s size and joined
//!    with `low_level_feature_reducer` (1x1 conv with bias, BN, ReLU on `block1`), which follows
//!    the head's train/eval mode (ViRB's stayed in training mode, even at test).
//! 4. `decoder`: 3x3 conv, BN, ReLU, 3x3 conv, BN, ReLU, 3x3 conv to the classes; resized
//!    (bilinear, align_corners true) to the input image.
use crate::pixel_heads::conv;
use tch::nn;
use tch::Tensor;
use virb_plugin_api::PluginError;

/// BatchNorm momentum of the ASPP, reducer and decoder by default (DeepLab's decay 0.9997, the
/// value ViRB meant): the running statistics settle over thousands of steps, as in a full run.
pub const BN_MOMENTUM: f64 = 0.0003;

fn bn(vs: nn::Path, c: i64, momentum: f64) -> nn::BatchNorm {
    nn::batch_norm2d(
        vs,
        c,
        nn::BatchNormConfig {
            momentum,
            eps: 1e-5,
            ..Default::default()
        },
    )
}

/// A torchvision bottleneck at stride 1 with the given dilation of its 3x3 conv.
struct Bottleneck {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    conv3: nn::Conv2D,
    bn3: nn::BatchNorm,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Bottleneck {
    fn new(vs: &nn::Path, cin: i64, width: i64, dilation: i64) -> Self {
        let out = 4 * width;
        let m = 0.1;
        Bottleneck {
            conv1: conv(vs / "conv1", cin, width, 1, 1, false),
            bn1: bn(vs / "bn1", width, m),
            conv2: conv(vs / "conv2", width, width, 3, dilation, false),
            bn2: bn(vs / "bn2", width, m),
            conv3: conv(vs / "conv3", width, out, 1, 1, false),
            bn3: bn(vs / "bn3", out, m),
            downsample: (cin != out).then(|| {
                (
                    conv(vs / "downsample" / "0", cin, out, 1, 1, false),
                    bn(vs / "downsample" / "1", out, m),
                )
            }),
        }
    }

    /// Always in eval mode: the replica keeps the encoder's running statistics.
    fn forward(&self, x: &Tensor) -> Tensor {
        let y = x
            .apply(&self.conv1)
            .apply_t(&self.bn1, false)
            .relu()
            .apply(&self.conv2)
            .apply_t(&self.bn2, false)
            .relu()
            .apply(&self.conv3)
            .apply_t(&self.bn3, false);
        let skip = match &self.downsample {
            Some((c, b)) => x.apply(c).apply_t(b, false),
            None => x.shallow_clone(),
        };
        (y + skip).relu()
    }
}

/// Sizes of a [`DeepLab`] head.
#[derive(Debug, Clone, Copy)]
pub struct DeepLabConfig {
    /// Channels of `block1` (the stride-4 level).
    pub low_channels: i64,
    /// Channels of `block3` (the stride-16 level).
    pub mid_channels: i64,
    /// Bottleneck width of the `layer4` replica (512 for ResNet-50: 2048 output channels).
    pub width: i64,
    /// ASPP and decoder channels (256 in ViRB).
    pub aspp: i64,
    /// Channels of the reduced `block1` (48 in ViRB).
    pub low: i64,
    /// Output classes.
    pub classes: i64,
    /// BatchNorm momentum (PyTorch's meaning) of the ASPP, reducer and decoder
    /// ([`BN_MOMENTUM`] by default).
    pub bn_momentum: f64,
}

impl DeepLabConfig {
    /// ViRB's sizes over a ResNet-50 pyramid (block1 256, block3 1024 channels).
    pub fn resnet50(classes: i64) -> Self {
        DeepLabConfig {
            low_channels: 256,
            mid_channels: 1024,
            width: 512,
            aspp: 256,
            low: 48,
            classes,
            bn_momentum: BN_MOMENTUM,
        }
    }
}

/// The head.
pub struct DeepLab {
    block4: Vec<Bottleneck>,
    aspp: Vec<(nn::Conv2D, nn::BatchNorm)>,
    aspp_pool: (nn::Conv2D, nn::BatchNorm),
    aspp_project: (nn::Conv2D, nn::BatchNorm),
    reducer: (nn::Conv2D, nn::BatchNorm),
    decoder: [(nn::Conv2D, Option<nn::BatchNorm>); 3],
}

impl DeepLab {
    /// Builds the head under `vs` (ViRB's names).
    pub fn new(vs: &nn::Path, c: DeepLabConfig) -> Self {
        let out4 = 4 * c.width;
        let b4 = vs / "block4";
        let block4 = vec![
            Bottleneck::new(&(&b4 / "upsample_layer"), c.mid_channels, c.width, 2),
            Bottleneck::new(&(&b4 / "conv" / "0"), out4, c.width, 4),
            Bottleneck::new(&(&b4 / "conv" / "1"), out4, c.width, 2),
        ];
        let a = vs / "aspp";
        let branch = |i: usize, k: i64, d: i64| {
            (
                conv(&a / format!("aspp{i}"), out4, c.aspp, k, d, false),
                bn(&a / format!("aspp{i}_bn"), c.aspp, c.bn_momentum),
            )
        };
        let aspp = vec![
            branch(1, 1, 1),
            branch(2, 3, 6),
            branch(3, 3, 12),
            branch(4, 3, 18),
        ];
        let aspp_pool = branch(5, 1, 1);
        let aspp_project = (
            conv(&a / "conv2", 5 * c.aspp, c.aspp, 1, 1, false),
            bn(&a / "bn2", c.aspp, c.bn_momentum),
        );
        let r = vs / "low_level_feature_reducer";
        let reducer = (
            conv(&r / "0", c.low_channels, c.low, 1, 1, true),
            bn(&r / "1", c.low, c.bn_momentum),
        );
        let d = vs / "decoder";
        let decoder = [
            (
                conv(&d / "0", c.low + c.aspp, c.aspp, 3, 1, true),
                Some(bn(&d / "1", c.aspp, c.bn_momentum)),
            ),
            (
                conv(&d / "3", c.aspp, c.aspp, 3, 1, true),
                Some(bn(&d / "4", c.aspp, c.bn_momentum)),
            ),
            (conv(&d / "6", c.aspp, c.classes, 3, 1, true), None),
        ];
        DeepLab {
            block4,
            aspp,
            aspp_pool,
            aspp_project,
            reducer,
            decoder,
        }
    }

    /// Copies the encoder's `layer4.*` tensors (torchvision names) into the replica: returns the
    /// names it set, and an error naming a tensor whose shape differs.
    pub fn load_layer4(
        vs: &mut nn::VarStore,
        prefix: &str,
        encoder_state: &[(String, Tensor)],
    ) -> Result<usize, PluginError> {
        let mut own = vs.variables();
        let mut copied = 0;
        for (name, src) in encoder_state {
            let Some(rest) = name.strip_prefix("layer4.") else {
                continue;
            };
            let mapped = if let Some(r) = rest.strip_prefix("0.") {
                format!("{prefix}block4.upsample_layer.{r}")
            } else if let Some(r) = rest.strip_prefix("1.") {
                format!("{prefix}block4.conv.0.{r}")
            } else if let Some(r) = rest.strip_prefix("2.") {
                format!("{prefix}block4.conv.1.{r}")
            } else {
                continue;
            };
            let Some(dst) = own.get_mut(&mapped) else {
                continue; // num_batches_tracked and the like
            };
            if dst.size() != src.size() {
                return Err(PluginError::invalid_input(format!(
                    "encoder tensor `{name}` has shape {:?}, but the DeepLab head's `{mapped}` is {:?}",
                    src.size(),
                    dst.size()
                )));
            }
            tch::no_grad(|| dst.f_copy_(src))?;
            copied += 1;
        }
        Ok(copied)
    }

    /// `block1`: `[B, C1, h1, w1]`, `block3`: `[B, C3, h3, w3]`; the output is `[B, classes, H, W]`
    /// for an input image of `size = [H, W]`.
    pub fn forward(
        &self,
        block1: &Tensor,
        block3: &Tensor,
        size: [i64; 2],
        train: bool,
    ) -> Result<Tensor, PluginError> {
        let mut x = block3.shallow_clone();
        for b in &self.block4 {
            x = b.forward(&x);
        }
        let (h3, w3) = (x.size()[2], x.size()[3]);
        let cbr =
            |x: &Tensor, (c, b): &(nn::Conv2D, nn::BatchNorm)| x.apply(c).apply_t(b, train).relu();
        let mut branches: Vec<Tensor> = self.aspp.iter().map(|cb| cbr(&x, cb)).collect();
        let pooled = cbr(&x.f_adaptive_avg_pool2d([1, 1])?, &self.aspp_pool);
        branches.push(pooled.f_upsample_bilinear2d([h3, w3], true, None, None)?);
        let aspp = cbr(&Tensor::f_cat(&branches, 1)?, &self.aspp_project);
        let (h1, w1) = (block1.size()[2], block1.size()[3]);
        let aspp = aspp.f_upsample_bilinear2d([h1, w1], true, None, None)?;
        let low = cbr(block1, &self.reducer);
        let mut y = Tensor::f_cat(&[low, aspp], 1)?;
        for (c, b) in &self.decoder {
            y = y.apply(c);
            if let Some(b) = b {
                y = y.apply_t(b, train).relu();
            }
        }
        Ok(y.f_upsample_bilinear2d(size, true, None, None)?)
    }
}
