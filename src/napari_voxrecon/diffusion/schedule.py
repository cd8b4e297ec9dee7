"""Noise schedules in continuous time and the v-parameterisation.

Notation (Sparse3Diff, paper 000, section 2.2; Ho et al. 2020; Salimans & Ho 2022):

* ``t`` in [0, 1]: t = 0 is clean data, t = 1 the noisiest level.  A discrete DDPM step
  i in {0, ..., N} (N = ``n_train_steps``, 1000 by default) is the time t = i / N.
* ``alpha = sqrt(ᾱ_t)`` and ``sigma = sqrt(1 - ᾱ_t)``, so that the forward process (the
  marginal of eq. 1 after t steps) is ``x_t = alpha * x0 + sigma * eps``, eps ~ N(0, I).
  The paper writes ᾱ_t as α_t in eq. 4.  For a variance-preserving (VP) schedule
  alpha² + sigma² = 1.
* ``log_snr = log(alpha² / sigma²)`` (the full log signal-to-noise ratio).  DPM-Solver's λ is
  half of it: λ = log(alpha / sigma).
* v-parameterisation (Salimans & Ho 2022; paper eq. 4):  v = alpha * eps - sigma * x0.

Everything is plain torch and works in the dtype / on the device of the ``t`` it is given.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "FlowSchedule",
    "LossWeightKind",
    "ScheduleKind",
    "VPSchedule",
    "append_dims",
    "eps_from_v",
    "loss_weight",
    "q_sample",
    "v_target",
    "x0_from_v",
]

ScheduleKind = Literal["cosine", "linear"]
LossWeightKind = Literal["v", "eps", "x0", "min_snr"]

_Coef = Tensor | float


# --------------------------------------------------------------------------------------
# broadcasting helpers
# --------------------------------------------------------------------------------------


def append_dims(c: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims to ``c`` until it has ``ndim`` dims.

    A per-sample coefficient of shape (B,) then broadcasts against a batch (B, C, D, H, W);
    a 0-dim coefficient is returned as it is.
    """
    if c.ndim == 0 or c.ndim >= ndim:
        return c
    return c.reshape(c.shape + (1,) * (ndim - c.ndim))


def _coef_like(c: _Coef, x: Tensor) -> Tensor | float:
    """Python floats pass through; tensors go to x's device/dtype and gain trailing dims."""
    if not isinstance(c, Tensor):
        return float(c)
    dtype = x.dtype if x.is_floating_point() else c.dtype
    return append_dims(c.to(device=x.device, dtype=dtype), x.ndim)


def _as_time(t: Tensor | float) -> Tensor:
    t = torch.as_tensor(t)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t


# --------------------------------------------------------------------------------------
# v-parameterisation (all broadcast a per-sample alpha, sigma of shape (B,) over (B, ...))
# --------------------------------------------------------------------------------------


def q_sample(x0: Tensor, eps: Tensor, alpha: _Coef, sigma: _Coef) -> Tensor:
    """Forward process marginal: x_t = alpha * x0 + sigma * eps (closed form of eq. 1)."""
    return _coef_like(alpha, x0) * x0 + _coef_like(sigma, x0) * eps


def v_target(x0: Tensor, eps: Tensor, alpha: _Coef, sigma: _Coef) -> Tensor:
    """The v-loss target of eq. 4: V = sqrt(ᾱ_t) eps - sqrt(1 - ᾱ_t) X0 (alpha eps - sigma x0)."""
    return _coef_like(alpha, x0) * eps - _coef_like(sigma, x0) * x0


def x0_from_v(x_t: Tensor, v: Tensor, alpha: _Coef, sigma: _Coef) -> Tensor:
    """x0 = alpha * x_t - sigma * v.

    Exact for a VP schedule: alpha*(alpha x0 + sigma eps) - sigma*(alpha eps - sigma x0)
    = (alpha² + sigma²) x0 = x0.  At zero terminal SNR (alpha = 0, sigma = 1) it is x0 = -v,
    which is why v-prediction can be used at t = 1 while eps-prediction cannot.
    """
    return _coef_like(alpha, x_t) * x_t - _coef_like(sigma, x_t) * v


def eps_from_v(x_t: Tensor, v: Tensor, alpha: _Coef, sigma: _Coef) -> Tensor:
    """eps = sigma * x_t + alpha * v (VP schedule; same algebra as :func:`x0_from_v`)."""
    return _coef_like(sigma, x_t) * x_t + _coef_like(alpha, x_t) * v


# --------------------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------------------


