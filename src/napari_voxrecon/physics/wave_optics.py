"""Multi-slice wave optics for fluorescence diffraction tomography (NVP paper, Method).

A fluorescent point source emits a spherical wave; the field crosses the sample as thin slabs:
each slab multiplies it by exp(i k0 Δn dz) and the field is carried to the next slab by the
angular spectrum method; behind the sample it is refocused to the focal plane, filtered by the
objective's pupil (|k⊥| <= k0 NA) and recorded as the intensity |E|².

Everything is torch, complex64 by default, and differentiable end to end: in the refractive
index (for the reconstruction) and in the source positions (for self-calibration). Fields are
(..., H, W) on the RI grid's lateral sampling, periodic (FFT); ``pad`` pixels of margin on each
side keep spreading waves from wrapping around into the image.
"""

from __future__ import annotations

import math
import torch

from .optics import Optics


def ifft2(spectrum: torch.Tensor) -> torch.Tensor:
    """Inverse 2D FFT over the last two axes, scaled by 1/(H W) here.

    Why not ``torch.fft.ifft2`` as it is: torch 2.13's CPU build scales the inverse twice at
    some sizes (2048 x 2048 gives 1/(H W)² with ``norm="backward"``); unscaled
    (``norm="forward"``) it is right at every size tested, so the scale is applied explicitly.
    """
    h, w = spectrum.shape[-2:]
    return torch.fft.ifft2(spectrum, norm="forward") / (h * w)


