"""The ``voxrecon`` command line: simulate, reconstruct, evaluate, demo.

Method flags are generated from the registry's parameter declarations, so the CLI and the
napari widget always offer the same parameters. Errors end the program with a one-line reason
and a non-zero exit status; an existing output is never replaced without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import JobCancelled, VoxreconError

EXIT_ERROR = 2
EXIT_CANCELLED = 130


# ---------------------------------------------------------------------------- helpers


def _progress_bar(total: int, desc: str, quiet: bool, unit: str = "plane"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=quiet, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)


def _bar_events(bar: Any) -> Callable[[Any], None]:
    """An engine event handler that moves ``bar`` on Progress (its message beside it) and prints
    Notices above it."""
    from .engine.events import Notice, Progress

    def on_event(ev: Any) -> None:
        if isinstance(ev, Progress):
            if ev.message:  # e.g. a per-stack fit's iteration and loss, while no plane is final for minutes
                bar.set_postfix_str(ev.message, refresh=False)
            bar.update(ev.done - bar.n)  # update() honours mininterval; refresh() would redraw per plane
        elif isinstance(ev, Notice):
            bar.write(("warning: " if ev.level == "warning" else "") + ev.message, file=sys.stderr)

    return on_event


def _say(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, file=sys.stderr)


def _write(path: str, data, voxel_size, overwrite: bool, quiet: bool) -> None:
    from .io import write_volume

    write_volume(path, data, voxel_size, overwrite=overwrite)
    _say(f"wrote {path}  shape {tuple(data.shape)}  voxel (z, y, x) {tuple(round(v, 4) for v in voxel_size)} µm", quiet)


def _add_common_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, help="output .tif/.tiff or .zarr path")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or messages")


def _param_kwargs(param) -> dict[str, Any]:
    kw: dict[str, Any] = {"default": None, "help": param.help.replace("%", "%%")}  # argparse %-formats help texts
    kw["type"] = str  # coerced and range-checked by Param.coerce, one place for both front ends
    if param.type is bool:
        kw["metavar"] = "{true,false}"
    elif param.choices:
        kw["metavar"] = "{" + ",".join(map(str, param.choices)) + "}"
    if param.default is not None:
        kw["help"] += f" (default {param.default})"
    return kw


# ---------------------------------------------------------------------------- simulate


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .io import check_volume, read_volume
    from .io.formats import check_output_path
    from . import simulate as sim

    check_output_path(args.output, args.overwrite)
    if args.kind == "ri-phantom":
        from .simulate.ri_phantoms import make_ri_phantom

        data = make_ri_phantom(tuple(args.shape), kind=args.structure, seed=args.seed, voxel_size=tuple(args.voxel_size),
                               n_background=args.n_background, irregular=args.irregular, density=args.density)
        _write(args.output, data, tuple(args.voxel_size), args.overwrite, args.quiet)
        return 0
    if args.kind == "diffraction":
        return _simulate_diffraction(args)
    if args.kind == "phantom":
        from .simulate.phantoms import make_phantom

        data = make_phantom(tuple(args.shape), kind=args.structure, seed=args.seed, voxel_size=tuple(args.voxel_size), noise_level=args.noise_level)
        _write(args.output, data, tuple(args.voxel_size), args.overwrite, args.quiet)
        return 0
    gt = read_volume(args.input)
    check_volume(gt.data, f"{args.input}")
    vz, vy, vx = gt.voxel_size
    if args.kind == "sparse":
        out, vs = sim.simulate_sparse(gt.data, args.interval), (vz * args.interval, vy, vx)
    elif args.kind == "projection":
        out, vs = sim.simulate_projection(gt.data, args.interval), (vz * args.interval, vy, vx)
    else:
        a, l = args.axial_factor, args.lateral_factor
        out = sim.simulate_restore(gt.data, a, l, args.noise_level, args.seed)
        vs = (vz * a, vy * l, vx * l)
    _write(args.output, out, vs, args.overwrite, args.quiet)
    return 0


def _simulate_diffraction(args: argparse.Namespace) -> int:
    """RI volume -> K images, the SOURCES file and the optics file (all checked before writing)."""
    from dataclasses import replace

    from .io import read_volume
    from .io.formats import check_output_path
    from .physics.optics import Optics
    from .simulate.diffraction import PartialCoherence, draw_sources, simulate_diffraction, write_sources

    beside = lambda suffix: Path(args.output).with_name(Path(args.output).name.split(".")[0] + suffix)  # noqa: E731
    optics_out = Path(args.optics_out) if args.optics_out else beside("_optics.json")
    sources_out = Path(args.sources_out) if args.sources_out else beside("_sources.json")
    for extra in (sources_out, optics_out):
        if extra.exists() and not args.overwrite:
            raise VoxreconError(f"{extra} exists; pass --overwrite or choose another path.")
    check_output_path(args.output, args.overwrite)
    vol = read_volume(args.input)
    optics = Optics.load(args.optics)
    if args.optics is None and vol.voxel_size is not None and tuple(vol.voxel_size) != (1.0, 1.0, 1.0):
        optics = replace(optics, voxel_size=tuple(float(v) for v in vol.voxel_size))  # the volume's own grid
    optics = replace(optics, depth=int(vol.data.shape[0]))  # what a reconstruction rebuilds by default
    sources = draw_sources(vol.data.shape, optics, args.views, args.placement, args.seed)
    coherence = PartialCoherence(bandwidth=args.bandwidth, source_size=args.source_size, haze=args.haze)
    images = simulate_diffraction(vol.data, optics, sources, args.noise_level, args.seed, coherence=coherence)
    cam = optics.camera_pixel or optics.voxel_size[2]
    _write(args.output, images, (1.0, cam, cam), args.overwrite, args.quiet)
    write_sources(sources_out, sources)
    optics.save(optics_out)
    _say(f"wrote {sources_out} ({len(sources)} sources, {args.placement} the sample) and {optics_out}", args.quiet)
    return 0


# ---------------------------------------------------------------------------- reconstruct


def run_reconstruction(
    task: str,
    input_path: str,
    output_path: str,
    params: dict[str, Any],
    method: str | None = None,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Read, reconstruct with a progress bar into file sinks, and return a small report."""
    from .engine import Job, run_job
    from .engine.sinks import open_file_sinks
    from .io import read_volume

    vol = read_volume(input_path)
    job = Job(task, vol.data, params, method=method, voxel_size=vol.voxel_size, seed=seed, device=device)
    if job.method_spec.uses_weights:
        # Unknown or unreachable weights fail here, before any output is created or replaced.
        from .weights import resolve_weights

        resolve_weights(job.method_spec.weights_spec(job.params), job.method_spec.weights_method, progress=not quiet)
    sinks, done = open_file_sinks(output_path, job, overwrite=overwrite)
    if done:
        _say(f"resuming {output_path}: {len(done)} of {job.output_shape[0]} planes already done", quiet)
    bar = _progress_bar(job.output_shape[0], f"{task}/{job.method}", quiet)
    bar.update(len(done))
    start = time.perf_counter()
    try:
        run_job(job, sinks, on_event=_bar_events(bar), skip=done)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    for name, sink in sinks.items():
        _say(f"wrote {sink.path}  shape {job.output_shape}  voxel (z, y, x) {tuple(round(v, 4) for v in job.output_voxel_size)} µm", quiet)
    return {"task": task, "method": job.method, "seconds": seconds, "shape": job.output_shape, "outputs": {n: str(s.path) for n, s in sinks.items()}}


