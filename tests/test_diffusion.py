"""Diffusion schedule and samplers, checked against a Gaussian data distribution.

For x0 ~ N(mu, S) the exact denoiser (posterior mean) is analytic:
    E[x0 | x_t] = mu + alpha S (alpha² S + sigma² I)^-1 (x_t - alpha mu),
and the probability-flow ODE maps x_T ~ N(0, I) (the t = 1 marginal under zero terminal SNR)
exactly onto N(mu, S).  Every sampler must reproduce that within its discretisation error.
"""

from __future__ import annotations

import math

import pytest
import torch

from napari_voxrecon.diffusion import (
    SAMPLERS,
    FlowSchedule,
    SamplingCancelled,
    VPSchedule,
    append_dims,
    cfg_combine,
    eps_from_v,
    loss_weight,
    make_flow_denoiser,
    make_v_denoiser,
    q_sample,
    sample,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    timesteps,
    v_target,
    x0_from_v,
)
from napari_voxrecon.errors import JobCancelled

SCHEDULES = [
    VPSchedule("cosine", zero_terminal_snr=True),
    VPSchedule("cosine", zero_terminal_snr=False),
    VPSchedule("linear", zero_terminal_snr=True),
    VPSchedule("linear", zero_terminal_snr=False),
]
ZTSNR = [VPSchedule("cosine"), VPSchedule("linear")]
MU, SD = 0.7, 0.4


def gaussian_denoiser(schedule, mu: float = MU, sd: float = SD):
    """Exact E[x0 | x_t] for scalar data x0 ~ N(mu, sd²); t may be per sample."""

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.shape == (x.shape[0],) and 0 <= float(t.min()) and float(t.max()) <= 1
        if bool((t == t[0]).all()):  # samplers pass one t per step: evaluate it once
            t = t[:1]
        a, s = schedule.alpha_sigma(t)
        a = append_dims(a.to(x.dtype), x.ndim)
        s = append_dims(s.to(x.dtype), x.ndim)
        return mu + a * sd**2 / (a * a * sd**2 + s * s) * (x - a * mu)

    return denoise


def gaussian_denoiser_nd(schedule, mu: torch.Tensor, cov: torch.Tensor):
    """Exact E[x0 | x_t] for x0 ~ N(mu, cov), x of shape (B, d)."""
    lam, q = torch.linalg.eigh(cov)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = schedule.alpha_sigma(t[:1] if bool((t == t[0]).all()) else t)
        a, s = a.to(x.dtype)[:, None], s.to(x.dtype)[:, None]
        y = (x - a * mu) @ q
        y = y * (a * lam / (a * a * lam + s * s))
        return mu + y @ q.T

    return denoise


def linear_map(sampler, schedule, n_steps, **kw) -> tuple[float, float]:
    """For Gaussian data every deterministic sampler is affine in x_T: x0 = b + A x_T.

    The exact flow has A = SD and b = MU, so A - SD is the sampler's error in std, free of
    sampling noise.
    """
    x = torch.tensor([0.0, 1.0], dtype=torch.float64)
    out = sampler(gaussian_denoiser(schedule), schedule, x, n_steps, **kw)
    return float(out[1] - out[0]), float(out[0])


