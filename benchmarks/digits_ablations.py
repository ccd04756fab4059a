"""Same-budget ablations of the log's training knobs on the digits data (issues 3 and 4), one `od2 train` per variant.

Every variant is the demo config (configs/digits/retinanet_lite0.yaml) with a few overrides, trained and
evaluated on digits_val at the end; the script prints a markdown table of AP/AP50/AP75/APs/APm/APl and wall time
(for docs/results.md). A run that stops on a non-finite loss is reported as diverged. Runs go one after another:
on a 2-core machine, run nothing else meanwhile (about 30 minutes in all).

    python benchmarks/digits_ablations.py [--out output/ablations] [--only NAME ...] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CONFIG = "configs/digits/retinanet_lite0.yaml"
BN = ["MODEL.FPN.NORM=BN", "MODEL.RETINANET.NORM=BN"]
EVONORM = ["MODEL.FPN.NORM=EvoNormS0", "MODEL.FPN.ACTIVATION_FN=NA", "MODEL.RETINANET.NORM=EvoNormS0",
           "MODEL.RETINANET.ACTIVATION_FN=NA"]


def batch_1(iterations: int) -> list[str]:
    return ["SOLVER.IMS_PER_BATCH=1", f"SOLVER.MAX_ITER={iterations}", f"SOLVER.WARMUP_ITERS={iterations // 10}",
            "SOLVER.CHECKPOINT_PERIOD=0"]



VARIANTS: dict[str, list[str]] = {
    # the loss and LR comparisons: 8 images per batch, 1000 iterations
    "smooth-L1, cosine (the demo)": [],
    "GIoU, cosine": ["MODEL.RETINANET.BBOX_REG_LOSS_TYPE=giou"],
    "smooth-L1, piecewise (x0.1 at 2/3 and 5/6, as 80k/100k of 120k)": [
        "SOLVER.LR_DECAY_TYPE=piecewise", "SOLVER.STEPS=[667,833]"],
    # batch-level augmentation (issue 4), same 1000 x 8 budget: the original's Stitch, and the Stitcher paper's
    # 2x2 mosaics when the small-object share of the box loss drops below 0.1
    "Stitch 0.5, cosine": ["INPUT.STITCH=0.5"],
    "Stitcher 2x2 (threshold 0.1), cosine": ["INPUT.STITCHER.ENABLED=true"],
    # per-image AutoAugment (issue 4): Google's policy v0 (log row 9) and the original author's WAA
    "AutoAugment v0, cosine": ["INPUT.DATAPROCESS=AA"],
    "WAA, cosine": ["INPUT.DATAPROCESS=WAA"],
    # the norm comparison at 1 image per batch (same LR 0.02, as the log's 1-GPU runs): FPN and head norm,
    # 2000 iterations (a quarter of the images above) and 8000 (as many images as above)
    "batch 1 x 2000, FPN+head BN": batch_1(2000) + BN,
    "batch 1 x 2000, FPN+head EvoNormS0": batch_1(2000) + EVONORM,
    "batch 1 x 8000, FPN+head BN": batch_1(8000) + BN,
    "batch 1 x 8000, FPN+head EvoNormS0": batch_1(8000) + EVONORM,
}
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def run_variant(name: str, overrides: list[str], out_dir: Path, seed: int | None) -> dict:
    """Train + evaluate one variant; returns its summary (or {"diverged": message})."""
    max_iter = next((o.split("=")[1] for o in overrides if o.startswith("SOLVER.MAX_ITER=")), "1000")
    command = [sys.executable, "-m", "od2.cli", "train", "--config", CONFIG, *overrides, f"OUTPUT_DIR={out_dir}",
               f"TEST.EVAL_PERIOD={max_iter}", *([f"SEED={seed}"] if seed is not None else [])]
    print(f"== {name}: {' '.join(command[3:])}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    minutes = (time.perf_counter() - start) / 60
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["(no output)"]
        if "NonFiniteLossError" not in result.stderr:
            sys.exit(f"{name} failed:\n{result.stderr[-3000:]}")
        return {"diverged": tail[0], "minutes": minutes}
    summary = json.loads((out_dir / "eval" / "coco_summary.json").read_text())
    return {**summary, "minutes": minutes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("output/ablations"))
    parser.add_argument("--only", nargs="*", help="variant names (substrings) to run; default all")
    parser.add_argument("--seed", type=int, help="SEED for every run (default: the config's, 42)")
    args = parser.parse_args()
    rows = []
    for index, (name, overrides) in enumerate(VARIANTS.items()):
        if args.only and not any(part in name for part in args.only):
            continue
        suffix = "" if args.seed is None else f"-seed{args.seed}"
        summary = run_variant(name, overrides, args.out / f"variant{index}{suffix}", args.seed)
        rows.append((name, summary))
        print(json.dumps({"variant": name, **summary}), flush=True)
    print("\n| variant | " + " | ".join(METRICS) + " | train + eval minutes |")
    print("|---|" + "---|" * (len(METRICS) + 1))
    for name, summary in rows:
        if "diverged" in summary:
            cells = ["diverged"] + [""] * (len(METRICS) - 1)
        else:
            cells = [f"{summary[m]:.3f}" for m in METRICS]
        print(f"| {name} | " + " | ".join(cells) + f" | {summary['minutes']:.1f} |")


if __name__ == "__main__":
    main()
