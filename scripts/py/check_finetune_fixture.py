"""Checks a fine-tuning fixture (make_weights.py --degrade-embedding) in PyTorch, before any Rust
test relies on it: on a 4-class colour task (generated here, 64x64 images, 10 training and 8 test
images per class), a linear probe on the frozen `embedding` must stay near chance, and fine-tuning
every layer with the head must fix it within a few epochs.

usage: check_finetune_fixture.py WEIGHTS [--epochs N] [--lr LR] [--optimizer adam|sgd]
                                         [--momentum M] [--batch-size B] [--probe-epochs N]
                                         [--seeds 0,1,2] [--images stripes|rectangles]

The defaults are the recipe that works for `make_weights.py --degrade-embedding` (scale 1e-3,
bias 0.1): Adam (PyTorch's defaults, as virb's host) at lr 3e-4, batch 8, 10 epochs. Measured on a
2-core CPU, 5 seeds: frozen probe 0.25 (exactly chance: the probe predicts one class; also with
Adam 1e-3 for 500 epochs); fine-tuned 1.0 from epoch 4 on (stripes), >= 0.94 from epoch 8 on
(rectangles); about 14 s of fine-tuning when the machine is otherwise idle. Adam at 1e-3 gets there
faster but dips to 0.7 between epochs (the eval-mode running statistics lag the fast-moving
weights); SGD (lr 0.05, momentum 0.9) is far too slow (0.5 after 8 epochs): it moves the degraded
batch-norm scales by their small gradients, where Adam moves them by about lr per step.

--images stripes (default) draws what `virb-host fixtures CalTech-101` draws (plugins/kit's
draw::class_image: a class hue over the whole image, class-oriented stripes, random phase,
brightness and noise); rectangles draws a rectangle of the class colour on a noisy grey background.

WEIGHTS: a torchvision ResNet-50 state dict (.pt or .safetensors). Prints one JSON line per seed:
the frozen probe's test accuracy, the fine-tuned test accuracy after each epoch, and seconds spent
fine-tuning (training plus the final evaluation). The run mirrors what virb's host does: the head
is PyTorch's default-initialised Linear(2048, 4) with cross-entropy, the encoder is in train mode
for training batches (batch norm with batch statistics, momentum 0.1) and in eval mode, without
gradients, for evaluation; one optimiser holds the encoder's and the head's parameters.
"""
import argparse
import copy
import json
import math
import time

import torch
import torchvision

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
COLOURS = torch.tensor([[0.85, 0.15, 0.15], [0.15, 0.75, 0.2], [0.2, 0.3, 0.9], [0.9, 0.8, 0.1]])


def hue_to_rgb(h):
    h6 = (h % 1.0) * 6.0
    x = 1.0 - abs(h6 % 2.0 - 1.0)
    return [[1.0, x, 0.0], [x, 1.0, 0.0], [0.0, 1.0, x], [0.0, x, 1.0], [x, 0.0, 1.0], [1.0, 0.0, x]][int(h6)]


def stripes(per_class, size, g):
    """plugins/kit's draw::class_image, in torch (its own random numbers)."""
    classes = len(COLOURS)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    xs, ys = [], []
    for c in range(classes):
        base = torch.tensor(hue_to_rgb(c / classes)).view(3, 1, 1)
        angle = math.pi * (c % 4) / 4.0
        period = 6.0 + (c % 3) * 4.0
        for _ in range(per_class):
            phase = torch.rand(1, generator=g).item() * period
            brightness = 0.75 + 0.25 * torch.rand(1, generator=g).item()
            t = (xx * math.cos(angle) + yy * math.sin(angle) + phase) / period
            stripe = torch.where(t.floor().long() % 2 == 0, 1.0, 0.45)
            noise = (torch.rand(3, size, size, generator=g) - 0.5) * 0.2
            img = (base * stripe * brightness + 0.1 + noise).clamp(0, 1)
            xs.append((img - MEAN) / STD)
            ys.append(c)
    return torch.stack(xs), torch.tensor(ys)