def noise(n: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --------------------------------------------------------------------------------------
# schedule
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("sched", SCHEDULES, ids=repr)
def test_schedule_is_variance_preserving_and_monotone(sched):
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)
    a, s = sched.alpha_sigma(t)
    torch.testing.assert_close(a * a + s * s, torch.ones_like(t), atol=1e-12, rtol=0)
    assert float(a[0]) == 1.0 and float(s[0]) == 0.0
    assert bool((a[1:] < a[:-1]).all()) and bool((s[1:] > s[:-1]).all())
    lam = sched.log_snr(t)
    assert math.isinf(float(lam[0])) and float(lam[0]) > 0
    assert bool((lam[1:] < lam[:-1]).all())
    # float32: still on the unit circle, log-SNR finite and strictly decreasing inside (0, 1)
    t32 = torch.linspace(1e-4, 1 - 1e-4, 4001)
    a32, s32 = sched.alpha_sigma(t32)
    assert a32.dtype == torch.float32
    torch.testing.assert_close(a32 * a32 + s32 * s32, torch.ones_like(t32), atol=1e-6, rtol=0)
    lam32 = sched.log_snr(t32)
    assert bool(torch.isfinite(lam32).all()) and bool((lam32[1:] < lam32[:-1]).all())
    torch.testing.assert_close(lam32.double(), sched.log_snr(t32.double()), atol=1e-3, rtol=0)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_zero_terminal_snr(kind):
    z, raw = VPSchedule(kind, zero_terminal_snr=True), VPSchedule(kind, zero_terminal_snr=False)
    for dtype in (torch.float32, torch.float64):
        a1, s1 = z.alpha_sigma(torch.tensor(1.0, dtype=dtype))
        assert float(a1) == 0.0 and float(s1) == 1.0
        assert float(z.log_snr(torch.tensor(1.0, dtype=dtype))) == -math.inf
    # Lin et al. 2024, Alg. 1: shift sqrt(ᾱ) to 0 at t = 1, rescale to keep the value at t = 0
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    a_raw, _ = raw.alpha_sigma(t)
    expected = (a_raw - a_raw[-1]) / (a_raw[0] - a_raw[-1]) * a_raw[0]
    torch.testing.assert_close(z.alpha_sigma(t)[0], expected, atol=1e-12, rtol=0)
    if kind == "linear":  # the flaw Lin et al. fix: the linear schedule never reaches pure noise
        assert 1e-3 < float(a_raw[-1]) < 1e-2


def test_linear_schedule_matches_discrete_ddpm_betas():
    sched = VPSchedule("linear", zero_terminal_snr=False)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    log_abar = torch.log(torch.cumprod(1 - betas, 0))
    mine = torch.log(sched.alphas_cumprod()[1:])
    assert float(((mine - log_abar) / log_abar).abs().max()) < 0.01
    # β_i of the continuous schedule is 1 - e^-β_i ≈ β_i - β_i²/2
    torch.testing.assert_close(sched.betas(), betas, atol=0, rtol=0.011)


@pytest.mark.parametrize("sched", SCHEDULES + [FlowSchedule()], ids=repr)
def test_t_from_log_snr_inverts_log_snr(sched):
    t = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
    torch.testing.assert_close(sched.t_from_log_snr(sched.log_snr(t)), t, atol=1e-9, rtol=0)
    t32 = t.float()
    torch.testing.assert_close(sched.t_from_log_snr(sched.log_snr(t32)), t32, atol=1e-4, rtol=0)
    ends = sched.t_from_log_snr(torch.tensor([math.inf, -math.inf], dtype=torch.float64))
    assert float(ends[0]) == pytest.approx(0.0, abs=1e-9)
    assert float(ends[1]) == pytest.approx(1.0, abs=1e-9)


def test_discrete_grid_helpers():
    sched = VPSchedule("cosine")
    abar = sched.alphas_cumprod()
    assert abar.shape == (1001,) and float(abar[0]) == 1.0 and float(abar[-1]) == 0.0
    betas = sched.betas()
    assert betas.shape == (1000,) and float(betas[-1]) == 1.0 and bool((betas > 0).all())
    full = sched.ddpm_timesteps()
    torch.testing.assert_close(full, torch.arange(1000, -1, -1, dtype=torch.float64) / 1000)
    ten = sched.ddpm_timesteps(10)
    assert float(ten[0]) == 1.0 and float(ten[-1]) == 0.0 and ten.numel() == 11
    assert bool(((ten * 1000) == torch.round(ten * 1000)).all())  # on the training grid
    t = sched.sample_t(500, generator=torch.Generator().manual_seed(0))
    assert t.shape == (500,) and float(t.min()) > 0 and float(t.max()) <= 1
    assert bool(((t.double() * 1000 - torch.round(t.double() * 1000)).abs() < 1e-3).all())
    tc = sched.sample_t(500, generator=torch.Generator().manual_seed(0), discrete=False)
    assert float(tc.min()) > 0 and float(tc.max()) <= 1