class VPSchedule:
    """Variance-preserving schedule in continuous time t ∈ [0, 1].

    Raw schedules (before the zero-terminal-SNR rescale), written with a = sqrt(ᾱ):

    * ``"cosine"`` (Nichol & Dhariwal 2021, eq. 17):
      ᾱ(t) = f(t) / f(0),  f(t) = cos²(u(t)),  u(t) = (t + s) / (1 + s) · π/2,  s = 0.008,
      so a_raw(t) = cos u(t) / cos u(0).  It already reaches a_raw(1) = cos(π/2) = 0, so the
      rescale below changes it by ~1e-16; the discrete version of that paper clips β at 0.999
      instead.  ``zero_terminal_snr=False`` therefore makes no difference for "cosine".
    * ``"linear"`` (Ho et al. 2020): β_i = linspace(β_start, β_end, N).  Its continuous-time
      version (Song et al. 2021, VP-SDE) is log ᾱ(t) = -(b t + c t² / 2) with b, c chosen so
      that b t + c t²/2 = Σ_{j ≤ i} β_j exactly at t = i / N:
      b = N β_start - N (β_end - β_start) / (2 (N - 1)),  c = N² (β_end - β_start) / (N - 1),
      hence ᾱ(i/N) = Π_{j≤i} (1 - β_j) up to the O(β²) of log(1 - β) ≈ -β (< 1 % in
      log ᾱ).
      Its terminal value is ᾱ(1) = e^-10.05 ≈ 4.3e-5: the non-zero terminal SNR that
      Lin et al. 2024 call flawed (training never sees pure noise, sampling starts from it).

    Zero terminal SNR (Lin et al. 2024, "Common diffusion noise schedules and sample steps are
    flawed", Algorithm 1), applied to a = sqrt(ᾱ):

        a(t) = (a_raw(t) - a_raw(1)) · a_raw(0) / (a_raw(0) - a_raw(1)),   a_raw(0) = 1,

    a shift that makes a(1) = 0 exactly and a scale that keeps a(0) = 1 (Lin et al. keep the
    value at the first discrete step instead; in continuous time the first point is t = 0).
    sigma = sqrt(1 - a²) is computed as sqrt((1 - a)(1 + a)) with 1 - a obtained without
    cancellation, so log-SNR stays accurate near t = 0 in float32.
    """

    def __init__(
        self,
        kind: ScheduleKind = "cosine",
        zero_terminal_snr: bool = True,
        n_train_steps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        cosine_s: float = 0.008,
    ) -> None:
        if kind not in ("cosine", "linear"):
            raise ValueError(f"unknown schedule kind {kind!r}; use 'cosine' or 'linear'")
        if n_train_steps < 1:
            raise ValueError("n_train_steps must be >= 1")
        self.kind: ScheduleKind = kind
        self.zero_terminal_snr = bool(zero_terminal_snr)
        self.n_train_steps = int(n_train_steps)
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)
        self.cosine_s = float(cosine_s)
        # constants of the raw schedules, in Python (double) precision
        self._u0 = self.cosine_s / (1.0 + self.cosine_s) * math.pi / 2
        N, db = self.n_train_steps, self.beta_end - self.beta_start
        self._b = max(N * self.beta_start - (N * db / (2 * (N - 1)) if N > 1 else 0.0), 0.0)
        self._c = N * N * db / (N - 1) if N > 1 else 0.0
        if kind == "cosine":
            a_T = max(math.cos(math.pi / 2) / math.cos(self._u0), 0.0)
        else:
            a_T = math.exp(-0.5 * (self._b + 0.5 * self._c))
        # the shift of the zero-terminal-SNR rescale (0 when it is off)
        self._a_T = a_T if self.zero_terminal_snr else 0.0

    def __repr__(self) -> str:
        return (
            f"VPSchedule(kind={self.kind!r}, zero_terminal_snr={self.zero_terminal_snr}, "
            f"n_train_steps={self.n_train_steps})"
        )

    # ---- raw schedules: (a_raw, 1 - a_raw) ------------------------------------------

    def _raw(self, t: Tensor) -> tuple[Tensor, Tensor]:
        if self.kind == "cosine":
            s, u0 = self.cosine_s, self._u0
            u = (t + s) / (1 + s) * (math.pi / 2)
            cos_u0 = math.cos(u0)
            a = torch.cos(u) / cos_u0
            # 1 - cos u / cos u0 = (cos u0 - cos u) / cos u0, with the sum-to-product identity
            one_minus = 2 * torch.sin((u + u0) / 2) * torch.sin((u - u0) / 2) / cos_u0
        else:
            half_log_abar = -0.5 * (self._b * t + 0.5 * self._c * t * t)
            a = torch.exp(half_log_abar)
            one_minus = -torch.expm1(half_log_abar)
        return a, one_minus

    def _a_one_minus(self, t: Tensor) -> tuple[Tensor, Tensor]:
        a, one_minus = self._raw(t)
        if self._a_T > 0.0:
            # zero terminal SNR rescale; 1 - a = (1 - a_raw) / (1 - a_raw(1))
            a = (a - self._a_T) / (1.0 - self._a_T)
            one_minus = one_minus / (1.0 - self._a_T)
        a = a.clamp(0.0, 1.0)
        one_minus = one_minus.clamp(0.0, 1.0)
        if self.zero_terminal_snr:
            # exactly zero at t = 1 whatever the float rounding of the lines above
            a = torch.where(t >= 1, torch.zeros_like(a), a)
            one_minus = torch.where(t >= 1, torch.ones_like(one_minus), one_minus)
        return a, one_minus

    # ---- public API -------------------------------------------------------------------

    def alpha_sigma(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """(alpha, sigma) = (sqrt(ᾱ_t), sqrt(1 - ᾱ_t)) with the shape, dtype, device of t."""
        t = _as_time(t)
        a, one_minus = self._a_one_minus(t)
        sigma = torch.sqrt(one_minus * (2.0 - one_minus))  # 1 - a² = (1 - a)(1 + a)
        return a, sigma

    def log_snr(self, t: Tensor | float) -> Tensor:
        """log(alpha² / sigma²); -inf at t = 1 with zero terminal SNR, +inf at t = 0."""
        t = _as_time(t)
        a, one_minus = self._a_one_minus(t)
        return 2 * torch.log(a) - torch.log(one_minus) - torch.log(2.0 - one_minus)

    def t_from_log_snr(self, log_snr: Tensor | float) -> Tensor:
        """Inverse of :meth:`log_snr` (clamped to [0, 1])."""
        lam = _as_time(log_snr)
        # alpha² = sigmoid(λ), sigma² = sigmoid(-λ); 1 - alpha = sigma² / (1 + alpha)
        a = torch.sqrt(torch.sigmoid(lam))
        one_minus = torch.sigmoid(-lam) / (1 + a)
        if self._a_T > 0.0:  # undo the zero terminal SNR rescale
            a = a * (1.0 - self._a_T) + self._a_T
            one_minus = one_minus * (1.0 - self._a_T)
        if self.kind == "cosine":
            s, u0 = self.cosine_s, self._u0
            cos_u0 = math.cos(u0)
            d = one_minus * cos_u0  # cos u0 - cos u
            one_minus_cos_u = 2 * math.sin(u0 / 2) ** 2 + d
            sin_u = torch.sqrt((one_minus_cos_u * (2 - one_minus_cos_u)).clamp_min(0))
            u = torch.atan2(sin_u, a * cos_u0)
            t = u * (2 / math.pi) * (1 + s) - s
        else:
            # log ᾱ = -(b t + c t²/2)  =>  t = -2 L / (b + sqrt(b² - 2 c L)),  L = log ᾱ ≤ 0
            L = 2 * torch.log1p(-one_minus.clamp(max=1.0))
            t = -2 * L / (self._b + torch.sqrt(self._b**2 - 2 * self._c * L))
            t = torch.nan_to_num(t, nan=1.0)  # L = -inf (alpha_raw = 0) gives inf/inf
        return t.clamp(0.0, 1.0)

    # ---- discrete DDPM grid -------------------------------------------------------------

    def alphas_cumprod(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """ᾱ_i = alpha(i / N)² for i = 0..N (N + 1 values; index 0 is clean data, ᾱ_0 = 1)."""
        t = torch.arange(self.n_train_steps + 1, dtype=torch.float64) / self.n_train_steps
        a, _ = self.alpha_sigma(t)
        return (a * a).to(dtype)

    def betas(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """β_i = 1 - ᾱ_i / ᾱ_{i-1} for i = 1..N (eq. 1); β_N = 1 with zero terminal SNR."""
        abar = self.alphas_cumprod(torch.float64)
        return (1 - abar[1:] / abar[:-1]).to(dtype)

    def ddpm_timesteps(self, n: int | None = None, t_start: float = 1.0) -> Tensor:
        """n + 1 descending times on the training grid {i / N}, from t_start down to 0.

        ``n=None`` gives every one of the N steps.  Fewer steps use "trailing" spacing
        (Lin et al. 2024, sec. 3.3): the grid always starts at the last training step.
        """
        N = self.n_train_steps
        i_start = int(round(float(t_start) * N))
        n = i_start if n is None else int(n)
        if not 1 <= n <= max(i_start, 1):
            raise ValueError(f"n must be in [1, {i_start}] for t_start={t_start}, got {n}")
        idx = torch.round(torch.linspace(i_start, 0, n + 1, dtype=torch.float64))
        return idx / N

    def sample_t(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        discrete: bool = True,
    ) -> Tensor:
        """Training times: i / N with i uniform in {1..N}, or uniform in (0, 1]."""
        gen_device = generator.device if generator is not None else device
        if discrete:
            i = torch.randint(1, self.n_train_steps + 1, (batch_size,), generator=generator,
                              device=gen_device)
            t = i.to(torch.float64) / self.n_train_steps
        else:
            t = 1 - torch.rand((batch_size,), generator=generator, device=gen_device,
                               dtype=torch.float64)
        return t.to(device=device, dtype=dtype)

    def loss_weight(self, t: Tensor | float, kind: LossWeightKind = "v",
                    gamma: float = 5.0) -> Tensor:
        """Per-sample weight λ_t of the v-loss (eq. 4); see :func:`loss_weight`."""
        return loss_weight(t, kind, schedule=self, gamma=gamma)


class FlowSchedule:
    """Rectified-flow / flow-matching path x_t = (1 - t) x0 + t eps: alpha = 1 - t, sigma = t.

    Not variance preserving (the v-helpers above do not apply), but every sampler in
    :mod:`.samplers` only needs (alpha, sigma) and works with it unchanged; DDIM on this
    schedule *is* the Euler method on the flow ODE dx/dt = eps - x0.
    log_snr = 2 log((1 - t) / t), so t = sigmoid(-log_snr / 2).
    """

    zero_terminal_snr = True

    def __repr__(self) -> str:
        return "FlowSchedule()"

    def alpha_sigma(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        t = _as_time(t).clamp(0.0, 1.0)
        return 1 - t, t

    def log_snr(self, t: Tensor | float) -> Tensor:
        t = _as_time(t)
        return 2 * (torch.log1p(-t) - torch.log(t))

    def t_from_log_snr(self, log_snr: Tensor | float) -> Tensor:
        return torch.sigmoid(-_as_time(log_snr) / 2)

    def sample_t(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        gen_device = generator.device if generator is not None else device
        t = 1 - torch.rand((batch_size,), generator=generator, device=gen_device,
                           dtype=torch.float64)
        return t.to(device=device, dtype=dtype)


# --------------------------------------------------------------------------------------
# loss weights
# --------------------------------------------------------------------------------------


def loss_weight(
    t: Tensor | float,
    kind: LossWeightKind = "v",
    *,
    schedule: VPSchedule | None = None,
    gamma: float = 5.0,
) -> Tensor:
    """Weight λ_t of the v-loss  λ_t ||V - V̂||²  (paper eq. 4), per sample.

    For fixed x_t the prediction errors are tied: ||v - v̂||² = (SNR + 1) ||x0 - x̂0||² and
    ||eps - epŝ||² = SNR ||x0 - x̂0||², with SNR = alpha² / sigma².  Hence

    * ``"v"``:  1 (plain MSE on v, the paper's loss);
    * ``"eps"``: SNR / (SNR + 1) = alpha²  (equals the eps-MSE);
    * ``"x0"``:  1 / (SNR + 1) = sigma²   (equals the x0-MSE);
    * ``"min_snr"``: min(SNR, γ) / (SNR + 1) = min(alpha², γ sigma²)  (Min-SNR-γ weighting,
      Hang et al. 2023, in its v-prediction form; γ = 5 there).  It is 0 at t = 1 under zero
      terminal SNR, so that single level is learnt only through continuity in t.
    """
    schedule = VPSchedule() if schedule is None else schedule
    t = _as_time(t)
    if kind == "v":
        return torch.ones_like(t)
    alpha, sigma = schedule.alpha_sigma(t)
    if kind == "eps":
        return alpha * alpha
    if kind == "x0":
        return sigma * sigma
    if kind == "min_snr":
        return torch.minimum(alpha * alpha, gamma * sigma * sigma)
    raise ValueError(f"unknown loss weight {kind!r}; use 'v', 'eps', 'x0' or 'min_snr'")
