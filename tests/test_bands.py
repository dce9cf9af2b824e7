from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import norm

from deepinv_icrf import fit_icrf
from deepinv_icrf.calibration.bands import icrf_confidence_band
from deepinv_icrf.data import demo_scene
from deepinv_icrf.functional.uncertainty import (
    band_coverage,
    bootstrap_band,
    jackknife_std,
    residual_code_std,
)
from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack


def test_bootstrap_band_matches_numpy(device):
    gen = np.random.default_rng(3)
    center = np.sort(gen.uniform(0, 1, (2, 9)), axis=1)
    center[:, 0], center[:, -1] = 0.0, 1.0
    samples = center + gen.normal(0.01, 0.02, (6, 2, 9))
    lower, upper = bootstrap_band(
        torch.tensor(samples, device=device), torch.tensor(center, device=device), 0.9
    )
    z = norm.ppf(0.95)
    bias = samples.mean(0) - center
    sd = samples.std(0, ddof=1)
    ref_lo = np.clip(np.minimum(center, center - bias) - z * sd, 0, 1)
    ref_hi = np.clip(np.maximum(center, center - bias) + z * sd, 0, 1)
    ref_lo[:, 0] = ref_hi[:, 0] = 0.0
    ref_lo[:, -1] = ref_hi[:, -1] = 1.0
    assert lower.cpu().numpy() == pytest.approx(ref_lo, rel=1e-6, abs=1e-12)
    assert upper.cpu().numpy() == pytest.approx(ref_hi, rel=1e-6, abs=1e-12)
    assert lower.device.type == device.type


def test_bootstrap_band_bad_inputs():
    c = torch.linspace(0, 1, 5).expand(1, 5)
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_band(c.unsqueeze(0), c)
    with pytest.raises(ValueError, match="level"):
        bootstrap_band(torch.stack([c, c]), c, level=1.0)
    with pytest.raises(ValueError, match="center"):
        bootstrap_band(torch.stack([c, c]), c[:, :4])


def test_band_coverage_matches_loop(device):
    gen = np.random.default_rng(4)
    ref = np.linspace(0, 1, 256)[None].repeat(2, 0) ** np.array([[2.0], [2.4]])
    lower = ref - gen.uniform(-0.002, 0.01, ref.shape)
    upper = ref + gen.uniform(-0.002, 0.01, ref.shape)
    # a band's edges never cross (band_coverage refuses crossed ones)
    upper = np.maximum(upper, lower)
    cov = band_coverage(
        torch.tensor(lower, device=device),
        torch.tensor(upper, device=device),
        torch.tensor(ref),
        low=8,
        high=247,
    )
    for c in range(2):
        inside = [lower[c, k] <= ref[c, k] <= upper[c, k] for k in range(8, 248)]
        assert cov[c].item() == pytest.approx(sum(inside) / len(inside), rel=1e-12)


def test_band_coverage_bad_range():
    g = torch.linspace(0, 1, 256).expand(1, 256)
    with pytest.raises(ValueError, match="low"):
        band_coverage(g, g, g, low=200, high=100)


def test_residual_code_std_matches_numpy():
    gen = np.random.default_rng(5)
    y = gen.uniform(0, 1, (3, 2, 13, 11))
    y_hat = y + gen.normal(0, 0.01, y.shape)
    m = gen.integers(1, 4, (1, 1, 13, 11)).astype(float)
    out = residual_code_std(torch.tensor(y), torch.tensor(y_hat), torch.tensor(m))
    for c in range(2):
        vals = []
        for n in range(3):
            for h in range(13):
                for w in range(11):
                    mm = m[0, 0, h, w]
                    if 0.05 <= y[n, c, h, w] <= 0.95 and mm >= 2:
                        vals.append(
                            abs(y[n, c, h, w] - y_hat[n, c, h, w])
                            * np.sqrt(mm / (mm - 1))
                        )
        assert out[c].item() == pytest.approx(1.4826 * np.median(vals), rel=1e-9)


def _small_stack(device, channels=1):
    t = torch.tensor([0.125, 0.25, 0.5, 1.0], dtype=torch.float64)
    x = demo_scene(13, 11, channels=channels, dynamic_range_stops=6)
    return ExposureStack(t, response="gamma")(x)[0].to(device), t