# --------------------------------------------------------------------------------------
# v-parameterisation and loss weights
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("sched", ZTSNR, ids=repr)
def test_v_conversions_invert_each_other(sched):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 2, 3, 4, 5, generator=g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0.0, 0.01, 0.3, 0.7, 0.999, 1.0], dtype=torch.float64)
    a, s = sched.alpha_sigma(t)
    x_t = q_sample(x0, eps, a, s)
    v = v_target(x0, eps, a, s)
    torch.testing.assert_close(x0_from_v(x_t, v, a, s), x0)
    torch.testing.assert_close(eps_from_v(x_t, v, a, s), eps)
    # paper eq. 4 per sample: V = sqrt(ᾱ) eps - sqrt(1 - ᾱ) X0
    torch.testing.assert_close(v[3], a[3] * eps[3] - s[3] * x0[3])
    torch.testing.assert_close(v[-1], -x0[-1])  # pure noise: v = -x0
    torch.testing.assert_close(x_t[0], x0[0])  # clean end
    # scalars work too
    torch.testing.assert_close(q_sample(x0, eps, 0.6, 0.8), 0.6 * x0 + 0.8 * eps)


def test_loss_weights_match_the_eps_and_x0_losses():
    sched = VPSchedule("cosine")
    g = torch.Generator().manual_seed(1)
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.98 + 0.01
    x0 = torch.randn(64, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(64, 8, generator=g, dtype=torch.float64)
    x0_hat = x0 + 0.1 * torch.randn(64, 8, generator=g, dtype=torch.float64)
    a, s = sched.alpha_sigma(t)
    x_t = q_sample(x0, eps, a, s)
    eps_hat = (x_t - append_dims(a, 2) * x0_hat) / append_dims(s, 2)
    v_err = ((v_target(x0, eps, a, s) - v_target(x0_hat, eps_hat, a, s)) ** 2).sum(1)
    eps_err = ((eps - eps_hat) ** 2).sum(1)
    x0_err = ((x0 - x0_hat) ** 2).sum(1)
    torch.testing.assert_close(loss_weight(t, "eps", schedule=sched) * v_err, eps_err)
    torch.testing.assert_close(sched.loss_weight(t, "x0") * v_err, x0_err)
    torch.testing.assert_close(loss_weight(t, "v"), torch.ones_like(t))
    snr = torch.exp(sched.log_snr(t))
    torch.testing.assert_close(sched.loss_weight(t, "min_snr", gamma=5.0),
                               torch.clamp(snr, max=5.0) / (snr + 1))
    assert float(sched.loss_weight(torch.tensor(1.0), "min_snr")) == 0.0
    with pytest.raises(ValueError):
        loss_weight(t, "bogus")


def test_make_v_denoiser_and_cfg():
    sched = VPSchedule("cosine")
    exact = gaussian_denoiser(sched)

    def model_v(x, t):  # the v an ideal network would predict
        a, s = sched.alpha_sigma(t)
        x0 = exact(x, t)
        eps = (x - a * x0) / s
        return v_target(x0, eps, a, s)

    den = make_v_denoiser(model_v, sched)
    x = noise(7, dtype=torch.float64)
    t = torch.tensor([1e-3, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99], dtype=torch.float64)
    torch.testing.assert_close(den(x, t), exact(x, t))
    # at t = 1 the v-denoiser is -v: the network output alone, no division by alpha = 0
    t1 = torch.ones(7, dtype=torch.float64)
    torch.testing.assert_close(den(x, t1), torch.full((7,), MU, dtype=torch.float64))
    # eq. 5 in v-space is eq. 5 in eps-space
    g = torch.Generator().manual_seed(3)
    vc, vu, xt = (torch.randn(4, 5, generator=g, dtype=torch.float64) for _ in range(3))
    a, s = sched.alpha_sigma(torch.full((4,), 0.4, dtype=torch.float64))
    w = 2.5
    torch.testing.assert_close(
        eps_from_v(xt, cfg_combine(vc, vu, w), a, s),
        (1 + w) * eps_from_v(xt, vc, a, s) - w * eps_from_v(xt, vu, a, s),
    )
    torch.testing.assert_close(cfg_combine(vc, vu, 0.0), vc)


# --------------------------------------------------------------------------------------
# grids
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["uniform", "quadratic", "log_snr", "karras", "ddpm"])
@pytest.mark.parametrize("t_start", [1.0, 0.5])
def test_timesteps(kind, t_start):
    sched = VPSchedule("cosine")
    t = timesteps(12, kind, schedule=sched, t_start=t_start)
    assert t.shape == (13,) and t.dtype == torch.float64
    assert float(t[0]) == t_start and float(t[-1]) == 0.0
    assert bool((t[1:] < t[:-1]).all())
    if kind == "log_snr":
        lam = sched.log_snr(t[1:-1])
        d = lam[1:] - lam[:-1]
        torch.testing.assert_close(d, d.mean().expand_as(d), atol=1e-6, rtol=0)
        if t_start == 1.0:  # clipped to log_snr_range
            assert float(lam[0]) == pytest.approx(-6.0) and float(lam[-1]) == pytest.approx(10.0)
        else:  # t_start itself is the first point of the uniform log-SNR grid
            lam_all = sched.log_snr(t[:-1])
            d = lam_all[1:] - lam_all[:-1]
            torch.testing.assert_close(d, d.mean().expand_as(d), atol=1e-6, rtol=0)
    with pytest.raises(ValueError):
        timesteps(0, kind, schedule=sched)


