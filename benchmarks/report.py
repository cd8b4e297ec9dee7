"""What every benchmark script does with its table: print it and, with ``--out``, save it."""

from __future__ import annotations

from pathlib import Path


def finish(lines: list[str], out: str | None) -> None:
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
