"""TorchScript models for the `torchscript` encoder plugin's tests and benchmark, exported with
the libtorch venv's PyTorch, and PyTorch's own outputs to compare with.

usage: export_torchscript.py OUTDIR --resnet-weights FILE [--resnet-arch resnet50] [--only-resnet]

Writes into OUTDIR (random weights are seeded; nothing is downloaded):
  resnet.ts                 torch.jit.trace of the torchvision ResNet whose state dict is FILE, with
                            `fc` replaced by Identity: returns the embedding [N, 2048] as a tensor
  resnet_expected.safetensors
                            `images` [2, 3, 64, 80] (normalised) and PyTorch's `embedding` of them
  vit.ts                    torch.jit.script of a small torchvision VisionTransformer (32 px input,
                            patch 8, 2 layers, width 64, `heads` Identity): returns the class
                            token [N, 64]; it expects mean = std = 0.5 and only runs at 32x32
  vit_expected.safetensors  `images` [2, 3, 48, 40] (ImageNet-normalised) and `embedding`: the
                            model on them renormalised to mean = std = 0.5 and resized to 32x32
                            (bilinear, antialiased), as the plugin's options do
  pyramid.ts                torch.jit.trace (strict=False) of torchvision's EfficientNet-B0
                            (batch-norm statistics calibrated on noise) wrapped to return a dict:
                            `conv` (stride 2, 16 ch), `block1` (4, 24), `block2` (8, 40),
                            `block3` (16, 112), `block4` (32, 320) and `embedding` [N, 1280]
  pyramid_expected.safetensors
                            `images` [2, 3, 65, 65] and every output of pyramid.ts on them
  bad_tuple.ts              returns a tuple (embedding, embedding)
  bad_nokey.ts              returns a dict {"features": ...} without `embedding`
  bad_width.ts              returns an embedding [N, 3 N]: its width changes with the batch size
  state_dict.pt             torch.save(state_dict) of a small module: not TorchScript
"""
import argparse
import os
from typing import Dict

import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file
from torch import Tensor, nn

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def export_resnet(out, weights, arch):
    model = getattr(torchvision.models, arch)()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.fc = nn.Identity()
    model.eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.randn(1, 3, 64, 64), check_trace=False)
        traced.save(os.path.join(out, "resnet.ts"))
        x = torch.randn(2, 3, 64, 80, generator=torch.Generator().manual_seed(1))
        save_file({"images": x, "embedding": model(x)}, os.path.join(out, "resnet_expected.safetensors"))


def export_vit(out):
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128
    )
    vit.heads = nn.Identity()
    vit.eval()
    scripted = torch.jit.script(vit)
    scripted.save(os.path.join(out, "vit.ts"))
    x = torch.randn(2, 3, 48, 40, generator=torch.Generator().manual_seed(2))
    pixels = x * IMAGENET_STD + IMAGENET_MEAN
    ours = F.interpolate((pixels - 0.5) / 0.5, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        save_file({"images": x, "embedding": vit(ours).contiguous()}, os.path.join(out, "vit_expected.safetensors"))


class Pyramid(nn.Module):
    """EfficientNet-B0's stages as virb's pyramid, and its pooled last feature map."""

    def __init__(self, net):
        super().__init__()
        f = net.features
        self.conv, self.block1, self.block2 = f[0:2], f[2], f[3]
        self.block3, self.block4, self.head = f[4:6], f[6:8], f[8]

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        conv = self.conv(x)
        b1 = self.block1(conv)
        b2 = self.block2(b1)
        b3 = self.block3(b2)
        b4 = self.block4(b3)
        emb = torch.flatten(F.adaptive_avg_pool2d(self.head(b4), 1), 1)
        return {"embedding": emb, "conv": conv, "block1": b1, "block2": b2, "block3": b3, "block4": b4}


def export_pyramid(out):
    torch.manual_seed(0)
    net = torchvision.models.efficientnet_b0()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net(torch.randn(8, 3, 64, 64))
    model = Pyramid(net).eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.randn(1, 3, 64, 64), strict=False, check_trace=False)
        traced.save(os.path.join(out, "pyramid.ts"))
        x = torch.randn(2, 3, 65, 65, generator=torch.Generator().manual_seed(3))
        expected = {k: v.contiguous() for k, v in model(x).items()}
    save_file({"images": x, **expected}, os.path.join(out, "pyramid_expected.safetensors"))


class Tuple(nn.Module):
    def forward(self, x: Tensor):
        e = x.mean(dim=(2, 3))
        return e, e


class NoKey(nn.Module):
    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        return {"features": x.mean(dim=(2, 3))}


class Width(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3)).repeat(1, x.shape[0])


def export_bad(out):
    for name, module in [("bad_tuple", Tuple()), ("bad_nokey", NoKey()), ("bad_width", Width())]:
        torch.jit.script(module).save(os.path.join(out, f"{name}.ts"))
    torch.save(nn.Linear(3, 4).state_dict(), os.path.join(out, "state_dict.pt"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--resnet-weights", required=True)
    p.add_argument("--resnet-arch", default="resnet50")
    p.add_argument("--only-resnet", action="store_true")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    export_resnet(args.out, args.resnet_weights, args.resnet_arch)
    if not args.only_resnet:
        export_vit(args.out)
        export_pyramid(args.out)
        export_bad(args.out)


if __name__ == "__main__":
    main()
