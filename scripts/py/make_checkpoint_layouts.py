"""Test checkpoints in the layouts of the self-supervised projects ViRB evaluated, for the tests of
`virb-host convert` and `virb-host inspect`.

usage: make_checkpoint_layouts.py OUTDIR

One seeded torchvision ResNet-18 (batch-norm statistics calibrated on noise, as make_weights.py
does) is placed in each project's own model structure and saved the way that project's training
code saves it (module names from the projects' sources; heads, other networks and optimiser state
included, with values that differ from the trunk's, so a converter that kept the wrong tensors
would give another embedding):

  torchvision.pt       torch.save(model.state_dict())
  swav.pth.tar         SwAV main_swav.py: {"epoch", "state_dict": DDP `module.` keys (trunk without
                       fc, projection_head, prototypes), "optimizer"}
  swav_flat.pth        SwAV's released file: a flat dict of the same `module.` keys
  moco_v1.pth.tar      MoCo main_moco.py: {"epoch", "arch", "state_dict": module.encoder_q.* (fc
                       128x512), module.encoder_k.*, module.queue, module.queue_ptr, "optimizer"
                       (SGD state after a step: momentum buffers)}
  moco_v2.pth.tar      the same with MoCo v2's MLP head (fc.0, fc.2)
  simsiam.pth.tar      SimSiam: {"epoch", "arch", "state_dict": module.encoder.* (projector as
                       fc.*), module.predictor.*, "optimizer"}
  pirl.torch           VISSL: {"phase_idx", "iteration", "classy_state_dict": {"base_model":
  exemplar.torch         {"model": {"trunk": _feature_blocks.*, "heads": ...}}, "loss", ...}}
  humantorch.pth       legacy (non-zip) format, flat: feature_extractor.resnet.* (with fc) and a head
  unknown.pt           a detection model's checkpoint: matches no layout
  ambiguous.pt         torchvision keys and MoCo keys side by side
  torchscript.pt       torch.jit.save of a small module
  input.safetensors    `images` [2, 3, 64, 64]
  expected.safetensors torchvision's conv, block1..block4 and embedding on `images`
  counts.json          per checkpoint, [tensors, elements] found through nested dicts of what
                       was saved, for `inspect`'s totals
"""
import copy
import json
import os
import sys

import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_weights import build_model  # noqa: E402


class DDP(nn.Module):
    """What DistributedDataParallel adds to state-dict keys: `module.`."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def trunk_of(model):
    """A fresh resnet18 holding `model`'s weights (heads of its own)."""
    r = torchvision.models.resnet18()
    r.load_state_dict(model.state_dict())
    return r


def perturb(module):
    """Changes every tensor of `module`, so that keeping it instead of the trunk shows."""
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn_like(t) * 0.5)


def sgd_state(params):
    """An SGD optimiser's state dict after one step (momentum buffers), params left unchanged."""
    params = list(params)
    saved = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=1e-4)
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opt.step()
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.copy_(s)
            p.grad = None
    return opt.state_dict()


def unstepped(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9).state_dict()


def swav(model):
    r = trunk_of(model)
    del r.fc
    r.projection_head = nn.Sequential(nn.Linear(512, 2048), nn.BatchNorm1d(2048), nn.ReLU(), nn.Linear(2048, 128))
    r.prototypes = nn.Linear(128, 3000, bias=False)
    return DDP(r)


def moco(model, v2):
    class MoCo(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder_q = trunk_of(model)
            self.encoder_q.fc = nn.Linear(512, 128)  # num_classes=dim
            if v2:
                self.encoder_q.fc = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), self.encoder_q.fc)
            self.encoder_k = copy.deepcopy(self.encoder_q)
            perturb(self.encoder_k)  # a momentum encoder lags the query encoder
            self.register_buffer("queue", nn.functional.normalize(torch.randn(128, 4096), dim=0))
            self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    return DDP(MoCo())