# --------------------------------------------------------------------------------------
# samplers on Gaussian data
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("sched", ZTSNR, ids=repr)
@pytest.mark.parametrize(
    "name,n_steps,tol",
    [("dpmpp_2m", 10, 0.06), ("dpmpp_2m", 20, 0.03), ("ddim", 20, 0.25), ("ddim", 100, 0.06)],
)
def test_deterministic_samplers_reproduce_the_gaussian(sched, name, n_steps, tol):
    x_T = noise(10000)
    out = sample(name, gaussian_denoiser(sched), sched, x_T, n_steps)
    assert out.dtype == torch.float32 and out.shape == x_T.shape
    assert abs(float(out.mean()) - MU) < 0.02
    assert abs(float(out.std()) - SD) < tol * SD


@pytest.mark.parametrize("sched", ZTSNR, ids=repr)
def test_ddpm_reproduces_the_gaussian(sched):
    x_T = noise(4000)
    out = sample_ddpm(gaussian_denoiser(sched), sched, x_T,
                      generator=torch.Generator().manual_seed(1))  # all 1000 steps
    assert abs(float(out.mean()) - MU) < 0.03
    assert abs(float(out.std()) - SD) < 0.05 * SD
    # the ancestral noise matters: with it removed (DDIM) the same coarse grid loses variance
    few = sample_ddpm(gaussian_denoiser(sched), sched, noise(20000), 250,
                      generator=torch.Generator().manual_seed(2))
    assert abs(float(few.std()) - SD) < 0.06 * SD


