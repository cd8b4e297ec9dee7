"""Fitting a refractive-index representation to diffraction images (NVP paper, Method).

One loop for the three representations (``models.index_fields``): render Δn, simulate every
view through the multi-slice model (``physics.wave_optics.forward_images``), compare with the
measured images, step. Loss = L1 + L2 + λ (1 - SSIM)/2 on the images, after a least-squares
global intensity scale (measured images carry an unknown exposure), + τ·TV(Δn) (anisotropic
total variation, in units of 0.01), + an optional sparsity prior mean|Δn|, both weighted by how
much of the grid the views see (``prior_scale``; ``cover_priors``), τ also by the images' noise
against their signal (``noise_tv_scale``; ``noise_tv``); with ``nonnegative``, Δn is
clipped at 0 (a specimen denser than its medium). Source positions are
optimised jointly when ``calibrate`` (self-calibration, starting from the given file, after
``calibrate_after`` of the iterations). The NVP feature grid is refined coarse to fine at fixed
fractions of the iterations. With ``prune``, the index is restricted at each of ``prune_at``
(fractions of the iterations, each narrowing the last) to the support the estimate has reached
(sparse voxel grids' pruning of empty cells): views from one side leave the depth direction
nearly unseen, and without it the index smears along depth into empty medium. With
``coherence_mask``, the image terms count only each spot's blur disc (``physics.source_fit.
coherence_masks``); with ``background_order`` each view may add a smooth incoherent background
and with ``compare_blur`` images and predictions are compared blurred: the coherence alignment
that lets a coherent model explain partially coherent fluorescence. With ``anneal_blur`` the
comparison starts that blurred and sharpens over the first ``anneal_until`` of the fit, so
that sources given tenths of a µm off are not held by their spots' fringes. With ``refit``, a
second fit from a fresh representation starts from the sources the first found. With
``hold_depth`` the plane of the sources' depths (common depth and tilt) stays as given: moving
every source by the same depth defocuses every spot alike, as a change in the index's level
along the light's path does, and a tilt trades in the same way against an index gradient across
the field, so the images hardly tell them apart and left free they let the index drift.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Generator

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..physics.coverage import view_share
from ..physics.optics import Optics
from ..physics.pixel_noise import noise_share, signal_share
from ..physics.source_fit import FIT_PAD, coherence_masks
from ..physics.wave_optics import forward_images
from .index_fields import make_field


#: Voxels (z, y, x) kept around the pruned support by default.
PRUNE_MARGIN = (2, 4, 4)

#: ``view_share`` of the geometry the priors' weights were tuned on (a 32 x 64 x 64 grid, six
#: sources 2 µm below it in the central 60 % of the field: 0.566 and 0.576 on the tuning seeds).
REFERENCE_VIEW_SHARE = 0.57

#: ``noise_tv_scale``: below NOISE_FLOOR, a noise share is within the estimate's own error of
#: clean images (0.00-0.016 at noise level 0.01, where the weights were tuned: τ stays as tuned);
#: SIGNAL_FLOOR bounds the weight where the specimen barely changes the spots.
NOISE_FLOOR = 0.02
SIGNAL_FLOOR = 0.005


@dataclass
class FitConfig:
    iterations: int = 300
    lr: float = 0.02  # Adam, for the representation's parameters
    source_lr: float = 0.02  # Adam, µm, for the source positions
    calibrate: bool = True
    calibrate_after: float = 0.5  # fraction of the iterations before the sources move (given positions drift early on to explain index errors; estimated ones start at 0)
    tv: float = 2e-3  # τ
    sparsity: float = 0.0  # weight of an L1 prior mean|Δn| (units of 0.01): the least index that explains the images
    nonnegative: bool = False  # Δn >= 0 (a specimen denser than its medium): the index is clipped at 0, a voxel grid projected onto it
    cover_priors: bool = True  # tv and sparsity × prior_scale: weighted by the views' coverage of the grid
    noise_tv: bool = True  # tv × noise_tv_scale: weighted by the images' noise against their signal
    noise_tv_weight: float | None = None  # with noise_tv: τ's weight if already measured (None: measured by the fit)
    prune: float = 0.0  # at prune_at, restrict Δn to the support where |Δn| > prune * max, plus a margin (0: never)
    prune_at: tuple[float, ...] = (0.3,)  # fractions of the iterations (NVP: the first before its grid refines at the same step); each later one prunes within the last support
    prune_margin: tuple[int, int, int] = PRUNE_MARGIN  # voxels (z, y, x) kept around the support
    ssim_weight: float = 0.2  # λ
    coherence_mask: float = 0.0  # > 0: the loss sees only pixels within this fraction of each spot's fitted radius (0: all)
    background_order: int = -1  # >= 0: each view may add a smooth incoherent background, a polynomial of this order (-1: none)
    compare_blur: float = 0.0  # > 0: images and predictions are compared blurred by a Gaussian of this many camera pixels
    anneal_blur: float = 0.0  # > 0: the comparison blur starts this wide (camera pixels) and narrows linearly to compare_blur ...
    anneal_until: float = 0.5  # ... by this fraction of the iterations (coarse-to-fine in the images, against fringe minima)
    refit: int = 0  # with calibrate: then fit afresh for this many iterations from the sources the first fit found, as from a sources file
    hold_depth: bool | None = None  # with calibrate: the plane of the sources' depths stays as given (see _fit_pass); None: held unless the schedule searches (fit_passes)
    refine_at: tuple[float, ...] = (0.3,)  # NVP: where its grid doubles (4x -> 2x coarser than the voxels); to full resolution it overfits
    pad: int = FIT_PAD
    checkpoint_slabs: int = 0
    seed: int = 0
    field_kw: dict = field(default_factory=dict)


@dataclass
class FitResult:
    dn: np.ndarray  # (D, H, W) index contrast over the background
    sources: np.ndarray  # (K, 3) final source positions (µm)
    losses: list[float]
    seconds: float
    iterations: int


def _gaussian_window(size: int = 7, sigma: float = 1.5, device: torch.device | str = "cpu") -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_images(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean SSIM of (K, H, W) image stacks (Gaussian window 7, sigma 1.5), differentiable;
    with ``weight`` (K, H, W), the weighted mean of the SSIM map."""
    win = _gaussian_window(device=a.device)
    a, b = a[:, None], b[:, None]
    pad = win.shape[-1] // 2
    mu_a, mu_b = F.conv2d(a, win, padding=pad), F.conv2d(b, win, padding=pad)
    saa = F.conv2d(a * a, win, padding=pad) - mu_a ** 2
    sbb = F.conv2d(b * b, win, padding=pad) - mu_b ** 2
    sab = F.conv2d(a * b, win, padding=pad) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    if weight is None:
        return s.mean()
    return (s[:, 0] * weight).sum() / weight.sum().clamp_min(1e-20)