def rectangles(per_class, size, g):
    """Grey noisy backgrounds of random brightness, each with a rectangle of its class's colour
    (jittered) at a random place and size; normalised like torchvision's ImageNet models."""
    xs, ys = [], []
    for c in range(len(COLOURS)):
        for _ in range(per_class):
            img = 0.35 + 0.3 * torch.rand(1, 1, 1, generator=g) + 0.12 * torch.randn(3, size, size, generator=g)
            h = int(size * (0.35 + 0.4 * torch.rand(1, generator=g)))
            w = int(size * (0.35 + 0.4 * torch.rand(1, generator=g)))
            top = int((size - h) * torch.rand(1, generator=g))
            left = int((size - w) * torch.rand(1, generator=g))
            colour = (COLOURS[c] + 0.08 * torch.randn(3, generator=g)).view(3, 1, 1)
            img[:, top : top + h, left : left + w] = colour + 0.05 * torch.randn(3, h, w, generator=g)
            xs.append((img.clamp(0, 1) - MEAN) / STD)
            ys.append(c)
    return torch.stack(xs), torch.tensor(ys)


def embed(model, x):
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1)


def load(path):
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(path)
    else:
        sd = torch.load(path, map_location="cpu")
    model = torchvision.models.resnet50()
    model.load_state_dict(sd)
    return model


def batches(n, batch_size, g):
    perm = torch.randperm(n, generator=g)
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


def accuracy(head, features, labels):
    with torch.no_grad():
        return (head(features).argmax(1) == labels).float().mean().item()


def make_optimizer(args, params):
    if args.optimizer == "adam":
        return torch.optim.Adam(params, lr=args.lr)
    return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum)


def frozen_probe(args, model, train, test, seed):
    model.eval()
    with torch.no_grad():
        ftr, fte = embed(model, train[0]), embed(model, test[0])
    torch.manual_seed(seed)
    head = torch.nn.Linear(ftr.shape[1], len(COLOURS))
    opt = make_optimizer(args, head.parameters())
    g = torch.Generator().manual_seed(seed)
    for _ in range(args.probe_epochs):
        for idx in batches(len(ftr), args.batch_size, g):
            loss = torch.nn.functional.cross_entropy(head(ftr[idx]), train[1][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    spread = ftr.std(0).mean().item() / ftr.abs().mean().item()
    return accuracy(head, fte, test[1]), spread


def fine_tune(args, model, train, test, seed):
    model = copy.deepcopy(model)
    torch.manual_seed(seed)
    head = torch.nn.Linear(2048, len(COLOURS))
    opt = make_optimizer(args, list(model.parameters()) + list(head.parameters()))
    g = torch.Generator().manual_seed(seed)
    accs = []
    start = time.time()
    evaluating = 0.0
    for epoch in range(args.epochs):
        model.train()
        for idx in batches(len(train[0]), args.batch_size, g):
            loss = torch.nn.functional.cross_entropy(head(embed(model, train[0][idx])), train[1][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        t = time.time()
        model.eval()
        with torch.no_grad():
            accs.append(accuracy(head, embed(model, test[0]), test[1]))
        if epoch + 1 < args.epochs:
            evaluating += time.time() - t
    return accs, time.time() - start - evaluating


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("weights")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    ap.add_argument("--momentum", type=float, default=0.9, help="sgd only")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--probe-epochs", type=int, default=100)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--images", choices=["stripes", "rectangles"], default="stripes")
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    images = stripes if args.images == "stripes" else rectangles
    train = images(10, 64, g)
    test = images(8, 64, g)
    model = load(args.weights)
    for seed in [int(s) for s in args.seeds.split(",")]:
        probe, spread = frozen_probe(args, model, train, test, seed)
        accs, seconds = fine_tune(args, model, train, test, seed)
        print(
            json.dumps(
                {
                    "seed": seed,
                    "frozen_probe_accuracy": probe,
                    "frozen_embedding_relative_spread": spread,
                    "fine_tuned_accuracy_per_epoch": [round(a, 4) for a in accs],
                    "fine_tune_seconds": round(seconds, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