def run_chunked_reconstruction(
    task: str,
    inputs: Sequence[str],
    output: str,
    params: dict[str, Any],
    method: str | None = None,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
    quiet: bool = False,
    scheduler: str = "threads",
    workers: int = 1,
    planes: int = 32,
    tile: int = 1024,
) -> list[dict[str, Any]]:
    """Chunked reconstruction of one file or a batch (``output`` a folder) on one dask client."""
    from .engine.dask_runner import ChunkedJob, dask_client

    batch = len(inputs) > 1
    if batch:
        from .io.formats import format_of

        if format_of(output) is not None:
            raise VoxreconError(f"{len(inputs)} inputs: -o must be a folder for their outputs (got {output}).")
        Path(output).mkdir(parents=True, exist_ok=True)
        outs = [str(Path(output) / (Path(str(i).rstrip("/")).name.split(".")[0] + ".zarr")) for i in inputs]
        if len(set(outs)) != len(outs):
            raise VoxreconError("two inputs share a file name; their outputs would collide in the output folder.")
    else:
        outs = [output]
    # Every file is checked (shape, parameters, chunk plan) before any work starts.
    jobs = [ChunkedJob(task, i, o, params, method, seed, device, planes, tile) for i, o in zip(inputs, outs)]
    reports = []
    with dask_client(scheduler, workers) as client:
        if client is not None and scheduler not in ("threads", "processes"):
            _say(f"dask scheduler {scheduler}: {len(client.scheduler_info().get('workers', {}))} worker(s)", quiet)
        for job in jobs:
            bar = _progress_bar(len(job.plan.chunks), f"{Path(job.input_path).name} {task}/{job.method}", quiet, "chunk")
            on_event = _bar_events(bar)
            start = time.perf_counter()
            try:
                for ev in job.run(client, overwrite=overwrite):
                    on_event(ev)
            finally:
                bar.close()
            _say(f"wrote {job.output_path}  shape {job.output_shape}  voxel (z, y, x) "
                 f"{tuple(round(v, 4) for v in job.output_voxel_size)} µm  ({len(job.plan.chunks)} chunks)", quiet)
            reports.append({"input": job.input_path, "output": job.output_path, "seconds": time.perf_counter() - start})
    return reports