def spatial_frequencies(h: int, w: int, dy: float, dx: float, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Angular frequencies (ky, kx) in rad/µm of an (h, w) FFT grid, broadcastable to (h, w)."""
    ky = 2 * math.pi * torch.fft.fftfreq(h, d=dy, device=device, dtype=dtype)
    kx = 2 * math.pi * torch.fft.fftfreq(w, d=dx, device=device, dtype=dtype)
    return ky[:, None], kx[None, :]


def axial_wavenumber(ky: torch.Tensor, kx: torch.Tensor, k: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(kz, propagating): kz = sqrt(k² - kx² - ky²) where real (0 elsewhere) and its mask."""
    kz2 = k * k - kx * kx - ky * ky
    propagating = kz2 > 0
    return torch.sqrt(torch.clamp(kz2, min=0.0)), propagating


def transfer_function(h: int, w: int, dy: float, dx: float, distance: float, k: float,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """Band-limited angular-spectrum transfer function exp(i kz z) of free propagation by ``distance``.

    Evanescent waves are dropped; frequencies above Matsushima & Shimobaba's (2009) band limit
    f < 1 / (λ sqrt((2 Δf z)² + 1)), which the (h, w) window samples too coarsely for this
    distance, are dropped too, so long refocusing distances do not alias.
    """
    ky, kx = spatial_frequencies(h, w, dy, dx, device, torch.float64)
    kz, prop = axial_wavenumber(ky, kx, k)
    lam = 2 * math.pi / k
    mask = prop
    if distance != 0:
        for kk, n, d in ((ky, h, dy), (kx, w, dx)):
            df = 1.0 / (n * d)
            f_limit = 1.0 / (lam * math.sqrt((2 * df * distance) ** 2 + 1))
            mask = mask & (kk.abs() / (2 * math.pi) <= f_limit)
    phase = kz * distance
    return torch.where(mask, torch.polar(torch.ones_like(phase), phase), torch.zeros_like(phase)).to(torch.complex64)


def propagate(field: torch.Tensor, distance: float, k: float, dy: float, dx: float) -> torch.Tensor:
    """Free-space propagation of (..., H, W) fields by ``distance`` µm in a medium of wavenumber k."""
    h, w = field.shape[-2:]
    tf = transfer_function(h, w, dy, dx, distance, k, field.device)
    return ifft2(torch.fft.fft2(field) * tf)


def point_source_field(sources: torch.Tensor, plane_z: float, shape: tuple[int, int], dy: float, dx: float, k: float,
                       band: float | None = None, origin: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Fields (K, H, W) at z = ``plane_z`` of K point sources at (z, y, x) µm (z < plane_z).

    The spherical wave exp(i k r)/r is built from its plane-wave expansion (Weyl's identity,
    exp(ikr)/r = (i/2π) ∫∫ exp(i(kx x + ky y + kz |z|)) / kz dkx dky), so it is alias-free at
    any distance and sub-pixel, differentiable source positions are phase ramps. ``band`` (rad/µm,
    default 0.98 k) limits the transverse frequencies: 1/kz grows without bound at grazing angles.
    ``origin``: (y, x) µm of pixel (0, 0) (negative when the grid is padded).
    """
    h, w = shape
    ky, kx = spatial_frequencies(h, w, dy, dx, sources.device)
    kz, prop = axial_wavenumber(ky, kx, k)
    band = 0.98 * k if band is None else band
    inside = prop & (kx * kx + ky * ky <= band * band)
    kz_safe = torch.where(inside, kz, torch.ones_like(kz))
    d = (plane_z - sources[:, 0]).view(-1, 1, 1)
    if bool((d <= 0).any()):
        raise ValueError("every source must lie below the plane its field is computed at")
    ys = (sources[:, 1] - origin[0]).view(-1, 1, 1)
    xs = (sources[:, 2] - origin[1]).view(-1, 1, 1)
    phase = kz * d - ky * ys - kx * xs
    # discrete form of the integral: dkx dky = (2π)² / (H dy W dx); ifft2 divides by H W
    amp = (1.0 / (2 * math.pi)) * (2 * math.pi) ** 2 / (dy * dx) / kz_safe
    spectrum = torch.where(inside, torch.polar(amp.expand_as(phase), phase), torch.zeros_like(phase))
    spectrum = spectrum * 1j  # the i of Weyl's identity
    return ifft2(spectrum.to(torch.complex64))


def pupil(h: int, w: int, dy: float, dx: float, k0: float, na: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Objective pupil (H, W): 1 where |k⊥| <= k0 NA."""
    ky, kx = spatial_frequencies(h, w, dy, dx, device)
    return ((kx * kx + ky * ky) <= (k0 * na) ** 2).to(torch.complex64)


def _slab_step(field: torch.Tensor, dn: torch.Tensor, k0: float, dz: float, tf: torch.Tensor) -> torch.Tensor:
    """One slab: phase screen exp(i k0 Δn dz), then propagation to the next slab."""
    field = field * torch.polar(torch.ones_like(dn), k0 * dn * dz)
    return ifft2(torch.fft.fft2(field) * tf)


def forward_images(dn: torch.Tensor, sources: torch.Tensor, optics: Optics, *, pad: int = 0,
                   checkpoint_slabs: int = 0, view_chunk: int = 0) -> torch.Tensor:
    """Intensity images (K, H', W') of K point sources seen through the index contrast Δn (D, H, W).

    ``dn`` = n - n_background on the RI grid; ``sources`` (K, 3) µm in the RI frame (below the
    volume or inside it: each wave starts at the first slab plane at least dz/2 above its
    source). ``pad``: lateral margin (pixels, Δn = 0) on each side, cropped off the images.
    ``checkpoint_slabs`` > 0 recomputes the slab stack in chunks of that many slabs during the
    backward pass instead of storing every field (memory ~ chunks, not depth); ``view_chunk`` > 0
    processes that many views at a time. Images are binned to ``optics.camera_pixel``.
    """
    if dn.dim() != 3:
        raise ValueError(f"dn must be (D, H, W), not {tuple(dn.shape)}")
    if sources.dim() != 2 or sources.shape[1] != 3:
        raise ValueError(f"sources must be (K, 3) positions (z, y, x), not {tuple(sources.shape)}")
    if view_chunk and sources.shape[0] > view_chunk:
        return torch.cat([forward_images(dn, sources[i:i + view_chunk], optics, pad=pad, checkpoint_slabs=checkpoint_slabs)
                          for i in range(0, sources.shape[0], view_chunk)])
    dz, dy, dx = optics.voxel_size
    k0 = optics.k0
    k = k0 * optics.n_background
    d, h, w = dn.shape
    if pad:
        dn = torch.nn.functional.pad(dn, (pad, pad, pad, pad))
    hp, wp = dn.shape[-2:]
    device = dn.device
    tf = transfer_function(hp, wp, dy, dx, dz, k, device)
    # the field leaves the last slab at z = d dz: refocus to the focal plane, pupil, intensity
    refocus = optics.focal_plane(d) - d * dz
    detection = transfer_function(hp, wp, dy, dx, refocus, k, device) * pupil(hp, wp, dy, dx, k0, optics.na, device)
    # each wave starts at the first slab plane at least dz/2 above its source (sources below
    # the volume start at slab 0); views that start at the same slab run together
    starts = [max(0, math.ceil((float(z) + dz / 2) / dz - 1e-9)) for z in sources[:, 0].detach()]
    if max(starts) >= d:
        raise ValueError(f"sources must lie below the top slab (z < {(d - 0.5) * dz:.3g} µm): the light travels towards +z")
    images: list[torch.Tensor | None] = [None] * sources.shape[0]
    for first in sorted(set(starts)):
        idx = [i for i, f in enumerate(starts) if f == first]
        field = point_source_field(sources[idx], first * dz, (hp, wp), dy, dx, k, origin=(-pad * dy, -pad * dx))
        field = _through_slabs(field, dn[first:], k0, dz, tf, checkpoint_slabs)
        img = ifft2(torch.fft.fft2(field) * detection).abs() ** 2
        for j, i in enumerate(idx):
            images[i] = img[j]
    images = torch.stack(images)
    if pad:
        images = images[:, pad:pad + h, pad:pad + w]
    b = optics.binning
    if b > 1:
        hb, wb = (h // b) * b, (w // b) * b
        images = images[:, :hb, :wb].reshape(-1, hb // b, b, wb // b, b).mean(dim=(2, 4))
    return images


def _through_slabs(field: torch.Tensor, dn: torch.Tensor, k0: float, dz: float, tf: torch.Tensor,
                   checkpoint_slabs: int) -> torch.Tensor:
    def run(f: torch.Tensor, slabs: torch.Tensor) -> torch.Tensor:
        for i in range(slabs.shape[0]):
            f = _slab_step(f, slabs[i], k0, dz, tf)
        return f

    if checkpoint_slabs and torch.is_grad_enabled() and (dn.requires_grad or field.requires_grad):
        from torch.utils.checkpoint import checkpoint

        for i in range(0, dn.shape[0], checkpoint_slabs):
            field = checkpoint(run, field, dn[i:i + checkpoint_slabs], use_reentrant=False)
        return field
    return run(field, dn)


def airy_fwhm(wavelength: float, na: float) -> float:
    """Full width at half maximum of the in-focus intensity PSF of a circular pupil: 0.514 λ/NA."""
    return 0.5145 * wavelength / na