def total_variation(dn: torch.Tensor) -> torch.Tensor:
    return sum((dn.diff(dim=i).abs().mean() for i in range(3)), torch.zeros((), device=dn.device)) / 0.01


def background_basis(weight: torch.Tensor, order: int) -> torch.Tensor:
    """(K, H·W, P) orthonormal basis, over each view's weighted pixels, of the polynomials in
    (y, x) up to ``order``: the smooth incoherent background (out-of-focus fluorescence) a view
    may carry on top of what the coherent model predicts. ``weight``: (K, H, W)."""
    k, h, w = weight.shape
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h, device=weight.device), torch.linspace(-1, 1, w, device=weight.device),
                            indexing="ij")
    terms = torch.stack([(yy ** i * xx ** j).reshape(-1) for i in range(order + 1) for j in range(order + 1 - i)], 1)
    q, _ = torch.linalg.qr(terms[None] * weight.reshape(k, -1, 1))
    return q


def gaussian_blur(images: torch.Tensor, sigma: float, keep: torch.Tensor | None = None) -> torch.Tensor:
    """(K, H, W) images blurred by a Gaussian of ``sigma`` pixels (edges replicated: unlike
    reflection, that works for a kernel wider than the image). With ``keep`` (K, H, W, 0/1) a
    normalised convolution: each blurred pixel is the Gaussian mean of the kept pixels only, so
    pixels left out (saturated) spread nothing into their neighbours."""
    if keep is not None:
        return gaussian_blur(images * keep, sigma) / gaussian_blur(keep, sigma).clamp_min(1e-6)
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=images.dtype, device=images.device)
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    out = F.pad(images[:, None], (r, r, r, r), mode="replicate")
    out = F.conv2d(out, g.view(1, 1, 1, -1))
    return F.conv2d(out, g.view(1, 1, -1, 1))[:, 0]


