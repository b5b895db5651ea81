"""PIL + torchvision counterpart of plugins/kit/examples/decode_bench.rs.

Usage: decode_bench.py <folder> <size> <repeats> [dump.f32]
Open + convert("RGB") + Resize((size, size)) + ToTensor + Normalize(ImageNet) on one thread, for
every .jpg/.jpeg/.png in the folder (sorted); the first pass is a warm-up. Prints JSON with the
median seconds per pass. With a fourth argument, also writes the tensors as raw float32.
"""
import json
import os
import sys
import time

import torch
import torchvision.transforms as T
from PIL import Image


def main():
    folder, size, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    files = sorted(
        os.path.join(folder, f)
        for f in os.listdir(folder)
        if f.lower().endswith((".jpg", ".jpeg", ".png"))
    )
    tf = T.Compose(
        [
            T.Resize((size, size)),
            T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )

    def load(p):
        with Image.open(p) as im:
            return tf(im.convert("RGB"))

    if len(sys.argv) > 4:
        with open(sys.argv[4], "wb") as out:
            for f in files:
                out.write(load(f).contiguous().numpy().astype("<f4").tobytes())
    if repeats == 0:
        return
    times = []
    for rep in range(repeats + 1):
        start = time.perf_counter()
        for f in files:
            load(f)
        if rep > 0:
            times.append(time.perf_counter() - start)
    times.sort()
    median = times[len(times) // 2]
    print(json.dumps({"images": len(files), "seconds": round(median, 6), "images_per_s": round(len(files) / median, 2)}))


if __name__ == "__main__":
    main()
