"""``hfai-runtime synth-coco DIR``: write a small synthetic dataset in COCO's layout."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth-coco",
        help="write a small synthetic COCO-layout dataset (train2017/, val2017/, annotations/)",
    )
    parser.add_argument("root", help="folder to create, e.g. datasets/coco")
    parser.add_argument("--train", type=int, default=24, help="training images (default 24)")
    parser.add_argument("--val", type=int, default=8, help="validation images (default 8)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument(
        "--coco-categories",
        action="store_true",
        help="list COCO's 80 categories, so detectron2's builtin coco_2017_* names load it",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hfai_runtime.synthetic import DEFAULT_CATEGORIES, coco_thing_categories, make_coco_tree

    categories = coco_thing_categories() if args.coco_categories else DEFAULT_CATEGORIES
    root = make_coco_tree(
        args.root, num_train=args.train, num_val=args.val, categories=categories, image_size=args.size
    )
    print(f"wrote {args.train} + {args.val} images and their annotations under {root}")
    return 0
