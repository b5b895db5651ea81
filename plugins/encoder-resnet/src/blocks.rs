//! The residual blocks of a torchvision ResNet (`BasicBlock` and `Bottleneck`), the modules of
//! the whole network, and their batch norms folded into the convolutions (`folded.rs`).
use crate::arch::Arch;
use crate::folded::{ConvBn, FoldedBlock};
use tch::nn;

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

/// One convolution of a block with its batch norm; padded to keep the size at stride 1.
struct Stage {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    stride: i64,
    padding: i64,
}

impl Stage {
    fn new(
        conv_path: nn::Path,
        bn_path: nn::Path,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
    ) -> Self {
        let padding = k / 2;
        Stage {
            conv: conv(conv_path, cin, cout, k, stride, padding),
            bn: bn(bn_path, cout),
            stride,
            padding,
        }
    }

    /// `train`: batch norm normalises with the batch's statistics and updates its running ones.
    fn forward(&self, x: &tch::Tensor, train: bool) -> tch::Tensor {
        x.apply(&self.conv).apply_t(&self.bn, train)
    }

    fn fold(&self) -> Result<ConvBn, tch::TchError> {
        ConvBn::fold((&self.conv, self.stride, self.padding), &self.bn, BN_EPS)
    }
}

/// A residual block: torchvision's `Bottleneck` (1x1, 3x3 with the stride, 1x1 four times wider)
/// or `BasicBlock` (two 3x3, the first with the stride), a ReLU after every stage but the last,
/// then the identity (or the downsampling 1x1 convolution) added and a ReLU.
pub(crate) struct Block {
    stages: Vec<Stage>,
    downsample: Option<Stage>,
}

impl Block {
    fn new(p: &nn::Path, cin: i64, width: i64, stride: i64, bottleneck: bool) -> Self {
        let stage = |i: usize, cin, cout, k, stride| {
            Stage::new(
                p / format!("conv{i}"),
                p / format!("bn{i}"),
                cin,
                cout,
                k,
                stride,
            )
        };
        let (stages, cout) = if bottleneck {
            let cout = width * 4;
            let stages = vec![
                stage(1, cin, width, 1, 1),
                stage(2, width, width, 3, stride),
                stage(3, width, cout, 1, 1),
            ];
            (stages, cout)
        } else {
            let stages = vec![
                stage(1, cin, width, 3, stride),
                stage(2, width, width, 3, 1),
            ];
            (stages, width)
        };
        let downsample = (stride != 1 || cin != cout).then(|| {
            let d = p / "downsample";
            Stage::new(&d / "0", &d / "1", cin, cout, 1, stride)
        });
        Block { stages, downsample }
    }

    pub(crate) fn forward(&self, x: &tch::Tensor, train: bool) -> tch::Tensor {
        let mut y = x.shallow_clone();
        for (i, stage) in self.stages.iter().enumerate() {
            y = stage.forward(&y, train);
            if i + 1 < self.stages.len() {
                y = y.relu();
            }
        }
        let identity = match &self.downsample {
            Some(d) => d.forward(x, train),
            None => x.shallow_clone(),
        };
        (y + identity).relu()
    }

    pub(crate) fn fold(&self) -> Result<FoldedBlock, tch::TchError> {
        Ok(FoldedBlock {
            convs: self
                .stages
                .iter()
                .map(Stage::fold)
                .collect::<Result<_, _>>()?,
            downsample: self.downsample.as_ref().map(Stage::fold).transpose()?,
        })
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
            layer.push(Block::new(&p, cin, width, s, arch.bottleneck));
            cin = width * arch.expansion();
        }
        layers.push(layer);
    }
    (conv1, bn1, layers)
}
