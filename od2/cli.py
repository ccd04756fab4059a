"""The ``od2`` command line: ``od2 train | eval | eval-json | predict | export | report | bench | lr-plot |
model-info | serve | data``.

Every command that takes ``--config FILE`` also takes trailing ``KEY=VALUE`` overrides, e.g.
``od2 train --config configs/digits/retinanet_lite0.yaml SOLVER.MAX_ITER=200 OUTPUT_DIR=output/try``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import sys
import traceback
from pathlib import Path

from od2.config import ConfigError, load_config
from od2.tools.data_cli import add_data_parser, run_data_command
from od2.tools.sweep.command import add_sweep_parser, run_sweep_command

logger = logging.getLogger("od2")

EPILOG = """examples:
  od2 train --config configs/digits/retinanet_lite0.yaml
  od2 train --config configs/digits/retinanet_lite0.yaml --resume          # continue an interrupted run
  torchrun --nproc_per_node=4 -m od2.cli train --config configs/coco/RetinaNet-GN.yaml
  od2 eval --config configs/digits/retinanet_lite0.yaml --weights output/digits/model_final.pth --vis 8
  od2 eval-json --gt annotations.json --dt detections.json --out eval_out   # + per-class results, pictures
  od2 predict --config configs/bccd/retinanet_lite0.yaml --weights model_final.pth photos/ --out preds
  od2 train --config coco/RetinaNet-GN MODEL.RESNETS.DEPTH=18 MODEL.WEIGHTS=torchvision://ResNet18_Weights.IMAGENET1K_V1
  od2 export --config configs/bccd/retinanet_lite0.yaml --weights model_final.pth --out model.onnx
  od2 report output/coco/RetinaNet-GN output/coco/RetinaNet-EvoNormS-GIoU --out results.md
  od2 report output/sweeps/bccd-giou --metric AP50          # a sweep: intervals over seeds, paired differences
  od2 bench --only inference eval --no-write
  od2 lr-plot --config configs/coco/RetinaNet-BN.yaml --log-y SOLVER.LR_DECAY_TYPE=cosine
  od2 model-info --config configs/coco/RetinaNet-GN.yaml --size 800 1333 --json
  od2 serve --run output/bccd --port 7860                                 # a web demo: upload images, see boxes
  od2 data stats --config configs/bccd/retinanet_lite0.yaml --split test
  od2 data convert --from voc --input datasets/bccd --split train --to yolo --out datasets/bccd_yolo
