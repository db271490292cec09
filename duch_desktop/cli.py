"""``duch``: index a folder of tiles, then search it by text or image from the command line.

Indexes live outside the imagery folder, in ``<user data dir>/duch-desktop/indexes/<name>-<hash>``
(``platformdirs.user_data_dir``; e.g. ``~/.local/share/duch-desktop/indexes`` on Linux) unless
``--index-dir`` is given. Query commands take ``--index-dir D`` or ``--folder F``; with neither
they use the most recently indexed folder.

Exit codes: 0 ok; 2 a problem the user can fix (one line on stderr); 1 an unexpected error
(one line; the traceback with ``--debug``); 130 indexing cancelled with Ctrl-C (resumable).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import traceback
from dataclasses import asdict
from pathlib import Path

from .core.archive import export
from .core.files import display_path
from .cli_jobs import run_job
from .core.jobs import Cancelled, UserError
from .core.imagery.chips import window_text
from .core.model import runtime
from .core.imagery.budget import DECODE_SECONDS, MAX_DECODE_BYTES

OUTPUTS = ("json", "csv", "geojson")
SHOWN_SKIPPED = 20  # skipped paths listed after an indexing run; `duch info --errors` lists all


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # noqa: D102 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def _whole_number(minimum: int):
    """argparse type: a whole number of at least ``minimum``, else a one-line usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {minimum}, got {text!r}")
        return value

    return parse


_positive = _whole_number(1)
_non_negative = _whole_number(0)


