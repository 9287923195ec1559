"""``referdino evaluate {mevis,davis,a2d}``: score saved predictions against a benchmark's ground truth.

No model is involved: each subcommand reads prediction files, prints a short table and (with ``--json``)
writes every number to a JSON file, atomically and only once the whole evaluation has succeeded.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._common import format_table, write_results_json

__all__ = ["add_evaluate_arguments"]


def _finish(args: argparse.Namespace, title: str, result: dict[str, Any], keys: list[str]) -> int:
    print(format_table(title, result, keys))
    if args.json:
        path = write_results_json(args.json, result)
        print(f"results written to {path}")
    return 0


def _cmd_mevis(args: argparse.Namespace) -> int:
    from .mevis import evaluate_mevis

    result = evaluate_mevis(args.pred, args.gt, workers=args.workers, strict=args.strict,
                            per_expression=args.per_expression)
    title = f"{result['expressions']} expressions (%)"
    if result["missing_videos"]:
        title += f"; {len(result['missing_videos'])} video(s) without predictions scored 0"
    return _finish(args, title, result, ["J&F", "J", "F"])


def _cmd_davis(args: argparse.Namespace) -> int:
    from .davis import evaluate_davis

    result = evaluate_davis(args.pred, args.davis_root, subset=args.set, annotators=args.annotators,
                            per_object=args.per_object)
    lines = [format_table(f"mean of {len(result['annotators'])} annotators, {result['sequences']} sequences (%)",
                          result, ["J&F", "J", "F", "J-Recall", "F-Recall"])]
    for entry in result["annotators"]:
        lines.append(format_table(f"anno_{entry['annotator']} ({entry['objects']} objects)", entry,
                                  ["J&F", "J", "F"]))
    print("\n".join(lines))
    if args.json:
        print(f"results written to {write_results_json(args.json, result)}")
    return 0


def _cmd_a2d(args: argparse.Namespace) -> int:
    from .a2d import evaluate_a2d

    result = evaluate_a2d(args.pred, args.gt)
    keys = ["P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9", "overall_iou", "mean_iou", "mAP", "AP50", "AP75"]
    return _finish(args, f"{result['images']} images, {result['predictions']} predictions (%)", result, keys)


def add_evaluate_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``evaluate`` with the ``mevis``, ``davis`` and ``a2d`` subcommands to ``subparsers``."""
    parser = subparsers.add_parser(
        "evaluate", help="score saved predictions on MeViS / Ref-YouTube-VOS, Ref-DAVIS17 or A2D/JHMDB-Sentences",
        description="Score saved predictions against a benchmark's ground truth (no model needed).")
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="{mevis,davis,a2d}")

    p = sub.add_parser("mevis", help="MeViS valid_u or Ref-YouTube-VOS style split: J, F, J&F",
                       description="PNG masks <pred>/<video>/<exp_id>/<frame>.png (any non-zero pixel is "
                                   "foreground) against a MeViS split folder (meta_expressions.json + "
                                   "mask_dict.json) or a Ref-YouTube-VOS style split folder with Annotations/.")
    p.add_argument("--pred", required=True, help="prediction folder (<video>/<exp_id>/<frame>.png)")
    p.add_argument("--gt", required=True, help="ground-truth split folder, e.g. data/mevis/valid_u")
    p.add_argument("--json", default=None, help="write all numbers to this JSON file")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--strict", action="store_true",
                   help="fail on a video without predictions (default: it scores 0, as the official script)")
    p.add_argument("--per-expression", action="store_true", help="include per-expression J and F in the JSON")
    p.set_defaults(func=_cmd_mevis)

    p = sub.add_parser("davis", help="Ref-DAVIS17: DAVIS-2017 unsupervised protocol, mean of the 4 annotators",
                       description="Label-map PNGs <pred>/anno_<k>/<seq>/<frame>.png (0 = background, i = "
                                   "object i) against DAVIS-2017 Annotations_unsupervised/480p.")
    p.add_argument("--pred", required=True, help="folder holding anno_0 .. anno_3")
    p.add_argument("--davis-root", required=True,
                   help="DAVIS-2017 folder with ImageSets/2017 and Annotations_unsupervised/480p")
    p.add_argument("--json", default=None, help="write all numbers to this JSON file")
    p.add_argument("--set", default="val", help="ImageSets/2017/<set>.txt (default val)")
    p.add_argument("--annotators", type=int, default=4, help="number of anno_<k> folders (default 4)")
    p.add_argument("--per-object", action="store_true", help="include per-object numbers in the JSON")
    p.set_defaults(func=_cmd_davis)

    p = sub.add_parser("a2d", help="A2D-/JHMDB-Sentences: P@K, overall/mean IoU, COCO segm mAP",
                       description="COCO RLE predictions [{image_id, segmentation, score}] against MTTR's "
                                   "COCO-format ground truth.")
    p.add_argument("--pred", required=True, help="predictions JSON (a list)")
    p.add_argument("--gt", required=True, help="COCO-format ground-truth JSON")
    p.add_argument("--json", default=None, help="write all numbers to this JSON file")
    p.set_defaults(func=_cmd_a2d)
    return parser
