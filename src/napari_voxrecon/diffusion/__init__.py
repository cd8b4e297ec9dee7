"""Diffusion schedules and samplers shared by Sparse3Diff, MicroDiffusion and the DiT.

A model is wrapped into ``denoise(x_t, t) -> x0_hat`` (see :func:`make_v_denoiser`) and then
combines with any sampler and any schedule::

    sched = VPSchedule("cosine", zero_terminal_snr=True)
    denoise = make_v_denoiser(lambda x, t: cfg_combine(net(x, t, c), net(x, t, None), w), sched)
    x_T = torch.randn(shape, generator=g)
    x0 = sample("dpmpp_2m", denoise, sched, x_T, n_steps=20, should_stop=lambda: token.cancelled)
"""

from .samplers import (
    SAMPLERS,
    Denoiser,
    SamplingCancelled,
    cfg_combine,
    make_flow_denoiser,
    make_v_denoiser,
    sample,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    timesteps,
)
from .schedule import (
    FlowSchedule,
    VPSchedule,
    append_dims,
    eps_from_v,
    loss_weight,
    q_sample,
    v_target,
    x0_from_v,
)

__all__ = [
    "SAMPLERS",
    "Denoiser",
    "FlowSchedule",
    "SamplingCancelled",
    "VPSchedule",
    "append_dims",
    "cfg_combine",
    "eps_from_v",
    "loss_weight",
    "make_flow_denoiser",
    "make_v_denoiser",
    "q_sample",
    "sample",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "timesteps",
    "v_target",
    "x0_from_v",
]
