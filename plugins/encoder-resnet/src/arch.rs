//! The shapes of torchvision's ResNets: blocks per stage, block kind, and the outputs (names,
//! channels, strides, shapes at an input size) the plugin reports to the host.

/// A torchvision ResNet's shape: blocks per stage and the kind of block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    /// Blocks in `layer1`..`layer4`.
    pub blocks: [i64; 4],
    /// Bottleneck blocks (1x1, 3x3, 1x1; 4x wider output: ResNet-50 and deeper) or basic blocks
    /// (two 3x3: ResNet-18 and -34).
    pub bottleneck: bool,
}

impl Arch {
    /// torchvision's `resnet18`.
    pub const RESNET18: Arch = Arch {
        blocks: [2, 2, 2, 2],
        bottleneck: false,
    };
    /// torchvision's `resnet34`.
    pub const RESNET34: Arch = Arch {
        blocks: [3, 4, 6, 3],
        bottleneck: false,
    };
    /// torchvision's `resnet50`.
    pub const RESNET50: Arch = Arch {
        blocks: [3, 4, 6, 3],
        bottleneck: true,
    };
    /// torchvision's `resnet101`.
    pub const RESNET101: Arch = Arch {
        blocks: [3, 4, 23, 3],
        bottleneck: true,
    };
    /// torchvision's `resnet152`.
    pub const RESNET152: Arch = Arch {
        blocks: [3, 8, 36, 3],
        bottleneck: true,
    };

    /// Output channels of a block over its width (4 for bottlenecks, 1 for basic blocks).
    pub fn expansion(self) -> i64 {
        if self.bottleneck {
            4
        } else {
            1
        }
    }

    /// `(name, channels, stride)` of every output: `embedding` (stride 0: pooled) and the
    /// pyramid `conv`, `block1`..`block4`.
    pub fn outputs(self) -> [(&'static str, i64, i64); 6] {
        let e = self.expansion();
        [
            ("embedding", 512 * e, 0),
            ("conv", 64, 2),
            ("block1", 64 * e, 4),
            ("block2", 128 * e, 8),
            ("block3", 256 * e, 16),
            ("block4", 512 * e, 32),
        ]
    }

    /// Per-sample output shapes for an input of `h` x `w`.
    pub fn output_shapes(self, h: i64, w: i64) -> Vec<(&'static str, Vec<i64>)> {
        let down = |s: i64| (s - 1) / 2 + 1;
        let mut size = (h, w);
        self.outputs()
            .into_iter()
            .map(|(name, channels, stride)| {
                if stride == 0 {
                    return (name, vec![channels]);
                }
                size = (down(size.0), down(size.1));
                (name, vec![channels, size.0, size.1])
            })
            .collect()
    }
}

/// The names of every output, in [`Arch::outputs`] order.
pub const OUTPUT_NAMES: [&str; 6] = ["embedding", "conv", "block1", "block2", "block3", "block4"];
