"""The plain-PyTorch equivalent of a virb CalTech-101 linear-probe job, for scripts/bench.sh.

PIL decoding in a DataLoader, torchvision ResNet-50 (frozen, eval, no_grad), features cached,
then the same linear probe (Linear(2048, C), Adam, cross-entropy, shuffled batches) and top-1
accuracy on the whole test split. Prints one JSON line.

usage: bench_pytorch.py DATA_ROOT WEIGHTS --image-size S --epochs E --batch-size B --lr LR
                        --threads T --workers W [--precision fp32|bf16] [--device cpu|cuda]
                        [--encode-batch-size N] [--seeds N]

With --seeds N the probe is trained N times on the same features, with seeds 0..N-1 (head
initialisation and batch order), as virb's `repeats: N`; the JSON has the mean top-1, its sample
standard deviation and each seed's.

With --precision bf16 the frozen model and its inputs are bfloat16 (features cast back to float),
as virb's `precision: bf16` encoder option does.
"""
import argparse
import json
import os
import statistics
import time

import torch
import torchvision
import torchvision.transforms as T
from PIL import Image


class CalTech(torch.utils.data.Dataset):
    def __init__(self, root, split, classes, tf):
        self.dir = os.path.join(root, "caltech-101")
        with open(os.path.join(self.dir, f"caltech101_{split}.json")) as f:
            self.items = json.load(f)
        self.classes = classes
        self.tf = tf

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        rel = self.items[i]
        img = Image.open(os.path.join(self.dir, rel)).convert("RGB")
        return self.tf(img), self.classes.index(rel.split("/")[0])


def encode(model, loader, dtype, device):
    feats, labels = [], []
    with torch.no_grad():
        for x, y in loader:
            feats.append(model(x.to(device, non_blocking=True).to(dtype)).float().half())
            labels.append(y.to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return torch.cat(feats), torch.cat(labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data_root")
    ap.add_argument("weights")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seeds", type=int, default=1, help="train the probe with seeds 0..N-1 on the same features")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--encode-batch-size", type=int, default=None, help="default: --batch-size")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    model.load_state_dict(torch.load(args.weights))
    model.fc = torch.nn.Identity()
    model.eval()
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    model.to(device=device, dtype=dtype)
    s = args.image_size
    tf = T.Compose([T.Resize((s, s)), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    lists = []
    for split in ("train", "test"):
        with open(os.path.join(args.data_root, "caltech-101", f"caltech101_{split}.json")) as f:
            lists += json.load(f)
    classes = sorted({r.split("/")[0] for r in lists})
    loaders = [
        torch.utils.data.DataLoader(
            CalTech(args.data_root, split, classes, tf),
            batch_size=args.encode_batch_size or args.batch_size,
            shuffle=False,
            num_workers=args.workers,
            pin_memory=device.type == "cuda",
        )
        for split in ("train", "test")
    ]
    t0 = time.perf_counter()
    xtr, ytr = encode(model, loaders[0], dtype, device)
    xte, yte = encode(model, loaders[1], dtype, device)
    encode_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    accs = []
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        head = torch.nn.Linear(2048, len(classes)).to(device)
        opt = torch.optim.Adam(head.parameters(), lr=args.lr)
        n = len(ytr)
        for _ in range(args.epochs):
            perm = torch.randperm(n, device=device)
            for i in range(0, n, args.batch_size):
                idx = perm[i : i + args.batch_size]
                loss = torch.nn.functional.cross_entropy(head(xtr[idx].float()), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            accs.append((head(xte.float()).argmax(1) == yte).float().mean().item())
    acc = statistics.mean(accs)
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    train_s = time.perf_counter() - t1
    images = len(ytr) + len(yte)
    print(json.dumps({"images": images, "encode_s": encode_s, "encode_images_per_s": images / encode_s,
                      "train_s": train_s, "top1_accuracy": acc, "top1_accuracy_std": std,
                      "top1_accuracy_runs": accs}))


if __name__ == "__main__":
    main()