def image_loss(pred: torch.Tensor, meas: torch.Tensor, ssim_weight: float, weight: torch.Tensor | None = None,
               background: torch.Tensor | None = None, left_out: torch.Tensor | None = None) -> torch.Tensor:
    """L1 + L2 + λ (1 - SSIM)/2 after the least-squares exposure; with ``weight`` (K, H, W)
    (the coherence mask) every term, and the exposure, counts the weighted pixels only; with
    ``background`` (``background_basis``) each view may add a smooth background, fitted with
    the exposure by least squares (the basis projected out before the exposure is solved).
    ``left_out`` (K, H, W) bool: pixels whose measured values say nothing (saturated ones);
    they must weigh 0 in ``weight``, and the SSIM windows beside them see the prediction there
    instead of the measurement, so that no term depends on what those pixels hold."""
    if weight is None and background is None:
        scale = (pred * meas).sum() / (pred * pred).sum().clamp_min(1e-20)  # least-squares exposure
        p = pred * scale
        return (p - meas).abs().mean() + ((p - meas) ** 2).mean() + ssim_weight * (1 - ssim_images(p, meas)) / 2
    if weight is None:
        weight = torch.ones_like(meas)
    k = pred.shape[0]
    pw, mw = (pred * weight).reshape(k, -1), (meas * weight).reshape(k, -1)
    if background is None:
        scale = (pw * mw).sum() / (pw * pw).sum().clamp_min(1e-20)
        p = pred * scale
    else:
        def smooth(x: torch.Tensor) -> torch.Tensor:  # projection onto the background polynomials
            return (background @ (background.transpose(1, 2) @ x[..., None]))[..., 0]

        pr, mr = pw - smooth(pw), mw - smooth(mw)
        scale = (pr * mr).sum() / (pr * pr).sum().clamp_min(1e-20)
        p = pred * scale + smooth(mw - scale * pw).reshape(pred.shape)
    n = weight.sum().clamp_min(1e-20)
    ref = meas if left_out is None else torch.where(left_out, p.detach(), meas)
    return ((weight * (p - meas).abs()).sum() + (weight * (p - meas) ** 2).sum()) / n \
        + ssim_weight * (1 - ssim_images(p, ref, weight=weight)) / 2


def prior_scale(share: float) -> float:
    """What ``cover_priors`` multiplies tv and sparsity by, given the share of the views that see
    an average voxel (``physics.coverage.view_share``): that share over the tuning geometry's.

    The image terms are means over all K views' pixels, so a voxel's pull from the data is in
    proportion to the share of the views whose cone holds it; the priors, means over the voxels,
    pull each voxel alike. Weights tuned where an average voxel is seen by 57 % of six views
    (32 x 64 x 64) over-regularise a field wide for its depth, seen by 21 % (32 x 128 x 128):
    weighted, wide real-nuclei fits gained 0.8 dB (NVP) and 1.1 dB (triplane), at no measurable
    cost on the tuning-size and dense fields (docs/benchmarks.md). Floored at a tenth, so that a
    grid the cones barely reach keeps some prior."""
    return max(share, 0.1 * REFERENCE_VIEW_SHARE) / REFERENCE_VIEW_SHARE


def noise_and_signal(images: np.ndarray, sources: np.ndarray, optics: Optics, depth: int,
                     pad: int = FIT_PAD) -> tuple[float, float]:
    """The images' noise and signal as shares of their bright range, measured against the same
    views through the bare medium (``physics.pixel_noise.noise_share``, ``signal_share``): the
    noise about 0 for clean images at any sampling, the signal what the specimen does to the
    spots."""
    h, w = np.shape(images)[1:]
    b = optics.binning
    with torch.no_grad():
        medium = forward_images(torch.zeros((int(depth), h * b, w * b)), torch.as_tensor(np.asarray(sources, dtype=np.float32)),
                                optics, pad=pad).numpy()
    return noise_share(images, medium), signal_share(images, medium)