class _FakeFit:
    # deterministic stand-in for fit_icrf: a gamma curve whose exponent follows the data
    def __init__(self):
        self.calls = []
        self.curves = []

    def __call__(self, stack, exposure_times, **options):
        self.calls.append(options)
        gamma = 2.0 + 0.5 * float(stack.mean()) + 0.01 * options["seed"]
        icrf = ICRF(channels=stack.shape[1], init="gamma", gamma=gamma).to(stack.device)
        self.curves.append(icrf.curve.detach())
        return icrf


@pytest.mark.parametrize("method", ["parametric", "pixels"])
def test_icrf_confidence_band_with_fake_fit(device, method):
    y, t = _small_stack(device)
    icrf = ICRF(channels=1, init="gamma", gamma=2.2).to(device)
    fake = _FakeFit()
    lower, upper = icrf_confidence_band(
        y,
        t,
        icrf,
        n_boot=3,
        method=method,
        fit=fake,
        seed=7,
        fit_options={"steps": 3},
        vary_init=True,
        exposure_jackknife=False,
    )
    assert lower.shape == (1, 256) and lower.device.type == device.type
    assert bool((lower <= upper).all())
    assert icrf.band.shape == (2, 1, 256)
    assert [c["seed"] for c in fake.calls] == [7, 8, 9]
    assert all(c["steps"] == 3 and c["progress"] is False for c in fake.calls)
    assert all(c["init"].shape == (1, 256) for c in fake.calls)
    # the band is the bootstrap band of exactly the refits the fit function returned
    ref_lo, ref_hi = bootstrap_band(torch.stack(fake.curves), icrf.curve.detach())
    assert torch.allclose(lower, ref_lo) and torch.allclose(upper, ref_hi)
    assert float(upper[0, 128] - lower[0, 128]) > 0
    assert lower[0, 0] == 0 and upper[0, -1] == 1


def test_icrf_confidence_band_covers_known_spread(device):
    # refits scattered around the truth: the band must contain it at every code
    y, t = _small_stack(device)
    truth = ICRF(channels=1, init="gamma", gamma=2.2)
    icrf = ICRF(channels=1, init="gamma", gamma=2.25).to(device)
    gammas = iter([2.1, 2.3, 2.2, 2.25])

    def fit(stack, times, **options):
        return ICRF(channels=1, init="gamma", gamma=next(gammas)).to(stack.device)

    lower, upper = icrf_confidence_band(
        y, t, icrf, n_boot=4, fit=fit, vary_init=False, exposure_jackknife=False
    )
    cov = band_coverage(lower.cpu(), upper.cpu(), truth.curve.detach(), low=1, high=254)
    assert cov.item() == 1.0


def test_icrf_confidence_band_with_fit_icrf(device):
    y, t = _small_stack(device)
    from deepinv_icrf import fit_icrf

    icrf = fit_icrf(y, t, steps=5, max_pixels=200, progress=False, device=device)
    lower, upper = icrf_confidence_band(
        y, t, icrf, n_boot=2, fit_options={"steps": 5, "max_pixels": 200}, store=False
    )
    assert icrf.band is None
    assert torch.isfinite(lower).all() and bool((lower <= upper).all())


def test_icrf_confidence_band_bad_inputs():
    y, t = _small_stack("cpu")
    icrf = ICRF(channels=1)
    with pytest.raises(ValueError, match="n_boot"):
        icrf_confidence_band(y, t, icrf, n_boot=1, fit=_FakeFit())
    with pytest.raises(ValueError, match="level"):
        icrf_confidence_band(y, t, icrf, level=1.5, fit=_FakeFit())
    with pytest.raises(ValueError, match="method"):
        icrf_confidence_band(y, t, icrf, method="laplace", fit=_FakeFit())
    with pytest.raises(ValueError, match="channels"):
        icrf_confidence_band(y, t, ICRF(channels=3), fit=_FakeFit())
    with pytest.raises(ValueError, match="exposure_times"):
        icrf_confidence_band(y, t[:3], icrf, fit=_FakeFit())
    with pytest.raises(TypeError, match="icrf"):
        icrf_confidence_band(y, t, icrf.curve, fit=_FakeFit())


