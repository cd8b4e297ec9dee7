"""Samplers: small pure functions over a denoiser callable (style of k-diffusion's sampling.py).

Every sampler takes

* ``denoise(x_t, t) -> x0_hat``: any model wrapped to predict clean data.  ``t`` is a tensor of
  shape (B,) with B = x_t.shape[0] (0-dim when x_t is 0-dim), values in [0, 1], float32
  (float64 when x_t is float64), on x_t's device.  Conditioning, classifier-free guidance
  (eq. 5, see :func:`cfg_combine`) and fixed guide slices live inside this callable.
* ``schedule``: anything with ``alpha_sigma(t)`` (:class:`VPSchedule`, :class:`FlowSchedule`);
  the update rules below are written for a general (alpha, sigma) path.
* ``x_T``: the starting state, drawn by the caller (``torch.randn(..., generator=g)`` for
  t_start = 1; a :func:`q_sample` of some data to start part-way, e.g. t_start = 0.5).
* ``n_steps`` or an explicit descending time grid ``t_grid`` (t_0 = t_start > ... > t_n = 0).

and returns the final x0 (the state at t = 0), in x_T's dtype.  Options shared by all:

* ``generator``: the only source of randomness (DDPM, DDIM with eta > 0); a CPU generator may
  drive a CUDA sample (noise is drawn on the generator's device and moved).
* ``callback(i, n_steps, x0_hat)``: called once per step, i = 0..n_steps-1, after the denoiser.
* ``should_stop()``: checked before every denoiser call.  When it returns True the sampler
  raises :class:`SamplingCancelled` (a :class:`~napari_voxrecon.errors.JobCancelled`, so the
  job engine already treats it as a user cancel).  Raising rather than returning None keeps
  the return type a Tensor, and a cancelled sample cannot be mistaken for a result.
* ``before_step(i, t, x) -> x``: optional hook that may replace the state before step i
  (e.g. MicroDiffusion's INR mixing of x_t; RePaint-style replacement of known voxels).

Step coefficients are computed once in float64 on the CPU from the grid; tensors only see
Python floats, so the samplers are device and dtype agnostic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from ..errors import JobCancelled
from .schedule import append_dims

__all__ = [
    "Denoiser",
    "GridKind",
    "SAMPLERS",
    "SamplingCancelled",
    "Schedule",
    "cfg_combine",
    "make_flow_denoiser",
    "make_v_denoiser",
    "sample",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "timesteps",
]

Denoiser = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[int, int, Tensor], Any]
StopFn = Callable[[], bool]
BeforeStep = Callable[[int, Tensor, Tensor], Tensor]
GridKind = Literal["uniform", "quadratic", "log_snr", "karras", "ddpm"]


class Schedule(Protocol):
    def alpha_sigma(self, t: Tensor | float) -> tuple[Tensor, Tensor]: ...
    def log_snr(self, t: Tensor | float) -> Tensor: ...
    def t_from_log_snr(self, log_snr: Tensor | float) -> Tensor: ...


class SamplingCancelled(JobCancelled):
    """``should_stop()`` returned True; the sampler stopped before its next denoiser call."""


# --------------------------------------------------------------------------------------
# model wrappers
# --------------------------------------------------------------------------------------


def make_v_denoiser(model_v: Callable[[Tensor, Tensor], Tensor], schedule: Schedule) -> Denoiser:
    """Turn a v-predicting ``model_v(x_t, t) -> v`` into ``denoise(x_t, t) -> x0_hat``.

    x0_hat = alpha * x_t - sigma * v_hat (inverse of eq. 4's V = alpha eps - sigma x0 on a VP
    schedule); at t = 1 with zero terminal SNR this is -v_hat.
    """

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        v = model_v(x_t, t)
        alpha, sigma = schedule.alpha_sigma(t)
        alpha = append_dims(alpha.to(device=x_t.device, dtype=v.dtype), x_t.ndim)
        sigma = append_dims(sigma.to(device=x_t.device, dtype=v.dtype), x_t.ndim)
        return alpha * x_t - sigma * v

    return denoise


def make_flow_denoiser(model_u: Callable[[Tensor, Tensor], Tensor]) -> Denoiser:
    """Flow matching (x_t = (1 - t) x0 + t eps, velocity u = eps - x0): x0_hat = x_t - t * u.

    Use with :class:`FlowSchedule`; DDIM then equals the Euler method on dx/dt = u.
    """

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        u = model_u(x_t, t)
        return x_t - append_dims(t.to(device=x_t.device, dtype=u.dtype), x_t.ndim) * u

    return denoise


def cfg_combine(v_cond: Tensor, v_uncond: Tensor, w: float) -> Tensor:
    """Classifier-free guidance, paper eq. 5: (1 + w) * pred_cond - w * pred_uncond.

    Eq. 5 is written for eps.  For a fixed x_t, eps, v and x0 predictions are affine images of
    each other with the same coefficients for both branches (eps = sigma x_t + alpha v,
    x0 = alpha x_t - sigma v), and (1 + w) - w = 1 keeps the x_t term unchanged, so combining
    v (or x0) with eq. 5 gives exactly the guided eps of eq. 5.  w = 0 is the conditional model.
    """
    return (1 + w) * v_cond - w * v_uncond


# --------------------------------------------------------------------------------------
# time grids
# --------------------------------------------------------------------------------------


def timesteps(
    n_steps: int,
    kind: GridKind = "uniform",
    *,
    schedule: Schedule | None = None,
    t_start: float = 1.0,
    log_snr_range: tuple[float, float] = (-6.0, 10.0),
    rho: float = 7.0,
) -> Tensor:
    """A descending time grid of n_steps + 1 points, t_start first and 0 last (float64, CPU).

    * ``"uniform"``:   t_i = t_start (1 - i/n).
    * ``"quadratic"``: t_i = t_start (1 - i/n)², denser near the data (Song et al. 2021, DDIM).
    * ``"log_snr"``:   the n - 1 interior points uniform in log-SNR (DPM-Solver, Lu et al.
      2022) between max(log_snr(t_start), lo) and hi, ``(lo, hi) = log_snr_range``.  The
      clipping is needed because log-SNR is -inf at t = 1 (zero terminal SNR) and +inf at
      t = 0; those end points stay in the grid and are handled exactly by the samplers.
    * ``"karras"``:    like "log_snr" but with the interior points spaced as in Karras et al.
      2022 (eq. 5, ρ = 7) in sigma_VE = sigma / alpha = exp(-log_snr / 2).
    * ``"ddpm"``:      points of the schedule's discrete training grid i / N ("trailing").
    """
    n = int(n_steps)
    if n < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if not 0.0 < t_start <= 1.0:
        raise ValueError(f"t_start must be in (0, 1], got {t_start}")
    frac = 1 - torch.arange(n + 1, dtype=torch.float64) / n
    if kind == "uniform":
        t = t_start * frac
    elif kind == "quadratic":
        t = t_start * frac**2
    elif kind in ("log_snr", "karras"):
        if schedule is None:
            raise ValueError(f"grid kind {kind!r} needs the schedule")
        lo, hi = float(log_snr_range[0]), float(log_snr_range[1])
        lam_start = float(schedule.log_snr(torch.tensor(t_start, dtype=torch.float64)))
        if lam_start >= hi:
            raise ValueError(f"log_snr(t_start) = {lam_start:.3g} is above log_snr_range[1]")
        if lam_start >= lo:
            # t_start itself is the first of n points uniform in log-SNR, then t = 0
            lam = _spaced(lam_start, hi, n, kind, rho)[1:]
        else:
            # t_start, then n - 1 points from lo to hi, then t = 0
            lam = _spaced(lo, hi, n - 1, kind, rho)
        inner = schedule.t_from_log_snr(lam).to(torch.float64)
        t = torch.cat([torch.tensor([t_start], dtype=torch.float64), inner,
                       torch.zeros(1, dtype=torch.float64)])
    elif kind == "ddpm":
        if schedule is None or not hasattr(schedule, "ddpm_timesteps"):
            raise ValueError("grid kind 'ddpm' needs a schedule with ddpm_timesteps (VPSchedule)")
        t = schedule.ddpm_timesteps(n, t_start=t_start)  # type: ignore[attr-defined]
    else:
        raise ValueError(
            f"unknown grid kind {kind!r}; use 'uniform', 'quadratic', 'log_snr', 'karras', 'ddpm'"
        )
    return t


def _spaced(lo: float, hi: float, m: int, kind: str, rho: float) -> Tensor:
    """m points (m >= 0) from lo to hi in log-SNR; uniform, or Karras-ρ in exp(-lam/2)."""
    if m <= 0:
        return torch.zeros(0, dtype=torch.float64)
    if m == 1:
        return torch.tensor([lo], dtype=torch.float64)
    r = torch.linspace(0, 1, m, dtype=torch.float64)
    if kind == "log_snr":
        return lo + (hi - lo) * r
    s_max, s_min = math.exp(-lo / 2), math.exp(-hi / 2)  # sigma_VE = exp(-log_snr / 2)
    sig = (s_max ** (1 / rho) + r * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    return -2 * torch.log(sig)


# --------------------------------------------------------------------------------------
# shared plumbing
# --------------------------------------------------------------------------------------


def _grid(
    schedule: Schedule, n_steps: int | None, t_grid: Tensor | None, kind: GridKind,
    t_start: float, default_n: int,
) -> tuple[list[float], list[float], list[float]]:
    """(t, alpha, sigma) of the grid as Python floats (computed in float64 on the CPU)."""
    if t_grid is None:
        n = default_n if n_steps is None else n_steps
        grid = timesteps(n, kind, schedule=schedule, t_start=t_start)
    else:
        grid = torch.as_tensor(t_grid).detach().to("cpu", torch.float64).flatten()
        if n_steps is not None and n_steps != grid.numel() - 1:
            raise ValueError(f"n_steps={n_steps} but t_grid has {grid.numel() - 1} steps")
    if grid.numel() < 2:
        raise ValueError("the time grid needs at least two points")
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError("the time grid must be strictly decreasing")
    if float(grid[0]) > 1.0 or float(grid[-1]) != 0.0:
        raise ValueError("the time grid must lie in [0, 1] and end at t = 0")
    alpha, sigma = schedule.alpha_sigma(grid)
    return grid.tolist(), alpha.to(torch.float64).tolist(), sigma.to(torch.float64).tolist()


def _t_like(t: float, x: Tensor) -> Tensor:
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if x.ndim == 0:
        return torch.tensor(t, dtype=dtype, device=x.device)
    return torch.full((x.shape[0],), t, dtype=dtype, device=x.device)


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    if generator is None:
        return torch.randn_like(x)
    z = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return z.to(x.device)


def _step_start(
    i: int, t: float, x: Tensor, should_stop: StopFn | None, before_step: BeforeStep | None,
) -> Tensor:
    if should_stop is not None and should_stop():
        raise SamplingCancelled(f"sampling cancelled before step {i + 1}")
    if before_step is not None:
        x = before_step(i, _t_like(t, x), x)
    return x


def _half_log_snr(alpha: float, sigma: float) -> float:
    """DPM-Solver's λ = log(alpha / sigma), with the limits -inf (alpha = 0), +inf (sigma = 0)."""
    if alpha <= 0.0:
        return -math.inf
    if sigma <= 0.0:
        return math.inf
    return math.log(alpha) - math.log(sigma)