def noise_tv_scale(noise: float, signal: float) -> float:
    """What ``noise_tv`` multiplies τ by, given the images' noise and signal shares
    (``noise_and_signal``): 1 up to ``NOISE_FLOOR`` of noise (clean images, where the weights
    were tuned), then 1 + ((noise - NOISE_FLOOR) / signal)², as a Wiener filter weighs its
    prior by the noise-to-signal power. The image terms pull the index towards whatever explains
    the noise too, and faint structures drown first: at noise level 0.1, NVP with the clean-image
    weights scored 10 dB on tubes of Δn 0.01-0.03 (far below the bare medium's score), and a τ
    weighted by the noise alone cost dense cells 1.3 dB (docs/benchmarks.md, "Noisy images").
    The signal is floored at ``SIGNAL_FLOOR``: images the specimen barely changes get a strong
    prior, not an infinite one. The sparsity prior stays as it is: weighted up as well, it cost
    the cells more than it gave the tubes."""
    excess = max(0.0, noise - NOISE_FLOOR)
    return 1.0 + (excess / max(signal, SIGNAL_FLOOR)) ** 2


def support_of(dn: torch.Tensor, threshold: float, margin: tuple[int, int, int] = PRUNE_MARGIN) -> torch.Tensor:
    """0/1 mask of the sample's support: voxels within ``margin`` (z, y, x) of one where |Δn|
    exceeds ``threshold`` times its maximum. Pruning to it (as sparse voxel grids prune empty
    cells) keeps the index from spreading along the unseen depth direction into empty medium."""
    mag = dn.abs()
    if float(mag.max()) == 0.0:  # nothing there yet: nothing to prune to
        return torch.ones_like(dn)
    occupied = (mag > threshold * mag.max()).float()[None, None]
    return F.max_pool3d(occupied, tuple(2 * m + 1 for m in margin), stride=1, padding=margin)[0, 0]


def comparison_blur(cfg: FitConfig, iteration: int) -> float:
    """Gaussian sigma (camera pixels) images and predictions are compared at in ``iteration``
    (1-based): ``compare_blur``, or with ``anneal_blur`` a blur that starts that wide and
    narrows linearly to ``compare_blur`` by ``anneal_until`` of the iterations. Coarse to fine
    in the images, as in image registration: blurred, a spot's fringes no longer pin a source
    that is off by a fraction of a fringe in a local minimum while the sources move."""
    if cfg.anneal_blur <= 0:
        return cfg.compare_blur
    left = max(0.0, 1.0 - (iteration - 1) / max(1.0, cfg.anneal_until * cfg.iterations))
    return cfg.compare_blur + (cfg.anneal_blur - cfg.compare_blur) * left


class _NonNegative(torch.autograd.Function):
    """Δn clipped at 0, with a one-sided gradient below it: a clipped voxel still receives the
    gradients that would raise it. A plain clip passes none there, and a decoder whose output
    goes negative everywhere early on (faint tubes) then never recovers."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return torch.where((x >= 0) | (grad < 0), grad, torch.zeros_like(grad))


@dataclass
class FitStep:
    """One iteration's report: its loss and a way to render the current Δn (costs one forward)."""

    iteration: int
    total: int
    loss: float
    render: Callable[[], np.ndarray]
    sources: np.ndarray  # (K, 3) positions after this iteration
    losses: list[float]  # every iteration's loss so far
    seconds: float


def depth_plane_projector(sources: torch.Tensor) -> torch.Tensor:
    """(K, K) least-squares projector of the sources' depths onto planes a + b y + c x over their
    lateral positions (K, 3 as z, y, x): ``hold_depth`` removes this part of every depth change, so
    the common depth and the tilt stay as given while the depths relative to that plane move. With
    three sources or fewer (or all in a line) the plane passes through every one: all depths held."""
    yx = sources[:, 1:].double()
    basis = torch.cat([torch.ones_like(yx[:, :1]), yx - yx.mean(0)], dim=1)
    return (basis @ torch.linalg.pinv(basis)).to(sources.dtype)