def _non_negative_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``duch`` argument parser (research subcommands are added when installed)."""
    debug = _Parser(add_help=False)
    # SUPPRESS: a subcommand's missing --debug must not reset one given before the subcommand.
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of unexpected errors")
    where = _Parser(add_help=False, parents=[debug])
    group = where.add_mutually_exclusive_group()
    group.add_argument("--index-dir", type=Path, help="index directory (default: the folder's index in the user data dir)")
    group.add_argument("--folder", type=Path, help="the indexed folder (its default index is used)")
    where.add_argument("--model", type=Path, help="hashing model bundle (default: the one the index was built with)")
    where.add_argument("--runtime", choices=runtime.RUNTIMES, help=runtime.HELP)
    out = _Parser(add_help=False)
    fmt = out.add_mutually_exclusive_group()
    for name in OUTPUTS:
        fmt.add_argument(f"--{name}", dest="output", action="store_const", const=name, help=f"print {name.upper()}")

    parser = _Parser(prog="duch", description="Offline text-to-image search over a folder of satellite tiles.")
    parser.add_argument("--debug", action="store_true", default=False, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("index", parents=[debug], help="index (or update the index of) a folder of tiles")
    p.add_argument("folder", type=Path, metavar="FOLDER", nargs="?",
                   help="folder of tiles (omit with --demo)")
    p.add_argument("--demo", action="store_true", help="index the bundled demo folder (resources/demo)")
    p.add_argument("--index-dir", type=Path, help="where to keep the index (default: the user data dir)")
    p.add_argument("--model", type=Path, help="hashing model bundle (default: the shipped model)")
    p.add_argument("--bands", help="1-based bands shown as red,green,blue, e.g. 4,3,2 (default: the first three)")
    p.add_argument("--stretch", choices=("auto", "percentile", "none"), help="contrast stretch (default: auto)")
    p.add_argument("--chip", type=_non_negative, metavar="PX",
                   help="cut rasters larger than PX x PX pixels into chips searched on their own "
                        "(0: off; default: as the index was built, else off)")
    p.add_argument("--chip-m", type=_non_negative_number, metavar="M",
                   help="chip size in metres where the ground pixel size is known (resampled to the model's "
                        "resolution); other rasters use --chip, default 256 (0: off)")
    p.add_argument("--overlap", type=_non_negative_number, metavar="N",
                   help="overlap of neighbouring chips: pixels, or metres with --chip-m (default 0)")
    p.add_argument("--follow-symlinks", action="store_true", help="also follow links leading outside the folder")
    p.add_argument("--captions", type=Path, help="captions to search with `duch captions` (CSV file,caption or JSON)")
    p.add_argument("--workers", type=_non_negative, help="decoding processes (default: 2, or 1 on machines with 2 cores or fewer; 0 counts as 1)")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="decode and encode on a Ray cluster (needs duch-desktop[ray]): local (start Ray on this "
                        "machine), auto (the cluster this machine belongs to), ray://HOST:PORT or HOST:PORT; "
                        "the imagery must be at the same path on every node")
    p.add_argument("--ray-workers", type=_positive, metavar="N",
                   help="Ray encoding workers (default: one per GPU of the cluster, else one per 2 CPUs)")
    p.add_argument("--max-decode-gb", type=_non_negative_number, metavar="GB", default=MAX_DECODE_BYTES / 1e9,
                   help="refuse files whose read would decode to more than GB gigabytes of pixels, checked from "
                        "the header before decoding (default %(default)g; 0: no limit)")
    p.add_argument("--decode-timeout", type=_non_negative_number, metavar="S", default=DECODE_SECONDS,
                   help="stop decoding a file after S seconds and record it as unreadable (default %(default)g; "
                        "0: no limit)")
    p.add_argument("--batch-size", type=_positive, default=32, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--runtime", choices=runtime.RUNTIMES, help=runtime.HELP)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", parents=[where, out], help="find tiles matching a description")
    p.add_argument("text", metavar="TEXT")
    p.add_argument("-k", type=_positive, default=20, help="number of results (default 20)")
    p.add_argument("--radius", type=_non_negative, help="only results within this Hamming distance")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("similar", parents=[where, out], help="find tiles that look like an image or an indexed tile")
    p.add_argument("image", metavar="IMAGE_OR_TILE_ID")
    p.add_argument("-k", type=_positive, default=20, help="number of results (default 20)")
    p.add_argument("--radius", type=_non_negative, help="only results within this Hamming distance")
    p.set_defaults(func=cmd_similar)

    p = sub.add_parser("captions", parents=[where], help="suggest captions for an image or an indexed tile")
    p.add_argument("image", metavar="IMAGE_OR_TILE_ID")
    p.add_argument("-k", type=_positive, default=10, help="number of captions (default 10)")
    p.add_argument("--json", dest="output", action="store_const", const="json", help="print JSON")
    p.set_defaults(func=cmd_captions)

    p = sub.add_parser("info", parents=[where], help="show what an index holds")
    p.add_argument("--errors", action="store_true", help="list the files that could not be read")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    try:
        from . import cli_research
    except ImportError:  # research commands are optional (not part of a desktop-only install)
        cli_research = None
    if cli_research is not None:
        cli_research.register(sub)
    return parser


# --------------------------------------------------------------------------- commands

def cmd_index(args) -> int:
    """``duch index FOLDER``: create or update the folder's index with a progress bar."""
    from .core.imagery import reading as imagery
    from .core.model.defaults import default_index_dir
    from .core.archive.archive import Archive

    if args.demo:
        from .core.model.defaults import demo_dir

        args.folder = demo_dir()
    elif args.folder is None:
        raise UserError("give a FOLDER to index (or --demo for the bundled demo folder)")
    folder = Path(os.path.abspath(args.folder))
    if not folder.is_dir():
        raise UserError(f"folder not found: {display_path(args.folder)}")
    try:
        bands = imagery.parse_bands(args.bands)
    except ValueError as e:
        raise UserError(str(e)) from e
    if args.ray is not None:  # before the index folder is created
        from .core.archive.distributed import check_address, require_ray

        require_ray()
        check_address(args.ray)
    index_dir = args.index_dir or default_index_dir(folder)
    archive = Archive.open(index_dir, model=args.model, create_root=folder, runtime=args.runtime)
    try:
        job = archive.index(bands=bands, follow_symlinks=args.follow_symlinks, batch_size=args.batch_size,
                            workers=args.workers, captions_file=args.captions, stretch=args.stretch,
                            chip=args.chip, overlap=args.overlap, chip_m=args.chip_m, ray=args.ray,
                            ray_workers=args.ray_workers, max_decode_bytes=args.max_decode_gb * 1e9 or None,
                            decode_seconds=args.decode_timeout or None)
        # Ray prints its cluster's notes (a worker died and was restarted...) on stdout: keep stdout for the report.
        stdout_guard = contextlib.redirect_stdout(sys.stderr) if args.ray else contextlib.nullcontext()
        try:
            with stdout_guard:
                report = run_job(job)
        except Cancelled:  # the finished batches are committed: the index is consistent
            print(f"cancelled; {archive.stats().tiles} tiles indexed, run again to resume", file=sys.stderr)
            return 130
    finally:
        archive.close()
    if args.json:
        print(json.dumps({**asdict(report), "index_dir": str(archive.index_dir)}, indent=2))
    else:
        errors = f"{report.errors} unreadable (see `duch info --errors`)" if report.errors else "0 unreadable"
        chips = f"{report.chips} chips read ({report.nodata} without data), " if report.chips else ""
        skipped = f", {len(report.skipped)} skipped" if report.skipped else ""
        print(f"{report.added} added, {report.updated} updated, {report.moved} moved, {report.removed} removed, "
              f"{report.unchanged} unchanged, {chips}{errors}{skipped} in {report.seconds:.1f} s")
        for rel, reason in report.skipped[:SHOWN_SKIPPED]:
            print(f"skipped {display_path(rel)}: {reason}")
        if len(report.skipped) > SHOWN_SKIPPED:
            print(f"... and {len(report.skipped) - SHOWN_SKIPPED} more skipped (see `duch info --errors`)")
        print(f"index: {archive.index_dir}")
    return 0


def cmd_search(args) -> int:
    """``duch search TEXT``: ranked tiles for a typed description."""
    with _open_archive(args) as archive:
        hits = archive.search_text(args.text, k=args.k, radius=args.radius)
        note = archive.query_note(args.text)
        if note:
            print(f"duch: note: {note}", file=sys.stderr)
        _print_hits(hits, args.output, args.text)
    return 0


