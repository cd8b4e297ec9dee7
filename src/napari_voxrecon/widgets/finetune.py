"""Fine-tuning from the Reconstruct widget: Sparse3Diff self-alignment on the stack in a layer.

This module holds the parts that do not touch napari layers: the worker body (a generator run
in a napari ``thread_worker``) and the choice of the folder the fine-tuned weights go to. The
buttons, progress bar and cancel live in ``reconstruct.py``.

The work itself is ``models.self_alignment.finetune_to_folder`` (the same function behind
``voxrecon finetune``), so a folder written from napari has exactly the config, model card and
atomic save of one written from the command line.
"""

from __future__ import annotations

import queue
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..engine.cancel import CancelToken
from ..engine.events import Notice
from ..errors import VoxreconError

#: (task, method) pairs whose weights can be self-aligned on a stack from the widget.
FINETUNE_METHODS = frozenset({("sparse", "sparse3diff")})
#: Where fine-tuned weights go unless the user picks another folder.
WEIGHTS_HOME = "voxrecon-weights"


@dataclass(frozen=True)
class FinetuneProgress:
    """One optimiser update of self-alignment is done (a record of ``self_align``)."""

    update: int
    total: int
    reference: int
    round: int
    loss: float


@dataclass(frozen=True)
class FinetuneDone:
    """Last event of a fine-tune that finished: the folder now holding the weights."""

    folder: str


def default_finetune_folder(layer_name: str, home: Path | None = None) -> Path:
    """``~/voxrecon-weights/<layer>-aligned``, numbered (``-2``, ``-3`` …) until it does not exist.

    A folder that does not exist yet, so a fine-tune never lands on earlier weights unasked.
    """
    root = (home if home is not None else Path.home()) / WEIGHTS_HOME
    # Layer names may hold anything ("cells3d [sparse 4]", "a/b"): keep a portable folder name.
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", layer_name).strip("-._") or "stack"
    candidate = root / f"{stem}-aligned"
    i = 2
    while candidate.exists():
        candidate = root / f"{stem}-aligned-{i}"
        i += 1
    return candidate


def check_finetune_folder(folder: str | Path, overwrite: bool) -> Path:
    """The folder as a Path, or a VoxreconError when writing there would destroy something."""
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise VoxreconError(f"{path} is a file; choose a folder for the fine-tuned weights.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise VoxreconError(
            f"{path} already holds files; choose a new folder (or confirm replacing its contents)."
        )
    return path


def finetune_events(
    data: Any,
    interval: int,
    folder: str,
    weights: str,
    device: str,
    token: CancelToken,
    *,
    overwrite: bool = False,
    source_name: str = "",
    **fit: Any,
) -> Iterator[Notice | FinetuneProgress | FinetuneDone]:
    """Worker body (runs in a thread; never touches napari): self-align, then save.

    ``fit`` goes to ``self_align`` (rounds, lr, steps, tile, seed). Cancelling ``token`` stops
    within one optimiser update and saves nothing.
    """
    from ..engine.device import resolve_device
    from ..io.volume import check_volume, squeeze_to_3d
    from ..models.self_alignment import finetune_to_folder

    # A copy (and a compute for lazy data): the layer may be edited while the model learns.
    stack = np.array(data, dtype=np.float32)
    if stack.ndim != 3:
        stack, _ = squeeze_to_3d(stack, None, "input")
    # Self-alignment needs a reference plane with an acquired neighbour on each side.
    check_volume(stack, "input", min_planes=3)
    resolved, notice = resolve_device(device)
    if notice:
        yield Notice(notice, "warning")
    token.raise_if_cancelled()

    def check_cancel() -> None:
        token.raise_if_cancelled()

    def job(on_progress: Callable[[dict], None]) -> str:
        # check_cancel runs after every update too (in on_progress): self_align itself looks
        # only once per reference plane, which is 2 samplings and n-1 updates apart.
        def progress(rec: dict) -> None:
            on_progress(rec)
            check_cancel()

        return finetune_to_folder(
            stack, interval, folder, weights, device=resolved, overwrite=overwrite, source_name=source_name,
            on_progress=progress, check_cancel=check_cancel, **fit,
        )

    for item in _iterate_callback(job, token):
        if isinstance(item, dict):
            yield FinetuneProgress(int(item["update"]), int(item["total"]), int(item["reference"]),
                                   int(item["round"]), float(item["loss"]))
        else:
            yield FinetuneDone(str(item))


def _iterate_callback(job: Callable[[Callable[[dict], None]], Any], token: CancelToken) -> Iterator[Any]:
    """Run ``job(on_progress)`` in a helper thread; yield each progress record, then its result.

    ``finetune_to_folder`` reports through a callback, and a generator cannot yield from inside
    a callback; running it beside the worker keeps it the single implementation of fine-tuning
    while the worker still streams progress to the GUI. Exceptions (JobCancelled included) are
    raised here, in the worker, so napari's ``errored`` signal carries them.
    """
    events: queue.Queue = queue.Queue()
    finished = object()

    def target() -> None:
        try:
            result = job(events.put)
        except BaseException as err:  # handed to the worker, which re-raises it
            events.put((finished, err, None))
        else:
            events.put((finished, None, result))

    thread = threading.Thread(target=target, name="voxrecon-finetune", daemon=True)
    thread.start()
    ended = False
    try:
        while True:
            item = events.get()  # the helper always ends with `finished`, cancelled or not
            if isinstance(item, tuple) and len(item) == 3 and item[0] is finished:
                ended = True
                _, err, result = item
                if err is not None:
                    raise err
                yield result
                return
            yield item
    finally:
        if not ended:
            # The worker was closed early (napari quitting): stop the helper at its next
            # update and wait for it, so no fine-tune outlives its worker.
            token.cancel()
        thread.join()
