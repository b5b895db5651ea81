"""Writes a torchvision ResNet weights file (ResNet-50 unless --arch), as
`torch.save(model.state_dict(), path)` does.

No weights can be downloaded here, so the network is randomly initialised (seeded), each residual
branch's last batch-norm scale is set to 0.2 (so the residual stream stays well scaled), and the
batch-norm statistics are calibrated on images (--calibrate-dir) or on random noise. The file has
exactly the format of torchvision's checkpoints (and, with --prefix model., of ViRB's).

With --degrade-embedding (a fixture for fine-tuning tests) the frozen network's `embedding` is made
nearly constant across images while staying trainable; see degrade_embedding().

usage: make_weights.py OUT [--arch resnet50|resnet18|resnet34|...] [--seed N] [--prefix model.]
                           [--legacy] [--safetensors]
                           [--calibrate-dir DIR] [--calibrate-size PX]
                           [--degrade-embedding] [--degrade-scale S] [--degrade-bias B]
"""
import argparse
import glob
import os

import torch
import torchvision


def calibration_batches(args):
    size = args.calibrate_size
    if not args.calibrate_dir:
        return [torch.randn(8, 3, size, size) for _ in range(4)]
    from PIL import Image
    import torchvision.transforms as T

    tf = T.Compose(
        [T.Resize((size, size)), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    )
    files = sorted(
        f
        for ext in ("jpg", "jpeg", "png", "JPEG")
        for f in glob.glob(os.path.join(args.calibrate_dir, "**", "*." + ext), recursive=True)
    )[:256]
    if not files:
        raise SystemExit(f"no images below {args.calibrate_dir}")
    images = torch.stack([tf(Image.open(f).convert("RGB")) for f in files])
    return list(images.split(64))


def build_model(seed, batches, arch="resnet50"):
    """A seeded torchvision ResNet, residual scales 0.2, BN statistics averaged over `batches`."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)()
    for m in model.modules():
        if isinstance(m, torchvision.models.resnet.Bottleneck):
            torch.nn.init.constant_(m.bn3.weight, 0.2)
        if isinstance(m, torchvision.models.resnet.BasicBlock):
            torch.nn.init.constant_(m.bn2.weight, 0.2)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    model.eval()
    return model


def degrade_embedding(model, scale, bias):
    """Makes the frozen `embedding` nearly useless while fine-tuning can repair it quickly.

    The embedding is the spatial mean of layer4's residual stream, which only the batch norms at the
    end of each layer4 branch write into: layer4.0.bn3, layer4.0.downsample.1, layer4.1.bn3 and
    layer4.2.bn3. Each gets its scale multiplied by `scale` and its shift set to `bias` > 0, so the
    stream is about 4 * bias everywhere (plus an O(scale) image-dependent part) and the embedding is
    a near-constant vector: a linear probe on frozen features sees no usable signal. Gradients still
    flow: every ReLU on the stream sees a positive input (never ReLU'(0) = 0), and the gradient of
    a batch-norm scale is O(1) whatever its value (it multiplies the normalised activations), so an
    optimiser restores the scales within a few epochs. Training-mode batch norm cannot undo it: the
    scale applies after normalisation, and no batch norm follows the stream before the pooling.
    """
    layer4 = model.layer4
    with torch.no_grad():
        for bn in [layer4[0].bn3, layer4[0].downsample[1], layer4[1].bn3, layer4[2].bn3]:
            bn.weight.mul_(scale)
            bn.bias.fill_(bias)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--arch", default="resnet50", help="a torchvision ResNet: resnet18 ... resnet152")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prefix", default="")
    ap.add_argument("--legacy", action="store_true", help="pre-1.6 (non-zip) serialisation")
    ap.add_argument("--safetensors", action="store_true")
    ap.add_argument("--calibrate-size", type=int, default=112)
    ap.add_argument("--calibrate-dir", help="calibrate batch-norm statistics on the images below")
    ap.add_argument(
        "--degrade-embedding",
        action="store_true",
        help="make the frozen embedding nearly constant across images, yet quickly trainable",
    )
    ap.add_argument("--degrade-scale", type=float, default=1e-3, help="with --degrade-embedding")
    ap.add_argument("--degrade-bias", type=float, default=0.1, help="with --degrade-embedding")
    args = ap.parse_args()
    model = build_model(args.seed, calibration_batches(args), args.arch)
    if args.degrade_embedding:
        degrade_embedding(model, args.degrade_scale, args.degrade_bias)
    sd = model.state_dict()
    if args.prefix:
        sd = type(sd)((args.prefix + k, v) for k, v in sd.items())
    if args.safetensors:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, args.out)
    else:
        torch.save(sd, args.out, _use_new_zipfile_serialization=not args.legacy)


if __name__ == "__main__":
    main()
