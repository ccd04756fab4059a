"""``od2 data``: dataset tools (``od2 data show``, ``od2 data stats``, ``od2 data convert``).

Structure: :func:`add_data_parser` adds the ``data`` command with its own subcommands; each
subcommand has a ``_add_<name>_parser(data_subparsers)`` function and a ``cmd_<name>(args) -> int``
listed in :data:`DATA_COMMANDS`; :func:`run_data_command` dispatches on ``args.data_command``.
A new subcommand adds one of each. Heavy imports stay inside the ``cmd_*`` functions.
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

__all__ = ["DATA_COMMANDS", "add_data_parser", "run_data_command"]

FORMATS = ("coco", "voc", "yolo")

DATA_EPILOG = """examples:
  od2 data show --config configs/coco/RetinaNet-EvoNormS-GIoU-AA.yaml -n 16 --out output/show_aa
  od2 data show --config configs/bccd/retinanet_lite0.yaml --split train INPUT.STITCH=1.0 --out output/show_stitch
  od2 data stats --config configs/bccd/retinanet_lite0.yaml --split test
  od2 data stats --dataset bccd_train
  od2 data stats --dataset yolo:datasets/pets/data.yaml:val
  od2 data stats --dataset voc:datasets/BCCD:test
  od2 data stats --dataset coco:datasets/pets/annotations/instances_val.json
  od2 data stats --format coco --input annotations/instances_val2017.json
  od2 data convert --from voc --input datasets/bccd --split train --to yolo --out datasets/bccd_yolo
  od2 data convert --from yolo --input datasets/bccd_yolo/data.yaml --split train --to coco --out datasets/bccd_coco
  od2 data convert --from coco --input coco/annotations/instances_val2017.json --images coco/val2017 \\
      --to voc --out datasets/coco_voc --link
  od2 data convert --dataset voc:datasets/BCCD:test --to coco --out datasets/bccd_coco"""


def _wrap(text: str) -> str:
    """Wrap a description for the raw formatter (kept raw so that the examples epilog keeps its lines)."""
    return textwrap.fill(text, width=100)


DATASET_HELP = ("a dataset name: built-in (bccd_train, coco_2017_val, ...; under $OD2_DATASETS or ./datasets), "
                "or by path: coco:ANNOTATIONS.json[:IMAGE_DIR], voc:ROOT:SPLIT, yolo:PATH/data.yaml:SPLIT")


def _add_input_args(parser: argparse.ArgumentParser, fmt_flag: str, fmt_required: bool) -> None:
    """--from/--format, --input, --images, --split: where a dataset is read from."""
    parser.add_argument(fmt_flag, dest="format", choices=FORMATS, required=fmt_required,
                        help="format of the input: coco (instances json), voc (Annotations/, ImageSets/Main/, "
                             "JPEGImages/) or yolo (Ultralytics data.yaml with images/ and labels/)")
    parser.add_argument("--input", metavar="PATH", required=fmt_required,
                        help="the input: coco: the json file; voc: the VOC root folder; yolo: the data.yaml "
                             "(or the folder holding it)")
    parser.add_argument("--images", metavar="DIR",
                        help="coco only: folder that the json's file_name entries are relative to (default: the first "
                             "of ROOT/S/ for ROOT/annotations/instances_S.json, D/S/ for D/S.json, D/images/, D/ "
                             "that holds the json's first image)")


def _add_stats_parser(data_sub: argparse._SubParsersAction) -> None:
    stats = data_sub.add_parser(
        "stats", help="print image, box, per-class and box-size counts of a dataset",
        description=_wrap("Print a dataset's statistics: images (and how many have no boxes), boxes, crowd/difficult "
                    "boxes, per-class image and box counts, COCO size buckets by box area w*h in original pixels "
                    "(small < 32^2 <= medium < 96^2 <= large), the image size range and the loader's counted "
                    "skips. Name the dataset one of three ways: --config (its DATASETS.TRAIN or TEST), --dataset "
                    "(a catalog name) or --format with --input (files on disk)."),
        epilog=DATA_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = stats.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="FILE",
                        help="YAML config: report the datasets it trains on (--split train) or tests on "
                             "(--split test), labelled by the config's class list (DATASETS.CLASS_NAMES, else all its "
                             "splits' classes)")
    source.add_argument("--dataset", metavar="NAME", help=DATASET_HELP)
    source.add_argument("--format", dest="format", choices=FORMATS,
                        help="read files directly: coco, voc or yolo (with --input; see --images, --split)")
    stats.add_argument("--input", metavar="PATH",
                       help="with --format: coco: the json file; voc: the VOC root folder; yolo: the data.yaml "
                            "(or the folder holding it)")
    stats.add_argument("--images", metavar="DIR",
                       help="with --format coco: folder that the json's file_name entries are relative to")
    stats.add_argument("--split", metavar="S",
                       help="with --config: train (default) or test, i.e. DATASETS.TRAIN or DATASETS.TEST; with "
                            "--format voc/yolo: the VOC split / data.yaml key (default train)")
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON instead of a table")
    stats.add_argument("opts", nargs="*", metavar="KEY=VALUE",
                       help="with --config: config overrides, e.g. DATASETS.ROOT=/data")


def _add_convert_parser(data_sub: argparse._SubParsersAction) -> None:
    convert = data_sub.add_parser(
        "convert", help="convert a dataset split between COCO, VOC and YOLO",
        description=_wrap("Read one split in one format and write it in another, copying the images. Output layout: "
                    "coco: OUT/annotations/instances_SPLIT.json + OUT/SPLIT/ (images); voc: OUT/Annotations/*.xml, "
                    "OUT/ImageSets/Main/SPLIT.txt, OUT/JPEGImages/, OUT/class_names.txt; yolo: OUT/images/SPLIT/, "
                    "OUT/labels/SPLIT/, OUT/data.yaml. Several splits can be written into one OUT, one call each. "
                    "Prints what was written and the image and box counts before and after (read back from OUT). "
                    "Crowd (COCO) and difficult (VOC) are the same flag; YOLO has none, so such boxes are dropped "
                    "and counted (or kept as ordinary boxes with --keep-crowd). Clashing image names are renamed "
                    "STEM_1, STEM_2, ...; details in docs/datasets.md. Name the input with --from and --input, or with "
                    "--dataset."),
        epilog=DATA_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_input_args(convert, "--from", fmt_required=False)
    convert.add_argument("--dataset", metavar="NAME", help=DATASET_HELP + " (instead of --from and --input)")
    convert.add_argument("--split", metavar="S",
                         help="input split (voc: ImageSets/Main/S.txt; yolo: the data.yaml key; default train) "
                              "and the output split's name (coco input: default the json name without "
                              "'instances_'; --dataset: default the name's split, for a built-in name the text "
                              "after its last '_')")
    convert.add_argument("--to", required=True, choices=FORMATS, help="output format: coco, voc or yolo")
    convert.add_argument("--out", required=True, metavar="PATH", help="output folder (created; see the layout above)")
    convert.add_argument("--link", nargs="?", const="hardlink", choices=("hardlink", "symlink"), default="copy",
                         help="hard-link the images instead of copying them (copying where the file system "
                              "refuses), or with --link symlink make absolute symlinks")
    convert.add_argument("--overwrite", action="store_true",
                         help="replace output files that exist (default: stop with an error before writing)")
    convert.add_argument("--keep-crowd", action="store_true",
                         help="--to yolo: write crowd/difficult boxes as ordinary boxes instead of dropping them")


def _add_show_parser(data_sub: argparse._SubParsersAction) -> None:
    show = data_sub.add_parser(
        "show", help="draw what the model is fed (after augmentation) with boxes and class names",
        description=_wrap("Write PNGs of the first N images a config's loader produces, exactly as the network "
                          "receives them (padded batch images after INPUT.DATAPROCESS, multi-scale resize, flip and "
                          "Stitch), with the ground-truth boxes and class names drawn, plus OUT/overview.png tiling "
                          "them. --split test shows DATASETS.TEST[0] as evaluation resizes it; --mosaic shows the "
                          "Stitcher 2x2 mosaics (INPUT.STITCHER) instead of the regular training batches."),
        epilog=DATA_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("--config", required=True, metavar="FILE", help="YAML config whose data pipeline to show")
    show.add_argument("--split", choices=("train", "test"), default="train",
                      help="train (DATASETS.TRAIN with the training augmentation; default) or test")
    show.add_argument("-n", "--num-images", type=int, default=16, metavar="N", help="images to draw (default 16)")
    show.add_argument("--mosaic", action="store_true", help="with --split train: the Stitcher 2x2 mosaic loader")
    show.add_argument("--out", required=True, metavar="DIR", help="folder for the PNGs (created)")
    show.add_argument("opts", nargs="*", metavar="KEY=VALUE",
                      help="config overrides, e.g. INPUT.DATAPROCESS=WAA SEED=3")


def add_data_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``od2 data`` with its subcommands to the ``od2`` command's subparsers; returns the ``data`` parser."""
    data = subparsers.add_parser(
        "data", help="dataset tools: show (augmented inputs), stats, convert (COCO / VOC / YOLO)",
        description="Dataset tools. Run `od2 data SUBCOMMAND --help` for each subcommand's arguments.",
        epilog=DATA_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    _add_show_parser(data_sub)
    _add_stats_parser(data_sub)
    _add_convert_parser(data_sub)
    return data


def _setup_logging() -> None:
    """Loader and writer messages (counts, skips, drops) to stderr, unless logging is configured already."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _default_split(fmt: str, path: str, split: str | None) -> str:
    if split:
        return split
    if fmt == "coco":
        return Path(path).stem.removeprefix("instances_")
    return "train"


def _split_of_name(name: str) -> str:
    """The output split of ``od2 data convert --dataset NAME``: a path name's split, a built-in name's last word."""
    prefix, _, body = name.partition(":")
    if not body:
        return name.rpartition("_")[2]
    if prefix == "coco":
        return Path(body.split(":")[0]).stem.removeprefix("instances_")
    return body.rpartition(":")[2]


def _read_input(args: argparse.Namespace):
    from od2.tools.convert import read_dataset

    if not args.input:
        raise ValueError(f"--input PATH is required with --{'from' if hasattr(args, 'to') else 'format'}")
    if args.images and args.format != "coco":
        raise ValueError("--images is for coco input only")
    split = None if args.format == "coco" else (args.split or "train")
    return read_dataset(args.format, args.input, split=split, image_root=args.images)


def cmd_stats(args: argparse.Namespace) -> int:
    import json

    from od2.data.catalog import get_dataset
    from od2.data.image_check import check_images
    from od2.data.image_io import DEFAULT_MAX_IMAGE_PIXELS
    from od2.tools.stats import dataset_stats, format_stats

    if args.opts and not args.config:
        raise ValueError(f"KEY=VALUE overrides need --config: {' '.join(args.opts)}")
    if args.config:
        from od2.config import load_config
        from od2.data.setup import datasets_with_config_classes

        cfg = load_config(args.config, args.opts)
        split = args.split or "train"
        if split not in ("train", "test"):
            raise ValueError(f"--split with --config is train or test (DATASETS.TRAIN / TEST), not {split!r}")
        names = list(cfg.DATASETS.TRAIN if split == "train" else cfg.DATASETS.TEST)
        if not names:
            raise ValueError(f"{args.config}: DATASETS.{split.upper()} is empty")
        infos = datasets_with_config_classes(names, cfg)
        max_pixels = cfg.INPUT.MAX_IMAGE_PIXELS
    elif args.dataset:
        infos = [get_dataset(args.dataset)]
    else:
        infos = [_read_input(args)]
    if not args.config:
        max_pixels = DEFAULT_MAX_IMAGE_PIXELS
    # Every annotated image is counted; the check adds which of them training and evaluation would leave out.
    stats = [dataset_stats(info, {**info.unreadable_images,
                                  **check_images([r["file_name"] for r in info.records], max_pixels)})
             for info in infos]
    if args.json:
        print(json.dumps(stats if len(stats) > 1 else stats[0], indent=2))
    else:
        print("\n\n".join(format_stats(s) for s in stats))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from od2.data.catalog import get_dataset
    from od2.tools.convert import coco_output_paths, read_dataset, write_dataset

    if args.dataset:
        if args.format or args.input or args.images:
            raise ValueError("name the input with --dataset or with --from and --input, not both")
        info = get_dataset(args.dataset)
        split = args.split or _split_of_name(args.dataset)
        source = args.dataset
    else:
        if not args.format:
            raise ValueError("name the input: --dataset NAME, or --from FORMAT with --input PATH")
        info = _read_input(args)
        split = _default_split(args.format, args.input, args.split)
        source = f"{args.format} {args.input}"
    summary = write_dataset(info, args.to, args.out, split, link=args.link, overwrite=args.overwrite,
                            keep_crowd=args.keep_crowd)
    if args.to == "coco":
        json_file, image_dir = coco_output_paths(args.out, split)
        back = read_dataset("coco", json_file, image_root=image_dir)
        where = f"{json_file} (images in {image_dir}/)"
    else:
        back = read_dataset(args.to, args.out, split=split)
        where = f"{summary.path}" + (f", split {split!r}" if args.to == "voc" else f" (split {split!r})")
    before_boxes = sum(len(r["boxes"]) for r in info.records)
    after_boxes = sum(len(r["boxes"]) for r in back.records)
    placed = ", ".join(f"{n} {how}" for how, n in summary.image_files.items()) or "none"
    print(f"wrote {args.to.upper()}: {where}")
    renamed = f"; {summary.renamed} renamed to avoid name clashes" if summary.renamed else ""
    print(f"  image files: {placed}{renamed}")
    print(f"  before ({source}): {len(info.records)} images, {before_boxes} boxes, "
          f"{info.num_classes} classes")
    print(f"  after  (read back from {args.out}): {len(back.records)} images, {after_boxes} boxes, "
          f"{back.num_classes} classes")
    notes = [("input loader skipped", info.skipped), ("not written", summary.dropped),
             ("written, but a reader may drop", summary.warnings), ("read-back loader skipped", back.skipped)]
    for what, counts in notes:
        counts = {k: v for k, v in counts.items() if v}
        if counts:
            print(f"  {what}: " + ", ".join(f"{n} {reason}" for reason, n in counts.items()))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from od2.config import load_config
    from od2.tools.show import show_batches

    if args.mosaic and args.split != "train":
        raise ValueError("--mosaic shows Stitcher training mosaics: use it with --split train")
    cfg = load_config(args.config, args.opts)
    paths = show_batches(cfg, args.out, split=args.split, num_images=args.num_images, mosaic=args.mosaic)
    print(f"wrote {len(paths) - 1} images and {paths[-1]}")
    return 0


DATA_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"show": cmd_show, "stats": cmd_stats,
                                                                 "convert": cmd_convert}


def run_data_command(args: argparse.Namespace) -> int:
    """Run ``od2 data <args.data_command>``; bad input is reported as ``od2 data CMD: error: ...`` with status 2."""
    from od2.config import ConfigError
    from od2.data.catalog import DatasetNotFoundError

    _setup_logging()
    try:
        return DATA_COMMANDS[args.data_command](args)
    except (ConfigError, DatasetNotFoundError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"od2 data {args.data_command}: error: {exc}", file=sys.stderr)
        return 2