def _wants_chunked(args: argparse.Namespace) -> bool:
    """Chunked when asked for, for a batch, or when the input would not fit comfortably in memory."""
    if args.chunked or args.scheduler or args.workers or args.chunk_planes or args.chunk_tile or len(args.input) > 1:
        return True
    from .io.formats import format_of
    from .io.lazy import open_lazy

    try:
        vol = open_lazy(args.input[0])
    except VoxreconError:
        return False  # the in-memory reader gives its own message
    try:
        import psutil

        budget = psutil.virtual_memory().available // 4
    except ImportError:  # pragma: no cover - psutil comes with distributed
        budget = 4 * 2**30
    if vol.nbytes_float32 <= budget:
        return False
    if format_of(args.output) != "zarr":
        raise VoxreconError(
            f"{args.input[0]}: {vol.nbytes_float32 / 2**30:.1f} GiB as float32 is more than a quarter of the free memory; "
            "write a .zarr output, which is reconstructed chunk by chunk."
        )
    _say(f"{args.input[0]} is {vol.nbytes_float32 / 2**30:.1f} GiB as float32: reconstructing chunk by chunk "
         "(--chunk-planes, --chunk-tile, --scheduler and --workers tune it).", args.quiet)
    return True


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from .engine.registry import get_method, get_task

    task = get_task(args.task)
    method = get_method(args.task, args.method)
    given = {}
    for p in (*task.params, *_all_method_params(args.task)):
        value = getattr(args, p.name, None)
        if value is not None:
            given[p.name] = value
    # A flag of another method of this task is an error, not silently ignored.
    allowed = {p.name for p in (*task.params, *method.params)}
    stray = [k for k in given if k not in allowed]
    if stray:
        raise VoxreconError(
            f"method {method.name!r} does not take {', '.join('--' + k.replace('_', '-') for k in stray)}."
        )
    if _wants_chunked(args):
        run_chunked_reconstruction(args.task, args.input, args.output, given, method.name, args.seed, args.device,
                                   args.overwrite, args.quiet, args.scheduler or "threads", args.workers or 1,
                                   args.chunk_planes or 32, args.chunk_tile or 1024)
        return 0
    run_reconstruction(args.task, args.input[0], args.output, given, method.name, args.seed, args.device, args.overwrite, args.quiet)
    return 0


def _all_method_params(task: str):
    from .engine.registry import list_methods

    seen: dict[str, Any] = {}
    for m in list_methods(task):
        for p in m.params:
            seen.setdefault(p.name, p)
    return list(seen.values())


