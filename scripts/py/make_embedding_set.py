"""An ImageNet-sized data set for scripts/bench-memory.sh, cheap to write and to encode.

CalTech-101's layout (caltech-101/caltech101_{train,test}.json listing `<class>/<file>`) with
CLASSES classes and TRAIN + TEST samples: each class has one small PNG (IMAGE x IMAGE pixels,
its own colours) and every sample of the class is a hard link to it, so 1.28 M samples take
directory entries, not disk. The encoder is a TorchScript module (a fixed random Linear from the
flattened pixels to DIM features), so that encoding 1.28 M images costs seconds of compute and
the embedding cache is ImageNet's size: 1.28 M x 2048 float16 = 5.2 GB.

usage: make_embedding_set.py WORK TRAIN TEST CLASSES IMAGE DIM
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image


def main():
    work, train, test, classes, image, dim = sys.argv[1], *map(int, sys.argv[2:7])
    root = os.path.join(work, "data", "caltech-101")
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"c{c:04d}" for c in range(classes)]
    for name in names:
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        src = os.path.join(d, "source.png")
        if not os.path.exists(src):
            Image.fromarray(rng.integers(0, 256, (image, image, 3), dtype=np.uint8)).save(src)
    for split, n in (("train", train), ("test", test)):
        listing = []
        for i in range(n):
            name = names[i % classes]
            rel = f"{name}/{split}-{i}.png"
            path = os.path.join(root, rel)
            if not os.path.exists(path):
                os.link(os.path.join(root, name, "source.png"), path)
            listing.append(rel)
        with open(os.path.join(root, f"caltech101_{split}.json"), "w") as f:
            json.dump(listing, f)
    torch.manual_seed(0)

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3 * image * image, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x.flatten(1))

    torch.jit.script(Encoder().eval()).save(os.path.join(work, "encoder.ts"))


if __name__ == "__main__":
    main()
