"""``python -m tests.engine.run_registered DIGITS_ROOT <od2 args...>``: register the e2e test's digits
datasets in this process, then run the od2 command line (used for torchrun subprocesses in tests)."""

import sys
from pathlib import Path

from od2.cli import main
from od2.data.catalog import register_coco_instances

if __name__ == "__main__":
    root = Path(sys.argv[1]) / "digits"
    for split in ("train", "val"):
        register_coco_instances(f"e2e_digits_{split}", root / "annotations" / f"{split}.json", root / split)
    sys.exit(main(sys.argv[2:]))