# ---------------------------------------------------------------------------- evaluate


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from .io import check_volume, read_volume
    from .metrics import evaluate, missing_planes

    pred = read_volume(args.prediction).data
    gt = read_volume(args.ground_truth).data
    check_volume(pred, args.prediction)
    check_volume(gt, args.ground_truth)
    if pred.shape[0] < gt.shape[0] and pred.shape[1:] == gt.shape[1:]:
        # Sparse/restore outputs end at the last acquired plane: score against the same planes.
        print(f"note: the prediction has {pred.shape[0]} planes, the ground truth {gt.shape[0]}; "
              f"scoring against its first {pred.shape[0]}.", file=sys.stderr)
        gt = gt[: pred.shape[0]]
    planes = None
    if args.missing_only:
        if not args.interval:
            raise VoxreconError("--missing-only needs --interval N (the sparse task's interval).")
        planes = missing_planes(gt.shape[0], args.interval)
    scores = evaluate(pred, gt, planes=planes)
    identical = int(np.sum(np.all(pred == gt, axis=(1, 2))))
    if identical and planes is None:
        print(f"note: {identical} plane(s) equal the ground truth exactly (acquired planes?) and count as "
              "100 dB; for the sparse task use --missing-only --interval N.", file=sys.stderr)
    if args.json:
        print(json.dumps({"prediction": args.prediction, "ground_truth": args.ground_truth, "planes": "missing" if planes else "all", **scores}, indent=2))
    else:
        for k, v in scores.items():
            print(f"{k:8s} {v:.4f}")
    return 0


# ---------------------------------------------------------------------------- demo


def _free_folder(base: Path) -> Path:
    if not base.exists():
        return base
    i = 2
    while Path(f"{base}-{i}").exists():
        i += 1
    return Path(f"{base}-{i}")


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    folder = Path(args.output) if args.output else _free_folder(Path("voxrecon-demo"))
    if folder.exists() and any(folder.iterdir()) and not args.overwrite:
        raise VoxreconError(f"{folder} exists and is not empty; pass --overwrite or choose another --output folder.")
    run_demo(folder, interval=args.interval, device=args.device, quiet=args.quiet, overwrite=args.overwrite)
    return 0


# ---------------------------------------------------------------------------- train