def test_icrf_band_save_load_round_trip(tmp_path, device):
    icrf = ICRF(channels=2, n_points=7, init="gamma").to(device)
    assert icrf.band is None and "band" not in icrf.state_dict()
    curve = icrf.curve.detach()
    icrf.band = torch.stack([(curve - 0.01).clamp(0, 1), (curve + 0.01).clamp(0, 1)])
    assert "band" not in icrf.state_dict()
    icrf.save(tmp_path / "c.json")
    doc = json.loads((tmp_path / "c.json").read_text())
    assert set(doc["band"]) == {"lower", "upper"}
    loaded = ICRF.load(tmp_path / "c.json", device=device)
    assert torch.allclose(loaded.band.cpu(), icrf.band.cpu(), atol=1e-7)
    assert loaded.band.device.type == device.type
    plain = ICRF(channels=2, n_points=7)
    plain.save(tmp_path / "p.json")
    assert "band" not in json.loads((tmp_path / "p.json").read_text())
    assert ICRF.load(tmp_path / "p.json").band is None


def test_icrf_band_load_rejects_bad_band(tmp_path):
    icrf = ICRF(channels=1, n_points=4)
    icrf.save(tmp_path / "c.json")
    doc = json.loads((tmp_path / "c.json").read_text())
    doc["band"] = {"lower": [[0, 0.1, 0.2, 1]]}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="band"):
        ICRF.load(tmp_path / "c.json")
    doc["band"] = {"lower": [[0, 0.1, 0.2, 1]], "upper": [[0, 0.1, 1]]}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="band.upper"):
        ICRF.load(tmp_path / "c.json")


def test_plot_icrf_draws_band(tmp_path):
    from deepinv_icrf.plot import plot_icrf

    grid = torch.linspace(0, 1, 256).expand(3, 256)
    band = torch.stack([grid**2.3, grid**2.1])
    fig = plot_icrf(grid**2.2, band=band, path=tmp_path / "f.png")
    assert len(fig.axes[0].collections) == 3
    assert (tmp_path / "f.png").exists()
    with pytest.raises(ValueError, match="band"):
        plot_icrf(grid**2.2, band=band[:, :2])


