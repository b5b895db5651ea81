"""Reference values of virb's pixel-wise metrics (NumPy) and heads (PyTorch) on fixed seeded tensors.

Usage: dense_metrics_reference.py OUT_DIR

Writes OUT_DIR/inputs.safetensors (the tensors), OUT_DIR/expected.json (the metric values), and
KITTI-style flow PNGs written by a minimal PNG encoder of its own (zlib + struct, independent of
the PNG library virb uses): OUT_DIR/flow16.png (16-bit RGB, the devkit's encoding), with its
decoded values in inputs.safetensors, and OUT_DIR/flow8.png (8-bit RGB, which must be refused).

OUT_DIR/pixel_heads.safetensors holds ViRB's PixelWise decoder and SiamesePixelWise head built in
PyTorch as ViRB writes them (nn.Sequential(Conv2d 3x3, PixelShuffle(2), LeakyReLU) blocks named
up1..up5, 1x1 fusion1..fusion5 convs), on a small pyramid with odd sizes: their weights (under
`dec/` and `sia/`), inputs and outputs.

Definitions (as in mmsegmentation, the depth toolbox DINOv2/v3 use, and RAFT):
- segmentation: one confusion matrix over all pixels (ignore label excluded); IoU = TP/(TP+FP+FN);
  mIoU = nanmean over classes (a class absent from targets and predictions is NaN, skipped);
- depth: per image over valid pixels (finite, min < gt < max), prediction clamped to [min, max];
  L1, RMSE, AbsRel, delta1..3; averaged over images that have a valid pixel;
- flow: EPE per image over valid pixels averaged over images; Fl-all = 100 * pooled share of valid
  pixels with EPE > 3 and EPE > 0.05 |gt|; u, v times per-image scale factors first.
"""
import json
import os
import struct
import sys
import zlib

import numpy as np
from safetensors.numpy import save_file


def segmentation(logits, target, classes, ignore):
    pred = logits.argmax(1)
    keep = target != ignore if ignore is not None else np.ones_like(target, dtype=bool)
    t, p = target[keep].astype(np.int64), pred[keep].astype(np.int64)
    conf = np.bincount(t * classes + p, minlength=classes * classes).reshape(classes, classes)
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    return iou, float(np.nanmean(iou)), float(tp.sum() / conf.sum())


def depth(pred, gt, lo, hi):
    pred = pred[:, 0] if pred.ndim == 4 else pred
    sums, images = np.zeros(6), 0
    for p, g in zip(pred.astype(np.float64), gt.astype(np.float64)):
        with np.errstate(invalid="ignore"):
            m = np.isfinite(g) & (g > lo) & (g < hi)
        if not m.any():
            continue
        pv, gv = np.clip(p[m], lo, hi), g[m]
        ratio = np.maximum(pv / gv, gv / pv)
        sums += [
            np.abs(pv - gv).mean(),
            np.sqrt(((pv - gv) ** 2).mean()),
            (np.abs(pv - gv) / gv).mean(),
            (ratio < 1.25).mean(),
            (ratio < 1.25**2).mean(),
            (ratio < 1.25**3).mean(),
        ]
        images += 1
    return (sums / images).tolist(), int((~np.isfinite(gt)).sum())


def flow(pred, target):
    pred, target = pred.astype(np.float64), target.astype(np.float64)
    su, sv = target[:, 3], target[:, 4]
    du, dv = (pred[:, 0] - target[:, 0]) * su, (pred[:, 1] - target[:, 1]) * sv
    gu, gv = target[:, 0] * su, target[:, 1] * sv
    epe = np.sqrt(du**2 + dv**2)
    mag = np.sqrt(gu**2 + gv**2)
    valid = target[:, 2] > 0.5
    per_image = [e[v].mean() for e, v in zip(epe, valid) if v.any()]
    outliers = ((epe > 3.0) & (epe > 0.05 * mag) & valid).sum()
    return float(np.mean(per_image)), float(100.0 * outliers / valid.sum())