def _cmd_train(args: argparse.Namespace) -> int:
    from .training.train_sparse import export_checkpoint, train_sparse

    if args.export_only and (args.task in ("projection", "restore") or args.model in ("microdiffusion", "care", "dit")):
        raise VoxreconError("--export-only is for the sparse models; a projection or restore run writes its weights when it ends (--max-minutes).")
    if args.export_only:
        if not (args.checkpoint_dir and args.output):
            raise VoxreconError("--export-only needs --checkpoint-dir and --output.")
        folder = export_checkpoint(args.model, args.checkpoint_dir, args.output, overwrite=args.overwrite,
                                   defaults={"real_volumes": [Path(p).name for p in args.data]})
        print(f"wrote weights to {folder}")
        return 0
    if not args.output and not args.checkpoint_dir:
        raise VoxreconError("give -o/--output (where the weights go) or --checkpoint-dir, or the training is lost.")
    if args.output and Path(args.output).exists() and any(Path(args.output).iterdir()) and not args.overwrite:
        raise VoxreconError(f"{args.output} exists and is not empty; pass --overwrite or choose another folder (checked before training).")
    task = args.task or {"microdiffusion": "projection", "care": "restore", "dit": "restore"}.get(args.model, "sparse")
    if args.model not in {"sparse": ("sparse3diff", "unet"), "projection": ("unet", "microdiffusion"), "restore": ("care", "dit")}[task]:
        raise VoxreconError(f"there is no {args.model} model for task {task}: sparse has sparse3diff and unet, "
                            "projection has microdiffusion and unet, restore has dit and care.")
    if args.degradation and task != "restore":
        raise VoxreconError("--degradation applies to the restore models (care, dit) only.")
    if args.no_slice_guidance and args.model != "sparse3diff":
        raise VoxreconError("--no-slice-guidance applies to sparse3diff only.")
    if args.bank_phantoms is not None and args.model != "microdiffusion":
        raise VoxreconError("--bank-phantoms applies to microdiffusion only.")
    if args.no_inr_prior and args.model != "microdiffusion":
        raise VoxreconError("--no-inr-prior applies to microdiffusion only.")
    if (args.prior or args.global_encoder) and args.model != "dit":  # other trainers never see these flags
        raise VoxreconError("--prior and --global-encoder apply to dit only.")
    if args.p_terminal is not None and args.model not in ("sparse3diff", "microdiffusion", "dit"):
        raise VoxreconError("--p-terminal applies to the diffusion models (sparse3diff, microdiffusion, dit) only.")
    # What every trainer takes; each task adds its own.
    common = dict(steps=args.steps, batch_size=args.batch_size, crop=args.crop, lr=args.lr, holdout=args.holdout,
                  phantom_fraction=args.phantom_fraction, checkpoint_dir=args.checkpoint_dir, device=args.device,
                  threads=args.threads, seed=args.seed, overwrite=args.overwrite, log=lambda m: print(m, flush=True),
                  max_seconds=args.max_minutes * 60 if args.max_minutes else None, phantom_pool=args.phantom_pool,
                  phantom_workers=args.phantom_workers, init=args.init)
    if task == "restore":
        from .training.train_restore import train_restore

        folder = train_restore(args.model, args.data, args.output, degradation=args.degradation or "axial4",
                               channels=tuple(args.channels or (16, 32, 64)),
                               p_terminal=0.1 if args.p_terminal is None else args.p_terminal,
                               **({"dim": args.dim} if args.dim else {}), **({"blocks": args.blocks} if args.blocks else {}),
                               prior=args.prior, global_encoder=args.global_encoder, **common)
    elif task == "projection":
        from .training.train_projection import train_projection

        folder = train_projection(args.model, args.data, args.output, channels=tuple(args.channels or (24, 48, 96)),
                                  p_terminal=args.p_terminal, inr_prior=not args.no_inr_prior,
                                  **({"bank_phantoms": args.bank_phantoms} if args.bank_phantoms is not None else {}),
                                  **common)
    else:
        folder = train_sparse(args.model, args.data, args.output, channels=tuple(args.channels or (24, 48, 96)),
                              p_terminal=args.p_terminal or 0.0, slice_guidance=not args.no_slice_guidance, **common)
    if folder is not None:
        print(f"wrote weights to {folder}")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from .engine.device import resolve_device
    from .io import check_volume, read_volume
    from .models.self_alignment import finetune_to_folder
    out = Path(args.output)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise VoxreconError(f"{out} exists and is not empty; pass --overwrite or choose another folder.")
    vol = read_volume(args.stack)
    check_volume(vol.data, args.stack, min_planes=3)
    device, notice = resolve_device(args.device)
    if notice:
        _say("warning: " + notice, args.quiet)
    total = args.rounds * (vol.shape[0] - 2) * (args.interval - 1)
    bar = _progress_bar(total, "self-alignment", args.quiet)
    bar.unit = "update"

    def on_progress(rec: dict) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{rec['loss']:.3f}", refresh=False)

    try:
        folder = finetune_to_folder(vol.data.astype("float32"), args.interval, args.output, args.weights, device=device,
                                    overwrite=args.overwrite, source_name=Path(args.stack).name, on_progress=on_progress,
                                    rounds=args.rounds, lr=args.lr, steps=args.steps, seed=args.seed)
    finally:
        bar.close()
    _say(f"wrote fine-tuned weights to {folder}; use them with --weights {folder}", args.quiet)
    return 0


# ---------------------------------------------------------------------------- methods