def fit_passes(cfg: FitConfig) -> list[FitConfig]:
    """The fits ``cfg`` asks for, in order: itself, and with ``refit`` a second of that many
    iterations from a fresh representation whose sources start where the first left them and
    are treated as a sources file's (held for the first half, compared unblurred). Sources that
    move from the start while the images are compared blurred find positions tenths of a µm
    off, but the index shaped on the way is worse than one fitted around positions already
    right: given exact sources, that schedule alone costs about 4 dB on cells, and either half
    of it alone (early motion, or the blur) costs little (docs/benchmarks.md). ``hold_depth``
    None is resolved here."""
    # hold_depth None: a schedule that searches for sources known only to tenths of a µm (annealed
    # blur or a refit: positions estimated from the spots, a rough file) needs their common depth
    # free, since a random error per source leaves one in their mean; positions trusted to a
    # fraction of a fringe keep it, so that it cannot drift against the index's level
    # (docs/benchmarks.md, real-structure crops). Both fits use what the first resolves to.
    hold = cfg.hold_depth if cfg.hold_depth is not None else not (cfg.anneal_blur > 0 or cfg.refit > 0)
    cfg = replace(cfg, hold_depth=hold)
    if cfg.refit <= 0 or not cfg.calibrate:
        return [cfg]
    return [cfg, replace(cfg, iterations=cfg.refit, refit=0, calibrate_after=FitConfig.calibrate_after, anneal_blur=0.0)]


def check_images(images: np.ndarray) -> float:
    """Refuse images the fit cannot be scaled to, with the reason; return the share of their
    pixels below zero.

    Camera intensities are positive and each spot is brighter than its surroundings: a stack
    without a positive value is inverted or over-subtracted, and without a fitted background it
    has no peak to scale by (it crashed the fit with a NaN). Negative pixels come from
    background-subtracted frames; only a fitted background (order 0 or more) can follow them,
    the caller decides whether to say so.
    """
    peak = float(np.max(images))
    if not peak > 0:
        raise InputError(f"diffraction: the images hold no positive value (maximum {peak:g}); they must be camera "
                         "intensities, each source's spot brighter than its surroundings. Load the raw frames, not "
                         "inverted or background-subtracted ones.")
    return float(np.mean(np.asarray(images) < 0))


def fit_steps(images: np.ndarray, sources: np.ndarray, optics: Optics, depth: int, kind: str = "nvp",
              config: FitConfig | None = None, device: str = "cpu",
              valid: np.ndarray | None = None) -> Generator[FitStep, None, FitResult]:
    """Fit ``kind`` ('nvp', 'triplane', 'explicit') to images (K, H, W) (camera pixels = grid
    pixels × binning), yielding a ``FitStep`` after every iteration; returns the ``FitResult``
    with Δn on a (depth, H·b, W·b) grid. Closing the generator early (or breaking out of it and
    closing it) simply stops; each step carries what a result needs (``result_of``). With
    ``refit``, the iterations of both fits are counted as one run (``fit_passes``), and until
    the second fit's loss falls below the first's final one, its steps render and report the
    first fit's estimate (a fresh representation starts from nothing: a preview or a stop
    early in it would otherwise lose what the first fit found). ``valid`` (K, H, W) bool, if
    given: only these pixels are compared (the diffraction job leaves saturated ones out,
    ``physics.saturation``). The images are used as given: the job first repairs hot pixels
    (``physics.hot_pixels``), which a caller of this function should do too."""
    check_images(images)
    if valid is not None and np.shape(valid) != np.shape(images):
        raise ValueError(f"valid must have the images' shape {np.shape(images)}, not {np.shape(valid)}")
    passes = fit_passes(config or FitConfig())
    data = _measured(images, optics, passes[0], device, valid)  # the passes differ only in their schedule
    if passes[0].noise_tv:
        data.tv_weight = passes[0].noise_tv_weight if passes[0].noise_tv_weight is not None else \
            noise_tv_scale(*noise_and_signal(images, sources, optics, depth, passes[0].pad))
    total = sum(p.iterations for p in passes)
    losses: list[float] = []
    result = None
    for cfg in passes:
        result = yield from _fit_pass(data, np.asarray(sources, dtype=np.float32) if result is None else result.sources,
                                      optics, depth, kind, cfg, device, total=total, losses=losses, previous=result)
    return result


