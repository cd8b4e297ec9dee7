"""Source positions from the images themselves, for a ``diffraction`` acquisition without a
sources file (NVP paper: positions "estimated from fluorescence images via Gaussian fitting",
then refined by self-calibration).

Each image holds one source's spot. Through the background medium a point source a distance d
below the focal plane is imaged as an Airy spot when d is small and, as d grows, as a blur disc
of radius about d tan(asin(NA / n)) with a sharp edge. A generalised Gaussian

    I(r) = B + A 2^(-(r / rho)^(2 p))

(a Gaussian for p = 1, tending to a flat disc of radius rho as p grows; rho is the radius at
half maximum) is fitted by least squares to each image's pixels, so a disc that runs off the
field of view is fitted from the part that is seen. The centre gives (y, x); rho gives d
through a table of the same fit on simulated background-medium spots of known defocus
(``defocus_table``), so the table absorbs the optics (NA, binning, the Airy core). The table's
discs are whole; a disc clipped by the field's edge fits smaller, so each estimate is then
corrected against its own bare-medium image simulated on the camera's field (``refine_on_field``).
The depth estimate assumes the source lies below the focal plane, as it does when its light
crosses the sample towards the objective. The sample's index perturbs the spot (fringes, shifts
of a fraction of a µm, a disc widened by scattering that reads as a deeper source): the
positions are a start for the fit's self-calibration, not final.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .optics import Optics
from .pixel_noise import pixel_noise, smoothed_noise

#: How the fit's self-calibration finds positions estimated from the images (``FitConfig``
#: fields; ``estimated_source_schedule`` adds the refit that follows). The sources move jointly
#: with the index from the first iteration: fitted first through the background medium, a
#: source whose light crossed a refracting cell goes to where its lensed spot fits best, not to
#: where it is. And the images are compared blurred at first (4 camera pixels, narrowing to none
#: by half the fit), so that a spot's fringes do not hold a source that is off by tenths of a
#: µm in a local minimum (``FitConfig.anneal_until``: 0.5). Their common depth moves too
#: (``FitConfig.hold_depth`` None resolves to free with a blur): it is estimated, not known.
#: docs/benchmarks.md has the screens on the tuning phantoms and the held-out checks.
ESTIMATED_SOURCE_CALIBRATION: dict[str, float] = {"calibrate_after": 0.0, "anneal_blur": 4.0}


def estimated_source_schedule(iterations: int) -> dict[str, float | int]:
    """``FitConfig`` fields for positions estimated from the spots: ``ESTIMATED_SOURCE_CALIBRATION``
    for a fit of ``iterations``, then as many again afresh from the positions it found (``refit``),
    treated as a sources file's: the moving, blurred start finds the sources but shapes a worse
    index than one fitted around positions already right. A shorter first fit does not find them
    on the hardest tuning case (docs/benchmarks.md)."""
    return {**ESTIMATED_SOURCE_CALIBRATION, "refit": int(iterations)}


@dataclass(frozen=True)
class SpotFit:
    """A generalised Gaussian fitted to one image; lengths in µm in the grid's frame."""

    y: float
    x: float
    rho: float  # radius at half maximum
    sharpness: float  # p: 1 = Gaussian, large = flat disc
    amplitude: float
    background: float
    rms: float  # root-mean-square residual over the image, relative to the amplitude