# --------------------------------------------------------------------------------------
# samplers
# --------------------------------------------------------------------------------------


@torch.no_grad()
def sample_ddpm(
    denoise: Denoiser,
    schedule: Schedule,
    x_T: Tensor,
    n_steps: int | None = None,
    *,
    t_grid: Tensor | None = None,
    grid: GridKind | None = None,
    t_start: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    should_stop: StopFn | None = None,
    before_step: BeforeStep | None = None,
) -> Tensor:
    """Ancestral sampling (Ho et al. 2020, Alg. 2; the reverse process of eq. 2).

    Default grid: every step of the schedule's N-step training grid (``grid="ddpm"``,
    N = 1000) or, with n_steps < N, its trailing subset.  Step t_c -> t_n samples the
    posterior q(x_n | x_c, x0 = x0_hat):  with a = alpha_c / alpha_n and
    s² = sigma_c² - a² sigma_n² (= β of the step for VP, eq. 1),

        mean = a sigma_n² / sigma_c² · x_c + alpha_n s² / sigma_c² · x0_hat,
        var  = s² sigma_n² / sigma_c²          (Ho et al. 2020, eqs. 6-7).

    From t = 1 under zero terminal SNR (alpha_c = 0) this is x_n = alpha_n x0_hat + sigma_n z;
    the last step (sigma_n = 0) returns x0_hat and draws no noise.
    """
    if grid is None:
        grid = "ddpm" if hasattr(schedule, "ddpm_timesteps") else "uniform"
    default_n = getattr(schedule, "n_train_steps", 1000)
    if grid == "ddpm" and t_grid is None and n_steps is None:
        default_n = int(round(t_start * default_n))
    ts, al, sg = _grid(schedule, n_steps, t_grid, grid, t_start, default_n)
    n = len(ts) - 1
    x = x_T
    for i in range(n):
        x = _step_start(i, ts[i], x, should_stop, before_step)
        x0 = denoise(x, _t_like(ts[i], x))
        if callback is not None:
            callback(i, n, x0)
        a_c, s_c, a_n, s_n = al[i], sg[i], al[i + 1], sg[i + 1]
        a = a_c / a_n
        s2 = max(s_c * s_c - a * a * s_n * s_n, 0.0)
        c_x = a * s_n * s_n / (s_c * s_c)
        c_0 = a_n * s2 / (s_c * s_c)
        var = s2 * s_n * s_n / (s_c * s_c)
        x = c_x * x + c_0 * x0
        if var > 0.0:
            x = x + math.sqrt(var) * _randn_like(x, generator)
    return x