def test_bootstrap_band_extra_std_adds_in_quadrature():
    g = torch.Generator().manual_seed(3)
    samples = torch.rand(5, 2, 7, generator=g, dtype=torch.float64) * 0.1 + 0.4
    center = torch.full((2, 7), 0.45, dtype=torch.float64)
    extra = torch.rand(2, 7, generator=g, dtype=torch.float64) * 0.05
    lower, upper = bootstrap_band(samples, center, 0.9, extra_std=extra)
    s, c = samples.numpy(), center.numpy()
    z = norm.ppf(0.95)
    spread = np.sqrt(s.std(0, ddof=1) ** 2 + extra.numpy() ** 2)
    corrected = 2 * c - s.mean(0)
    lo = np.clip(np.minimum(c, corrected) - z * spread, 0, 1)
    hi = np.clip(np.maximum(c, corrected) + z * spread, 0, 1)
    lo[:, 0], hi[:, 0], lo[:, -1], hi[:, -1] = 0, 0, 1, 1
    np.testing.assert_allclose(lower.numpy(), lo, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(upper.numpy(), hi, rtol=1e-6, atol=1e-12)
    with pytest.raises(ValueError, match="extra_std"):
        bootstrap_band(samples, center, extra_std=torch.zeros(3, 7))


def test_icrf_confidence_band_exponent_std_widens(device):
    y, t = _small_stack(device)
    icrf = ICRF(channels=1, init="gamma", gamma=2.2).to(device)
    options = {"n_boot": 3, "store": False, "exposure_jackknife": False}
    lo0, hi0 = icrf_confidence_band(y, t, icrf, fit=_FakeFit(), **options)
    lo1, hi1 = icrf_confidence_band(
        y, t, icrf, fit=_FakeFit(), exponent_std=0.05, **options
    )
    f = icrf.curve.detach()[0, 128].double()
    # half-width grows to sqrt(s^2 + (f log f 0.05)^2) at mid-codes
    assert float((hi1 - lo1)[0, 128]) > float((hi0 - lo0)[0, 128])
    assert float((hi1 - lo1)[0, 128]) >= 2 * 1.95 * float((f * f.log()).abs()) * 0.05
    with pytest.raises(ValueError, match="exponent_std"):
        icrf_confidence_band(y, t, icrf, n_boot=2, fit=_FakeFit(), exponent_std=-1.0)


def test_fit_icrf_band_true_stores_band(device):
    from deepinv_icrf import fit_icrf

    y, t = _small_stack(device)
    icrf = fit_icrf(y, t, band=True, max_pixels=150, progress=False, device=device)
    assert icrf.band.shape == (2, 1, 256)
    assert icrf.fit_report.band is icrf.band
    curve = icrf.curve.detach()
    assert bool((icrf.band[0] <= curve + 1e-6).all())
    assert bool((curve <= icrf.band[1] + 1e-6).all())
    plain = fit_icrf(y, t, max_pixels=150, progress=False, device=device)
    assert plain.band is None and plain.fit_report.band is None


def test_fit_icrf_band_with_refined_exposures_uses_exponent_std():
    from deepinv_icrf import fit_icrf

    true = torch.tensor([0.125, 0.26, 0.48, 1.05], dtype=torch.float64)
    x = demo_scene(24, 30, channels=1, dynamic_range_stops=6)
    y = ExposureStack(true, response="gamma")(x)[0]
    nominal = torch.tensor([0.125, 0.25, 0.5, 1.0], dtype=torch.float64)
    icrf = fit_icrf(
        y, nominal, refine_exposures=True, band=True, max_pixels=300, progress=False
    )
    report = icrf.fit_report
    assert report.extra["exponent_std"] > 0
    assert report.band is icrf.band and icrf.band.shape == (2, 1, 256)
    width = (icrf.band[1] - icrf.band[0])[0, 128]
    f = icrf.curve.detach()[0, 128].double()
    assert float(width) >= 3.9 * float((f * f.log()).abs()) * report.extra[
        "exponent_std"
    ] * (1 - 1e-3)


def test_jackknife_std_matches_loop(device):
    gen = np.random.default_rng(5)
    samples = gen.normal(0.0, 1.0, (5, 2, 7))
    out = jackknife_std(torch.tensor(samples, device=device)).cpu().numpy()
    m = samples.shape[0]
    ref = np.zeros((2, 7))
    for c in range(2):
        for j in range(7):
            vals = samples[:, c, j]
            mean = sum(vals) / m
            ref[c, j] = np.sqrt((m - 1) / m * sum((v - mean) ** 2 for v in vals))
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    # equal leave-one-out estimates: no spread
    assert float(jackknife_std(torch.ones(4, 3)).abs().max()) == 0.0
    with pytest.raises(ValueError, match="m >= 2"):
        jackknife_std(torch.ones(1, 3))
    with pytest.raises(TypeError):
        jackknife_std(torch.ones(3, 2, dtype=torch.int64))


def test_icrf_confidence_band_exposure_jackknife(device):
    # the fit is called once more without each exposure, with the matching times, and the
    # jackknife std of those curves widens the bootstrap band in quadrature
    y, t = _small_stack(device)
    icrf = ICRF(channels=1, init="gamma", gamma=2.2).to(device)
    fake = _FakeFit()
    seen = []

    def fit(stack, times, **options):
        seen.append((stack.shape[0], [round(float(v), 6) for v in times]))
        return fake(stack, times, **options)

    lower, upper = icrf_confidence_band(y, t, icrf, n_boot=3, fit=fit, seed=1)
    assert [n for n, _ in seen] == [4, 4, 4, 3, 3, 3, 3]
    assert seen[3][1] == [0.25, 0.5, 1.0] and seen[6][1] == [0.125, 0.25, 0.5]
    refits, left_out = torch.stack(fake.curves[:3]), torch.stack(fake.curves[3:])
    extra = jackknife_std(left_out.double())
    assert float(extra.max()) > 0
    ref_lo, ref_hi = bootstrap_band(refits, icrf.curve.detach(), extra_std=extra)
    assert torch.allclose(lower, ref_lo) and torch.allclose(upper, ref_hi)
    plain_lo, plain_hi = icrf_confidence_band(
        y, t, icrf, n_boot=3, fit=_FakeFit(), seed=1, exposure_jackknife=False
    )
    assert float((upper - lower)[0, 128]) > float((plain_hi - plain_lo)[0, 128])


def test_icrf_confidence_band_jackknife_skips_unusable_subsets(device):
    y, t = _small_stack(device)
    icrf = ICRF(channels=1, init="gamma", gamma=2.2).to(device)
    fake = _FakeFit()

    def fit(stack, times, **options):
        if stack.shape[0] == 3 and float(times.min()) > 0.2:
            raise ValueError("no usable pair")
        return fake(stack, times, **options)

    lower, upper = icrf_confidence_band(y, t, icrf, n_boot=2, fit=fit)
    # the subset without the shortest exposure failed: 3 leave-one-out curves remain
    extra = jackknife_std(torch.stack(fake.curves[2:]).double())
    assert len(fake.curves) == 5
    ref_lo, ref_hi = bootstrap_band(
        torch.stack(fake.curves[:2]), icrf.curve.detach(), extra_std=extra
    )
    assert torch.allclose(lower, ref_lo) and torch.allclose(upper, ref_hi)
    # two exposures: nothing to leave out
    calls = []

    def counting(stack, times, **options):
        calls.append(stack.shape[0])
        return fake(stack, times, **options)

    icrf_confidence_band(y[:2], t[:2], icrf, n_boot=2, fit=counting, store=False)
    assert calls == [2, 2]


def test_bootstrap_band_alternatives_move_the_band():
    g = torch.Generator().manual_seed(5)
    samples = torch.rand(4, 2, 9, generator=g, dtype=torch.float64) * 0.1 + 0.4
    center = torch.full((2, 9), 0.45, dtype=torch.float64)
    alt = center + torch.linspace(-0.2, 0.2, 9, dtype=torch.float64)
    alts = torch.stack([alt, center + 0.01])
    lower, upper = bootstrap_band(samples, center, 0.9, alternatives=alts)
    s, c, a = samples.numpy(), center.numpy(), alts.numpy()
    z = norm.ppf(0.95)
    spread = s.std(0, ddof=1)
    corrected = 2 * c - s.mean(0)
    lo = np.minimum(c, corrected) - z * spread
    hi = np.maximum(c, corrected) + z * spread
    # the union of the band and its copies moved onto each alternative
    lo = np.min([lo] + [lo + a[j] - c for j in range(2)], axis=0)
    hi = np.max([hi] + [hi + a[j] - c for j in range(2)], axis=0)
    lo, hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
    lo[:, 0], hi[:, 0], lo[:, -1], hi[:, -1] = 0, 0, 1, 1
    np.testing.assert_allclose(lower.numpy(), lo, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(upper.numpy(), hi, rtol=1e-6, atol=1e-12)
    # the band now reaches the alternative curve on both sides
    assert bool((lower[:, 1:-1] <= alt[:, 1:-1] + 1e-12).all())
    assert bool((upper[:, 1:-1] >= alt[:, 1:-1] - 1e-12).all())
    with pytest.raises(ValueError, match="alternatives"):
        bootstrap_band(samples, center, alternatives=alt)


class _FakeCoreFit:
    # stands in for the package's single fit: "global" clip priority gives a steeper curve
    def __init__(self):
        self.calls, self.curves, self.stacks = [], [], []

    def __call__(self, stack, times, options, *, device=None, seed=0):
        self.calls.append(
            {
                "clip_priority": options.clip_priority,
                "seed": seed,
                "smoothness": options.smoothness,
            }
        )
        self.stacks.append(stack)
        gamma = 2.0 + 0.01 * seed + (0.3 if options.clip_priority == "global" else 0)
        icrf = ICRF(channels=stack.shape[2], init="gamma", gamma=gamma).to(stack.device)
        self.curves.append(icrf.curve.detach())
        return icrf, None, None


def _one_second_opinion(device, monkeypatch, keep: str):
    # a band whose only second opinion is `keep` ("clip", "top" or "prior"), on a fake fit:
    # three bootstrap refits and that one refit, which the band must reach
    import deepinv_icrf.calibration.bands as bands

    y, t = _small_stack(device)
    icrf = ICRF(channels=1, init="gamma", gamma=2.2).to(device)
    fake = _FakeCoreFit()
    monkeypatch.setattr(bands, "fit_once", fake)
    options = {"n_boot": 3, "store": False, "exposure_jackknife": False, "seed": 2}
    flags = {f"{name}_sensitivity": name == keep for name in ("clip", "top", "prior")}
    lower, upper = icrf_confidence_band(y, t, icrf, **options, **flags)
    assert len(fake.calls) == 4
    ref_lo, ref_hi = bootstrap_band(
        torch.stack(fake.curves[:3]),
        icrf.curve.detach(),
        alternatives=fake.curves[3].unsqueeze(0),
    )
    assert torch.allclose(lower, ref_lo) and torch.allclose(upper, ref_hi)
    off = {name: False for name in flags}
    return fake, (y, t, icrf), dict(options, **off)


def test_icrf_confidence_band_clip_sensitivity(device, monkeypatch):
    import deepinv_icrf.calibration.bands as bands

    fake, (y, t, icrf), options = _one_second_opinion(device, monkeypatch, "clip")
    # three bootstrap refits, then one refit of the stack with clip_priority="global"
    assert [c["clip_priority"] for c in fake.calls] == ["stratum"] * 3 + ["global"]
    assert fake.calls[-1]["seed"] == 2
    # switched off, with another method or with a fit of one's own: no second opinion
    fake = _FakeCoreFit()
    monkeypatch.setattr(bands, "fit_once", fake)
    icrf_confidence_band(y, t, icrf, **options)
    assert len(fake.calls) == 3
    other = _FakeFit()
    icrf_confidence_band(y, t, icrf, fit=other, **dict(options, clip_sensitivity=True))
    assert len(other.calls) == 3


def test_icrf_confidence_band_top_sensitivity(device, monkeypatch):
    import deepinv_icrf.calibration.bands as bands

    y, t = _small_stack(device)
    icrf = ICRF(channels=1, init="gamma", gamma=2.2).to(device)
    fake = _FakeCoreFit()
    monkeypatch.setattr(bands, "fit_once", fake)
    options = {
        "n_boot": 3,
        "store": False,
        "exposure_jackknife": False,
        "seed": 2,
        "prior_sensitivity": False,
    }
    icrf_confidence_band(y, t, icrf, clip_sensitivity=False, noise_std=0.01, **options)
    # three bootstrap refits, then the stack with the codes near the top read as clipped
    assert len(fake.calls) == 4
    top = 1.0 - max(2 * 0.01, 10 / 255)  # ten 8-bit codes at least
    original, clipped = y.reshape(-1), fake.stacks[-1].reshape(-1).to(y.device)
    near = original >= top - 0.5 / 255
    assert bool(near.any()) and bool((clipped[near] == 1.0).all())
    torch.testing.assert_close(clipped[~near], original[~near].to(clipped.dtype))
    fake = _FakeCoreFit()
    monkeypatch.setattr(bands, "fit_once", fake)
    icrf_confidence_band(
        y, t, icrf, clip_sensitivity=False, top_sensitivity=False, **options
    )
    assert len(fake.calls) == 3


def test_icrf_confidence_band_prior_sensitivity(device, monkeypatch):
    import deepinv_icrf.calibration.bands as bands

    fake, (y, t, icrf), options = _one_second_opinion(device, monkeypatch, "prior")
    # three bootstrap refits at the fit's prior, then one with a prior ten times weaker
    weights = [c["smoothness"] for c in fake.calls]
    assert weights[:3] == [weights[0]] * 3
    assert weights[3] == pytest.approx(weights[0] / 10)
    fake = _FakeCoreFit()
    monkeypatch.setattr(bands, "fit_once", fake)
    icrf_confidence_band(y, t, icrf, **options)
    assert len(fake.calls) == 3


def test_icrf_confidence_band_takes_repeated_times(device):
    # the times a fit implies repeat where the camera took frames at one exposure (a stuck
    # shutter): the band takes them; one exposure alone carries no ratio and is refused
    t = torch.tensor([0.125, 0.25, 0.25, 0.5, 1.0], dtype=torch.float64)
    x = demo_scene(16, 20, channels=1, dynamic_range_stops=6)
    y = ExposureStack(t, response="gamma")(x)[0].to(device)
    keep = [0, 1, 3, 4]  # a fit takes distinct times: fitted without the repeated frame
    icrf = fit_icrf(y[keep], t[keep], progress=False, reconstructor=False, steps=10)
    lower, upper = icrf_confidence_band(
        y, t, icrf, n_boot=2, store=False, fit_options={"steps": 10}
    )
    assert lower.shape == upper.shape == (1, icrf.n_points)
    assert bool((lower <= upper).all())
    with pytest.raises(ValueError, match="at least two different values"):
        icrf_confidence_band(y, torch.full((5,), 0.25), icrf, n_boot=2, store=False)


def test_fit_with_band_on_a_real_bracket_with_stuck_frames():
    # living_room1: four frames of equal brightness whose listed times double; the fit uses
    # the times the check implies, two pairs of them equal, and the band once refused them
    from pathlib import Path

    from deepinv_icrf.data import read_exposure_folder

    folder = Path(__file__).resolve().parents[2] / "shared/data/real/living_room1"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (shared data folder not present)")
    stack = read_exposure_folder(folder)
    with pytest.warns(UserWarning, match="listed exposure times disagree"):
        icrf = fit_icrf(
            stack.images,
            stack.exposure_times,
            progress=False,
            reconstructor=False,
            band=True,
        )
    used = icrf.fit_report.exposure_times
    assert used.unique().numel() < used.numel()  # repeated times reached the band
    assert icrf.band is not None and bool((icrf.band[0] <= icrf.band[1]).all())