def test_2d_gaussian_with_correlation():
    sched = VPSchedule("cosine")
    mu = torch.tensor([0.5, -0.3], dtype=torch.float64)
    cov = torch.tensor([[0.30, 0.12], [0.12, 0.10]], dtype=torch.float64)
    x_T = torch.randn(20000, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    out = sample_dpmpp_2m(gaussian_denoiser_nd(sched, mu, cov), sched, x_T, 25)
    torch.testing.assert_close(out.mean(0), mu, atol=0.015, rtol=0)
    torch.testing.assert_close(torch.cov(out.T), cov, atol=0.01, rtol=0)


@pytest.mark.parametrize("sched", ZTSNR + [FlowSchedule()], ids=repr)
def test_dpmpp_2m_beats_ddim_and_is_second_order(sched):
    # "few" = 8-20: below that the two first-order steps out of pure noise dominate both
    for n in (8, 10, 20):
        same_grid = timesteps(n, "log_snr", schedule=sched)
        e_ddim = abs(linear_map(sample_ddim, sched, None, t_grid=same_grid)[0] - SD)
        e_ddim_uniform = abs(linear_map(sample_ddim, sched, n)[0] - SD)
        e_dpm = abs(linear_map(sample_dpmpp_2m, sched, n)[0] - SD)
        assert e_dpm < 0.6 * min(e_ddim, e_ddim_uniform), (n, e_dpm, e_ddim, e_ddim_uniform)
    # error orders: DDIM ~ 1/n, DPM-Solver++(2M) ~ 1/n² (on the Gaussian, n 20 -> 80)
    e = {n: abs(linear_map(sample_ddim, sched, n)[0] - SD) for n in (20, 80)}
    assert 2.5 < e[20] / e[80] < 6
    e = {n: abs(linear_map(sample_dpmpp_2m, sched, n)[0] - SD) for n in (20, 80)}
    assert e[20] / e[80] > 8
    assert e[80] < 1e-3
    # the mean is exact for Gaussian data from pure noise
    assert linear_map(sample_dpmpp_2m, sched, 10)[1] == pytest.approx(MU, abs=1e-9)


def test_dpmpp_2m_is_invariant_to_the_schedule_on_a_log_snr_grid():
    # The exponential integrator only sees λ = log(alpha/sigma): on the same λ grid, any
    # schedule gives the same result (a strong check of every alpha, sigma in the update).
    outs = []
    for sched in ZTSNR + [FlowSchedule()]:
        outs.append(linear_map(sample_dpmpp_2m, sched, 8))
    for o in outs[1:]:
        assert o == pytest.approx(outs[0], abs=1e-9)


def test_partial_start_from_a_noised_marginal():
    sched = VPSchedule("linear")
    a, s = sched.alpha_sigma(torch.tensor(0.5, dtype=torch.float64))
    z = noise(20000, dtype=torch.float64)
    x_half = a * MU + torch.sqrt(a * a * SD**2 + s * s) * z  # exact marginal at t = 0.5
    for name, n_steps, n_samples in [("ddim", 100, 20000), ("dpmpp_2m", 20, 20000),
                                     ("ddpm", None, 4000)]:  # ddpm: all 500 training steps
        kw = {"generator": torch.Generator().manual_seed(0)}
        out = sample(name, gaussian_denoiser(sched), sched, x_half[:n_samples], n_steps,
                     t_start=0.5, **kw)
        assert abs(float(out.mean()) - MU) < 0.02, name
        assert abs(float(out.std()) - SD) < 0.06 * SD, name


def test_flow_schedule_ddim_is_euler():
    sched = FlowSchedule()
    den = gaussian_denoiser(sched)
    x_T = noise(50, dtype=torch.float64)
    ts = timesteps(16, "uniform")
    x = x_T.clone()
    for tc, tn in zip(ts[:-1].tolist(), ts[1:].tolist()):
        x0 = den(x, torch.full((50,), tc, dtype=torch.float64))
        x = x + (tn - tc) * (x - x0) / tc  # dx/dt = u = eps - x0 = (x - x0) / t
    torch.testing.assert_close(sample_ddim(den, sched, x_T, t_grid=ts), x)
    u_model = lambda x, t: (x - den(x, t)) / append_dims(t, x.ndim)  # noqa: E731
    torch.testing.assert_close(make_flow_denoiser(u_model)(x_T, torch.full((50,), 0.3).double()),
                               den(x_T, torch.full((50,), 0.3).double()))


# --------------------------------------------------------------------------------------
# determinism, progress, cancel, plumbing
# --------------------------------------------------------------------------------------


def test_determinism_with_a_seeded_generator():
    sched = VPSchedule("cosine")
    den = gaussian_denoiser(sched)
    x_T = noise(300)
    for fn, kw in [(sample_ddpm, {"n_steps": 50}), (sample_ddim, {"n_steps": 20, "eta": 0.7})]:
        a = fn(den, sched, x_T, generator=torch.Generator().manual_seed(7), **kw)
        b = fn(den, sched, x_T, generator=torch.Generator().manual_seed(7), **kw)
        c = fn(den, sched, x_T, generator=torch.Generator().manual_seed(8), **kw)
        assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.equal(sample_dpmpp_2m(den, sched, x_T, 10), sample_dpmpp_2m(den, sched, x_T, 10))
    assert torch.equal(sample_ddim(den, sched, x_T, 10), sample_ddim(den, sched, x_T, 10))


def test_ddim_eta_1_is_ddpm():
    sched = VPSchedule("linear")
    den = gaussian_denoiser(sched)
    x_T = noise(300, dtype=torch.float64)
    grid = timesteps(30, "uniform")
    a = sample_ddpm(den, sched, x_T, t_grid=grid, generator=torch.Generator().manual_seed(3))
    b = sample_ddim(den, sched, x_T, t_grid=grid, eta=1.0,
                    generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_callback_before_step_and_cancel(name):
    sched = VPSchedule("cosine")
    den = gaussian_denoiser(sched)
    calls: list[tuple[int, int]] = []
    seen_t: list[float] = []

    def cb(i, n, x0_hat):
        assert x0_hat.shape == (64,)
        calls.append((i, n))

    def hook(i, t, x):
        seen_t.append(float(t[0]))
        return x

    kw = {"generator": torch.Generator().manual_seed(0)}
    sample(name, den, sched, noise(64), 12, callback=cb, before_step=hook, **kw)
    assert calls == [(i, 12) for i in range(12)]
    assert len(seen_t) == 12 and seen_t[0] == 1.0

    n_calls = 0

    def counting(x, t):
        nonlocal n_calls
        n_calls += 1
        return den(x, t)

    stop_after = 3
    with pytest.raises(SamplingCancelled) as info:
        sample(name, counting, sched, noise(64), 12, should_stop=lambda: n_calls >= stop_after,
               **kw)
    assert n_calls == stop_after
    assert isinstance(info.value, JobCancelled)


def test_grid_validation_and_dispatch():
    sched = VPSchedule("cosine")
    den = gaussian_denoiser(sched)
    x = noise(8)
    with pytest.raises(ValueError):
        sample_ddim(den, sched, x, t_grid=torch.tensor([1.0, 0.5, 0.1]))  # does not end at 0
    with pytest.raises(ValueError):
        sample_ddim(den, sched, x, t_grid=torch.tensor([1.0, 0.5, 0.6, 0.0]))
    with pytest.raises(ValueError):
        sample_ddim(den, sched, x, 5, t_grid=torch.tensor([1.0, 0.5, 0.0]))
    with pytest.raises(ValueError):
        sample("euler_a", den, sched, x, 4)
    assert set(SAMPLERS) == {"ddpm", "ddim", "dpmpp_2m"}
    # a 0-dim state gets a 0-dim t
    out = sample_dpmpp_2m(lambda x, t: torch.zeros_like(x) + 0 * t, sched, torch.tensor(0.3), 4)
    assert out.ndim == 0


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_device_and_dtype_follow_x_T(device, dtype, name):
    sched = VPSchedule("cosine")
    exact = gaussian_denoiser(sched)

    def den(x, t):
        assert t.device == x.device
        assert t.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        return exact(x, t)

    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    gen = torch.Generator().manual_seed(0)  # a CPU generator may drive a GPU sample
    out = sample(name, den, sched, x_T, 10, generator=gen)
    assert out.device == x_T.device and out.dtype == dtype and out.shape == x_T.shape
    assert bool(torch.isfinite(out).all())