def _model(params: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    cy, cx, rho, log_p, amp, bg = params
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / (rho * rho)
    return bg + amp * np.exp2(-np.power(r2, math.exp(log_p)))


#: An image whose spot range is under this share of the median image's is taken for a blank frame.
#: A source always makes a spot, but not always as bright a one: with sources inside the sample at
#: different depths the dimmest view of 72 simulated sets was 12 % of the median one
#: (`benchmarks/diffraction_models.py view-contrast`).
BLANK_CONTRAST = 0.03
#: ... or in which nothing stands out of the frame's own noise: smoothed by a Gaussian of
#: ``SPOT_SMOOTHING`` pixels, its brightest inner point under ``BLANK_SNR`` units of the smoothed
#: noise above its median. A dark frame (offset and read noise) spans its noise's range, more
#: than 3 % of a view's at noise levels from 0.1 up: it passed the contrast test in all 108 of
#: those simulated sets. Noise alone reached 2.8 units there, real views 7.3 or more up to noise
#: level 0.1; at 0.3 (about 10 photons at the peak) 10 % of real views stay under 5, their spots
#: barely out of the noise (`benchmarks/diffraction_models.py dark-frames`).
SPOT_SMOOTHING = 2.0
BLANK_SNR = 5.0


def spot_range(image: np.ndarray) -> tuple[float, float]:
    """(background, peak) of one image, robust to noise and single bright pixels: its 5th
    percentile and the maximum of its 3 x 3 mean."""
    from scipy.ndimage import uniform_filter

    img = np.asarray(image, dtype=np.float64)
    return float(np.percentile(img, 5)), float(uniform_filter(img, 3, mode="nearest").max())


def spot_snr(image: np.ndarray) -> float:
    """How far the brightest point of one image (H, W), smoothed by a Gaussian of
    ``SPOT_SMOOTHING`` pixels, stands above the smoothed image's median, in units of the smoothed
    noise (``pixel_noise.smoothed_noise``: white noise averaged by that Gaussian). Points within 2 s of
    the border are not counted (their smoothing repeats the edge pixels, so noise reaches
    higher). Infinite where the noise is 0 or the image is too small to tell."""
    from scipy.ndimage import gaussian_filter

    img = np.asarray(image, dtype=np.float64)
    border = int(math.ceil(2 * SPOT_SMOOTHING))
    noise = pixel_noise(img)
    if min(img.shape) <= 2 * border + 2 or noise <= 0:
        return math.inf
    smooth = gaussian_filter(img, SPOT_SMOOTHING, mode="nearest")
    unit = smoothed_noise(noise, SPOT_SMOOTHING)
    return float(smooth[border:-border, border:-border].max() - np.median(smooth)) / unit


def blank_frames(images: np.ndarray) -> list[int]:
    """Indices of the images (K, H, W) that show no spot, though a source must have made one
    (dropped or dark frames): their spot range is under ``BLANK_CONTRAST`` of the median
    image's, or nothing in them stands ``BLANK_SNR`` noise units out of their own noise."""
    if images.shape[0] < 2:
        return []
    contrast = np.array([hi - lo for lo, hi in map(spot_range, images)])
    typical = float(np.median(contrast))
    dim = contrast < BLANK_CONTRAST * typical if typical > 0 else np.zeros(len(images), dtype=bool)
    noise_only = np.array([spot_snr(im) < BLANK_SNR for im in images])
    return [int(k) for k in np.flatnonzero(dim | noise_only)]


def fit_spot(image: np.ndarray, pixel: float, offset: float = 0.0) -> SpotFit:
    """Least-squares generalised Gaussian of one spot image (H, W) with square pixels of
    ``pixel`` µm whose pixel (0, 0) is centred at (``offset``, ``offset``) µm."""
    from scipy.optimize import least_squares

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or img.size == 0:
        raise InputError(f"a spot image must be 2D, not shape {img.shape}.")
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy, xx = offset + pixel * yy, offset + pixel * xx
    lo, hi = spot_range(img)
    if not np.isfinite(img).all() or hi - lo <= 1e-12 * max(abs(hi), 1.0):
        raise InputError("shows no spot (constant or non-finite values)")
    bright = img > lo + (hi - lo) / 2
    weight = np.where(bright, img - lo, 0.0)
    cy0, cx0 = float((weight * yy).sum() / weight.sum()), float((weight * xx).sum() / weight.sum())
    rho0 = max(pixel, math.sqrt(bright.sum() / math.pi) * pixel)
    field = pixel * max(h, w)
    start = np.array([cy0, cx0, rho0, math.log(2.0), hi - lo, lo])
    lower = [offset - field, offset - field, 0.3 * pixel, math.log(0.5), 0.0, lo - (hi - lo)]
    upper = [offset + 2 * field, offset + 2 * field, 10 * field, math.log(30.0), 10 * (hi - lo), hi]
    start = np.clip(start, np.array(lower) + 1e-9, np.array(upper) - 1e-9)
    fit = least_squares(lambda q: (_model(q, yy, xx) - img).ravel(), start, bounds=(lower, upper),
                        x_scale=[pixel, pixel, pixel, 1.0, hi - lo, hi - lo])
    cy, cx, rho, log_p, amp, bg = (float(v) for v in fit.x)
    if amp <= 0.05 * (hi - lo):
        raise InputError("shows no spot brighter than its background")
    rms = float(np.sqrt(np.mean(fit.fun ** 2)) / amp)
    return SpotFit(cy, cx, rho, math.exp(log_p), amp, bg, rms)


def spot_image(defocus: float, optics: Optics, size: int) -> np.ndarray:
    """The image (size, size) on the optics' grid pixels of a point source ``defocus`` µm below
    the focal plane, through the background medium, at pixel (size // 2, size // 2)."""
    import torch

    from .wave_optics import ifft2, point_source_field, pupil

    _, dy, dx = optics.voxel_size
    k0 = optics.k0
    src = torch.tensor([[-float(defocus), (size // 2) * dy, (size // 2) * dx]], dtype=torch.float32)
    with torch.no_grad():
        field = point_source_field(src, 0.0, (size, size), dy, dx, k0 * optics.n_background)
        img = ifft2(torch.fft.fft2(field) * pupil(size, size, dy, dx, k0, optics.na)).abs()[0] ** 2
    return img.numpy()


def _cone_tan(optics: Optics) -> float:
    s = optics.na / optics.n_background
    return s / math.sqrt(max(1e-12, 1 - s * s))


#: Pixels across the window a table spot is fitted in (larger spots are block-averaged to it).
TABLE_WINDOW = 96


def spot_radius(defocus: float, optics: Optics) -> float:
    """The fitted radius at half maximum (µm) of a background-medium spot ``defocus`` µm below
    the focal plane, seen with the camera's pixels (or coarser ones for wide spots)."""
    _, dy, _ = optics.voxel_size
    cam = dy * optics.binning
    radius = defocus * _cone_tan(optics) + 2 * optics.wavelength / optics.na
    # a window of three disc diameters, in camera pixels or in blocks of them
    block = max(1, math.ceil(6 * radius / (cam * TABLE_WINDOW)))
    size = TABLE_WINDOW * block * optics.binning
    img = spot_image(max(defocus, 0.01), optics, size)  # the field needs a plane above the source: 10 nm is in focus
    n = size // (block * optics.binning)
    img = img.reshape(n, size // n, n, size // n).mean(axis=(1, 3))
    pixel = dy * size / n
    return fit_spot(img, pixel, (size / n - 1) / 2 * dy).rho


def defocus_table(optics: Optics, max_defocus: float, points: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(defocus µm, fitted rho µm) of background-medium spots from 0 to ``max_defocus``; rho
    made non-decreasing (near focus it barely changes: depth is ill-determined there)."""
    defocus = np.concatenate([[0.0], np.geomspace(0.2, max(max_defocus, 0.3), points - 1)])
    rho = np.array([spot_radius(float(d), optics) for d in defocus])
    return defocus, np.maximum.accumulate(rho)


def _camera(optics: Optics) -> tuple[float, float]:
    """(camera pixel µm, centre of camera pixel 0 in the grid's frame µm): a binned pixel
    covers grid pixels 0..b-1, so its centre lies (b - 1) / 2 grid pixels in."""
    _, dy, _ = optics.voxel_size
    return dy * optics.binning, (optics.binning - 1) / 2 * dy


def coherence_masks(images: np.ndarray, optics: Optics, fraction: float) -> np.ndarray:
    """(K, H, W) 0/1 masks for the image loss: the pixels within ``fraction`` of each image's
    fitted spot radius from its centre (NVP paper's coherence mask).

    The model's point source is coherent; real fluorescence is not (an emission band, an
    extended emitter, out-of-focus haze), and the mismatch is worst outside the blur disc (haze
    only) and at its sharp edge (fringes the partial coherence washes out), so the loss keeps
    the disc's interior. Taken from the data, the mask does not depend on the positions given."""
    images = np.asarray(images)
    cam, offset = _camera(optics)
    k, h, w = images.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy, xx = offset + cam * yy, offset + cam * xx
    masks = np.zeros(images.shape, np.float32)
    for i, img in enumerate(images):
        try:
            spot = fit_spot(img, cam, offset)
        except InputError as err:
            raise InputError(f"cannot place the coherence mask of image {i}: it {err}; set the coherence mask to 0.") from None
        radius = max(fraction * spot.rho, 3 * cam)  # an in-focus spot keeps at least its core
        masks[i] = (yy - spot.y) ** 2 + (xx - spot.x) ** 2 <= radius ** 2
    return masks


@dataclass(frozen=True)
class SourceEstimate:
    positions: np.ndarray  # (K, 3) µm, z y x
    spots: list[SpotFit]


#: Lateral margin (grid pixels, Δn 0) of the forward model a fit uses (``FitConfig.pad``'s
#: default): the estimates' correction simulates the spots with the same model.
FIT_PAD = 16

#: Rounds of the correction of each estimate against its simulated bare-medium image (it
#: converges in two or three; a round costs one forward pass of the K views).
REFINE_ROUNDS = 4


def estimate_sources(images: np.ndarray, optics: Optics, depth: int, max_defocus: float | None = None, *,
                     pad: int = FIT_PAD, refine: int = REFINE_ROUNDS) -> SourceEstimate:
    """(K, 3) source positions (z, y, x) µm from K spot images (camera pixels) of a volume of
    ``depth`` slabs. ``max_defocus``: the deepest a source is looked for below the focal plane
    (default: twice the field of view's width). ``pad``: the lateral margin (grid pixels) of the
    forward model the fit will use (``FitConfig.pad``); ``refine``: rounds of the correction on
    the camera's own field (``refine_on_field``; 0 keeps the table's estimate)."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[0] == 0:
        raise InputError(f"estimating source positions needs a stack of K spot images (K, H, W), not shape {images.shape}.")
    cam, offset = _camera(optics)
    field = cam * max(images.shape[1:])
    max_d = 2 * field if max_defocus is None else float(max_defocus)
    table_d, table_rho = defocus_table(optics, max_d)
    focus = optics.focal_plane(depth)
    top = (depth - 1) * optics.voxel_size[0]
    spots, positions = [], []
    for k, img in enumerate(images):
        try:
            spot = fit_spot(img, cam, offset)
        except InputError as err:
            raise InputError(f"cannot estimate the source of image {k}: it {err}; give a sources file instead.") from None
        if spot.rho > table_rho[-1]:
            raise InputError(f"the spot of image {k} (radius {spot.rho:.2f} µm) is wider than a source {max_d:.1f} µm below "
                             "the focal plane gives: check the optics (NA, voxel size) or give a sources file.")
        d = float(np.interp(spot.rho, table_rho, table_d))
        spots.append(spot)
        positions.append((min(focus - d, top), spot.y, spot.x))
    positions = np.asarray(positions)
    if refine > 0:
        positions = refine_on_field(positions, spots, images.shape[1:], optics, depth, (table_d, table_rho), pad, refine)
    return SourceEstimate(positions.astype(np.float32), spots)


def refine_on_field(positions: np.ndarray, spots: list[SpotFit], image_shape: tuple[int, ...], optics: Optics,
                    depth: int, table: tuple[np.ndarray, np.ndarray], pad: int, rounds: int) -> np.ndarray:
    """Correct table estimates (K, 3) so that the bare-medium image of each source, simulated on
    the camera's own field and fitted the same way, has the spot that was observed.

    The table's radii are fitted on whole discs; a disc that runs off the field is fitted from
    the part that is seen and comes out smaller, so the table puts a deep source too shallow
    (0.10-0.14 µm on average for sources 2 µm below a 32 x 64 x 64 volume, whose discs of about
    5.3 µm radius overfill the 12.8 µm field; docs/benchmarks.md). Each round simulates the
    images of the current positions with the fit's own forward model (the same field, margin,
    binning and focal plane), fits them like the data, and moves each source by the difference:
    laterally by the centres' offset, in depth by the radii's divided by the table's slope
    d rho / d defocus. Sources near focus (where the radius barely depends on depth) keep their
    depth; sources inside the volume, whose light is not seen through the bare medium alone, stay
    as the table put them."""
    import torch

    from .wave_optics import forward_images

    table_d, table_rho = table
    cam, offset = _camera(optics)
    h, w = (int(n) * optics.binning for n in image_shape)
    focus = optics.focal_plane(depth)
    dz = optics.voxel_size[0]
    slope = np.gradient(table_rho, table_d)
    min_slope = 0.5 * _cone_tan(optics)  # below this the radius hardly tells depth: near focus
    pos = np.array(positions, dtype=np.float64)
    below = np.flatnonzero(pos[:, 0] < -dz / 2)
    for _ in range(rounds if below.size else 0):
        with torch.no_grad():
            sim = forward_images(torch.zeros(depth, h, w), torch.from_numpy(pos[below].astype(np.float32)), optics,
                                 pad=pad).numpy()
        step = np.zeros((below.size, 3))
        for j, i in enumerate(below):
            try:
                model = fit_spot(sim[j], cam, offset)
            except InputError:  # the simulated spot left the field: keep this source as it is
                continue
            step[j, 1:] = spots[i].y - model.y, spots[i].x - model.x
            g = float(np.interp(focus - pos[i, 0], table_d, slope))
            if g >= min_slope:
                step[j, 0] = -(spots[i].rho - model.rho) / g  # a larger observed disc: deeper, lower z
        pos[below] += step
        pos[below, 0] = np.minimum(pos[below, 0], -dz / 2)
        if np.abs(step).max() < 1e-3:
            break
    return pos