@dataclass
class _Measured:
    """What the loss compares against, prepared once per fit: the images (K, H, W) scaled to a
    maximum of 1 (to a span of 1 with a fitted background), the pixel weights (the coherence
    mask, 0 where pixels are left out; or None), the background basis (or None) and the pixels
    left out (or None)."""

    images: torch.Tensor
    weight: torch.Tensor | None
    basis: torch.Tensor | None
    left_out: torch.Tensor | None = None
    tv_weight: float = 1.0  # τ's weight for the images' noise (noise_tv_scale)


def _measured(images: np.ndarray, optics: Optics, cfg: FitConfig, device: str,
              valid: np.ndarray | None = None) -> _Measured:
    meas = torch.from_numpy(np.asarray(images, dtype=np.float32)).to(device)
    # Scaled to a peak of 1, or with a fitted background (which takes any offset) to a span of 1,
    # so that a camera's offset does not shrink the spots against the priors
    span = meas.max() - (meas.min() if cfg.background_order >= 0 else 0)
    meas = meas / span.clamp_min(1e-20)
    weight = None
    if cfg.coherence_mask > 0:
        weight = torch.from_numpy(coherence_masks(images, optics, cfg.coherence_mask)).to(device)
    left_out = None
    if valid is not None:  # pixels left out weigh nothing in any term, the exposure and the background
        keep = torch.from_numpy(np.asarray(valid, dtype=np.float32)).to(device)
        weight = keep if weight is None else weight * keep
        left_out = keep == 0
    basis = None
    if cfg.background_order >= 0:
        basis = background_basis(torch.ones_like(meas) if weight is None else weight, cfg.background_order)
    return _Measured(meas, weight, basis, left_out)


