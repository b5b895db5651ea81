"""Reads TensorBoard event files with TensorBoard's own reader, for the Rust tests.

usage: read_tensorboard.py DIR

Every folder under DIR (DIR included) that holds event files (`*tfevents*`) is one run, loaded
like `tensorboard --logdir DIR` does: one `EventAccumulator` per folder, keeping every scalar
(size_guidance scalars=0). Prints on stdout, as strict JSON (keys sorted):

  { "<run path relative to DIR, '/'-separated, '.' for DIR itself>":
      { "<tag>": [[step, value], ...] } }

Points keep the order TensorBoard returns them in (the order written). Values are the stored
float32 widened to float64, printed exactly (shortest round-trip repr); non-finite values,
which JSON cannot hold, are printed as the strings "NaN", "Infinity" and "-Infinity".
"""
import json
import math
import os
import sys

from tensorboard.backend.event_processing import event_accumulator


def json_value(v):
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def run_dirs(root):
    for folder, _dirs, files in os.walk(root):
        if any("tfevents" in f for f in files):
            yield folder


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    if not os.path.isdir(root):
        sys.exit(f"{root}: not a folder")
    runs = {}
    for folder in sorted(run_dirs(root)):
        acc = event_accumulator.EventAccumulator(
            folder, size_guidance={event_accumulator.SCALARS: 0}
        )
        acc.Reload()
        rel = os.path.relpath(folder, root).replace(os.sep, "/")
        runs[rel] = {
            tag: [[e.step, json_value(e.value)] for e in acc.Scalars(tag)]
            for tag in acc.Tags()[event_accumulator.SCALARS]
        }
    # ASCII only (\u escapes), whatever the locale's stdout encoding.
    json.dump(runs, sys.stdout, sort_keys=True, allow_nan=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
