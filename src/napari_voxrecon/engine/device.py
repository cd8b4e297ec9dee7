"""Device choice with the announced CPU fallback (the only fallback this package makes)."""

from __future__ import annotations

from typing import Any

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


def device_for(method: Any, request: str = "auto") -> tuple[str, str | None]:
    """The device a job of ``method`` runs on (``"cpu"`` for methods without torch) and the
    fallback notice to show the user, if any (see ``resolve_device``)."""
    if not method.uses_torch:
        return "cpu", None
    return resolve_device(request)


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX). CPUs without it
    emulate bf16 and run it many times slower than fp32 (measured: docs/benchmarks.md)."""
    import torch

    cap = torch.backends.cpu.get_cpu_capability().upper()
    if "BF16" in cap or "AMX" in cap:
        return True
    try:  # torch names only the widest vector unit (e.g. "AVX512"); the kernel lists the rest
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(device: str, precision: str = "auto") -> bool:
    """Whether networks run under bf16 autocast: ``precision`` "bf16"/"fp32" decide; "auto"
    picks bf16 where it is fast (CUDA GPUs, CPUs with native bf16) and fp32 elsewhere."""
    if precision not in ("auto", "fp32", "bf16"):
        raise VoxreconError(f"precision: {precision!r} is not one of auto, fp32, bf16.")
    if precision != "auto":
        return precision == "bf16"
    return device.startswith("cuda") or (device == "cpu" and cpu_has_fast_bf16())


def is_out_of_memory(err: BaseException) -> bool:
    """True for a GPU out-of-memory error (the case that triggers the CPU fallback)."""
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()