@torch.no_grad()
def sample_ddim(
    denoise: Denoiser,
    schedule: Schedule,
    x_T: Tensor,
    n_steps: int | None = None,
    *,
    eta: float = 0.0,
    t_grid: Tensor | None = None,
    grid: GridKind = "uniform",
    t_start: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    should_stop: StopFn | None = None,
    before_step: BeforeStep | None = None,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12), deterministic for eta = 0.

        eps_hat = (x_c - alpha_c x0_hat) / sigma_c
        x_n = alpha_n x0_hat + sqrt(sigma_n² - s_eta²) eps_hat + s_eta z,
        s_eta² = eta² · (DDPM posterior variance of the step, see :func:`sample_ddpm`).

    eta = 1 is ancestral DDPM on the same grid (same draws from the same generator).  For
    eta = 0 it is the first-order exponential integrator of the probability-flow ODE, i.e.
    DPM-Solver-1 (Lu et al. 2022); on :class:`FlowSchedule` it is the Euler method.
    """
    ts, al, sg = _grid(schedule, n_steps, t_grid, grid, t_start, 50)
    n = len(ts) - 1
    x = x_T
    for i in range(n):
        x = _step_start(i, ts[i], x, should_stop, before_step)
        x0 = denoise(x, _t_like(ts[i], x))
        if callback is not None:
            callback(i, n, x0)
        a_c, s_c, a_n, s_n = al[i], sg[i], al[i + 1], sg[i + 1]
        a = a_c / a_n
        var_post = max(s_c * s_c - a * a * s_n * s_n, 0.0) * s_n * s_n / (s_c * s_c)
        s_eta2 = eta * eta * var_post
        c_x = math.sqrt(max(s_n * s_n - s_eta2, 0.0)) / s_c  # coefficient of eps_hat / sigma_c
        x = c_x * x + (a_n - c_x * a_c) * x0
        if s_eta2 > 0.0:
            x = x + math.sqrt(s_eta2) * _randn_like(x, generator)
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoise: Denoiser,
    schedule: Schedule,
    x_T: Tensor,
    n_steps: int | None = None,
    *,
    t_grid: Tensor | None = None,
    grid: GridKind = "log_snr",
    t_start: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    should_stop: StopFn | None = None,
    before_step: BeforeStep | None = None,
) -> Tensor:
    """DPM-Solver++(2M), data-prediction multistep form (Lu et al. 2022, "DPM-Solver++", Alg. 2).

    With λ = log(alpha / sigma) and h_i = λ_n - λ_c (λ_n of the step's target time),

        x_n = (sigma_n / sigma_c) x_c - alpha_n (e^{-h_i} - 1) D_i,
        D_i = (1 + 1 / (2 r_i)) x0_i - 1 / (2 r_i) x0_{i-1},   r_i = h_{i-1} / h_i,

    and D_i = x0_i (first order, = DDIM) for the first step.  ``generator`` is unused (the
    sampler is deterministic); it is accepted so every sampler has the same signature.

    Zero terminal SNR: the grid starts at t = 1 itself, where alpha = 0 and λ = -inf, and the
    formulas are taken in their limits instead of moving t_start below 1:
      * step 0 (λ_c = -inf, h = +inf, e^{-h} = 0): x_1 = sigma_1 x_T + alpha_1 x0_hat, i.e. the
        exact first-order step from pure noise (eps_hat = x_T);
      * step 1: r = h_0 / h_1 = +inf, so the multistep correction 1/(2r) vanishes and D = x0_1;
        the second-order update starts at step 2;
      * the last step to t = 0 (sigma_n = 0, λ_n = +inf) returns D = x0_hat, first order, as
        in k-diffusion's sample_dpmpp_2m.
    """
    ts, al, sg = _grid(schedule, n_steps, t_grid, grid, t_start, 20)
    n = len(ts) - 1
    lam = [_half_log_snr(a, s) for a, s in zip(al, sg)]
    x = x_T
    x0_prev: Tensor | None = None
    h_prev = math.nan
    for i in range(n):
        x = _step_start(i, ts[i], x, should_stop, before_step)
        x0 = denoise(x, _t_like(ts[i], x))
        if callback is not None:
            callback(i, n, x0)
        s_c, a_n, s_n = sg[i], al[i + 1], sg[i + 1]
        h = lam[i + 1] - lam[i]
        if x0_prev is None or not math.isfinite(h_prev) or not math.isfinite(h):
            d = x0
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        # alpha_n (1 - e^{-h}), with expm1 for accuracy at small h; e^{-inf} = 0
        c_d = a_n * (-math.expm1(-h)) if math.isfinite(h) else a_n
        x = (s_n / s_c) * x + c_d * d
        x0_prev, h_prev = x0, h
    return x


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp_2m": sample_dpmpp_2m,
}


def sample(
    name: str,
    denoise: Denoiser,
    schedule: Schedule,
    x_T: Tensor,
    n_steps: int | None = None,
    **kwargs: Any,
) -> Tensor:
    """Run the sampler registered under ``name`` (see :data:`SAMPLERS`).

    ``n_steps=None`` uses that sampler's default (ddpm: all N training steps, ddim: 50,
    dpmpp_2m: 20); other keyword arguments are passed through.
    """
    try:
        fn = SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose from {sorted(SAMPLERS)}") from None
    if n_steps is not None:
        kwargs["n_steps"] = n_steps
    return fn(denoise, schedule, x_T, **kwargs)
