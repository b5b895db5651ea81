//! The residual blocks of a torchvision ResNet (`BasicBlock` and `Bottleneck`), the modules of
//! the whole network, and their batch norms folded into the convolutions (`folded.rs`).
use crate::arch::Arch;
use crate::folded::{ConvBn, FoldedBlock};
use tch::nn;

/// torchvision's `Bottleneck`: 1x1, 3x3 (with the stride), 1x1 convs, 4x wider out.
pub(crate) struct Bottleneck {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    conv3: nn::Conv2D,
    bn3: nn::BatchNorm,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
    stride: i64,
}

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        // The strict load overwrites every weight: a random initialisation would only cost time
        // (most of a check's for ResNet-152).
        ws_init: nn::Init::Const(0.0),
        ..Default::default()
    };
    nn::conv2d(p, cin, cout, k, cfg)
}

/// The stem convolution's (7x7) stride and padding.
pub(crate) const STEM: (i64, i64) = (2, 3);

/// torchvision's batch-norm epsilon.
pub(crate) const BN_EPS: f64 = 1e-5;

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    let cfg = nn::BatchNormConfig {
        eps: BN_EPS,
        ..Default::default()
    };
    nn::batch_norm2d(p, c, cfg)
}

impl Bottleneck {
    fn new(p: &nn::Path, cin: i64, width: i64, stride: i64) -> Self {
        let cout = width * 4;
        let downsample = (stride != 1 || cin != cout).then(|| {
            (
                conv(p / "downsample" / "0", cin, cout, 1, stride, 0),
                bn(p / "downsample" / "1", cout),
            )
        });
        Bottleneck {
            conv1: conv(p / "conv1", cin, width, 1, 1, 0),
            bn1: bn(p / "bn1", width),
            conv2: conv(p / "conv2", width, width, 3, stride, 1),
            bn2: bn(p / "bn2", width),
            conv3: conv(p / "conv3", width, cout, 1, 1, 0),
            bn3: bn(p / "bn3", cout),
            downsample,
            stride,
        }
    }

    /// `train`: batch norm normalises with the batch's statistics and updates its running ones.
    fn forward(&self, x: &tch::Tensor, train: bool) -> tch::Tensor {
        let y = x.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        let y = y.apply(&self.conv2).apply_t(&self.bn2, train).relu();
        let y = y.apply(&self.conv3).apply_t(&self.bn3, train);
        let identity = match &self.downsample {
            Some((c, b)) => x.apply(c).apply_t(b, train),
            None => x.shallow_clone(),
        };
        (y + identity).relu()
    }

    fn fold(&self) -> Result<FoldedBlock, tch::TchError> {
        Ok(FoldedBlock {
            convs: vec![
                ConvBn::fold((&self.conv1, 1, 0), &self.bn1, BN_EPS)?,
                ConvBn::fold((&self.conv2, self.stride, 1), &self.bn2, BN_EPS)?,
                ConvBn::fold((&self.conv3, 1, 0), &self.bn3, BN_EPS)?,
            ],
            downsample: fold_downsample(&self.downsample, self.stride)?,
        })
    }
}

/// A block's downsampling 1x1 convolution (with the block's stride) and batch norm, folded.
fn fold_downsample(
    d: &Option<(nn::Conv2D, nn::BatchNorm)>,
    stride: i64,
) -> Result<Option<ConvBn>, tch::TchError> {
    d.as_ref()
        .map(|(c, b)| ConvBn::fold((c, stride, 0), b, BN_EPS))
        .transpose()
}

/// torchvision's `BasicBlock`: two 3x3 convs (the first with the stride).
pub(crate) struct Basic {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
    stride: i64,
}

impl Basic {
    fn new(p: &nn::Path, cin: i64, width: i64, stride: i64) -> Self {
        let downsample = (stride != 1 || cin != width).then(|| {
            (
                conv(p / "downsample" / "0", cin, width, 1, stride, 0),
                bn(p / "downsample" / "1", width),
            )
        });
        Basic {
            conv1: conv(p / "conv1", cin, width, 3, stride, 1),
            bn1: bn(p / "bn1", width),
            conv2: conv(p / "conv2", width, width, 3, 1, 1),
            bn2: bn(p / "bn2", width),
            downsample,
            stride,
        }
    }

    fn forward(&self, x: &tch::Tensor, train: bool) -> tch::Tensor {
        let y = x.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        let y = y.apply(&self.conv2).apply_t(&self.bn2, train);
        let identity = match &self.downsample {
            Some((c, b)) => x.apply(c).apply_t(b, train),
            None => x.shallow_clone(),
        };
        (y + identity).relu()
    }

    fn fold(&self) -> Result<FoldedBlock, tch::TchError> {
        Ok(FoldedBlock {
            convs: vec![
                ConvBn::fold((&self.conv1, self.stride, 1), &self.bn1, BN_EPS)?,
                ConvBn::fold((&self.conv2, 1, 1), &self.bn2, BN_EPS)?,
            ],
            downsample: fold_downsample(&self.downsample, self.stride)?,
        })
    }
}

/// A residual block of either kind.
pub(crate) enum Block {
    Basic(Box<Basic>),
    Bottleneck(Box<Bottleneck>),
}

impl Block {
    pub(crate) fn forward(&self, x: &tch::Tensor, train: bool) -> tch::Tensor {
        match self {
            Block::Basic(b) => b.forward(x, train),
            Block::Bottleneck(b) => b.forward(x, train),
        }
    }

    pub(crate) fn fold(&self) -> Result<FoldedBlock, tch::TchError> {
        match self {
            Block::Basic(b) => b.fold(),
            Block::Bottleneck(b) => b.fold(),
        }
    }
}

/// The network's modules under `root`, with torchvision's names (`conv1`, `layer1.0.conv1`, ...).
pub(crate) fn build(root: &nn::Path, arch: Arch) -> (nn::Conv2D, nn::BatchNorm, Vec<Vec<Block>>) {
    let (stride, padding) = STEM;
    let conv1 = conv(root / "conv1", 3, 64, 7, stride, padding);
    let bn1 = bn(root / "bn1", 64);
    let mut layers = Vec::new();
    let mut cin = 64;
    for (i, (&n, width)) in arch.blocks.iter().zip([64, 128, 256, 512]).enumerate() {
        let lp = root / format!("layer{}", i + 1);
        let stride = if i == 0 { 1 } else { 2 };
        let mut layer = Vec::new();
        for b in 0..n {
            let (p, s) = (&lp / b, if b == 0 { stride } else { 1 });
            layer.push(if arch.bottleneck {
                Block::Bottleneck(Box::new(Bottleneck::new(&p, cin, width, s)))
            } else {
                Block::Basic(Box::new(Basic::new(&p, cin, width, s)))
            });
            cin = width * arch.expansion();
        }
        layers.push(layer);
    }
    (conv1, bn1, layers)
}