def _cmd_methods(args: argparse.Namespace) -> int:
    from .engine.registry import TASKS, get_task, list_methods

    get_task("sparse")
    for name, task in TASKS.items():
        print(f"{name}: {task.help}")
        for m in list_methods(name):
            default = " (default)" if m.name == task.default_method else ""
            print(f"  {m.name:14s}{m.help}{default}")
    return 0


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .engine.device import DEVICES
    from .engine.registry import TASKS, get_task, list_methods

    get_task("sparse")  # load the registry
    parser = argparse.ArgumentParser(
        prog="voxrecon",
        description="Reconstruct full 3D microscopy volumes from sparse, projected or low-quality acquisitions.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # simulate
    p_sim = sub.add_parser("simulate", help="simulate an acquisition from a ground-truth volume, or a phantom")
    sim_sub = p_sim.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, help_ in (("sparse", "keep every n-th plane (0, n, 2n, ...)"), ("projection", "plane k = mean of planes k*n..k*n+n-1")):
        p = sim_sub.add_parser(kind, help=help_)
        p.add_argument("input", help="ground-truth volume (.tif/.tiff/.zarr)")
        p.add_argument("--interval", type=int, required=True, help="n")
        _add_common_output(p)
    p = sim_sub.add_parser("restore", help="axial blur + subsampling, optional lateral, Poisson-Gaussian noise")
    p.add_argument("input", help="ground-truth volume (.tif/.tiff/.zarr)")
    p.add_argument("--axial-factor", type=int, required=True, help="axial subsampling factor a")
    p.add_argument("--lateral-factor", type=int, default=1, help="lateral subsampling factor l (default 1)")
    p.add_argument("--noise-level", type=float, default=0.0, help="relative Poisson noise at the bright level, e.g. 0.05 (default 0: none)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    _add_common_output(p)
    p = sim_sub.add_parser("phantom", help="a procedural phantom (tubes, nuclei, membranes, puncta) through an anisotropic PSF")
    p.add_argument("--shape", type=int, nargs=3, default=(64, 128, 128), metavar=("Z", "Y", "X"))
    p.add_argument("--structure", default="mixed", help="tubes, nuclei, membranes, puncta or mixed (default mixed)")
    p.add_argument("--voxel-size", type=float, nargs=3, default=(0.5, 0.2, 0.2), metavar=("Z", "Y", "X"), help="µm")
    p.add_argument("--noise-level", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    _add_common_output(p)
    from .simulate.ri_phantoms import RI_PHANTOM_KINDS

    p = sim_sub.add_parser("ri-phantom", help="a refractive-index phantom for the diffraction task (cells, vessel-like tubes or tissue)")
    p.add_argument("--shape", type=int, nargs=3, default=(32, 64, 64), metavar=("Z", "Y", "X"))
    p.add_argument("--structure", default="cell", choices=list(RI_PHANTOM_KINDS))
    p.add_argument("--voxel-size", type=float, nargs=3, default=(0.4, 0.2, 0.2), metavar=("Z", "Y", "X"), help="µm")
    p.add_argument("--n-background", type=float, default=1.33, help="index of the medium (default 1.33, water)")
    p.add_argument("--irregular", type=float, default=0.0,
                   help="cell and tissue: relative radius changes of the outlines of cells and nuclei (0: ellipsoids; 0.25: lobed)")
    p.add_argument("--density", type=float, default=1.0,
                   help="tissue: times the usual cells per volume (six to twelve per 12.8 µm cube), 0.25-8 (default 1)")
    p.add_argument("--seed", type=int, default=0)
    _add_common_output(p)
    p = sim_sub.add_parser("diffraction", help="images of fluorescent point sources through a refractive-index volume")
    p.add_argument("input", help="absolute refractive-index volume (.tif/.tiff/.zarr)")
    p.add_argument("--views", type=int, required=True, help="number of sources (images) K")
    p.add_argument("--sources-out", help="where to write the SOURCES JSON (positions in µm, z y x; default: OUTPUT's "
                   "name + _sources.json)")
    p.add_argument("--optics", help="optics.json (wavelength, na, n_background, voxel_size, ...); default: defaults with the volume's voxel size")
    p.add_argument("--optics-out", help="where to write the optics used (default: OUTPUT's name + _optics.json)")
    p.add_argument("--placement", choices=["below", "inside"], default="below", help="sources 2 µm below the sample, or in its lower half")
    p.add_argument("--noise-level", type=float, default=0.0, help="relative Poisson noise at the brightest level")
    p.add_argument("--bandwidth", type=float, default=0.0, help="partial coherence: width (µm) of the emission band (default 0)")
    p.add_argument("--source-size", type=float, default=0.0, help="partial coherence: extent (µm, std) of each emitter (default 0)")
    p.add_argument("--haze", type=float, default=0.0, help="incoherent out-of-focus background, relative to the peak (default 0)")
    p.add_argument("--seed", type=int, default=0)
    _add_common_output(p)
    p_sim.set_defaults(func=_cmd_simulate)

    # reconstruct
    p_rec = sub.add_parser("reconstruct", help="reconstruct a full volume")
    rec_sub = p_rec.add_subparsers(dest="task", required=True, metavar="TASK")
    for name, task in TASKS.items():
        methods = list_methods(name)
        p = rec_sub.add_parser(name, help=task.help, description=task.help)
        p.add_argument("input", nargs="+", help="input volume (.tif/.tiff/.zarr); several: a batch, -o a folder")
        for param in task.params:
            kw = _param_kwargs(param)
            kw["required"] = param.default is None
            p.add_argument(param.flag, dest=param.name, **kw)
        p.add_argument("--method", default=task.default_method, choices=[m.name for m in methods], help=f"(default {task.default_method})")
        for param in _all_method_params(name):
            users = [m.name for m in methods if any(q.name == param.name for q in m.params)]
            kw = _param_kwargs(param)
            kw["help"] = f"[{', '.join(users)}] " + kw["help"]
            p.add_argument(param.flag, dest=param.name, **kw)
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0): same seed, same output")
        p.add_argument("--device", default="auto", choices=DEVICES, help="compute device (default auto); a missing GPU falls back to the CPU with a notice")
        _add_common_output(p)
        g = p.add_argument_group("chunked runs (volumes bigger than memory, clusters; zarr output, resumable)")
        g.add_argument("--chunked", action="store_true",
                       help="reconstruct chunk by chunk into a .zarr output (automatic for inputs over a quarter of the free memory)")
        g.add_argument("--scheduler", help="synchronous, threads (default), processes, or a dask scheduler address "
                                           "(tcp://host:8786, e.g. from dask-jobqueue)")
        g.add_argument("--workers", type=int, help="worker threads (threads) or processes (processes); default 1")
        g.add_argument("--chunk-planes", type=int, help="output planes per chunk (default 32)")
        g.add_argument("--chunk-tile", type=int, help="lateral tile of a chunk, in input pixels (default 1024)")
    p_rec.set_defaults(func=_cmd_reconstruct)

    # evaluate
    p = sub.add_parser("evaluate", help="score a reconstruction against the ground truth")
    p.add_argument("prediction")
    p.add_argument("ground_truth")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--missing-only", action="store_true", help="sparse task: score only the planes that were not acquired")
    p.add_argument("--interval", type=int, help="the sparse interval, with --missing-only")
    p.set_defaults(func=_cmd_evaluate)

    # demo
    p = sub.add_parser("demo", help="run the main job on the embedded sample (no arguments needed)")
    p.add_argument("--output", help="folder for the demo files (default: a new voxrecon-demo folder)")
    p.add_argument("--interval", type=int, default=4, help="sparse interval (default 4)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_demo)

    # train
    p = sub.add_parser("train", help="train a model from volumes (TIFF/zarr) and procedural phantoms")
    p.add_argument("model", choices=["sparse3diff", "unet", "microdiffusion", "care", "dit"], help="the model to train")
    p.add_argument("--task", choices=["sparse", "projection", "restore"],
                   help="task of the model (default: sparse; microdiffusion: projection; care, dit: restore)")
    p.add_argument("--degradation", choices=["axial4", "denoise", "pretrain"],
                   help="restore models: what to restore (default axial4: x4 axial super-resolution with mild noise; "
                        "pretrain: mixed factors, noise and block masking)")
    p.add_argument("--data", nargs="*", default=[], help="real training volumes; the last --holdout fraction of x is kept out")
    p.add_argument("-o", "--output", help="folder for the trained weights (safetensors + config.json + card)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=64, help="lateral crop of the training windows")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--holdout", type=float, default=0.375, help="fraction of x of each real volume kept out of training")
    p.add_argument("--phantom-fraction", type=float, default=0.5, help="share of windows drawn from phantoms")
    p.add_argument("--channels", type=int, nargs="+", help="U-Net widths per level (default 24 48 96; care: 16 32 64)")
    p.add_argument("--dim", type=int, help="dit: token width (default 128)")
    p.add_argument("--blocks", type=int, help="dit: transformer blocks (default 6)")
    p.add_argument("--prior", help="dit: care weights (embedded name, folder or Hub id) used as the frozen regression prior "
                   "the dit refines, e.g. care-axial4")
    p.add_argument("--global-encoder", help="dit: DINOv2 encoder (Hub repo id such as facebook/dinov2-small, or a folder) whose "
                   "features join the global condition; needs the transformers package")
    p.add_argument("--checkpoint-dir", help="checkpoint here and resume from it")
    p.add_argument("--max-minutes", type=float, help="stop (with a checkpoint and weights) after this long; the learning rate decays to fit")
    p.add_argument("--phantom-pool", type=int, default=12, help="phantoms held in memory (renewed during training)")
    p.add_argument("--phantom-workers", type=int, default=0,
                   help="processes rendering phantoms in the background (for GPUs; the run is then not bit-reproducible)")
    p.add_argument("--p-terminal", type=float,
                   help="diffusion models: share of windows trained at t=1 (pure noise), where every sampler starts "
                        "(default 0 for sparse3diff, 0.1 for microdiffusion)")
    p.add_argument("--bank-phantoms", type=int,
                   help="microdiffusion: phantoms in the INR prior bank, each fitted at one random interval (default 6; "
                        "every fit costs seconds on a GPU, tens of seconds on a CPU)")
    p.add_argument("--no-inr-prior", action="store_true",
                   help="microdiffusion: train the naive-diffusion ablation on the linear prior instead of the INR prior (a benchmark baseline)")
    p.add_argument("--no-slice-guidance", action="store_true",
                   help="sparse3diff: train the unguided DDPM ablation (whole windows noised; a benchmark baseline)")
    p.add_argument("--init", help="start from these weights (embedded name, folder or Hub id) instead of random; "
                   "microdiffusion can start from projection-unet weights (warm start)")
    p.add_argument("--export-only", action="store_true", help="only save the EMA weights of the checkpoint in --checkpoint-dir to --output")
    p.add_argument("--threads", type=int, help="CPU threads")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_train)

    # finetune
    p = sub.add_parser("finetune", help="self-align a model on a new stack without ground truth (Sparse3Diff section 2.3)")
    p.add_argument("model", choices=["sparse3diff"])
    p.add_argument("stack", help="the acquired sparse stack (.tif/.tiff/.zarr)")
    p.add_argument("--interval", type=int, required=True, choices=range(2, 65), metavar="N", help="acquisition interval (2-64)")
    p.add_argument("-o", "--output", required=True, help="folder for the fine-tuned weights")
    p.add_argument("--weights", default="default", help="weights to start from (default: embedded)")
    p.add_argument("--rounds", type=int, default=1, help="passes over all reference planes (default 1)")
    p.add_argument("--lr", type=float, default=1e-5, help="fine-tuning learning rate (5e-5 already degrades held-out scores: docs/benchmarks.md)")
    p.add_argument("--steps", type=int, default=10,
                   help="sampling steps for the inferred pseudo-data planes (default 10: realistic samples, not the smoother 2-step output)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_finetune)

    # weights
    from .weights_cli import add_weights_parser

    add_weights_parser(sub)

    # methods
    p = sub.add_parser("methods", help="list tasks and methods")
    p.set_defaults(func=_cmd_methods)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("voxrecon: cancelled; nothing complete was written (a zarr output resumes with the same command).", file=sys.stderr)
        return EXIT_CANCELLED
    except JobCancelled as err:
        print(f"voxrecon: {err}", file=sys.stderr)
        return EXIT_CANCELLED
    except VoxreconError as err:
        print(f"voxrecon: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print("voxrecon: error: out of memory; use a .zarr output and a smaller input region.", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