def _fit_pass(data: _Measured, sources: np.ndarray, optics: Optics, depth: int, kind: str, cfg: FitConfig, device: str,
              total: int, losses: list[float], previous: FitResult | None) -> Generator[FitStep, None, FitResult]:
    """One fit of ``cfg.iterations`` from a fresh representation, numbered on after
    ``previous`` (the fit before it, if any) of ``total``, its losses appended to ``losses``,
    its time added to the previous fit's; its steps stand for ``previous`` until they do better."""
    done, seconds = (0, 0.0) if previous is None else (previous.iterations, previous.seconds)
    beat = previous.losses[-1] if previous is not None else math.inf  # the previous fit's final loss
    behind = previous is not None  # until this fit's loss falls below it
    torch.manual_seed(cfg.seed)
    b = optics.binning
    k, h, w = data.images.shape
    shape = (int(depth), h * b, w * b)
    raw, weight, basis = data.images, data.weight, data.basis
    # blurred comparisons average the kept pixels only: a plateau left out would otherwise
    # spread its clipped value into the neighbours that are compared
    keep = None if data.left_out is None else (~data.left_out).to(raw.dtype)
    meas, meas_sigma = (gaussian_blur(raw, cfg.compare_blur, keep) if cfg.compare_blur > 0 else raw), cfg.compare_blur
    net = make_field(kind, shape, **cfg.field_kw).to(device)
    src = torch.nn.Parameter(torch.as_tensor(np.asarray(sources, dtype=np.float32), device=device).clone(),
                             requires_grad=cfg.calibrate)
    z0, plane = src.detach()[:, 0].clone(), depth_plane_projector(src.detach())  # what hold_depth keeps
    weigh = prior_scale(view_share(shape, np.asarray(sources, dtype=np.float32), optics)) if cfg.cover_priors else 1.0
    tv, sparsity = cfg.tv * weigh * data.tv_weight, cfg.sparsity * weigh  # tv_weight is 1 without noise_tv

    def optimiser() -> torch.optim.Optimizer:
        groups = [{"params": list(net.parameters()), "lr": cfg.lr}]
        if cfg.calibrate:
            groups.append({"params": [src], "lr": cfg.source_lr})
        return torch.optim.Adam(groups)

    def index() -> torch.Tensor:
        dn = net() * support
        return _NonNegative.apply(dn) if cfg.nonnegative else dn

    def render() -> np.ndarray:
        with torch.no_grad():
            return index().detach().cpu().numpy().astype(np.float32)

    opt = optimiser()
    refine_steps = {int(f * cfg.iterations) for f in cfg.refine_at}  # a no-op for a representation without a coarser grid
    prune_steps = {int(f * cfg.iterations) for f in cfg.prune_at} if cfg.prune > 0 else set()
    support = torch.ones((), device=meas.device)
    t0 = time.perf_counter() - seconds
    it = 0
    for it in range(1, cfg.iterations + 1):
        if it in prune_steps:
            with torch.no_grad():
                support = support * support_of(index(), cfg.prune, tuple(cfg.prune_margin))
        if it in refine_steps and net.refine():
            opt = optimiser()  # the refined grid is a new parameter
        dn = index()
        pred = forward_images(dn, src, optics, pad=cfg.pad, checkpoint_slabs=cfg.checkpoint_slabs)
        sigma = comparison_blur(cfg, it)
        if cfg.anneal_blur > 0 and sigma != meas_sigma:  # the measured images re-blurred only while the blur narrows
            meas, meas_sigma = (gaussian_blur(raw, sigma, keep) if sigma > 0 else raw), sigma
        if sigma > 0:
            pred = gaussian_blur(pred, sigma, keep)
        loss = image_loss(pred, meas, cfg.ssim_weight, weight, basis, data.left_out) + tv * total_variation(dn)
        if sparsity:
            loss = loss + sparsity * dn.abs().mean() / 0.01
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if src.grad is not None and it <= cfg.calibrate_after * cfg.iterations:
            src.grad = None  # held until the index has settled
        opt.step()
        with torch.no_grad():
            if cfg.nonnegative:
                net.project_nonnegative()
            if cfg.calibrate and cfg.hold_depth:
                # a common depth shift of the sources trades against the index's level on the optical
                # path (both defocus every spot alike), a tilt of their plane against an index
                # gradient across the field; left free they drift and take the index with them (0.06 µm
                # in common cost 2.5 dB on a dense real-nuclei crop, a 0.03 µm tilt 0.5 dB on another;
                # docs/benchmarks.md). So the depths' best-fit plane stays as given.
                src[:, 0] -= plane @ (src[:, 0] - z0)
            src[:, 0].clamp_(max=(depth - 1) * optics.voxel_size[0])  # below the top slab (the light travels towards +z)
        losses.append(float(loss.detach()))
        behind = behind and losses[-1] >= beat
        if behind:
            yield FitStep(done + it, total, losses[-1], lambda: previous.dn, previous.sources.copy(), losses,
                          time.perf_counter() - t0)
            continue
        yield FitStep(done + it, total, losses[-1], render, src.detach().cpu().numpy().copy(), losses,
                      time.perf_counter() - t0)
    return FitResult(render(), src.detach().cpu().numpy(), losses, time.perf_counter() - t0, done + it)


def fit_index(images: np.ndarray, sources: np.ndarray, optics: Optics, depth: int, kind: str = "nvp",
              config: FitConfig | None = None, device: str = "cpu",
              callback: Callable[[FitStep], None] | None = None,
              should_stop: Callable[[], bool] | None = None, valid: np.ndarray | None = None) -> FitResult:
    """``fit_steps`` run to the end, or until ``should_stop()`` (then with the estimate so far)."""
    gen = fit_steps(images, sources, optics, depth, kind, config, device, valid)
    while True:
        try:
            step = next(gen)
        except StopIteration as done:
            return done.value
        if callback is not None:
            callback(step)
        if should_stop is not None and should_stop():
            result = result_of(step)
            gen.close()
            return result


def result_of(step: FitStep) -> FitResult:
    """The result of a fit stopped after ``step``: its current estimate and sources."""
    return FitResult(step.render(), step.sources, list(step.losses), step.seconds, step.iteration)
