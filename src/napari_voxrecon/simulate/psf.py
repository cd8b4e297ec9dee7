"""A Gaussian model of a fluorescence microscope's point spread function.

A real PSF is an Airy pattern laterally and an elongated, slightly asymmetric lobe axially; for
training data the Gaussian of matching full width at half maximum (FWHM) is the usual stand-in
(Zhang, Zerubia & Olivo-Marin, "Gaussian approximations of fluorescence microscope point-spread
function models", Appl. Opt. 46, 2007): it gets the anisotropy and the resolution right, which is
what a reconstruction model has to learn, and it is separable, so blurring is cheap.

FWHM formulas (emission wavelength lambda, numerical aperture NA, immersion index n):

- lateral:  FWHM_xy = 0.51 * lambda / NA                       (Airy disc FWHM; confocal-ish, as
  quoted in Zeiss' "Confocal Laser Scanning Microscopy" notes, Wilhelm et al.)
- axial:    FWHM_z  = 0.88 * lambda / (n - sqrt(n^2 - NA^2))   (same source; it holds for high NA,
  where the paraxial 2 n lambda / NA^2 overestimates the axial extent)

and a Gaussian's sigma is FWHM / (2 sqrt(2 ln 2)) = FWHM / 2.3548.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

#: FWHM = FWHM_PER_SIGMA * sigma for a Gaussian.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

#: Above this sigma (in voxels) ``apply_psf`` blurs in Fourier space: a spatial kernel of
#: 8 sigma taps per axis costs more than one FFT of the (padded) volume from about here on.
FFT_SIGMA_THRESHOLD = 8.0


def psf_fwhm_um(
    na: float = 1.0, wavelength_um: float = 0.52, refractive_index: float = 1.33
) -> tuple[float, float]:
    """(axial, lateral) FWHM in micrometres of the PSF (formulas in the module docstring)."""
    if not 0 < na < refractive_index:
        raise ValueError(
            f"the numerical aperture must lie between 0 and the refractive index {refractive_index}, got {na}."
        )
    if wavelength_um <= 0:
        raise ValueError(f"the wavelength must be positive, got {wavelength_um} um.")
    lateral = 0.51 * wavelength_um / na
    axial = 0.88 * wavelength_um / (refractive_index - math.sqrt(refractive_index**2 - na**2))
    return axial, lateral


def gaussian_psf_sigmas(
    voxel_size_zyx: Sequence[float],
    na: float = 1.0,
    wavelength_um: float = 0.52,
    refractive_index: float = 1.33,
) -> tuple[float, float, float]:
    """Gaussian sigmas (sz, sy, sx) in voxels of a microscope with these optics.

    ``voxel_size_zyx`` is in micrometres; the defaults are a water-immersion NA 1.0 objective
    and green (GFP-like) emission.
    """
    vz, vy, vx = (float(v) for v in voxel_size_zyx)
    if min(vz, vy, vx) <= 0:
        raise ValueError(f"voxel sizes must be positive, got {tuple(voxel_size_zyx)}.")
    axial, lateral = psf_fwhm_um(na, wavelength_um, refractive_index)
    return (
        axial / FWHM_PER_SIGMA / vz,
        lateral / FWHM_PER_SIGMA / vy,
        lateral / FWHM_PER_SIGMA / vx,
    )


def _fft_gaussian(volume: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """Gaussian blur in Fourier space, with reflect padding of 4 sigma so that the FFT's
    periodic wrap-around does not bleed one face of the volume into the opposite one."""
    from scipy import fft, ndimage

    pads = [(int(math.ceil(4 * s)),) * 2 if s > 0 else (0, 0) for s in sigmas]
    pads = [(min(p[0], n - 1), min(p[1], n - 1)) for p, n in zip(pads, volume.shape)]
    padded = np.pad(volume, pads, mode="symmetric")
    spectrum = fft.rfftn(padded, workers=-1)
    # fourier_gaussian needs the length of the last (halved) axis to build the right kernel.
    spectrum = ndimage.fourier_gaussian(spectrum, sigma=list(sigmas), n=padded.shape[-1])
    out = fft.irfftn(spectrum, s=padded.shape, workers=-1)
    crop = tuple(slice(p[0], p[0] + n) for p, n in zip(pads, volume.shape))
    return out[crop]


def apply_psf(volume: np.ndarray, sigmas: Sequence[float], method: str = "auto") -> np.ndarray:
    """Blur ``volume`` with a separable Gaussian PSF of ``sigmas`` (voxels, one per axis).

    ``method`` is ``"spatial"`` (scipy.ndimage.gaussian_filter, reflect boundaries),
    ``"fft"`` (Fourier space, reflect padding) or ``"auto"`` (FFT once the largest sigma
    exceeds ``FFT_SIGMA_THRESHOLD``). Returns float32; the total intensity is preserved
    (away from the borders), as optics move photons but do not make or lose them.
    """
    from scipy import ndimage

    vol = np.asarray(volume, dtype=np.float32)
    sig = [float(s) for s in sigmas]
    if len(sig) != vol.ndim:
        raise ValueError(f"one sigma per axis is needed: {vol.ndim} axes, {len(sig)} sigmas.")
    if min(sig) < 0:
        raise ValueError(f"sigmas must be non-negative, got {tuple(sig)}.")
    if max(sig) == 0:
        return vol.copy()
    if method == "auto":
        method = "fft" if max(sig) > FFT_SIGMA_THRESHOLD else "spatial"
    if method == "fft":
        return _fft_gaussian(vol, sig).astype(np.float32)
    if method != "spatial":
        raise ValueError(f"method must be 'auto', 'spatial' or 'fft', got {method!r}.")
    return ndimage.gaussian_filter(vol, sigma=sig, mode="reflect", truncate=4.0)
