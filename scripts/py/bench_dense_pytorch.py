"""A plain-PyTorch, ViRB-style dense probe on virb's THORDepth fixture, for scripts/bench-dense.sh.

As ViRB trains a pixel-wise job (`pre_encode: false`): for every training config, for every epoch,
for every batch, the frozen torchvision ResNet-50 is run again (eval, no_grad) on the decoded
images, then ViRB's PixelWise head (up1..up5: 3x3 conv, PixelShuffle(2), LeakyReLU, upsample-add
of the next level) is trained with Adam and L1; the test split is encoded and scored (L1 per image,
averaged). Prints one JSON line.

usage: bench_dense_pytorch.py DATA_ROOT WEIGHTS --image-size S --epochs E --batch-size B
                              --configs K --threads T --workers W
"""
import argparse
import glob
import json
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from PIL import Image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ThorDepth(torch.utils.data.Dataset):
    def __init__(self, root, split, size):
        d = os.path.join(root, "thor_depth_prediction", split)
        self.rgb = sorted(glob.glob(os.path.join(d, "*", "*rgb.jpg")))
        self.size = size
        self.tf = T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.rgb)

    def __getitem__(self, i):
        img = self.tf(Image.open(self.rgb[i]).convert("RGB"))
        depth = Image.open(self.rgb[i].replace("rgb.jpg", "depth.jpg")).convert("L")
        depth = T.functional.to_tensor(T.Resize((self.size, self.size))(depth))
        return img, (depth - 0.5) / 0.25


class Encoder(nn.Module):
    def __init__(self, weights):
        super().__init__()
        m = torchvision.models.resnet50()
        m.load_state_dict(torch.load(weights, map_location="cpu"), strict=False)
        self.m = m.eval()

    @torch.no_grad()
    def forward(self, x):
        m = self.m
        conv = m.relu(m.bn1(m.conv1(x)))
        b1 = m.layer1(m.maxpool(conv))
        b2 = m.layer2(b1)
        b3 = m.layer3(b2)
        b4 = m.layer4(b3)
        return [conv, b1, b2, b3, b4]


class PixelWise(nn.Module):
    def __init__(self, ch=(64, 256, 512, 1024, 2048), out_ch=1):
        super().__init__()
        n = len(ch)
        for i in range(n):
            cin, cout = ch[n - 1 - i], ch[n - 2 - i] if i + 1 < n else out_ch
            layers = [nn.Conv2d(cin, 4 * cout, 3, padding=1), nn.PixelShuffle(2)]
            if i + 1 < n:
                layers.append(nn.LeakyReLU(0.01))
            setattr(self, f"up{i + 1}", nn.Sequential(*layers))
        self.n = n

    def forward(self, levels, size):
        x = levels[-1]
        for i in range(self.n):
            x = getattr(self, f"up{i + 1}")(x)
            if i + 1 == self.n:
                break
            skip = levels[self.n - 2 - i]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False) + skip
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("weights")
    p.add_argument("--image-size", type=int, default=65)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--configs", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    enc = Encoder(a.weights)
    train = ThorDepth(a.data, "train", a.image_size)
    test = ThorDepth(a.data, "test", a.image_size)
    results = []
    encode_s = 0.0
    for k in range(a.configs):
        torch.manual_seed(k)
        head = PixelWise()
        opt = torch.optim.Adam(head.parameters(), lr=3e-4 / (k + 1))
        loader = torch.utils.data.DataLoader(
            train, batch_size=a.batch_size, shuffle=True, num_workers=a.workers
        )
        for _ in range(a.epochs):
            for x, y in loader:
                e0 = time.time()
                levels = enc(x)
                encode_s += time.time() - e0
                loss = (head(levels, y.shape[-2:]) - y).abs().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        errs = []
        with torch.no_grad():
            for x, y in torch.utils.data.DataLoader(test, batch_size=a.batch_size, num_workers=a.workers):
                out = head(enc(x), y.shape[-2:])
                errs.extend((out - y).abs().flatten(1).mean(1).tolist())
        results.append(sum(errs) / len(errs))
    print(json.dumps({"wall_s": time.time() - t0, "encode_s": encode_s, "test_l1": results}))


if __name__ == "__main__":
    main()
