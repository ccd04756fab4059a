"""Training data pipeline throughput per loader worker, with and without AutoAugment / WAA / Stitch / Stitcher.

Each variant runs the real training loader of configs/bccd/retinanet_lite0.yaml (BCCD, 640x480 JPEGs, sizes
416-544, flip, batch 4) in this process with one intra-op thread: exactly the work one DataLoader worker does
(read + decode, per-image pipeline, batch-level augmentation, collate). It reports source images per second and
the ratio to the plain pipeline, as the median of ``--repeats`` passes over ``--images`` images.

    python benchmarks/data_throughput.py [--root ../shared/data] [--images 96] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from od2.benchmark.data_speed import BCCD_CONFIG as CONFIG
from od2.benchmark.data_speed import loader_images_per_second

# The team's copy of BCCD beside a development checkout (this script is not part of the installed package).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

VARIANTS = {
    "plain (resize + flip)": [],
    "AA (policy v0)": ["INPUT.DATAPROCESS=AA"],
    "AA_V3": ["INPUT.DATAPROCESS=AA_V3"],
    "WAA": ["INPUT.DATAPROCESS=WAA"],
    "Stitch 0.5": ["INPUT.STITCH=0.5"],
    "WAA + Stitch 0.5": ["INPUT.DATAPROCESS=WAA", "INPUT.STITCH=0.5"],
    "Stitcher 2x2 mosaics": ["INPUT.STITCHER.ENABLED=true"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(SHARED_DATA),
                        help="datasets root holding bccd/ (default ../shared/data)")
    parser.add_argument("--images", type=int, default=96, help="source images per pass (default 96)")
    parser.add_argument("--repeats", type=int, default=3, help="passes per variant; the median is reported")
    args = parser.parse_args()
    if not (Path(args.root) / "bccd").is_dir():
        print(f"data_throughput: no BCCD under {args.root} (give --root DIR holding bccd/); skipped")
        return
    torch.set_num_threads(1)  # what a loader worker uses (od2.data.loader._worker_init)
    print(f"{'pipeline':<24} {'images/s per worker':>20} {'x plain':>8}")
    base = None
    for name, overrides in VARIANTS.items():
        overrides = [f"DATASETS.ROOT={args.root}", *overrides]
        rate = statistics.median(loader_images_per_second(CONFIG, overrides, args.images) for _ in range(args.repeats))
        base = base or rate
        print(f"{name:<24} {rate:>20.1f} {rate / base:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