def png(path, pixels, bit_depth):
    """A minimal PNG encoder: RGB, no interlace, filter 0 on every row."""
    h, w, _ = pixels.shape
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + pixels[y].astype(dtype).tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def pixel_heads(out):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(7)

    class Decoder(nn.Module):
        def __init__(self, ch, out_ch):
            super().__init__()
            n = len(ch)
            for i in range(n):
                cin, cout = ch[n - 1 - i], ch[n - 2 - i] if i + 1 < n else out_ch
                layers = [nn.Conv2d(cin, 4 * cout, 3, padding=1), nn.PixelShuffle(2)]
                if i + 1 < n:
                    layers.append(nn.LeakyReLU(0.01))
                setattr(self, f"up{i + 1}", nn.Sequential(*layers))
            self.n = n

        def forward(self, levels):
            x = levels[-1]
            for i in range(self.n):
                x = getattr(self, f"up{i + 1}")(x)
                if i + 1 == self.n:
                    break
                skip = levels[self.n - 2 - i]
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False) + skip
            return x

    class Siamese(Decoder):
        def __init__(self, ch, out_ch):
            super().__init__(ch, out_ch)
            for i, c in enumerate(reversed(ch)):
                setattr(self, f"fusion{i + 1}", nn.Conv2d(2 * c, c, 1))

        def forward(self, levels):
            fused = []
            for k, x in enumerate(levels):
                b, _, c, h, w = x.shape
                fused.append(getattr(self, f"fusion{self.n - k}")(x.reshape(b, 2 * c, h, w)))
            return super().forward(fused)

    ch = [8, 12, 16, 20, 24]
    sizes = [18, 9, 5, 3, 2]  # a ResNet's strides on a 36-px input
    t = {}
    dec = Decoder(ch, 3).eval()
    levels = [torch.randn(2, c, s, s) for c, s in zip(ch, sizes)]
    with torch.no_grad():
        t["dec_out"] = dec(levels)
    sia = Siamese(ch, 1).eval()
    pairs = [torch.randn(2, 2, c, s, s) for c, s in zip(ch, sizes)]
    with torch.no_grad():
        t["sia_out"] = sia(pairs)
    for k, v in dec.state_dict().items():
        t[f"dec/{k}"] = v
    for k, v in sia.state_dict().items():
        t[f"sia/{k}"] = v
    for i, (x, y) in enumerate(zip(levels, pairs)):
        t[f"dec_in_{i}"], t[f"sia_in_{i}"] = x, y
    # Losses (PyTorch's own): weighted cross-entropy with an ignored id, and L1 over valid depth.
    rng = np.random.default_rng(99)
    logits = torch.from_numpy(rng.normal(size=(3, 5, 6, 7)).astype(np.float32)).requires_grad_()
    target = torch.from_numpy(rng.integers(0, 5, size=(3, 6, 7)))
    target[0, 0, :4] = 255
    w = torch.tensor([0.1, 1.0, 1.0, 1.0, 1.0])
    ce = F.cross_entropy(logits, target, weight=w, ignore_index=255)
    ce.backward()
    t["ce_logits"], t["ce_target"], t["ce_loss"], t["ce_grad"] = logits.detach(), target, ce.detach(), logits.grad
    pred = torch.from_numpy(rng.normal(loc=3.0, size=(3, 1, 6, 7)).astype(np.float32)).requires_grad_()
    gt = torch.from_numpy(rng.uniform(0.5, 6.0, size=(3, 6, 7)).astype(np.float32))
    gt[0, 0, :3] = 0.0
    gt[1, 1, 1] = float("nan")
    gt[2, 2, 2] = float("inf")
    valid = torch.isfinite(gt) & (gt > 0)
    l1 = (pred[:, 0][valid] - gt[valid]).abs().mean()
    l1.backward()
    t["l1_pred"], t["l1_gt"], t["l1_loss"], t["l1_grad"] = pred.detach(), gt, l1.detach(), pred.grad
    deeplab(t)
    from safetensors.torch import save_file as save_torch

    save_torch({k: v.contiguous() for k, v in t.items()}, os.path.join(out, "pixel_heads.safetensors"))


