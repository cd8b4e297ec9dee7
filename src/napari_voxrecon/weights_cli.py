"""``voxrecon weights list|pull|push|info``: manage model weights from the command line.

:func:`add_weights_parser` adds the ``weights`` command to the main parser's subparsers. Every
subcommand sets ``func(args) -> exit code``; problems are raised as :class:`VoxreconError`,
which the main CLI prints as one line before exiting with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import weights as W
from .errors import VoxreconError


def _human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover - loop always returns


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _cmd_list(args: argparse.Namespace) -> int:
    entries = W.list_weights()
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    if not entries:
        print(
            f"No weights found: nothing embedded and no napari-voxrecon repos in the Hugging Face cache "
            f"({W.hub_cache_dir()}). Fetch some with `voxrecon weights pull org/name`."
        )
        return 0
    rows = []
    for e in entries:
        status = "" if e.get("complete", True) else " (incomplete)"
        rows.append(
            [
                e["name"],
                e["source"] + status,
                str(e["method"]),
                str(e.get("task") or "-"),
                "yes" if e["default"] else "",
                _human_size(e.get("size")),
            ]
        )
    print(_table(rows, ["NAME", "SOURCE", "METHOD", "TASK", "DEFAULT", "SIZE"]))
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    folder = W.pull_weights(args.repo, progress=not args.quiet)
    config = W.read_config(folder)
    if not args.quiet:
        print(f"pulled {args.repo} (method {config['method']}, task {config['task']}) into the cache:", file=sys.stderr)
    print(folder)  # stdout: the path alone, for scripts
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    url = W.push_weights(args.folder, args.repo, private=args.private, revision=args.revision, commit_message=args.message)
    print(url)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    # --method is only needed for 'default'; for other specs it is checked when given.
    folder = W.resolve_weights(args.spec, args.method, progress=not args.quiet)
    info = W.describe_weights(folder)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"folder:     {info['path']}")
    print(f"tensors:    {info['tensors']}  parameters: {info['parameters']:,}  size: {_human_size(info['size'])}")
    print("config:")
    print(json.dumps(info["config"], indent=2, sort_keys=True))
    print("card:")
    print(info["card"].rstrip() if info["card"] else "(no README.md)")
    return 0


def add_weights_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``weights`` (with list/pull/push/info) to ``subparsers`` (from ``add_subparsers()``)."""
    p = subparsers.add_parser(
        "weights",
        help="list, pull, push or inspect model weights",
        description="Model weights are folders with model.safetensors + config.json (+ README.md): embedded in "
        "the package, local, or Hugging Face Hub repos (org/name[@revision]) kept in the HF cache "
        "(HF_HOME / HF_HUB_CACHE). Offline, Hub weights come from that cache.",
    )
    sub = p.add_subparsers(dest="weights_command", metavar="{list,pull,push,info}")
    sub.required = True

    q = sub.add_parser("list", help="embedded weights and those in the local Hugging Face cache (no network)")
    q.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    q.set_defaults(func=_cmd_list)

    q = sub.add_parser("pull", help="download Hub weights into the local cache (needs network)")
    q.add_argument("repo", metavar="REPO[@REV]", help="Hub repo id, e.g. org/name or org/name@v1")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress bar or messages")
    q.set_defaults(func=_cmd_pull)

    q = sub.add_parser("push", help="upload a weights folder to a Hub repo (needs network and a token)")
    q.add_argument("folder", metavar="FOLDER", help="weights folder (model.safetensors + config.json)")
    q.add_argument("repo", metavar="REPO", help="Hub repo id org/name (created if missing)")
    q.add_argument("--private", action="store_true", help="create the repo as private")
    q.add_argument("--revision", default=None, help="branch to push to (created if missing; default main)")
    q.add_argument("--message", default=None, help="commit message")
    q.set_defaults(func=_cmd_push)

    q = sub.add_parser("info", help="show the config and model card of weights")
    q.add_argument("spec", metavar="SPEC", help="'default', an embedded name, a local folder, or org/name[@rev]")
    q.add_argument("--method", default=None, help="method the weights must serve (required for 'default')")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.add_argument("-q", "--quiet", action="store_true", help="no download progress bar")
    q.set_defaults(func=_cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``weights`` alone (``python -m napari_voxrecon.weights_cli list``), mainly for debugging."""
    parser = argparse.ArgumentParser(prog="voxrecon")
    add_weights_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["weights", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args))
    except VoxreconError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