Config keys are documented in docs/config.md; any of them can be overridden as KEY=VALUE."""


WEIGHTS_HELP = ("a file or a weights name (torchvision://<Enum>.<member>, https://..., file://..., package://<name>; "
                "downloads go to torch's hub cache). Default: OUTPUT_DIR/model_final.pth when it exists (the run's "
                "trained model), else MODEL.WEIGHTS")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="YAML config file (may use _BASE_ inheritance) or a packaged config's name, e.g. "
                             "coco/RetinaNet-GN")
    parser.add_argument("opts", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. SOLVER.BASE_LR=0.01 MODEL.DEVICE=cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="od2", description="od2: config-driven RetinaNet object detection.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train a model from a config (CPU, GPU or torchrun)",
                           description="Train for SOLVER.MAX_ITER iterations; checkpoints, metrics.jsonl, "
                                       "TensorBoard logs and config.yaml go to OUTPUT_DIR.")
    _add_config_args(train)
    train.add_argument("--resume", action="store_true",
                       help="continue from OUTPUT_DIR/last_checkpoint, or the newest readable checkpoint when it names "
                            "a missing or unreadable file (model, optimizer, iteration, RNG, data order)")
    train.add_argument("--overwrite", action="store_true",
                       help="start afresh in an OUTPUT_DIR that holds a run: delete its checkpoints, last_checkpoint, "
                            "metrics.jsonl and tensorboard/ (without it, od2 train refuses such a folder)")

    evaluate = sub.add_parser("eval", help="COCO-evaluate weights on DATASETS.TEST",
                              description="Run inference on DATASETS.TEST[0], print the COCO AP/AR table and "
                                          "seconds per image, write OUTPUT_DIR/eval/coco_summary.json.")
    _add_config_args(evaluate)
    evaluate.add_argument("--weights", help=f"checkpoint to evaluate: {WEIGHTS_HELP}")
    evaluate.add_argument("--raw-weights", action="store_true",
                          help="evaluate the trained weights even when the checkpoint also holds EMA weights "
                               "(MODEL.EMA.ENABLED runs; the EMA weights are the default)")
    evaluate.add_argument("--vis", type=int, default=0, metavar="N",
                          help="also draw predictions on the first N test images to OUTPUT_DIR/eval/predictions.png")
    evaluate.add_argument("--vis-thresh", type=float, default=0.3, help="score threshold for --vis (default 0.3)")

    predict = sub.add_parser(
        "predict", help="detect objects in images, videos, streams and cameras: drawn PNGs/MP4s, COCO results, "
                        "JSON lines",
        description="Run the model on images (files, or folders searched recursively for .jpg/.png/...), at the "
                    "test size (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST). Writes OUT/<name>.png with boxes, class "
                    "names and scores drawn, OUT/detections.json (COCO results: image_id, category_id (the "
                    "checkpoint's category ids, e.g. COCO's for torchvision's COCO weights, else label + 1), "
                    "bbox XYWH in original pixels, score) and OUT/images.json (image ids, file names, sizes; "
                    "category names). Class names come from the checkpoint. Undecodable files are skipped and "
                    "listed; images inside OUT are not read. "
                    "Videos (.mp4 .avi .mkv .mov .webm .m4v files), stream URLs (rtsp://, http(s)://) and "
                    "cameras (--camera N) give OUT/<name>.jsonl (one line per processed frame: frame, time, "
                    "detections with bbox XYWH, score, label, name) and OUT/<name>.mp4 (boxes drawn); they need "
                    "PyAV (pip install 'od2[video]'; docs/video.md). "
                    "KEY=VALUE config overrides may be mixed with the inputs.")
    predict.add_argument("--config", required=True, help="YAML config file of the trained model")
    predict.add_argument("--weights", help=f"checkpoint: {WEIGHTS_HELP}")
    predict.add_argument("inputs", nargs="*", metavar="INPUT",
                         help="image files and folders (folders: images only), video files, stream URLs (and "
                              "KEY=VALUE)")
    predict.add_argument("--out", help="output folder (default: OUTPUT_DIR/predict)")
    predict.add_argument("--score-thresh", type=float, default=0.3,
                         help="keep (draw and write) detections with at least this score (default 0.3)")
    predict.add_argument("--batch-size", type=int, default=1,
                         help="images per forward (default 1; larger batches pad their images to one size, which "
                              "moves scores slightly near the borders, as in evaluation)")
    predict.add_argument("--no-draw", action="store_true", help="write the JSON files only")
    predict.add_argument("--camera", type=int, action="append", default=[], metavar="N",
                         help="also read camera N (/dev/videoN through Video4Linux; repeatable; stop it with "
                              "--max-frames or Ctrl-C)")
    predict.add_argument("--stride", type=int, default=1, metavar="N",
                         help="videos, streams, cameras: run every Nth frame (default 1: all)")
    predict.add_argument("--max-frames", type=int, metavar="N",
                         help="videos, streams, cameras: stop after N processed frames (streams and cameras do "
                              "not end by themselves)")
    predict.add_argument("--slice", type=int, nargs=2, metavar=("H", "W"),
                         help="sliced inference for large images with small objects: run the model on overlapping "
                              "H x W tiles at their own pixels (plus the whole image at the test size) and merge "
                              "(TEST.SLICE.*; docs/inference.md)")
    predict.add_argument("--overlap", type=float,
                         help="with --slice: the share of a tile that overlaps its neighbour (default "
                              "TEST.SLICE.OVERLAP, 0.2)")
    predict.add_argument("--no-full-image", action="store_true",
                         help="with --slice: tiles only, no pass over the whole image")
    predict.set_defaults(opts=[])

    export = sub.add_parser(
        "export", help="export a trained model with its postprocessing (decode, NMS) to ONNX",
        description="Write an ONNX graph: inputs images uint8 [1, 3, H, W] (RGB, content top-left, zero padding) "
                    "and image_size int64 [2] (content h, w); outputs boxes float [M, 4] (XYXY, input pixels), "
                    "scores [M] and labels int64 [M], postprocessed as od2 does (top-k per level, score threshold, "
                    "class-wise NMS). H x W is fixed at export unless --dynamic (default: the test size, short side "
                    "INPUT.MIN_SIZE_TEST in a 4:3 landscape canvas padded to INPUT.SIZE_DIVISIBILITY). Class names "
                    "and the resize settings are stored as metadata. The export is checked against PyTorch with "
                    "onnxruntime. See od2/export.py for the preprocessing (prepare_image).")
    _add_config_args(export)
    export.add_argument("--weights", help=f"checkpoint: {WEIGHTS_HELP}")
    export.add_argument("--format", choices=["onnx"], default="onnx", help="export format (onnx)")
    export.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    export.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                        help="input canvas (rounded up to INPUT.SIZE_DIVISIBILITY); images must resize to fit it")
    export.add_argument("--dynamic", action="store_true",
                        help="batch size, height and width as dynamic axes: inputs images [B, 3, H, W] and "
                             "image_sizes [B, 2], outputs boxes, scores, labels and image_index [N] (the batch "
                             "index of each detection); --size is then the size traced and checked")

    report = sub.add_parser(
        "report", help="rebuild the log's results document from run folders; statistics over seeds of a sweep",
        description="For each run folder (OUTPUT_DIR of od2 train) write a section as object_detection2's results "
                    "log does: heading, batch size x processes, backbone and norm, neck and head norms, loss, LR "
                    "decay, augmentation, iterations, train time, eval s/img and the 12-line COCO block; then a "
                    "comparison table of all runs; and a training-curve PNG per run (losses and AP vs iteration) "
                    "in <out stem>_curves/. A sweep folder (with the sweep.json of od2 sweep) gets instead, per arm, "
                    "the seeds done and the mean and t interval of every COCO metric and of the seconds per image; "
                    "per arm against the reference arm (--reference; default base, else the first), the paired "
                    "difference of --metric over the seeds both finished, with its interval, p-value, sign per "
                    "seed and a verdict (better / worse when the interval excludes 0, else not resolved); and the "
                    "runs not done. It is "
                    "printed and written to SWEEP_DIR/report.md, report.json (the numbers) and report.png (error "
                    "bars). See docs/sweeps.md.")
    report.add_argument("runs", nargs="+", metavar="FOLDER",
                        help="run folders (with config.yaml) and/or sweep folders (with sweep.json)")
    report.add_argument("--out", default="results.md",
                        help="Markdown file to write for the run folders (default results.md); a sweep's report "
                             "goes into its folder")
    report.add_argument("--metric", default="AP",
                        help="sweeps: the COCO metric of the paired differences and the PNG, one of AP, AP50, "
                             "AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl (default AP)")
    report.add_argument("--confidence", type=float, default=0.95,
                        help="sweeps: the confidence level of the t intervals (default 0.95)")
    report.add_argument("--reference", metavar="ARM",
                        help="sweeps: the arm the others are compared with (default: the arm named base, else the "
                             "spec's first arm)")

    bench = sub.add_parser(
        "bench", help="time od2 against torchvision's RetinaNet and pycocotools on this machine",
        description="In one run on this machine, with od2 and the reference taking turns: inference seconds per "
                    "image of RetinaNet-R50-FPN at 576x768 (batch 1 and 8) and training seconds per step (2 "
                    "images; trainable BN, then FrozenBN with stem+res2 frozen) against torchvision's "
                    "retinanet_resnet50_fpn built to the same settings; COCO evaluation time against pycocotools "
                    "on the same detections (their 12 numbers must agree); and the training data pipeline's "
                    "images/s. Prints a table of the best rounds (medians beside them) and ratios and writes it into "
                    "docs/benchmarks.md. glibc's malloc is set to keep freed memory for reuse, so that no "
                    "round pays page faults for what ran before it. "
                    "The full suite takes 6 to 10 minutes on 2 CPU cores.")
    bench.add_argument("--only", nargs="+", choices=("inference", "train", "eval", "data"),
                       help="measure only these (default: all)")
    bench.add_argument("--iters", type=int, default=5,
                       help="timed rounds per measure; the best and the median are reported (default 5)")
    bench.add_argument("--threads", type=int, help="intra-op threads (default: torch's, usually one per core)")
    bench.add_argument("--size", type=int, nargs=2, default=(576, 768), metavar=("H", "W"),
                       help="model input size (default 576 768: short side 576, a 4:3 image)")
    bench.add_argument("--eval-images", type=int, default=500, metavar="N",
                       help="images of the synthetic COCO set for the evaluation measure (default 500)")
    bench.add_argument("--out", default="docs/benchmarks.md",
                       help="Markdown file whose od2-bench section is replaced (default docs/benchmarks.md)")
    bench.add_argument("--no-write", action="store_true", help="print the table only")

    eval_json = sub.add_parser("eval-json", help="score a COCO results file against a COCO ground-truth file")
    eval_json.add_argument("--gt", required=True, help="COCO-format ground truth json")
    eval_json.add_argument("--dt", required=True, help="COCO results json (list of image_id, category_id, bbox, score)")
    eval_json.add_argument("--out", metavar="DIR",
                           help="folder for coco_summary.json, per_class.json, thresholds.json, the confusion matrix "
                                "and the pictures, as od2 eval writes them (a path ending in .json: the summary "
                                "alone, to that file)")
    eval_json.add_argument("--confusion-score-thresh", type=float, default=0.3, metavar="T",
                           help="score threshold of the confusion matrix written with --out DIR (default 0.3, "
                                "as TEST.CONFUSION_SCORE_THRESH)")

    lr_plot = sub.add_parser(
        "lr-plot", help="draw the config's learning-rate schedule to a PNG (no training, no data needed)",
        description="Evaluate the LR schedule that `od2 train` would use (SOLVER.LR_DECAY_TYPE, BASE_LR, "
                    "WARMUP_ITERS, WARMUP_FACTOR, STEPS, GAMMA, MIN_LR, MAX_ITER) over iterations "
                    "0..MAX_ITER-1, draw LR against iteration with dotted lines at the end of warmup and at "
                    "each piecewise step, print the PNG's path and the LR at the landmark iterations "
                    "(start, end of warmup, each step, last iteration).")
    _add_config_args(lr_plot)
    lr_plot.add_argument("--out", help="PNG to write (default: OUTPUT_DIR/lr_schedule.png)")
    lr_plot.add_argument("--log-y", action="store_true", help="logarithmic LR axis (shows small LRs and MIN_LR)")

    model_info = sub.add_parser(
        "model-info", help="parameter counts, FLOPs and feature-map shapes of the model a config builds",
        description="Build the config's model on CPU (no weights, no data needed) and print: parameters (total, "
                    "trainable, per part: backbone, neck, head), the FLOPs of one forward of one image through "
                    "backbone, neck and head (torch.utils.flop_counter, a multiply-add = 2 FLOPs, GMACs = GFLOPs "
                    "/ 2; no postprocessing), and the backbone (C3..C5) and neck (P3..P7) feature-map shapes. "
                    "The input defaults to short side INPUT.MIN_SIZE_TEST, long side 4/3 of it (capped by "
                    "INPUT.MAX_SIZE_TEST), padded to INPUT.SIZE_DIVISIBILITY.")
    _add_config_args(model_info)
    model_info.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                            help="input height and width (rounded up to INPUT.SIZE_DIVISIBILITY)")
    model_info.add_argument("--num-classes", type=int, default=80, metavar="N",
                            help="classes of the head when MODEL.RETINANET.NUM_CLASSES is 0 (default 80)")
    model_info.add_argument("--json", action="store_true", help="print the numbers as JSON instead of a table")

    serve = sub.add_parser(
        "serve", help="a web page to try a trained model: upload images, see the detections, move a score slider",
        description="Start a local web demo (Gradio; pip install 'od2[serve]') of a trained model: upload an image, "
                    "several images or a folder's files and see them with their detections drawn, a table of the "
                    "boxes (class, score, XYXY in the image's pixels) and the run's classes, test size and test-time "
                    "mode. The score slider redraws without running the model again. Every action is also an HTTP "
                    "endpoint (/detect, /detect_files, /detect_folder, /redraw; the page's 'Use via API' link shows "
                    "how to call them with gradio_client). Images go through od2.Detector, as in od2 predict. No "
                    "telemetry is sent; the page is public only with --share.")
    model_source = serve.add_mutually_exclusive_group(required=True)
    model_source.add_argument("--run", metavar="RUN_DIR",
                              help="a training run folder (OUTPUT_DIR of od2 train): its config.yaml and weights")
    model_source.add_argument("--config", help="YAML config file of the trained model (or a packaged config's name)")
    serve.add_argument("--weights",
                       help="with --run: best (default: model_best.pth, else model_final.pth), final, or a file name "
                            f"in the run folder; with --config: {WEIGHTS_HELP}")
    serve.add_argument("--device", help="where the model runs, e.g. cpu, cuda, cuda:1 (default MODEL.DEVICE)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: the network)")
    serve.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    serve.add_argument("--share", action="store_true",
                       help="also open a temporary public link through Gradio's share servers (off by default)")
    serve.add_argument("opts", nargs="*", metavar="KEY=VALUE",
                       help="config overrides, e.g. TEST.AUG.ENABLED=True MODEL.RETINANET.SCORE_THRESH_TEST=0.2")

    add_data_parser(sub)
    add_sweep_parser(sub)
    _add_debug_flag(parser)
    return parser


def _add_debug_flag(parser: argparse.ArgumentParser, top_level: bool = True) -> None:
    """``--debug`` on ``parser`` and every command under it, so that it may stand before or after the command."""
    # Below the top level the default is SUPPRESS: a command's own default would overwrite a top-level --debug.
    parser.add_argument("--debug", action="store_true", default=False if top_level else argparse.SUPPRESS,
                        help="on an error, print the full traceback (otherwise one line, and the traceback only "
                             "in OUTPUT_DIR/log.txt where the command writes one)")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                _add_debug_flag(command, top_level=False)


def cmd_train(args: argparse.Namespace) -> int:
    from od2.engine.hooks import RunInfoWriter
    from od2.engine.setup import setup_logging
    from od2.engine.trainer import Trainer
    from od2.evaluation.evaluate import build_evaluator
    from od2.utils import comm as dist

    cfg = load_config(args.config, args.opts)
    setup_logging(cfg.OUTPUT_DIR, dist_rank_from_env())
    logger.info("config %s with overrides %s", args.config, args.opts)
    evaluates = cfg.TEST.EVAL_PERIOD > 0 and cfg.DATASETS.TEST
    trainer = Trainer(cfg, evaluator=build_evaluator(cfg) if evaluates else None,
                      hooks=[RunInfoWriter(args.config, args.opts)])
    try:
        trainer.train(resume=args.resume, overwrite=args.overwrite)
    finally:
        dist.cleanup()
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from od2.data.setup import load_datasets
    from od2.detector import weights_to_load
    from od2.engine.checkpoint import load_checkpoint, load_model_weights
    from od2.engine.setup import resolve_device, setup_logging
    from od2.evaluation.evaluate import evaluate_model, require_checkpoint_classes
    from od2.modeling.build import build_model
    from od2.utils import comm as dist

    cfg = load_config(args.config, args.opts)
    setup_logging(None, dist_rank_from_env())
    device = dist.init_distributed(resolve_device(cfg.MODEL.DEVICE))
    weights = weights_to_load(args.weights, cfg)
    dataset = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None
    if dataset is None:
        raise ConfigError(f"{args.config}: DATASETS.TEST is empty; name the dataset to evaluate on")
    info = load_datasets([dataset], cfg, key="DATASETS.TEST")
    checkpoint = load_checkpoint(weights)
    require_checkpoint_classes(checkpoint, weights, info)
    model = build_model(cfg, len(info.class_names)).to(device)
    load_model_weights(model, weights, require_all=True, prefer_ema=not args.raw_weights, checkpoint=checkpoint)
    out_dir = Path(cfg.OUTPUT_DIR) / "eval"
    try:
        evaluate_model(cfg, model, device, dataset, out_dir)
        if args.vis and dist.is_main_process():
            from od2.evaluation.visualize import draw_dataset_predictions
            path = draw_dataset_predictions(info, out_dir / "detections.json", out_dir / "predictions.png",
                                            num_images=args.vis, score_thresh=args.vis_thresh)
            print(f"predictions drawn on {args.vis} images: {path}")
    finally:
        dist.cleanup()
    return 0


CONFIG_OVERRIDE = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*=")


def cmd_predict(args: argparse.Namespace) -> int:
    from od2.detector import Detector
    from od2.engine.setup import setup_logging
    from od2.evaluation.predict import predict_images
    from od2.evaluation.predict_video import predict_video, split_inputs, video_output_names
    from od2.evaluation.video import VideoError, VideoInput, VideoReader

    overrides = [item for item in args.inputs if CONFIG_OVERRIDE.match(item) and not Path(item).exists()]
    images, videos = split_inputs([item for item in args.inputs if item not in overrides])
    videos += [VideoInput.camera(index) for index in args.camera]
    if not images and not videos:
        raise FileNotFoundError("od2 predict needs at least one image file or folder, video, stream URL or --camera")
    if args.stride < 1 or (args.max_frames is not None and args.max_frames < 1):
        raise ConfigError(f"--stride and --max-frames must be >= 1, got {args.stride} and {args.max_frames}")
    overrides = list(args.opts) + overrides + slice_overrides(args.slice, args.overlap, args.no_full_image)
    cfg = load_config(args.config, overrides)
    setup_logging(None, 0)
    out_dir = Path(args.out) if args.out else Path(cfg.OUTPUT_DIR) / "predict"
    try:
        for video in videos:  # a bad file or a missing camera fails before any work; streams are opened in turn
            if video.kind != "url":
                VideoReader(video).close()
        detector = Detector.from_config(cfg, args.weights)
        if images:
            summary = predict_images(
                detector.pipeline, images, out_dir, score_thresh=args.score_thresh, batch_size=args.batch_size,
                num_workers=cfg.DATALOADER.NUM_WORKERS, draw=not args.no_draw)
            print(f"{summary.num_images} images, {summary.num_detections} detections (score >= "
                  f"{args.score_thresh}) -> {summary.detections_json}"
                  + (f", {len(summary.drawings)} PNGs" if summary.drawings else ""))
            for line in summary.skipped:
                print(f"skipped {line}")
        for video, name in zip(videos, video_output_names(videos)):
            print(predict_video(detector.pipeline, video, out_dir, name, score_thresh=args.score_thresh,
                                batch_size=args.batch_size, stride=args.stride, max_frames=args.max_frames,
                                draw=not args.no_draw))
    except VideoError as exc:
        print(f"od2 predict: error: {exc}", file=sys.stderr)
        return 2
    return 0


def slice_overrides(size: list[int] | None, overlap: float | None, no_full_image: bool) -> list[str]:
    """TEST.SLICE overrides for ``od2 predict --slice H W [--overlap R] [--no-full-image]``."""
    if size is None:
        if overlap is not None or no_full_image:
            raise ConfigError("--overlap and --no-full-image go with --slice H W")
        return []
    overrides = ["TEST.SLICE.ENABLED=True", f"TEST.SLICE.SIZE=[{size[0]},{size[1]}]"]
    if overlap is not None:
        overrides.append(f"TEST.SLICE.OVERLAP={overlap}")
    if no_full_image:
        overrides.append("TEST.SLICE.FULL_IMAGE=False")
    return overrides


def cmd_export(args: argparse.Namespace) -> int:
    import json

    import numpy as np
    import torch

    from od2.detector import load_trained_model, weights_to_load
    from od2.engine.setup import setup_logging
    from od2.export import export_onnx, max_detection_difference
    from od2.tools.model_info import resolve_input_size

    cfg = load_config(args.config, args.opts)
    setup_logging(None, 0)
    weights = weights_to_load(args.weights, cfg)
    model, class_names, _ = load_trained_model(cfg, weights)
    height, width = resolve_input_size(cfg, tuple(args.size) if args.size else None)
    metadata = {"class_names": json.dumps(class_names), "min_size_test": str(cfg.INPUT.MIN_SIZE_TEST),
                "max_size_test": str(cfg.INPUT.MAX_SIZE_TEST), "input_size": f"{height}x{width}",
                "config": str(args.config), "weights": str(weights)}
    metadata["dynamic"] = str(args.dynamic).lower()
    path = export_onnx(model, args.out, height, width, metadata, dynamic=args.dynamic)
    print(f"exported {path} ({'dynamic batch and size, traced at ' if args.dynamic else ''}{height}x{width} input, "
          f"{len(class_names)} classes)")
    try:
        import onnxruntime
    except ImportError:
        print("onnxruntime not installed: export not checked (pip install 'od2[export]')")
        return 0
    batch = 2 if args.dynamic else 1
    images = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    sizes = torch.tensor([[height, width]] * batch)
    feeds = ({"images": images.numpy(), "image_sizes": sizes.numpy()} if args.dynamic
             else {"images": images.numpy(), "image_size": sizes[0].numpy()})
    outputs = onnxruntime.InferenceSession(str(path)).run(None, feeds)
    if not args.dynamic:  # the fixed graph has one image: every detection's batch index is 0
        outputs.append(np.zeros(len(outputs[2]), np.int64))
    with torch.no_grad():
        reference = model.inference_flat(images, sizes)
    diff = max_detection_difference(*outputs, reference)
    same = diff < 0.01
    print(f"onnxruntime vs PyTorch on {batch} random image{'s' if batch > 1 else ''}: {len(outputs[2])} vs "
          f"{len(reference['labels'])} detections, labels {'equal' if same else 'DIFFER'}"
          + (f", max box difference {diff:.2e} px" if same else ""))
    return 0 if same else 1


def cmd_report(args: argparse.Namespace) -> int:
    from od2.tools.report import write_report
    from od2.tools.sweep_report import is_sweep_folder, write_sweep_report

    sweeps = [folder for folder in args.runs if is_sweep_folder(folder)]
    runs = [folder for folder in args.runs if folder not in sweeps]
    for folder in sweeps:
        report = write_sweep_report(folder, args.metric, args.confidence, args.reference)
        print(report.markdown)
        print(f"sweep report: {', '.join(str(path) for path in report.paths.values())}")
    if runs:
        path = write_report(runs, args.out)
        print(f"report of {len(runs)} runs: {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from od2.benchmark.suite import MEASURES, markdown_section, markdown_table, run_suite, write_section
    from od2.utils.cpu_heap import keep_freed_memory

    keep_freed_memory()  # no page-fault tax that depends on what ran before (see od2/utils/cpu_heap.py)
    if args.threads:
        torch.set_num_threads(args.threads)
    measures = tuple(args.only or MEASURES)
    rows = run_suite(measures, iters=args.iters, height=args.size[0], width=args.size[1],
                     eval_images=args.eval_images, log=lambda line: print(line, flush=True))
    print(markdown_table(rows))
    if not args.no_write:
        command = "od2 bench " + shlex.join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "od2 bench"
        print(f"written to {write_section(args.out, markdown_section(rows, args.iters, command.strip()))}")
    return 0


def cmd_eval_json(args: argparse.Namespace) -> int:
    from od2.evaluation.coco_evaluator import CocoEvaluator, load_json_files, write_summary_json
    from od2.evaluation.diagnostics import write_diagnostics

    try:
        coco_gt, detections = load_json_files(args.gt, args.dt)
        summary = CocoEvaluator(coco_gt, source=args.gt).evaluate(detections, source=args.dt)
        to_folder = args.out and not args.out.endswith(".json")
        if to_folder:
            diagnostics = write_diagnostics(coco_gt, detections, summary, args.out, args.confusion_score_thresh)
    except ValueError as exc:  # malformed files or detections: each message names the file and what is wrong
        print(f"od2 eval-json: error: {exc}", file=sys.stderr)
        return 2
    print(summary.table())
    print(f"evaluator time: {summary.eval_seconds:.2f} s")
    if to_folder:
        write_summary_json(summary, Path(args.out) / "coco_summary.json")
        print(diagnostics.report())
        print(f"summary, per-class results, thresholds, confusion matrix and pictures in {args.out}")
    elif args.out:
        write_summary_json(summary, args.out)
    return 0


def cmd_lr_plot(args: argparse.Namespace) -> int:
    from od2.engine.lr_schedule import LRSchedule
    from od2.tools.lr_plot import format_landmarks, plot_schedule

    cfg = load_config(args.config, args.opts)
    try:
        schedule = LRSchedule.from_cfg(cfg.SOLVER)
        out = Path(args.out) if args.out else Path(cfg.OUTPUT_DIR) / "lr_schedule.png"
        path = plot_schedule(schedule, out, title=f"{args.config}: LR_DECAY_TYPE={schedule.decay_type}",
                             log_y=args.log_y)
    except ValueError as exc:  # unknown LR_DECAY_TYPE, MAX_ITER < 1
        raise ConfigError(f"{args.config}: {exc}") from exc
    print(f"LR schedule drawn: {path}")
    print(format_landmarks(schedule))
    return 0


def cmd_model_info(args: argparse.Namespace) -> int:
    import json

    from od2.tools.model_info import format_model_info, model_info

    cfg = load_config(args.config, args.opts)
    try:
        info = model_info(cfg, args.num_classes, tuple(args.size) if args.size else None)
    except ValueError as exc:  # unknown architecture / keys, bad --size
        raise ConfigError(f"{args.config}: {exc}") from exc
    print(json.dumps(info, indent=2) if args.json else format_model_info(info))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        print("od2 serve: error: the web demo needs Gradio: pip install 'od2[serve]'", file=sys.stderr)
        return 2
    # no usage statistics or version check leave the machine; read when gradio builds the page
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from od2.detector import Detector
    from od2.engine.setup import setup_logging
    from od2.tools.serve import build_app

    setup_logging(None, 0)
    if args.run:
        detector = Detector.from_run(args.run, args.weights or "best", args.device, args.opts)
        title = f"od2: {Path(args.run).resolve().name}"
    else:
        detector = Detector.from_config(args.config, args.weights, args.device, args.opts)
        title = f"od2: {Path(args.config).stem}"
    print(f"serving {detector!r} on http://{args.host}:{args.port} (Ctrl+C stops)")
    build_app(detector, title=title).launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


def dist_rank_from_env() -> int:
    return int(os.environ.get("RANK", "0"))


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "eval-json": cmd_eval_json, "predict": cmd_predict,
            "export": cmd_export, "report": cmd_report, "bench": cmd_bench, "lr-plot": cmd_lr_plot,
            "model-info": cmd_model_info, "serve": cmd_serve, "data": run_data_command, "sweep": run_sweep_command}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse, letting KEY=VALUE overrides stand anywhere after the command (also after --weights W)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if item.startswith("-") or "=" not in item or not hasattr(args, "opts")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.opts = list(args.opts) + extra
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit codes: 0 done, 2 a config error or a missing file (one line on stderr), 1 any other
    failure: one line on stderr, the traceback in the command's log files and, with ``--debug``, on stderr."""
    args = parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"od2 {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        log_files = _log_traceback_to_files(exc)
        where = "".join(f"; it is in {path}" for path in log_files[:1])
        print(f"od2 {args.command}: error: {type(exc).__name__}: {exc} (--debug prints the traceback{where})",
              file=sys.stderr)
        return 1


def _log_traceback_to_files(exc: Exception) -> list[str]:
    """Write ``exc`` with its traceback to the log files the command opened (setup_logging's log.txt), not to the
    console; returns their paths."""
    record = logging.LogRecord(logger.name, logging.ERROR, __file__, 0, "the command failed", None,
                               (type(exc), exc, exc.__traceback__))
    files = [h for h in logging.getLogger().handlers
             if isinstance(h, logging.FileHandler) and h.baseFilename != os.devnull]
    for handler in files:
        handler.handle(record)
    return [handler.baseFilename for handler in files]


if __name__ == "__main__":
    sys.exit(main())
