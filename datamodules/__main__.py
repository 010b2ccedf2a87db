"""``python -m datamodules <command>``: dataset tools that need no training run.

``check``: build a data config's data module and load every sample of its splits (the classes,
the images per split, the data report's notes and warnings; ``datamodules.check``)::

    python -m datamodules check --config experiments/configs/data/yolo.yaml --data.source.root /my/yolo

``convert``: a detection dataset from one layout to another (COCO, PASCAL VOC, Ultralytics YOLO),
read with this package's readers and written as the target reader reads it by default; see
``datamodules.convert`` for the layouts and for what each conversion keeps and drops::

    python -m datamodules convert --from voc --to coco --src data/VOCdevkit --dst data/voc_coco
    python -m datamodules convert --from coco --to yolo --src data/coco --dst data/coco_yolo --split val

A user error (a missing file, a bad record, a name clash) is printed as one line naming the file,
exit status 2, as the experiments CLI does.
"""
from __future__ import annotations

import argparse
import sys

from core.errors import ConfigError, user_message


def _parser() -> argparse.ArgumentParser:
    from datamodules.convert import FORMATS, SPLITS

    parser = argparse.ArgumentParser(prog="python -m datamodules", description="convlab dataset tools")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="load every sample of a data config (python -m datamodules check --help)", add_help=False)
    convert = commands.add_parser("convert", help="convert a detection dataset between COCO, VOC and YOLO layouts",
                                  description="Convert a detection dataset between COCO, VOC and YOLO layouts (see datamodules/convert.py).")
    convert.add_argument("--from", dest="source_format", required=True, choices=FORMATS, help="the source's layout")
    convert.add_argument("--to", dest="target_format", required=True, choices=FORMATS, help="the layout to write")
    convert.add_argument("--src", required=True, help="the source dataset's root (COCO folder, VOCdevkit, YOLO folder)")
    convert.add_argument("--dst", required=True, help="the folder to write into")
    convert.add_argument("--split", dest="splits", action="append", choices=SPLITS,
                         help="a split to convert (repeat for several); default: train and val")
    convert.add_argument("--year", default="2007", help="VOC's VOC<year> folder, read or written (default 2007)")
    convert.add_argument("--voc-lists", default=None,
                         help="VOC list of each split, e.g. train=trainval,val=test (the default; test=test)")
    convert.add_argument("--on-bad-record", choices=("error", "skip"), default="error",
                         help="a bad source record stops the conversion (error) or is left out and counted (skip)")
    convert.add_argument("--copy", action="store_true", help="copy the images instead of hard-linking them")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["check"]:
        from datamodules.check import main as check_main

        return check_main(argv[1:])
    args = _parser().parse_args(argv)
    from datamodules.convert import convert, voc_lists_of

    try:
        reports = convert(
            args.source_format, args.target_format, args.src, args.dst, args.splits or ["train", "val"],
            year=args.year, voc_lists=None if args.voc_lists is None else voc_lists_of(args.voc_lists),
            on_bad_record=args.on_bad_record, copy=args.copy,
        )
    except ConfigError as error:  # DataNotFoundError, BadRecordError, ImageReadError, ...
        print(f"convlab: {user_message(error)}", file=sys.stderr)
        return 2
    for split, report in reports.items():
        dropped = ", ".join(f"{n} {what}" for what, n in sorted(report["dropped"].items()))
        print(f"convert {args.source_format} -> {args.target_format} {split}: {report['images']} images, {report['objects']} objects"
              f" -> {args.dst}" + (f" (left out: {dropped})" if dropped else "")
              + (f" ({report['rounded']} box(es) rounded to whole pixels)" if report["rounded"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