def deeplab(t):
    """ViRB's DeepLabV3+ head with its BatchNorm mistakes fixed (momentum 0.0003 as momentum, the
    low-level reducer following train/eval), the layer4 replica's BN always in eval mode."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(11)
    m = 0.0003

    class Bottleneck(nn.Module):
        def __init__(self, cin, w, d):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, w, 1, bias=False), nn.BatchNorm2d(w)
            self.conv2, self.bn2 = nn.Conv2d(w, w, 3, padding=d, dilation=d, bias=False), nn.BatchNorm2d(w)
            self.conv3, self.bn3 = nn.Conv2d(w, 4 * w, 1, bias=False), nn.BatchNorm2d(4 * w)
            self.downsample = (
                nn.Sequential(nn.Conv2d(cin, 4 * w, 1, bias=False), nn.BatchNorm2d(4 * w)) if cin != 4 * w else None
            )

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            y = F.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return F.relu(y + (self.downsample(x) if self.downsample is not None else x))

    class Block4(nn.Module):
        def __init__(self, c3, w):
            super().__init__()
            self.upsample_layer = Bottleneck(c3, w, 2)
            self.conv = nn.Sequential(Bottleneck(4 * w, w, 4), Bottleneck(4 * w, w, 2))

        def forward(self, x):
            return self.conv(self.upsample_layer(x))

    class ASPP(nn.Module):
        def __init__(self, cin, a):
            super().__init__()
            for i, (k, d) in enumerate([(1, 1), (3, 6), (3, 12), (3, 18), (1, 1)], 1):
                setattr(self, f"aspp{i}", nn.Conv2d(cin, a, k, padding=d * (k // 2), dilation=d, bias=False))
                setattr(self, f"aspp{i}_bn", nn.BatchNorm2d(a, momentum=m))
            self.conv2, self.bn2 = nn.Conv2d(5 * a, a, 1, bias=False), nn.BatchNorm2d(a, momentum=m)

        def forward(self, x):
            cbr = lambda i, y: F.relu(getattr(self, f"aspp{i}_bn")(getattr(self, f"aspp{i}")(y)))
            out = [cbr(i, x) for i in range(1, 5)]
            pooled = cbr(5, F.adaptive_avg_pool2d(x, 1))
            out.append(F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=True))
            return F.relu(self.bn2(self.conv2(torch.cat(out, 1))))

    class DeepLab(nn.Module):
        def __init__(self, c1, c3, w, a, low, classes):
            super().__init__()
            self.block4 = Block4(c3, w)
            self.aspp = ASPP(4 * w, a)
            self.low_level_feature_reducer = nn.Sequential(nn.Conv2d(c1, low, 1), nn.BatchNorm2d(low, momentum=m), nn.ReLU())
            self.decoder = nn.Sequential(
                nn.Conv2d(low + a, a, 3, padding=1), nn.BatchNorm2d(a, momentum=m), nn.ReLU(),
                nn.Conv2d(a, a, 3, padding=1), nn.BatchNorm2d(a, momentum=m), nn.ReLU(),
                nn.Conv2d(a, classes, 3, padding=1),
            )

        def train(self, mode=True):
            super().train(mode)
            self.block4.eval()
            return self

        def forward(self, b1, b3, size):
            x = self.aspp(self.block4(b3))
            x = F.interpolate(x, size=b1.shape[-2:], mode="bilinear", align_corners=True)
            y = self.decoder(torch.cat([self.low_level_feature_reducer(b1), x], 1))
            return F.interpolate(y, size=size, mode="bilinear", align_corners=True)

    head = DeepLab(12, 20, 6, 16, 8, 3)
    with torch.no_grad():
        for mod in head.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.running_mean.uniform_(-0.3, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
    b1, b3 = torch.randn(2, 12, 9, 9), torch.randn(2, 20, 3, 3)
    for k, v in head.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            t[f"deeplab/{k}"] = v.clone()
    with torch.no_grad():
        t["deeplab_eval"] = head.eval()(b1, b3, (36, 36))
        t["deeplab_train"] = head.train()(b1, b3, (36, 36))
    t["deeplab_b1"], t["deeplab_b3"] = b1, b3
    t["deeplab_after_train_aspp1_mean"] = head.aspp.aspp1_bn.running_mean.clone()
    t["deeplab_after_train_block4_mean"] = head.block4.upsample_layer.bn1.running_mean.clone()


def main(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(1234)
    t = {}
    e = {}

    # Segmentation, 5 classes; class 4 never appears in targets or predictions; 255 is ignored.
    logits = rng.normal(size=(7, 5, 9, 11)).astype(np.float32)
    logits[:, 4] -= 100.0
    target = rng.integers(0, 4, size=(7, 9, 11))
    target[rng.random(target.shape) < 0.1] = 255
    # Make predictions correlate with targets so IoUs are not all tiny.
    agree = (rng.random(target.shape) < 0.5) & (target != 255)
    for c in range(4):
        logits[:, c][agree & (target == c)] += 5.0
    iou, miou, acc = segmentation(logits, target, 5, 255)
    t["seg_logits"], t["seg_target"] = logits, target.astype(np.int64)
    e["seg"] = {"iou": [None if np.isnan(x) else float(x) for x in iou], "miou": miou, "pixel_accuracy": acc}

    # Binary segmentation, positive class 1, no ignore label.
    blog = rng.normal(size=(5, 2, 6, 8)).astype(np.float32)
    btar = rng.integers(0, 2, size=(5, 6, 8))
    blog[:, 1] += 1.5 * btar
    biou, _, bacc = segmentation(blog, btar, 2, None)
    t["bin_logits"], t["bin_target"] = blog, btar.astype(np.int64)
    e["binary"] = {"iou_positive": float(biou[1]), "pixel_accuracy": bacc}

    # Depth in metres, valid in (0.001, 10): zeros (missing), NaN, inf, > max, one empty image.
    gt = rng.uniform(0.5, 9.0, size=(6, 8, 10)).astype(np.float32)
    gt[rng.random(gt.shape) < 0.1] = 0.0
    gt[0, 0, :3] = np.nan
    gt[1, 2, 4] = np.inf
    gt[2, 3, :] = 12.0
    gt[5] = 0.0
    pred = (gt + rng.normal(scale=0.8, size=gt.shape)).astype(np.float32)
    pred[3, 1, 1] = -2.0  # clamped to min
    pred[4, 0, 0] = 50.0  # clamped to max
    pred = np.nan_to_num(pred, nan=1.0, posinf=1.0)[:, None]
    values, non_finite = depth(pred, gt, 1e-3, 10.0)
    t["depth_pred"], t["depth_gt"] = pred, gt
    e["depth"] = {"values": values, "non_finite": non_finite, "empty_images": 1, "min": 1e-3, "max": 10.0}

    # Flow: [N, 5, H, W] targets (u, v, valid, u scale, v scale); image 3 has no valid pixel.
    n, h, w = 4, 7, 9
    ft = np.zeros((n, 5, h, w), dtype=np.float32)
    ft[:, :2] = rng.normal(scale=6.0, size=(n, 2, h, w))
    ft[:, 2] = rng.random((n, h, w)) < 0.7
    ft[3, 2] = 0.0
    for i, (a, b) in enumerate([(1.0, 1.0), (1242 / 224, 375 / 224), (2.0, 0.5), (1.0, 1.0)]):
        ft[i, 3], ft[i, 4] = a, b
    fp = (ft[:, :2] + rng.normal(scale=2.0, size=(n, 2, h, w))).astype(np.float32)
    epe, fl = flow(fp, ft)
    t["flow_pred"], t["flow_target"] = fp, ft
    e["flow"] = {"epe": epe, "fl_all": fl, "empty_images": 1}

    # KITTI flow PNG: u, v in 1/64 px steps, a valid mask; and an 8-bit file to refuse.
    fh, fw = 5, 6
    u = np.round(rng.normal(scale=20.0, size=(fh, fw)) * 64) / 64
    v = np.round(rng.normal(scale=5.0, size=(fh, fw)) * 64) / 64
    valid = rng.random((fh, fw)) < 0.6
    px = np.stack([u * 64 + 32768, v * 64 + 32768, valid.astype(np.float64)], -1).astype(np.uint16)
    png(os.path.join(out, "flow16.png"), px, 16)
    png(os.path.join(out, "flow8.png"), rng.integers(0, 256, size=(fh, fw, 3)).astype(np.uint8), 8)
    t["png_u"], t["png_v"], t["png_valid"] = u.astype(np.float32), v.astype(np.float32), valid.astype(np.uint8)

    save_file({k: np.ascontiguousarray(v) for k, v in t.items()}, os.path.join(out, "inputs.safetensors"))
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(e, f, indent=1)
    pixel_heads(out)


if __name__ == "__main__":
    main(sys.argv[1])
