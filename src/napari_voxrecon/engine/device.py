"""Device choice with the announced CPU fallback (the only fallback this package makes)."""

from __future__ import annotations

from ..errors import VoxreconError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(request: str = "auto") -> tuple[str, str | None]:
    """Return (device, notice). ``notice`` is a message to show when the request was not met."""
    request = (request or "auto").lower()
    if request not in DEVICES and not request.startswith("cuda:"):
        raise VoxreconError(f"--device: {request!r} is not one of {', '.join(DEVICES)}.")
    import torch

    has_mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if request == "auto":
        if torch.cuda.is_available():
            return "cuda", None
        if has_mps:
            return "mps", None
        return "cpu", None
    if request.startswith("cuda"):
        if torch.cuda.is_available():
            return request, None
        return "cpu", "CUDA was requested but no CUDA GPU is available: running on the CPU instead."
    if request == "mps":
        if has_mps:
            return "mps", None
        return "cpu", "Apple MPS was requested but is not available: running on the CPU instead."
    return "cpu", None


def is_out_of_memory(err: BaseException) -> bool:
    """True for a GPU out-of-memory error (the case that triggers the CPU fallback)."""
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()
