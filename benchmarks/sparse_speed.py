"""Speed of ``sparse3diff`` / ``unet`` on this machine: time per reconstructed 256x256 plane,
network FLOPs, the fraction of the machine's measured fp32 peak reached, and peak memory.

Usage: python benchmarks/sparse_speed.py [--weights-dir DIR_OF_SPARSE3DIFF] [--threads 2]

Run it on an idle machine: other processes distort the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import numpy as np
import torch


def matmul_peak(threads: int, dtype: torch.dtype = torch.float32) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    return 2 * 2048**3 * 10 / (time.perf_counter() - t0) / 1e9


def main() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from napari_voxrecon.engine import Job, run_job
    from napari_voxrecon.models.loading import load_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--sparse3diff", default="default")
    ap.add_argument("--unet", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--planes", type=int, default=11, help="acquired planes of the synthetic 256x256 stack (11 at n=6: 61 planes)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_peak(args.threads)
    peak_bf16 = matmul_peak(args.threads, torch.bfloat16)
    from napari_voxrecon.engine.device import use_bf16

    auto_bf16 = use_bf16("cpu")
    n = args.n
    rng = np.random.default_rng(0)
    from scipy.ndimage import gaussian_filter

    stack = gaussian_filter(rng.random((args.planes, 256, 256)), (0, 2, 2)).astype(np.float32) * 1000
    out = {"machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, threads {args.threads}",
           "matmul_fp32_gflops": round(peak, 1), "matmul_bf16_gflops": round(peak_bf16, 1),
           "precision_auto_is_bf16": auto_bf16}
    for method, spec, params in [("unet", args.unet, {}), ("sparse3diff", args.sparse3diff, {"steps": 2, "samples": 1}),
                                 ("sparse3diff", args.sparse3diff, {"steps": 2, "samples": 2}),
                                 ("sparse3diff", args.sparse3diff, {"steps": 2, "samples": 2, "precision": "fp32"}),
                                 ("sparse3diff", args.sparse3diff, {"steps": 2, "samples": 4}),
                                 ("sparse3diff", args.sparse3diff, {"steps": 10, "samples": 1})]:
        model = load_model(method, spec, "cpu")
        net = model.network
        window = torch.randn(1, n + 1, 256, 256)
        fc = FlopCounterMode(display=False)
        with torch.no_grad(), fc:
            net(window if net.diffusion else None, window, torch.zeros(1), torch.ones(1, dtype=torch.bool))
        calls = params.get("steps", 1) * params.get("samples", 1) * (2 if params.get("guidance") else 1)
        flops_plane = fc.get_total_flops() * calls / (n - 1)
        job = Job("sparse", stack, {"interval": n, "weights": spec, **params}, method=method, device="cpu")
        run_job(Job("sparse", stack[:2], {"interval": n, "weights": spec, **params}, method=method, device="cpu"))  # warm-up
        t0 = time.perf_counter()
        run_job(job)
        dt = time.perf_counter() - t0
        missing = (args.planes - 1) * (n - 1)
        s_plane = dt / missing
        ref = peak_bf16 if (params.get("precision", "auto") == "bf16" or (params.get("precision", "auto") == "auto" and auto_bf16)) else peak
        key = f"{method} {params}"
        out[key] = {"s_per_plane_256": round(s_plane, 3), "s_total": round(dt, 1), "volume": [int(job.output_shape[0]), 256, 256], "gflop_per_plane": round(flops_plane / 1e9, 2),
                    "achieved_gflops": round(flops_plane / s_plane / 1e9, 1), "fraction_of_matmul_peak": round(flops_plane / s_plane / 1e9 / ref, 3),
                    "params_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 3)}
        print(key, out[key], flush=True)
    # bf16 autocast against fp32 for one network call on a 256x256 window (inference).
    model = load_model("sparse3diff", args.sparse3diff, "cpu")
    window = torch.randn(1, n + 1, 256, 256)
    times = {}
    for name, enabled in (("fp32", False), ("bf16_autocast", True)):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            model.network(window, window, torch.zeros(1), torch.ones(1, dtype=torch.bool))
            t0 = time.perf_counter()
            model.network(window, window, torch.zeros(1), torch.ones(1, dtype=torch.bool))
            times[name] = round(time.perf_counter() - t0, 3)
    out["one_window_call_s"] = times
    out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    print("fp32 vs bf16:", times, flush=True)
    # Ancestral DDPM over the full 1000-step schedule: 1000 network calls per gap instead of 2.
    per_call = out["sparse3diff {'steps': 10, 'samples': 1}"]["s_per_plane_256"] / 10
    out["ddpm_1000_steps_s_per_plane_256_estimated"] = round(per_call * 1000, 1)
    out["speedup_default_vs_ddpm_1000"] = round(per_call * 1000 / out["sparse3diff {'steps': 2, 'samples': 2}"]["s_per_plane_256"], 1)
    out["peak_rss_MiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
