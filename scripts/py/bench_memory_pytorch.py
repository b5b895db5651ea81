"""The plain-PyTorch side of scripts/bench-memory.sh: the same linear probe (Linear(DIM, CLASSES),
Adam, cross-entropy, shuffled batches) trained from an in-memory float16 tensor of N x DIM
embeddings. Prints one JSON line: seconds per epoch and peak resident memory.

usage: bench_memory_pytorch.py N DIM CLASSES BATCH EPOCHS THREADS
"""
import json
import resource
import sys
import time

import torch


def main():
    n, dim, classes, batch, epochs, threads = map(int, sys.argv[1:7])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.empty(n, dim, dtype=torch.float16)
    for i in range(0, n, 65536):
        x[i : i + 65536] = torch.randn(min(65536, n - i), dim).half()
    y = torch.randint(0, classes, (n,))
    head = torch.nn.Linear(dim, classes)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    per_epoch = []
    for _ in range(epochs):
        t = time.perf_counter()
        perm = torch.randperm(n)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            loss = torch.nn.functional.cross_entropy(head(x[idx].float()), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        per_epoch.append(time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds_per_epoch": min(per_epoch), "peak_rss_bytes": rss}))


if __name__ == "__main__":
    main()