def cmd_similar(args) -> int:
    """``duch similar IMAGE_OR_TILE_ID``: ranked tiles that look like the query."""
    with _open_archive(args) as archive:
        _print_hits(archive.similar(_image_arg(args.image), k=args.k, radius=args.radius), args.output)
    return 0


def cmd_captions(args) -> int:
    """``duch captions IMAGE_OR_TILE_ID``: captions of the caption archive nearest to the image."""
    with _open_archive(args) as archive:
        hits = archive.captions_for(_image_arg(args.image), k=args.k)
        if not hits and archive.stats().captions == 0:
            print("this index has no captions: pass --captions FILE to `duch index`", file=sys.stderr)
    if args.output == "json":
        print(json.dumps([{"rank": r, **asdict(h)} for r, h in enumerate(hits, 1)], indent=2))
    else:
        for r, h in enumerate(hits, 1):
            print(f"{r:>4}  {h.distance:>4}  {h.text}  [{h.source}]")
    return 0


def cmd_info(args) -> int:
    """``duch info``: counts, model, options and (with --errors) the unreadable files."""
    with _open_archive(args) as archive:
        stats, errors = archive.stats(), archive.errors() if args.errors else None
        skipped = archive.skipped() if args.errors else []
        on = archive.describe_runtime()  # for this index's encoders, as loading them would (nothing loads)
    cut = stats.chip_options
    stats = {**stats.to_dict(), "runtime": on}
    if args.json:
        listed = ({"error_files": [list(e) for e in errors], "skipped_paths": [list(e) for e in skipped]}
                  if args.errors else {})
        print(json.dumps({**stats, **listed}, indent=2))
        return 0
    for key, value in stats.items():
        if key == "chip_options":
            value = cut.describe() if cut else "off (every file is one tile)"
        print(f"{key:>17}: {value}")
    for rel, reason in errors or []:
        print(f"{display_path(rel)}: {reason}")
    for rel, reason in skipped:
        print(f"{display_path(rel)}: skipped, {reason.removeprefix('skipped: ')}")
    return 0


# --------------------------------------------------------------------------- helpers

def _open_archive(args):
    from .core.model.defaults import default_index_dir, known_index_dirs
    from .core.archive.archive import Archive

    if args.index_dir is not None:
        index_dir = args.index_dir
    elif args.folder is not None:
        if not args.folder.is_dir():
            raise UserError(f"folder not found: {display_path(args.folder)}")
        index_dir = default_index_dir(args.folder)
        if not index_dir.is_dir():
            raise UserError(f"{display_path(args.folder)} is not indexed yet: run `duch index {display_path(args.folder)}` first")
    else:
        known = known_index_dirs()
        if not known:
            raise UserError("no index yet: run `duch index FOLDER` first")
        index_dir = known[0]
    return Archive.open(index_dir, model=args.model, runtime=args.runtime)


def _image_arg(text: str):
    """A tile id (digits that are not also a file name) or an image path."""
    if text.isdigit() and not Path(text).exists():
        return int(text)
    path = Path(text)
    if not path.is_file():
        raise UserError(f"image not found: {display_path(text)}")
    return path


def _print_hits(hits, output: str | None, query: str | None = None) -> None:
    if output == "json":
        print(json.dumps([{"rank": h.rank, "tile_id": h.tile_id, "distance": h.distance, "path": os.fspath(h.path),
                           "rel": h.rel, "footprint": h.footprint, "window": _listed(h.window),
                           "scene_size": _listed(h.scene_size)} for h in hits], indent=2))
    elif output == "csv":
        sys.stdout.write(export.csv_text(hits))
    elif output == "geojson":
        sys.stdout.write(export.geojson_text(hits, query))
    else:
        if not hits:
            print("no results", file=sys.stderr)
            return
        print(f"{'rank':>4}  {'dist':>4}  path")
        for h in hits:
            where = f"  [{window_text(h.window)}]" if h.window else ""
            print(f"{h.rank:>4}  {h.distance:>4}  {display_path(h.path)}{where}")


def _listed(value):
    return list(value) if value is not None else None


def main(argv: list[str] | None = None) -> int:
    """Run ``duch`` with ``argv`` (default: the command line); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage errors and --help: return the code instead of leaving the process
        return e.code if isinstance(e.code, int) else 2
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    _show_core_notes()
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError) as e:
        print(f"duch: {_one_line(e)}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("duch: cancelled", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI's last line of defence: one line, not a traceback
        if args.debug:
            traceback.print_exc()
        print(f"duch: unexpected error: {type(e).__name__}: {_one_line(e)} (run with --debug for details)",
              file=sys.stderr)
        return 1


class _Stderr(logging.Handler):
    """Notes of the core (e.g. the runtime falling back to torch) as ``duch: ...`` lines on the stderr of now."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"duch: {record.getMessage()}", file=sys.stderr)


def _show_core_notes() -> None:
    log = logging.getLogger("duch_desktop")
    if not any(isinstance(h, _Stderr) for h in log.handlers):
        log.addHandler(_Stderr())
        log.setLevel(logging.INFO)
        log.propagate = False


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