def simsiam(model):
    class SimSiam(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = trunk_of(model)
            prev, dim, pred = 512, 2048, 512
            self.encoder.fc = nn.Sequential(
                nn.Linear(prev, prev, bias=False), nn.BatchNorm1d(prev), nn.ReLU(inplace=True),
                nn.Linear(prev, prev, bias=False), nn.BatchNorm1d(prev), nn.ReLU(inplace=True),
                nn.Linear(prev, dim), nn.BatchNorm1d(dim, affine=False),
            )
            self.predictor = nn.Sequential(
                nn.Linear(dim, pred, bias=False), nn.BatchNorm1d(pred), nn.ReLU(inplace=True), nn.Linear(pred, dim)
            )

    return DDP(SimSiam())


def vissl(model, head_out, loss_state, phase):
    class Trunk(nn.Module):
        def __init__(self):
            super().__init__()
            r = trunk_of(model)
            blocks = [("conv1", r.conv1), ("bn1", r.bn1), ("conv1_relu", r.relu), ("maxpool", r.maxpool)]
            blocks += [(f"layer{i}", getattr(r, f"layer{i}")) for i in range(1, 5)]
            blocks += [("avgpool", r.avgpool), ("flatten", nn.Flatten())]
            self._feature_blocks = nn.ModuleDict(blocks)

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.clf = nn.Sequential(nn.Linear(512, head_out))

    trunk, heads = Trunk(), nn.ModuleList([Head()])
    return {
        "phase_idx": phase,
        "iteration": 100 * phase,
        "iteration_num": 100 * phase,
        "train_phase_idx": phase // 2,
        "type": "checkpoint",
        "classy_state_dict": {
            "train": True,
            "base_model": {
                "model": {"trunk": trunk.state_dict(), "heads": heads.state_dict()},
                "meta": {"phase_idx": phase},
            },
            "meters": [],
            "optimizer": unstepped(list(trunk.parameters()) + list(heads.parameters())),
            "phase_idx": phase,
            "train_phase_idx": phase // 2,
            "num_updates": 100 * phase,
            "losses": [6.2, 5.9],
            "hooks": {},
            "loss": loss_state,
        },
    }


def humantorch(model):
    class FeatureExtractor(nn.Module):
        def __init__(self):
            super().__init__()
            self.resnet = trunk_of(model)

    class Human(nn.Module):
        def __init__(self):
            super().__init__()
            self.feature_extractor = FeatureExtractor()
            self.imu_decoder = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 66))

    m = Human()
    perturb(m.feature_extractor.resnet.fc)
    return m


def count(obj):
    """Tensors and their elements, through nested dicts."""
    if isinstance(obj, torch.Tensor):
        return [1, obj.numel()]
    if isinstance(obj, dict):
        parts = [count(v) for v in obj.values()]
        return [sum(c[0] for c in parts), sum(c[1] for c in parts)]
    return [0, 0]


def pyramid(model, x):
    with torch.no_grad():
        conv = model.relu(model.bn1(model.conv1(x)))
        b1 = model.layer1(model.maxpool(conv))
        b2 = model.layer2(b1)
        b3 = model.layer3(b2)
        b4 = model.layer4(b3)
        emb = torch.flatten(model.avgpool(b4), 1)
    return {"conv": conv, "block1": b1, "block2": b2, "block3": b3, "block4": b4, "embedding": emb}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    p = lambda name: os.path.join(out, name)  # noqa: E731
    counts = {}

    def save(obj, name, **kw):
        counts[name] = count(obj)
        torch.save(obj, p(name), **kw)

    model = build_model(0, [torch.randn(8, 3, 64, 64) for _ in range(2)], "resnet18")
    torch.manual_seed(1)
    save(model.state_dict(), "torchvision.pt")

    s = swav(model)
    save({"epoch": 800, "state_dict": s.state_dict(), "optimizer": unstepped(s.parameters())}, "swav.pth.tar")
    save(s.state_dict(), "swav_flat.pth")

    for v2, name in [(False, "moco_v1.pth.tar"), (True, "moco_v2.pth.tar")]:
        m = moco(model, v2)
        q = m.module.encoder_q.parameters()
        opt = sgd_state(q) if not v2 else unstepped(q)
        save({"epoch": 200, "arch": "resnet18", "state_dict": m.state_dict(), "optimizer": opt}, name)

    ss = simsiam(model)
    save(
        {"epoch": 100, "arch": "resnet18", "state_dict": ss.state_dict(), "optimizer": unstepped(ss.parameters())},
        "simsiam.pth.tar",
    )

    memory = {"memory_bank.memory": torch.randn(1000, 128), "memory_bank.num_negatives": torch.tensor(16000)}
    save(vissl(model, 128, memory, 99), "pirl.torch")
    save(vissl(model, 1000, {}, 33), "exemplar.torch")

    save(humantorch(model).state_dict(), "humantorch.pth", _use_new_zipfile_serialization=False)

    small = lambda *shape: torch.randn(*shape)  # noqa: E731
    save(
        {
            "model": {
                "backbone.bottom_up.stem.conv1.weight": small(8, 3, 3, 3),
                "backbone.bottom_up.res2.0.conv1.weight": small(8, 8, 1, 1),
                "roi_heads.box_predictor.cls_score.weight": small(2, 8),
            },
            "iteration": 10,
        },
        "unknown.pt",
    )
    ambiguous = {k: small(4) for k in ["conv1.weight", "layer1.0.conv1.weight"]}
    ambiguous.update({"module.encoder_q." + k: v for k, v in list(ambiguous.items())})
    save(ambiguous, "ambiguous.pt")
    torch.jit.save(torch.jit.script(nn.Conv2d(3, 4, 3)), p("torchscript.pt"))

    x = torch.randn(2, 3, 64, 64)
    save_file({"images": x}, p("input.safetensors"))
    save_file(pyramid(model, x), p("expected.safetensors"))
    with open(p("counts.json"), "w") as f:
        json.dump(counts, f, indent=1)


if __name__ == "__main__":
    main()
