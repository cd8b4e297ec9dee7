"""Benchmark of the ``diffraction`` task: NVP against the ``explicit`` and ``triplane`` baselines.

Every case is simulated: a refractive-index phantom (``make_ri_phantom``, cells by default) of a
seed, K point sources below it (``draw_sources``), K images through the multi-slice model with
Poisson-Gaussian noise (``simulate_diffraction``). Each method then fits the index from the
images and the sources through the same physics and loss (``fit_index``), and the recovered
contrast Δn is scored against the truth: PSNR with the truth's Δn range as the peak, and 3D SSIM
(scikit-image, same data range).

Seeds 100-102 are the tuning phantoms (``tune``); the benchmark (``bench``) uses seeds from 200
on, never seen while tuning. Each bench row is read against the floor it prints first: what an
index of Δn 0 everywhere (the medium, nothing recovered) scores on the same cases.

    # the held-out table at 6, 7 and 20 views (PSNR / SSIM, mean over the seeds)
    python benchmarks/diffraction_models.py bench --views 6 7 20 --seeds 200 201 202
    # self-calibration: the given source positions perturbed by 0.5 µm (std per axis)
    python benchmarks/diffraction_models.py bench --views 6 --perturb 0.5
    # no sources file: positions estimated from the spots (generalised Gaussian fit), then refined
    python benchmarks/diffraction_models.py bench --views 6 --estimate-sources
    # real structure: crops of a confocal stack read as index (intensity -> Δn), true sources
    python benchmarks/diffraction_models.py bench --phantoms volume --volume ../shared/data/cells3d_nuclei.tif --seeds 200 201 202
    # partially coherent fluorescence (emission band, extended emitter, haze), with and without the coherence mask
    python benchmarks/diffraction_models.py bench --views 6 --partial-coherence --alignments none background=1,blur=1
    # cells and nuclei with lobed outlines instead of ellipsoids (the same layout per seed)
    python benchmarks/diffraction_models.py bench --views 6 --phantoms cell tissue --irregular 0.25
    # a representation's settings changed for one run (here the feature smoothing switched off)
    python benchmarks/diffraction_models.py bench --views 6 --methods nvp triplane --field-kw '{"smooth": 0}'
    # how much of the volume the views see, and each fit scored over the seen and unseen voxels
    python benchmarks/diffraction_models.py coverage --shape 32 128 128 --phantoms volume --volume ../shared/data/cells3d_nuclei.tif --methods nvp --fit-kw '{"tv": 1e-3, "sparsity": 7.5e-4}'
    # time and peak memory of one fit per grid size
    python benchmarks/diffraction_models.py timing --shapes 32 64 64  64 128 128
    # tuning: the built-in grid (or --configs a JSON list), scored on the tuning phantoms (one JSON line each)
    python benchmarks/diffraction_models.py tune --out tune.jsonl --part 0/4
    # where the error lies (tuning cell seed 100, 6 views, the fits before sparsity and pruning)
    python benchmarks/diffraction_models.py diagnose --phantoms cell --seeds 100 --methods nvp triplane --no-priors --threads 1
    # faulty images through the job: a hot pixel (repaired or not), background-subtracted frames, an offset, a clipping camera
    python benchmarks/diffraction_models.py defects --phantoms cell tubes --seeds 200 201
    # the hot-pixel check: noise taken for hot pixels, and cosmic rays of one to four pixels found
    python benchmarks/diffraction_models.py hot-noise --phantoms cell tubes tissue --seeds 200 201 202 --shape 16 48 48
    # dark frames (read noise only) against the blank-frame check, and real views it takes for blank
    python benchmarks/diffraction_models.py dark-frames --phantoms cell tubes tissue --seeds 200 201 202 --shape 16 48 48
    # how dim a real view gets (sources below and inside, coherent and partially coherent), against the blank-frame threshold
    python benchmarks/diffraction_models.py view-contrast --phantoms cell tubes tissue --seeds 200 201 202 --views 6 20 --shape 16 48 48 --noise 0.05
    # paired over seeds: two methods' bench runs (their stderr saved to files)
    python benchmarks/diffraction_models.py compare --logs nvp.log triplane.log --pair nvp triplane --phantoms cell tubes tissue
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import finish  # noqa: E402

from napari_voxrecon.methods.diffraction_methods import DEFAULTS, fit_config  # noqa: E402
from napari_voxrecon.models.diffraction_fit import FitConfig, fit_index  # noqa: E402
from napari_voxrecon.physics.coverage import views_per_voxel  # noqa: E402
from napari_voxrecon.physics.optics import Optics  # noqa: E402
from napari_voxrecon.physics.source_fit import REFINE_ROUNDS, estimate_sources, estimated_source_schedule  # noqa: E402
from napari_voxrecon.simulate.diffraction import (  # noqa: E402
    TYPICAL_PARTIAL_COHERENCE, PartialCoherence, draw_sources, simulate_diffraction)
from napari_voxrecon.simulate.ri_phantoms import RI_PHANTOM_KINDS, make_ri_phantom  # noqa: E402

KINDS = ("explicit", "triplane", "nvp")


@dataclass
class Case:
    seed: int
    truth: np.ndarray  # Δn (D, H, W)
    images: np.ndarray  # (K, H, W)
    sources: np.ndarray  # (K, 3) true positions, µm
    optics: Optics
    estimate: np.ndarray | None = None  # (K, 3) positions estimated from the images (bench --estimate-sources)


#: bench --phantoms volume: crops of a real fluorescence volume (--volume) read as an index
VOLUME_KIND = "volume"


def load_volume(path: str, voxel_um: tuple[float, float, float], optics: Optics, dn_max: float) -> np.ndarray:
    """A real fluorescence volume as a Δn volume on the fit's voxel grid.

    The stack is resampled from its own voxel size to the optics' and its intensity mapped to
    0..dn_max: the median (the background: nuclei fill a minority of the cells3d stack) is Δn 0,
    the 99.9th percentile dn_max. Dense stained matter (chromatin) standing for higher index is
    the usual proxy; what matters here is that the structure is a real specimen's, not a drawn one.
    """
    from scipy.ndimage import zoom

    from napari_voxrecon.io import read_volume

    vol = read_volume(path).data.astype(np.float32)  # the package's reader: a 3D stack, or a message saying why not
    vol = zoom(vol, [a / b for a, b in zip(voxel_um, optics.voxel_size)], order=1)
    lo, hi = np.percentile(vol, [50, 99.9])
    return (dn_max * np.clip((vol - lo) / max(hi - lo, 1e-6), 0, 1)).astype(np.float32)


def crop_volume(volume: np.ndarray, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """The crop of ``shape`` a seed picks: the depth window holding the most signal, a lateral
    position drawn among those where structure fills 10-70 % of the crop (no empty fields)."""
    d, h, w = shape
    if any(a > b for a, b in zip(shape, volume.shape)):
        raise SystemExit(f"--shape {shape} is larger than the resampled volume {volume.shape}")
    per_z = volume.sum(axis=(1, 2))
    z0 = int(np.argmax(np.convolve(per_z, np.ones(d), mode="valid")))
    slab = volume[z0:z0 + d]
    thresh = 0.2 * float(volume.max())
    rng = np.random.default_rng(seed)
    for _ in range(200):
        y0, x0 = int(rng.integers(0, volume.shape[1] - h + 1)), int(rng.integers(0, volume.shape[2] - w + 1))
        crop = slab[:, y0:y0 + h, x0:x0 + w]
        if 0.1 <= float((crop > thresh).mean()) <= 0.7:
            return crop.copy()
    raise SystemExit(f"no crop of {shape} with 10-70 % structure found in the volume for seed {seed}")


def make_case(seed: int, shape: tuple[int, int, int], views: int, *, kind: str = "cell", noise: float = 0.01,
              placement: str = "below", coherence: PartialCoherence | None = None,
              volume: np.ndarray | None = None, irregular: float = 0.0, density: float = 1.0) -> Case:
    optics = Optics()
    if kind == VOLUME_KIND:
        if volume is None:
            raise SystemExit("--phantoms volume needs --volume PATH (a real 3D stack, e.g. ../shared/data/cells3d_nuclei.tif)")
        ri = crop_volume(volume, shape, seed) + np.float32(optics.n_background)
    else:
        ri = make_ri_phantom(shape, kind, seed=seed, voxel_size=optics.voxel_size, n_background=optics.n_background,
                             irregular=irregular if kind != "tubes" else 0.0, density=density if kind == "tissue" else 1.0)
    sources = draw_sources(shape, optics, views, placement, seed=seed + 10_000)
    images = simulate_diffraction(ri, optics, sources, noise_level=noise, seed=seed + 20_000, coherence=coherence)
    return Case(seed, ri - np.float32(optics.n_background), images, sources, optics)


def score(dn: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    from skimage.metrics import structural_similarity

    rng = float(truth.max() - truth.min()) or 1.0
    mse = float(np.mean((dn.astype(np.float64) - truth) ** 2))
    psnr = 10 * np.log10(rng ** 2 / max(mse, 1e-30))
    ssim = float(structural_similarity(truth, dn.astype(np.float32), data_range=rng))
    return float(psnr), ssim


def run_fit(case: Case, kind: str, sources: np.ndarray | None = None, device: str = "cpu", **overrides: Any) -> dict[str, Any]:
    cfg = fit_config(kind, **overrides)
    t0 = time.perf_counter()
    res = fit_index(case.images, case.sources if sources is None else sources, case.optics, case.truth.shape[0], kind, cfg,
                    device=device)
    psnr, ssim = score(res.dn, case.truth)
    err = float(np.sqrt(np.mean(np.sum((res.sources - case.sources) ** 2, axis=1))))
    return {"psnr": psnr, "ssim": ssim, "seconds": time.perf_counter() - t0, "source_error_um": err,
            "final_loss": res.losses[-1]}


def _header(args: argparse.Namespace, what: str) -> list[str]:
    grids = (" ".join(str(tuple(args.shapes[i:i + 3])) for i in range(0, len(args.shapes), 3)) if args.mode == "timing"
             else str(tuple(args.shape)))
    real = (f" ('{VOLUME_KIND}': crops of the real stack {args.volume}, voxels {tuple(args.volume_voxel)} µm resampled, "
            f"intensity from median to 99.9th percentile read as Δn 0-{args.volume_max_dn:g})"
            if getattr(args, "volume", None) else "")
    return [f"Data: simulated {' and '.join(args.phantoms)} phantoms{real} {grids} (z, y, x; voxels 0.4 x 0.2 x 0.2 µm), sources "
            f"{args.placement} the volume{_phantom_words(args)}, noise level {args.noise}{_coherence_words(args)}; seeds {args.seeds}; date {date.today()}; machine "
            f"{platform.machine()}, {_device_words(args.device)}.", "",
            f"Command: `python benchmarks/diffraction_models.py {what}`", ""]


def _phantom_words(args: argparse.Namespace) -> str:
    irregular = getattr(args, "irregular", 0.0)
    density = getattr(args, "density", 1.0)
    words = f", outlines of cells and nuclei irregular ({irregular:g}; tubes unchanged)" if irregular else ""
    return words + (f", tissue at {density:g} times the usual cells per volume" if density != 1.0 else "")


def _overrides_words(args: argparse.Namespace) -> list[str]:
    given = {k: json.loads(v) for k, v in (("--fit-kw", args.fit_kw), ("--field-kw", args.field_kw)) if v}
    return ["", "Settings over each method's defaults: " + "; ".join(f"{k} {json.dumps(v)}" for k, v in given.items()) + "."] \
        if given else []


def method_overrides(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """bench, coverage: the FitConfig fields over method ``kind``'s defaults: --fit-kw, with the
    representation settings (field_kw) merged key by key, the method's own first, then a
    field_kw inside --fit-kw, then --field-kw, so '{"field_kw": {"smooth": 0}}' changes one
    setting instead of replacing them all; the voxel grid, which has none, ignores them."""
    fit_kw = json.loads(args.fit_kw) if args.fit_kw else {}
    layers = [layer for layer in (fit_kw.pop("field_kw", None), json.loads(args.field_kw) if args.field_kw else None) if layer]
    if layers and "field_kw" in DEFAULTS[kind]:
        fit_kw["field_kw"] = {k: v for layer in (DEFAULTS[kind]["field_kw"], *layers) for k, v in layer.items()}
    return fit_kw


def _coherence(args: argparse.Namespace) -> PartialCoherence | None:
    return TYPICAL_PARTIAL_COHERENCE if getattr(args, "partial_coherence", False) else None


def _coherence_words(args: argparse.Namespace) -> str:
    pc = _coherence(args)
    if pc is None:
        return ", coherent point sources"
    return (f", partially coherent fluorescence (emission band {pc.bandwidth * 1000:.0f} nm, emitter extent "
            f"{pc.source_size} µm std, incoherent haze {pc.haze:.0%} of the peak)")


#: bench --alignments: spec keys -> FitConfig fields
ALIGNMENT_KEYS = {"mask": "coherence_mask", "background": "background_order", "blur": "compare_blur"}


def _alignment(spec: str) -> dict[str, Any]:
    """'none' or e.g. 'background=1,blur=1,mask=0.9' -> FitConfig overrides (all off otherwise)."""
    out: dict[str, Any] = {"coherence_mask": 0.0, "background_order": -1, "compare_blur": 0.0}
    for part in ([] if spec == "none" else spec.split(",")):
        key, value = part.split("=")
        field_name = ALIGNMENT_KEYS[key.strip()]
        out[field_name] = int(value) if field_name == "background_order" else float(value)
    return out


def _alignment_words(spec: str) -> str:
    return "no coherence alignment" if spec == "none" else "alignment " + spec


def _device_words(device: str) -> str:
    import os

    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(0)
    return f"{os.cpu_count()} CPU cores, no GPU"


def cmd_bench(args: argparse.Namespace) -> None:
    lines = _header(args, " ".join(sys.argv[1:]))
    perturbed = args.perturb > 0
    lines += ["| views | phantom | method | sources | PSNR | SSIM | source error µm | s / fit |", "|---|---|---|---|---|---|---|---|"]
    for views, phantom in [(v, k) for v in args.views for k in args.phantoms]:
        cases = [make_case(s, tuple(args.shape), views, kind=phantom, noise=args.noise, placement=args.placement,
                           coherence=_coherence(args), volume=args.volume_dn, irregular=args.irregular,
                           density=args.density) for s in args.seeds]
        given_by = "estimated" if args.estimate_sources else ("perturbed" if perturbed else "true")
        # arms: (label, calibrate, FitConfig fields of the schedule); the true sources' flag is added below
        after = {} if args.calibrate_after is None else {"calibrate_after": args.calibrate_after}
        joint = ({**estimated_source_schedule(args.iterations), **after} if args.estimate_sources and not args.plain_joint
                 else dict(after))
        if args.anneal_blur is not None:
            joint["anneal_blur"] = args.anneal_blur
        if args.refit is not None:
            joint["refit"] = args.refit
        held = {} if args.hold_depth is None else {"hold_depth": bool(args.hold_depth)}  # every calibrating arm

        def words(schedule: dict[str, float]) -> str:
            out = f" from {schedule['calibrate_after']:g}" if "calibrate_after" in schedule else ""
            if schedule.get("anneal_blur"):
                out += f", blur {schedule['anneal_blur']:g} px annealed to {FitConfig.anneal_until:g}"
            if schedule.get("refit"):
                out += f", then {schedule['refit']} iterations afresh from the sources found"
            if "hold_depth" in held:
                out += ", depth plane " + ("held" if held["hold_depth"] else "free")
            return out

        arms = {"true": ("true" + words({}), True, dict(held)),
                "fixed": (f"{given_by}, fixed", False, {}),
                "joint": (f"{given_by}, joint calibration{words(joint)}", True, {**joint, **held})}
        names = args.arms or (["true"] if not (perturbed or args.estimate_sources) else ["fixed", "joint"])
        arms = [(*arms[n], n == "true") for n in names]  # the last field: the fit is given the true sources
        if args.estimate_sources:
            for case in cases:
                est = estimate_sources(case.images, case.optics, case.truth.shape[0]).positions
                case.estimate = est
                err = np.sqrt(np.sum((est - case.sources) ** 2, axis=1))
                print(f"views {views} {phantom} seed {case.seed}: estimated sources off by {np.round(err, 3).tolist()} µm "
                      f"(z {np.round(est[:, 0] - case.sources[:, 0], 3).tolist()})", file=sys.stderr, flush=True)
        if args.alignments != ["none"]:
            arms = [(label + f", {_alignment_words(a)}", calibrate, schedule, true, _alignment(a))
                    for label, calibrate, schedule, true in arms for a in args.alignments]
        else:
            arms = [(*arm, {}) for arm in arms]
        # what a fit that recovers nothing scores (Δn 0: the medium only), the floor of every row:
        # sparse phantoms (a few thin tubes) score high here, so read the methods against it
        floor = [score(np.zeros_like(c.truth), c.truth) for c in cases]
        for case, (psnr, ssim) in zip(cases, floor):
            print(f"views {views} {phantom} zero medium seed {case.seed}: {{'psnr': {psnr}, 'ssim': {ssim}}}", file=sys.stderr, flush=True)
        lines.append(f"| {views} | {phantom} | none (Δn 0, the medium) | | {np.mean([f[0] for f in floor]):.2f} | "
                     f"{np.mean([f[1] for f in floor]):.4f} | | |")
        for kind in args.methods:
            fields = method_overrides(kind, args)
            for label, calibrate, schedule, true, align in arms:
                rows = []
                for case in cases:
                    given = case.estimate if args.estimate_sources else case.sources
                    if true:
                        given = case.sources
                    elif perturbed:
                        rng = np.random.default_rng(case.seed + 30_000)
                        given = (case.sources + rng.normal(0, args.perturb, case.sources.shape)).astype(np.float32)
                    rows.append(run_fit(case, kind, given, args.device, **{"calibrate": calibrate, "iterations": args.iterations,
                                                                          **schedule, **align, **fields}))
                    print(f"views {views} {phantom} {kind} {label} seed {case.seed}: {rows[-1]}", file=sys.stderr, flush=True)
                mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
                lines.append(f"| {views} | {phantom} | {kind} | {label} | {mean['psnr']:.2f} | {mean['ssim']:.4f} | "
                             f"{mean['source_error_um']:.3f} | {mean['seconds']:.1f} |")
    if args.estimate_sources:
        lines += ["", "Source positions given to the fit: estimated from the images (``physics.source_fit``), as a "
                  "reconstruction without a sources file does."]
    lines += _overrides_words(args)
    if perturbed:
        lines += ["", f"Source positions given to the fit: the true ones plus Gaussian errors of {args.perturb} µm "
                  "(standard deviation per axis)."]
    finish(lines, args.out)


def cmd_coverage(args: argparse.Namespace) -> None:
    """Per case: the share of the volume the views' cones see (by one, by three or more), and with
    --methods each method's fit (its defaults with --fit-kw on top) scored over the whole volume,
    the seen voxels and the unseen ones, beside the Δn 0 floor: whether a poor score is the
    geometry's (unseen voxels) or the fit's."""
    from skimage.metrics import peak_signal_noise_ratio

    lines = _header(args, " ".join(sys.argv[1:])) + [
        "| views | phantom | seed | seen by 1 / by 3+ | method | PSNR all | PSNR seen | PSNR unseen |", "|---|---|---|---|---|---|---|---|"]
    for views in args.views:
        for phantom in args.phantoms:
            for seed in args.seeds:
                case = make_case(seed, tuple(args.shape), views, kind=phantom, noise=args.noise, placement=args.placement,
                                 volume=args.volume_dn, irregular=args.irregular, density=args.density)
                count = views_per_voxel(case.truth.shape, case.sources, case.optics)
                seen = count >= 1
                rng = float(case.truth.max() - case.truth.min()) or 1.0
                cover = f"{100 * seen.mean():.0f} % / {100 * (count >= 3).mean():.0f} %"
                fits = [("none (Δn 0)", np.zeros_like(case.truth))]
                for kind in args.methods:
                    res = fit_index(case.images, case.sources, case.optics, case.truth.shape[0], kind,
                                    fit_config(kind, iterations=args.iterations, **method_overrides(kind, args)),
                                    device=args.device)
                    fits.append((kind, res.dn))
                for name, dn in fits:
                    part = lambda m: (f"{peak_signal_noise_ratio(case.truth[m], dn[m], data_range=rng):.2f}"  # noqa: E731
                                      if m.any() else "")
                    lines.append(f"| {views} | {phantom} | {seed} | {cover} | {name} | {part(np.ones_like(seen))} | "
                                 f"{part(seen)} | {part(~seen)} |")
                    print(lines[-1], file=sys.stderr, flush=True)
    lines += _overrides_words(args)
    finish(lines, args.out)


def cmd_timing(args: argparse.Namespace) -> None:
    import torch

    lines = _header(args, " ".join(sys.argv[1:]))
    lines += ["| grid (z, y, x) | method | iterations | s total | s / iteration | peak memory GB |", "|---|---|---|---|---|---|"]
    shapes = [tuple(args.shapes[i:i + 3]) for i in range(0, len(args.shapes), 3)]
    for shape in shapes:
        case = make_case(args.seeds[0], shape, args.views[0], kind=args.phantoms[0], noise=args.noise, placement=args.placement)
        for kind in args.methods:
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            r = run_fit(case, kind, None, args.device, iterations=args.iterations)
            peak = (torch.cuda.max_memory_allocated() / 1e9 if args.device.startswith("cuda")
                    else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
            lines.append(f"| {shape} | {kind} | {args.iterations} | {r['seconds']:.1f} | {r['seconds'] / args.iterations:.3f} | "
                         f"{peak:.2f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    lines += ["", "Peak memory: the process's maximum resident set on the CPU (it only grows, so a row includes the ones "
              "above it), allocated GPU memory on a GPU."]
    finish(lines, args.out)


#: defects: what is done to the simulated images, and the job's parameters for it
DEFECT_ARMS = (
    ("clean", None, {}),
    ("hot pixel x10, repaired", ("hot", 10.0), {}),
    ("hot pixel x10, not repaired", ("hot", 10.0), {"repair": False}),
    ("hot pixel x30, repaired", ("hot", 30.0), {}),
    ("hot pixel x30, not repaired", ("hot", 30.0), {"repair": False}),
    ("cosmic ray of 3 pixels x10, repaired", ("track", 10.0), {}),
    ("cosmic ray of 3 pixels x10, not repaired", ("track", 10.0), {"repair": False}),
    ("median subtracted, background 1", ("subtract", 0.0), {"background": 1}),
    ("median subtracted, background -1", ("subtract", 0.0), {"background": -1}),
    ("camera offset 1x the peak", ("offset", 1.0), {}),
    ("camera offset 5x the peak", ("offset", 5.0), {}),
    ("blank frame, given with its source", ("blank", 0.0), {}),
    ("blank frame, removed with its source", ("drop", 0.0), {}),
    ("dark frame (read noise only), given with its source", ("dark", 0.0), {}),
    ("dark frame (read noise only), given with its source, contrast test only", ("dark", 0.0), {"noise_test": False}),
    ("clean, blank-frame contrast test only", None, {"noise_test": False}),
    ("clipped at 30 % of the peak, left out", ("clip", 0.3), {}),
    ("clipped at 30 % of the peak, compared", ("clip", 0.3), {"leave_out": False}),
    ("clipped at 15 % of the peak, left out", ("clip", 0.15), {}),
    ("clipped at 15 % of the peak, compared", ("clip", 0.15), {"leave_out": False}),
    ("clipped at 30 %, compared blurred by 1 pixel, left out", ("clip", 0.3), {"blur": 1.0}),
    ("clipped at 30 %, compared blurred by 1 pixel, left out but spread by the blur", ("clip", 0.3),
     {"blur": 1.0, "masked_blur": False}),
    ("clean, sources estimated from the spots", None, {"sources": ""}),
    ("clipped at 30 %, sources estimated from the spots, left out", ("clip", 0.3), {"sources": ""}),
    ("clipped at 30 %, sources estimated from the spots, left out but spread by the blur", ("clip", 0.3),
     {"sources": "", "masked_blur": False}),
    ("clipped at 30 %, then each frame minus its median, left out", ("clip-subtract", 0.3), {}),
    ("clipped at 30 %, then each frame minus its median, stack maximum only", ("clip-subtract", 0.3),
     {"frame_check": False}),
)


def _defective(images: np.ndarray, defect: tuple[str, float] | None, seed: int, noise: float) -> np.ndarray:
    out = images.copy()
    if defect is None:
        return out
    what, factor = defect
    if what == "dark":  # a frame with the shutter closed: the dark level and the read noise of the images' noise model
        k = _blank_view(seed, len(images))
        out[k] = _dark_frame(images, noise, np.random.default_rng(seed + 45_000))
        return out
    if what in ("blank", "drop"):  # a dropped frame written as its background level (or taken out)
        k = _blank_view(seed, len(images))
        out[k] = np.median(images[k])
        return np.delete(out, k, axis=0) if what == "drop" else out
    if what == "hot":  # one pixel of one image, anywhere, factor x the images' peak (a hot pixel, a cosmic ray)
        rng = np.random.default_rng(seed + 30_000)
        k, y, x = (int(rng.integers(0, n)) for n in images.shape)
        out[k, y, x] = factor * float(images.max())
    elif what == "track":  # a cosmic ray through three pixels in a row of one image, anywhere
        rng = np.random.default_rng(seed + 35_000)
        k, y, x = (int(rng.integers(0, n)) for n in (images.shape[0], images.shape[1], images.shape[2] - 2))
        out[k, y, x:x + 3] = factor * float(images.max())
    elif what == "offset":  # dim spots on a camera's offset (raw ADU), the same in every image
        out += np.float32(factor * float(images.max()))
    elif what in ("clip", "clip-subtract"):  # a saturated camera: every pixel above factor x the peak clipped to it
        out = np.minimum(out, np.float32(factor * float(images.max())))
        if what == "clip-subtract":  # ... then each frame's background taken away: a clip level per frame
            out -= np.median(out, axis=(1, 2), keepdims=True)
    else:  # background-subtracted frames: each minus its median
        out -= np.median(out, axis=(1, 2), keepdims=True)
    return out


def _dark_frame(images: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """One frame of the images' dark level (their 5th percentile) and Gaussian read noise as
    ``simulate.degrade.poisson_gaussian_noise`` adds it: ``noise`` / 2 of the bright range."""
    scale = float(np.percentile(images, 99.9) - np.percentile(images, 0.1))
    return (np.percentile(images, 5) + rng.normal(0.0, noise / 2 * scale, images.shape[1:])).astype(np.float32)


def _blank_view(seed: int, views: int) -> int:
    return int(np.random.default_rng(seed + 40_000).integers(0, views))


def cmd_defects(args: argparse.Namespace) -> None:
    """Faulty images through the job (what the CLI and napari run): the repair of hot pixels and
    the warning for subtracted backgrounds, each arm scored as in ``bench``."""
    import tempfile
    from unittest import mock

    from napari_voxrecon.engine import Job, run_job
    from napari_voxrecon.models import diffraction_fit
    from napari_voxrecon.physics import hot_pixels, saturation, source_fit
    from napari_voxrecon.simulate.diffraction import write_sources

    lines = _header(args, " ".join(sys.argv[1:]))
    lines += ["| phantom | seed | method | images | PSNR dB | SSIM |", "|---|---|---|---|---|---|"]
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.phantoms:
            for seed in args.seeds:
                case = make_case(seed, tuple(args.shape), args.views[0], kind=kind, noise=args.noise, placement=args.placement,
                                 volume=args.volume_dn)
                src, opt = Path(tmp) / f"{seed}_sources.json", Path(tmp) / f"{seed}_optics.json"
                write_sources(src, case.sources)
                opt.write_text(json.dumps({**case.optics.to_dict(), "depth": case.truth.shape[0]}))
                for method in args.methods:
                    for label, defect, params in DEFECT_ARMS:
                        if args.only and not any(label == word[1:] if word.startswith("=") else word in label
                                                 for word in args.only):
                            continue
                        params = dict(params)
                        # the arms "before": the job's checks switched off
                        repair, leave_out = params.pop("repair", True), params.pop("leave_out", True)
                        frame_check, masked_blur = params.pop("frame_check", True), params.pop("masked_blur", True)
                        noise_test = params.pop("noise_test", True)
                        given = src
                        if defect is not None and defect[0] == "drop":  # the sources file without that view
                            given = Path(tmp) / f"{seed}_sources_dropped.json"
                            write_sources(given, np.delete(case.sources, _blank_view(seed, len(case.sources)), axis=0))
                        job = Job("diffraction", _defective(case.images, defect, seed, args.noise),
                                  {"sources": str(given), "optics": str(opt), "iterations": args.iterations, **params},
                                  method=method, device=args.device, seed=0)
                        with contextlib.ExitStack() as stack:
                            if not repair:
                                stack.enter_context(mock.patch.object(hot_pixels, "find_hot_pixels",
                                                                      lambda im, o: np.zeros(im.shape, bool)))
                            if not leave_out:
                                stack.enter_context(mock.patch.object(saturation, "saturated_pixels",
                                                                      lambda im: np.zeros(im.shape, bool)))
                            if not frame_check:  # the check of the twenty-first session: the stack's maximum only
                                stack.enter_context(mock.patch.object(saturation, "MIN_PLATEAU_FRAME", 10**9))
                            if not noise_test:  # the blank-frame check of the twenty-first session: contrast only
                                stack.enter_context(mock.patch.object(source_fit, "BLANK_SNR", 0.0))
                            if not masked_blur:  # the blur of the twenty-first session: over every pixel, left out or not
                                plain = diffraction_fit.gaussian_blur
                                stack.enter_context(mock.patch.object(diffraction_fit, "gaussian_blur",
                                                                      lambda x, sigma, keep=None: plain(x, sigma)))
                            out = run_job(job)["result"]
                        psnr, ssim = score(out - np.float32(case.optics.n_background), case.truth)
                        results.setdefault(f"{method} | {label}", []).append(psnr)
                        lines.append(f"| {kind} | {seed} | {method} | {label} | {psnr:.2f} | {ssim:.3f} |")
                        print(lines[-1], file=sys.stderr, flush=True)
    lines += ["", "| method | images | mean PSNR dB | n |", "|---|---|---|---|"]
    lines += [f"| {key} | {np.mean(v):.2f} | {len(v)} |" for key, v in results.items()]
    finish(lines, args.out)


def _varied_cases(args: argparse.Namespace, noises: list[float], views: list[int]) -> Iterator[tuple[Any, ...]]:
    """(kind, seed, placement, coherence, views, noise, case) for every phantom kind and seed,
    sources below and inside, coherent and partially coherent, each view count and noise level:
    the sets the checks on faulty images are measured over (hot-noise, dark-frames, view-contrast)."""
    for kind in args.phantoms:
        for seed in args.seeds:
            for placement in ("below", "inside"):
                for coherence in (None, TYPICAL_PARTIAL_COHERENCE):
                    for n_views in views:
                        for noise in noises:
                            yield kind, seed, placement, coherence, n_views, noise, make_case(
                                seed, tuple(args.shape), n_views, kind=kind, noise=noise, placement=placement,
                                coherence=coherence)


def _varied_header(args: argparse.Namespace, noises: list[float]) -> list[str]:
    """``_header`` for ``_varied_cases``: sources below and inside, both coherences, these noise levels."""
    lines = _header(args, " ".join(sys.argv[1:]))
    lines[0] = (lines[0].replace(f"sources {args.placement} the volume", "sources below and inside the volume")
                .replace(f"noise level {args.noise}", f"noise level{'s' if len(noises) > 1 else ''} "
                         f"{noises if len(noises) > 1 else noises[0]}")
                .replace(_coherence_words(args), ", coherent and partially coherent"))
    return lines


#: hot-noise: cosmic-ray shapes (pixel offsets) put into the images
RAY_SHAPES = {"single": [(0, 0)], "pair": [(0, 0), (0, 1)], "diagonal pair": [(0, 0), (1, 1)],
              "line of three": [(0, 0), (0, 1), (0, 2)], "corner of three": [(0, 0), (0, 1), (1, 1)],
              "block of four": [(0, 0), (0, 1), (1, 0), (1, 1)]}


def cmd_hot_noise(args: argparse.Namespace) -> None:
    """The hot-pixel check on simulated sets: noise taken for hot pixels (sets with any pixel
    flagged) at several ``NOISE_SIGMAS``, and the share of a cosmic ray's pixels found by shape,
    brightness and place (in the dark, or on a view's brightest pixel)."""
    from unittest import mock

    from napari_voxrecon.physics import hot_pixels

    lines = _varied_header(args, args.noise_levels)
    sets = [(c[5], c[6]) for c in _varied_cases(args, args.noise_levels, args.views[:1])]
    lines += [f"Noise taken for hot pixels ({len(sets) // len(args.noise_levels)} sets per noise level: phantoms, seeds, "
              "sources below and inside, coherent and partially coherent): sets with any pixel flagged (pixels flagged).", "",
              "| check | " + " | ".join(f"noise {n:g}" for n in args.noise_levels) + " |",
              "|---|" + "---|" * len(args.noise_levels)]
    ratios = hot_pixels.spot_neighbour_ratios
    checks = {"before: brightest neighbour only, no noise term": (0.0, 1), "up to 3rd neighbour, NOISE_SIGMAS 0": (0.0, 3),
              "up to 3rd neighbour, NOISE_SIGMAS 3": (3.0, 3),
              f"up to 3rd neighbour, NOISE_SIGMAS {hot_pixels.NOISE_SIGMAS:g} (shipped)": (hot_pixels.NOISE_SIGMAS, 3)}
    for name, (sigmas, cluster) in checks.items():
        cells = []
        with mock.patch.object(hot_pixels, "NOISE_SIGMAS", sigmas), mock.patch.object(
                hot_pixels, "spot_neighbour_ratios", lambda optics, n=cluster: ratios(optics, n)):
            for level in args.noise_levels:
                found = [int(hot_pixels.find_hot_pixels(c.images, c.optics).sum()) for n, c in sets if n == level]
                cells.append(f"{sum(f > 0 for f in found)} / {len(found)} ({sum(found)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    factors = (3.0, 10.0, 30.0)
    lines += ["", "Cosmic rays found: the share of the ray's pixels flagged (one ray per set in view 0, at the factor "
              "times the images' peak; 'dark': at a pixel of the view's dimmest fifth, 'spot': at its brightest pixel"
              "), and trials (sets x brightness x place) where any other pixel was flagged. Check 'before': the brightest "
              "neighbour only, no noise term (the check of the twenty-first session).", "",
              "| ray | noise | check | " + " | ".join(f"x{f:g} {place}" for f in factors for place in ("dark", "spot"))
              + " | others |", "|---|---|---|" + "---|" * (2 * len(factors) + 1)]
    for name, shape in RAY_SHAPES.items():
        for level in args.noise_levels:
            for check in ("shipped", "before"):
                found: dict[tuple[float, str], list[float]] = {}
                others = 0
                with contextlib.ExitStack() as stack:
                    if check == "before":
                        stack.enter_context(mock.patch.object(hot_pixels, "NOISE_SIGMAS", 0.0))
                        stack.enter_context(mock.patch.object(hot_pixels, "spot_neighbour_ratios",
                                                              lambda optics: ratios(optics, 1)))
                    for i, (_, case) in enumerate(c for c in sets if c[0] == level):
                        rng = np.random.default_rng(i)
                        view = case.images[0]
                        inner = view[1:-2, 1:-2]  # a ray of up to 2 x 3 pixels fits anywhere here
                        places = {"spot": np.unravel_index(int(np.argmax(inner)), inner.shape),
                                  "dark": tuple(rng.choice(np.argwhere(inner <= np.quantile(inner, 0.2))))}
                        for f in factors:
                            for place, (y0, x0) in places.items():
                                hot = case.images.copy()
                                cells = [(1 + y0 + dy, 1 + x0 + dx) for dy, dx in shape]
                                for y, x in cells:
                                    hot[0, y, x] = f * float(case.images.max())
                                mask = hot_pixels.find_hot_pixels(hot, case.optics)
                                found.setdefault((f, place), []).append(float(np.mean([mask[0, y, x] for y, x in cells])))
                                ray = np.zeros_like(mask)
                                ray[0][tuple(np.array(cells).T)] = True
                                others += bool((mask & ~ray).any())
                lines.append(f"| {name} | {level:g} | {check} | " + " | ".join(
                    f"{100 * np.mean(found[f, p]):.0f} %" for f in factors for p in ("dark", "spot")) + f" | {others} / {sum(map(len, found.values()))} |")
                print(lines[-1], file=sys.stderr, flush=True)
    finish(lines, args.out)


def cmd_dark_frames(args: argparse.Namespace) -> None:
    """The blank-frame check on noisy simulated sets: a dark frame (read noise only) put in place
    of one view, caught by the contrast test alone (the check of the twenty-first session) and by
    the check now; and the real views the check now takes for blank."""
    from unittest import mock

    from napari_voxrecon.physics import source_fit

    lines = _varied_header(args, args.noise_levels)
    lines += ["| noise | sets | dark frame caught, contrast only | dark frame caught, now | dark frames' highest "
              "spot_snr | real views taken for blank, now | real views' lowest spot_snr |", "|---|---|---|---|---|---|---|"]
    for level in args.noise_levels:
        before = now = n = real_flagged = views = 0
        dark_snr, real_snr = [], []
        for _, seed, _, _, _, _, case in _varied_cases(args, [level], args.views[:1]):
            real_flagged += len(source_fit.blank_frames(case.images))
            views += len(case.images)
            real_snr += [source_fit.spot_snr(im) for im in case.images]
            dark = case.images.copy()
            k = _blank_view(seed, len(dark))
            dark[k] = _dark_frame(case.images, level, np.random.default_rng(seed + 45_000))
            dark_snr.append(source_fit.spot_snr(dark[k]))
            now += k in source_fit.blank_frames(dark)
            with mock.patch.object(source_fit, "BLANK_SNR", 0.0):
                before += k in source_fit.blank_frames(dark)
            n += 1
        lines.append(f"| {level:g} | {n} | {before} / {n} | {now} / {n} | {max(dark_snr):.1f} | {real_flagged} / {views} "
                     f"({100 * real_flagged / views:.1f} %) | {min(real_snr):.1f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    lines += ["", f"BLANK_SNR = {source_fit.BLANK_SNR:g}, SPOT_SMOOTHING = {source_fit.SPOT_SMOOTHING:g} pixels."]
    finish(lines, args.out)


def cmd_view_contrast(args: argparse.Namespace) -> None:
    """How dim a real view gets: each simulated set's dimmest spot range over its median one
    (``physics.source_fit.spot_range``), against the blank-frame threshold ``BLANK_CONTRAST``."""
    from napari_voxrecon.physics.source_fit import BLANK_CONTRAST, spot_range

    lines = _varied_header(args, [args.noise])
    lines += ["| phantom | seed | sources | coherence | views | dimmest / median view |", "|---|---|---|---|---|---|"]
    ratios = []
    for kind, seed, placement, coherence, views, _, case in _varied_cases(args, [args.noise], args.views):
        contrast = np.array([hi - lo for lo, hi in map(spot_range, case.images)])
        ratios.append(float(contrast.min() / np.median(contrast)))
        lines.append(f"| {kind} | {seed} | {placement} | {'partial' if coherence else 'coherent'} | "
                     f"{views} | {ratios[-1]:.3f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    lines += ["", f"{len(ratios)} sets; the dimmest view at {min(ratios):.3f} of the median one; blank-frame threshold "
              f"{BLANK_CONTRAST}."]
    finish(lines, args.out)


def tuning_grid() -> list[dict[str, Any]]:
    """The configurations tried for each representation; the same learning rates and TV weights for the two
    feature representations, so neither gets more tuning than the other."""
    grid: list[dict[str, Any]] = []
    for lr in (0.01, 0.03):
        for tv in (1e-3, 4e-3):
            for features in (8, 16):
                for down, refine in ((4, [0.3]), (4, []), (2, []), (4, [0.3, 0.6]), (8, [0.2, 0.5])):
                    grid.append({"kind": "nvp", "lr": lr, "tv": tv, "refine_at": refine,
                                 "field_kw": {"features": features, "downsample": down}})
                for down in (1, 2, 4):
                    grid.append({"kind": "triplane", "lr": lr, "tv": tv, "field_kw": {"features": features, "downsample": down}})
    for hidden in (64,):
        grid.append({"kind": "nvp", "lr": 0.02, "tv": 2e-3, "refine_at": [0.3], "field_kw": {"features": 16, "hidden": hidden}})
        grid.append({"kind": "triplane", "lr": 0.02, "tv": 2e-3, "field_kw": {"features": 16, "hidden": hidden}})
    for lr in (0.1, 0.3, 1.0):
        for tv in (3e-3, 1e-2, 3e-2):
            grid.append({"kind": "explicit", "lr": lr, "tv": tv})
    return grid


def cmd_tune(args: argparse.Namespace) -> None:
    configs = tuning_grid() if args.configs == "grid" else json.loads(Path(args.configs).read_text())
    part, parts = (int(v) for v in args.part.split("/"))
    mine = configs[part::parts]
    cases = [make_case(s, tuple(args.shape), args.views[0], kind=kind, noise=args.noise, placement=args.placement,
                       coherence=_coherence(args))
             for kind in args.phantoms for s in args.seeds]
    labels = [kind for kind in args.phantoms for _ in args.seeds]
    # --estimate-sources: every configuration starts from the positions estimated from the spots
    starts = [estimate_sources(c.images, c.optics, c.truth.shape[0]).positions if args.estimate_sources else None
              for c in cases]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for cfg in mine:
        cfg = dict(cfg)
        kind = cfg.pop("kind")
        for key in ("refine_at", "prune_at"):
            if key in cfg:
                cfg[key] = tuple(cfg[key])
        rows = [run_fit(case, kind, start, args.device, **cfg) for case, start in zip(cases, starts)]
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        per_kind = {f"psnr_{k}": float(np.mean([r["psnr"] for r, lab in zip(rows, labels) if lab == k])) for k in args.phantoms}
        record = {"kind": kind, **cfg, **mean, **per_kind, "psnr_each": [r["psnr"] for r in rows],
                  "source_error_each": [r["source_error_um"] for r in rows],
                  "final_loss_each": [r["final_loss"] for r in rows]}
        with out.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


def cmd_diagnose(args: argparse.Namespace) -> None:
    """Where a representation's error lies on one phantom: image loss of the fit against the
    true index's, the share of the error energy at lateral wavelengths above 4 µm, |Δn| in the
    lowest slab, and whether averaging fits of different seeds helps (``--no-priors``: sparsity
    and pruning off, as the representations were before 2026-11-28)."""
    import torch

    from napari_voxrecon.models.diffraction_fit import image_loss
    from napari_voxrecon.physics.wave_optics import forward_images

    case = make_case(args.seeds[0], tuple(args.shape), args.views[0], kind=args.phantoms[0], noise=args.noise,
                     placement=args.placement)
    meas = torch.from_numpy(case.images / case.images.max())

    def loss_of(dn: np.ndarray) -> float:
        with torch.no_grad():
            pred = forward_images(torch.from_numpy(dn), torch.from_numpy(case.sources), case.optics, pad=16)
            return float(image_loss(pred, meas, 0.2))

    def fit(kind: str, seed: int) -> np.ndarray:
        over = {"sparsity": 0.0, "prune": 0.0} if args.no_priors else {}
        cfg = fit_config(kind, iterations=args.iterations, seed=seed, **over)
        return fit_index(case.images, case.sources, case.optics, case.truth.shape[0], kind, cfg, device=args.device).dn

    def low_share(dn: np.ndarray) -> float:
        energy = np.abs(np.fft.fftn(dn - case.truth)) ** 2
        kr = np.hypot(*np.meshgrid(np.fft.fftfreq(dn.shape[1]), np.fft.fftfreq(dn.shape[2]), indexing="ij"))
        long_waves = kr / case.optics.voxel_size[1] < 0.25  # lateral wavelengths above 4 µm
        return float(energy[:, long_waves].sum() / energy.sum())

    record: dict[str, Any] = {"bench": "diagnose", "phantom": args.phantoms[0], "seed": args.seeds[0], "views": args.views[0],
                              "no_priors": args.no_priors, "truth_image_loss": loss_of(case.truth)}
    fits = {kind: fit(kind, 0) for kind in args.methods}
    for kind, dn in fits.items():
        record[kind] = {"psnr": score(dn, case.truth)[0], "image_loss": loss_of(dn), "long_wave_error_share": low_share(dn),
                        "lowest_slab_mean_abs_dn": float(np.abs(dn[0]).mean())}
    record["truth_lowest_slab_mean_abs_dn"] = float(np.abs(case.truth[0]).mean())
    if "nvp" in fits:
        seeds = [fits["nvp"]] + [fit("nvp", s) for s in (1, 2)]
        record["nvp_seed_psnrs"] = [score(dn, case.truth)[0] for dn in seeds]
        record["nvp_mean_of_3_psnr"] = score(np.mean(seeds, axis=0), case.truth)[0]
    print(json.dumps(record))
    if args.out:
        with Path(args.out).open("a") as f:
            f.write(json.dumps(record) + "\n")


def cmd_estimate(args: argparse.Namespace) -> None:
    """How far the positions estimated from the spots (``physics.source_fit.estimate_sources``)
    are from the truth, per axis, with the correction on the camera's field (``--refine``
    rounds) and without it (the table alone), on each phantom's images and on the images the same
    sources give through the bare medium (Δn 0, the same noise): the estimator's own error
    against what the sample adds. No fits."""
    lines = _header(args, " ".join(sys.argv[1:]))
    lines += ["| views | phantom | images | correction rounds | mean z error µm | mean abs z error µm | max lateral error µm |",
              "|---|---|---|---|---|---|---|"]
    for views, phantom in [(v, k) for v in args.views for k in args.phantoms]:
        cases = [make_case(s, tuple(args.shape), views, kind=phantom, noise=args.noise, placement=args.placement,
                           coherence=_coherence(args), volume=args.volume_dn, irregular=args.irregular,
                           density=args.density) for s in args.seeds]
        medium = [simulate_diffraction(np.full(c.truth.shape, c.optics.n_background, np.float32), c.optics, c.sources,
                                       noise_level=args.noise, seed=c.seed + 20_000, coherence=_coherence(args)) for c in cases]
        for images_of in ("phantom", "medium"):
            for rounds in sorted({0, args.refine}):
                z_err, lateral = [], []
                for case, bare in zip(cases, medium):
                    images = case.images if images_of == "phantom" else bare
                    err = (estimate_sources(images, case.optics, case.truth.shape[0], refine=rounds).positions
                           - case.sources).astype(np.float64)
                    z_err.append(err[:, 0])
                    lateral.append(np.abs(err[:, 1:]).max())
                    print(f"views {views} {phantom} seed {case.seed} {images_of} images, {rounds} rounds: z error "
                          f"{np.round(err[:, 0], 3).tolist()} µm, y {np.round(err[:, 1], 3).tolist()}, "
                          f"x {np.round(err[:, 2], 3).tolist()}", file=sys.stderr, flush=True)
                z = np.concatenate(z_err)
                lines.append(f"| {views} | {phantom} | {images_of} | {rounds} | {z.mean():+.3f} | {np.abs(z).mean():.3f} | "
                             f"{max(lateral):.3f} |")
    finish(lines, args.out)


def cmd_compare(args: argparse.Namespace) -> None:
    """Paired comparison over seeds of two methods' ``bench`` runs, read from the per-seed lines
    a bench prints to stderr (``--logs`` files, each ``path`` or ``label=path``: the label
    renames the method of that file, to compare two versions of one method; ``--pair`` names
    the two). Per views and phantom kind, and over all kinds (lines of the source arms
    ``--arm``; naming two pairs one file's lines of one arm with another file's of the other):
    mean PSNR / SSIM of each on the seeds both have, the PSNR difference as mean ± standard
    error over the seeds, and on how many the first scored higher. The floor a bench prints
    (Δn 0) is method ``zero``, arm ``medium``."""
    import ast
    import re

    line = re.compile(r"views (\d+) (\w+) (\w+) (.+?) seed (\d+): (\{.*\})")
    res: dict[tuple[str, str, str], dict[int, tuple[float, float]]] = {}
    for entry in args.logs:
        label, _, path = entry.rpartition("=")
        for m in filter(None, map(line.match, Path(path).read_text().splitlines())):
            if m.group(4) not in args.arm:
                continue
            row = ast.literal_eval(m.group(6))
            seeds = res.setdefault((m.group(1), m.group(2), label or m.group(3)), {})
            if int(m.group(5)) in seeds:
                raise SystemExit(f"compare: {path} gives {m.group(3)} on {m.group(2)} seed {m.group(5)} twice (two arms in one "
                                 "log, or two logs of one label): name one arm, or label the logs apart.")
            seeds[int(m.group(5))] = (row["psnr"], row["ssim"])
    a, b = args.pair
    lines = [f"| views | phantom | seeds | {a} | {b} | {a} - {b} |", "|---|---|---|---|---|---|"]
    for views in sorted({v for v, _, _ in res}, key=int):
        kinds = [k for k in args.phantoms if (views, k, a) in res and (views, k, b) in res]
        for group in [[k] for k in kinds] + ([kinds] if len(kinds) > 1 else []):
            pairs = [(res[(views, k, a)][s], res[(views, k, b)][s]) for k in group
                     for s in sorted(set(res[(views, k, a)]) & set(res[(views, k, b)]))]
            if not pairs:
                continue
            x, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
            d = x[:, 0] - y[:, 0]
            se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
            name = group[0] if len(group) == 1 else "all"
            lines.append(f"| {views} | {name} | {len(d)} | {x[:, 0].mean():.2f} / {x[:, 1].mean():.3f} | "
                         f"{y[:, 0].mean():.2f} / {y[:, 1].mean():.3f} | {d.mean():+.2f} ± {se:.2f} dB ({int((d > 0).sum())}/{len(d)}) |")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["bench", "timing", "tune", "diagnose", "estimate", "compare", "coverage", "defects",
                                    "view-contrast", "hot-noise", "dark-frames"])
    p.add_argument("--views", type=int, nargs="+", default=[6])
    p.add_argument("--seeds", type=int, nargs="+", help="phantom seeds (default: 200 201 202; tune: 100 101 102)")
    p.add_argument("--shape", type=int, nargs=3, default=[32, 64, 64], help="grid (z, y, x) of bench and tune")
    p.add_argument("--shapes", type=int, nargs="+", default=[32, 64, 64, 64, 128, 128], help="timing: grids, three numbers each")
    p.add_argument("--methods", nargs="+", choices=list(DEFAULTS), help="default: all three (coverage: none, the geometry only)")
    p.add_argument("--phantoms", nargs="+", default=["cell", "tubes"], choices=[*RI_PHANTOM_KINDS, VOLUME_KIND],
                   help="phantom kinds; every seed is drawn of each (rows per kind); 'volume': crops of --volume")
    p.add_argument("--volume", help="bench: a real fluorescence stack (z, y, x) whose crops are the 'volume' phantoms")
    p.add_argument("--volume-voxel", type=float, nargs=3, default=[0.29, 0.26, 0.26],
                   help="voxel size (z, y, x) µm of --volume (default: cells3d's)")
    p.add_argument("--volume-max-dn", type=float, default=0.03, help="Δn of --volume's 99.9th percentile (default 0.03)")
    p.add_argument("--placement", default="below", choices=["below", "inside"])
    p.add_argument("--irregular", type=float, default=0.0,
                   help="bench, coverage: the phantoms' cells and nuclei with irregular outlines (make_ri_phantom's irregular; 0: ellipsoids)")
    p.add_argument("--density", type=float, default=1.0,
                   help="bench, coverage: tissue phantoms with this many times the usual cells per volume (make_ri_phantom's density)")
    p.add_argument("--noise", type=float, default=0.01, help="Poisson-Gaussian noise level of the images (default 0.01)")
    p.add_argument("--noise-levels", type=float, nargs="+", default=[0.01, 0.1, 0.3, 0.5],
                   help="hot-noise, dark-frames: the noise levels of the sets")
    p.add_argument("--perturb", type=float, default=0.0, help="bench: std (µm) of errors added to the given source positions")
    p.add_argument("--estimate-sources", action="store_true",
                   help="bench: give the fit the positions estimated from the images (arms as with --perturb)")
    p.add_argument("--partial-coherence", action="store_true",
                   help="simulate partially coherent fluorescence (simulate.diffraction.TYPICAL_PARTIAL_COHERENCE)")
    p.add_argument("--alignments", nargs="+", default=["none"],
                   help="bench: one arm per coherence alignment, 'none' or e.g. 'background=1,blur=1,mask=0.9' "
                        "(background polynomial order, comparison blur in camera pixels, coherence-mask fraction)")
    p.add_argument("--arms", nargs="+", choices=["true", "fixed", "joint"],
                   help="bench: the source arms (default: true; with --perturb or --estimate-sources: fixed joint)")
    p.add_argument("--calibrate-after", type=float,
                   help="bench: fraction of the iterations before the sources move in the joint arm "
                        "(default: FitConfig's 0.5, for estimated positions the method's 0)")
    p.add_argument("--anneal-blur", type=float,
                   help="bench: the joint arm compares images blurred by this many camera pixels at first (narrowing "
                        "to none as the method does for estimated positions)")
    p.add_argument("--refit", type=int,
                   help="bench: the joint arm (only) then fits afresh for this many iterations from the sources it "
                        "found (default: as the method does, --iterations for estimated positions, none with given ones)")
    p.add_argument("--hold-depth", type=int, choices=[0, 1],
                   help="bench: calibrating arms keep the plane of the sources' depths (common depth and tilt) as given (1) or "
                        "let it move (0); default: FitConfig's")
    p.add_argument("--plain-joint", action="store_true",
                   help="bench --estimate-sources: the joint arm without the method's blur annealing and refit")
    p.add_argument("--refine", type=int, default=REFINE_ROUNDS,
                   help="estimate: rounds of the estimates' correction on the camera's field (compared with none)")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--field-kw", help="bench, coverage: a JSON object over each feature representation's settings (its field_kw), "
                   "e.g. '{\"smooth\": true}'")
    p.add_argument("--fit-kw", help="bench, coverage: a JSON object of FitConfig fields over each method's defaults, "
                   "e.g. '{\"tv\": 1e-3}'")
    p.add_argument("--configs", default="grid", help="tune: JSON list of {kind, FitConfig fields...}, or 'grid' (tuning_grid())")
    p.add_argument("--part", default="0/1", help="tune: this process's share i/k of the configurations")
    p.add_argument("--logs", nargs="+", help="compare: stderr logs of bench runs, each path or label=path")
    p.add_argument("--pair", nargs=2, default=["nvp", "triplane"], help="compare: the two methods or labels (default nvp triplane)")
    p.add_argument("--arm", nargs="+", default=["true"], help="compare: the source arms of the lines compared, as bench "
                   "labels them (default true; e.g. 'estimated, joint calibration from 0'); with label=path logs, two "
                   "arms pair one file's lines of one with another's of the other")
    p.add_argument("--no-priors", action="store_true", help="diagnose: sparsity and pruning off")
    p.add_argument("--only", nargs="+", help="defects: only the arms whose label holds one of these words (e.g. clipped; =clean: that label exactly)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="CPU threads")
    p.add_argument("--out", help="write the table (bench, timing) or append JSON lines (tune) here")
    args = p.parse_args(argv)
    if args.methods is None:
        args.methods = [] if args.mode == "coverage" else ["nvp"] if args.mode == "defects" else list(KINDS)
    if args.seeds is None:
        args.seeds = [100, 101, 102] if args.mode in ("tune", "diagnose") else [200, 201, 202]
    args.volume_dn = (load_volume(args.volume, tuple(args.volume_voxel), Optics(), args.volume_max_dn)
                      if args.volume else None)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    {"bench": cmd_bench, "timing": cmd_timing, "tune": cmd_tune, "diagnose": cmd_diagnose, "estimate": cmd_estimate,
     "compare": cmd_compare, "coverage": cmd_coverage, "defects": cmd_defects,
     "view-contrast": cmd_view_contrast, "hot-noise": cmd_hot_noise, "dark-frames": cmd_dark_frames}[args.mode](args)


if __name__ == "__main__":
    main()
