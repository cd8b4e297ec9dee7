"""Build a model from a weights folder (embedded, local or Hub), cached once per process."""

from __future__ import annotations

from typing import Any, Callable

_CACHE: dict[tuple[str, str, str], Any] = {}  # (method, weights spec + file time, device)
_LOADS = 0  # weights files read into a model in this process (the dask runner's tests count them)

#: method name -> function(state_dict, config, device) -> model object
BUILDERS: dict[str, Callable[[dict, dict, str], Any]] = {}


def load_model(method: str, spec: str | None, device: str = "cpu", cached: bool = True) -> Any:
    """The model of ``method`` from weights ``spec`` on ``device``; loaded once per process
    (and per worker, for the dask runner), not once per job or chunk. ``cached=False`` gives a
    private copy (for fine-tuning, which changes the weights)."""
    from pathlib import Path

    from .. import methods  # noqa: F401  (registers the builders of the learned methods)
    from ..weights import load_weights

    local = Path(spec) / "model.safetensors" if spec else None
    # A local folder can be rewritten (fine-tuning with overwrite): its file time is in the key.
    stamp = str(local.stat().st_mtime_ns) if local is not None and local.is_file() else ""
    key = (method, f"{spec or 'default'}:{stamp}", device)
    if not cached:
        state, config, folder = load_weights(spec, method, device="cpu")
        model = BUILDERS[method](state, config, device)
        model.weights_folder, model.config = folder, config
        return model
    global _LOADS
    if key not in _CACHE:
        _LOADS += 1
        state, config, folder = load_weights(spec, method, device="cpu")
        model = BUILDERS[method](state, config, device)
        model.weights_folder, model.config = folder, config
        _CACHE[key] = model
    return _CACHE[key]


def load_count() -> int:
    """How many times this process has built a model from weights (cached loads excluded)."""
    return _LOADS


def clear_cache() -> None:
    _CACHE.clear()
