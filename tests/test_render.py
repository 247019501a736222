"""Volume rendering with AutoInt: the section model, the sampling network, compositing, training,
checkpoints and the CLI, at tiny sizes (one torch thread)."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import autoint_compiler as ac
from autoint_compiler.apps import render as R
from autoint_compiler.apps import render_scenes as RS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

TINY = R.RenderSettings(
    scenes=("blobs",),
    size=8,
    n_train=6,
    n_test=2,
    gt_samples=512,
    sections=(4,),
    quad_samples=(8,),
    hidden_sigma=(16, 16),
    hidden_color=(16, 16),
    frequencies=2,
    sampler_hidden=(16,),
    sampler_frequencies=1,
    samples_per_ray=8,
    steps=20,
    batch_rays=32,
    progress=False,
    threads=1,
    timing_repeats=1,
)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _rays(n_side=4, dtype=torch.float64, position=(2.0, -2.5, 1.2)):
    o, d = RS.look_at_rays(np.array(position), n_side, 30.0)
    return torch.tensor(o, dtype=dtype), torch.tensor(d, dtype=dtype)


def _field(k=4, uniform=True, dtype="float64", **kw):
    s = replace(TINY, uniform_sections=uniform, dtype=dtype, **kw)
    return R.build_model(f"autoint-K{k}", s), s


def test_section_renderer_converges_to_dense_quadrature_of_the_grad_networks():
    """Uniform sections: the section model (integral networks at K + 1 cut points) approaches a
    4096-sample midpoint quadrature of the *grad* networks as K grows.

    Measured (float64, this seed): max abs pixel error 5.1e-2 (K=4), 5.5e-4 (K=32), 8.7e-6 (K=256),
    on pixels up to 0.13."""
    model, s = _field(k=4)
    o, d = _rays()
    with torch.no_grad():
        dense = R.uniform_cuts(o.shape[0], 4096, s.near, s.far, o)
        ref, _ = model.sample_render(o, d, dense, 1, None)
        errs = []
        for k in (4, 32, 256):
            cuts = R.uniform_cuts(o.shape[0], k, s.near, s.far, o)
            img = R.section_render(
                model.sigma_phi, model.color_phi, o, d, cuts, s.sigma_scale, density_bias=s.density_bias
            )
            errs.append(float((img - ref).abs().max()))
    assert float(ref.abs().max()) > 0.05  # a non-trivial image
    assert errs[0] > 3e-3, errs  # few sections are visibly off: the comparison can fail
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 2e-4, errs


def test_cut_points_are_sorted_and_inside_near_far():
    torch.manual_seed(0)
    net = R.SamplingNet(16, (32, 32), 2, eps=0.2, dtype=torch.float64)
    with torch.no_grad():  # far from uniform: large random logits
        for p in net.parameters():
            p.normal_(0.0, 3.0)
    o, d = _rays(n_side=16)
    near, far = 2.5, 4.5
    with torch.no_grad():
        cuts = net(o, d, near, far)
    assert cuts.shape == (256, 17)
    delta = cuts[:, 1:] - cuts[:, :-1]
    torch.testing.assert_close(cuts[:, 0], torch.full_like(cuts[:, 0], near))
    torch.testing.assert_close(cuts[:, -1], torch.full_like(cuts[:, -1], far))
    assert (delta > 0).all()
    assert float(delta.min()) >= 0.2 * (far - near) / 16 * (1 - 1e-9)  # the eps floor on a section
    assert float(delta.max() / delta.min()) > 5.0  # and the cuts really are non-uniform
    # the uniform switch: equal sections
    u = R.uniform_cuts(3, 4, near, far, o)
    torch.testing.assert_close(u[0], torch.tensor([2.5, 3.0, 3.5, 4.0, 4.5], dtype=torch.float64))


@pytest.mark.parametrize("loss", ["both", "section", "samples"])
def test_gradients_reach_every_parameter(loss):
    model, s = _field(k=4, uniform=False, dtype="float32", loss=loss)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {"sigma": model.sigma_phi, "color": model.color_phi, "sampler": model.sampler}
    assert all(sum(1 for _ in g.parameters()) > 0 for g in groups.values())
    train, _ = RS.make_views(RS.get_scene("blobs"), 2, 1, 6, gt_samples=512)
    o, d, rgb = (v.float() for v in train.flat())
    gen = torch.Generator().manual_seed(0)
    lossv, stats = R.loss_terms(model, o, d, rgb, gen, s)
    lossv.backward()
    assert math.isfinite(float(lossv.detach())) and float(lossv.detach()) > 0
    for group, mod in groups.items():
        for name, p in mod.named_parameters():
            if group != "sampler" and name == "out_bias":
                # Phi's output bias is the constant of integration: it cancels in every
                # Phi(b) - Phi(a) and is absent from dPhi/dt, so no loss can (or should) move it
                assert p.grad is None or float(p.grad.abs().max()) < 1e-6, (loss, group, name)
                continue
            assert p.grad is not None, (loss, group, names[id(p)])
            assert float(p.grad.abs().sum()) > 0, (loss, group, names[id(p)])
    # the grad networks share the integral networks' tensors (first-order backprop through both)
    assert {id(p) for p in model.sigma_net.grad.parameters()} <= {id(p) for p in model.sigma_phi.parameters()}


def test_two_section_ray_matches_hand_computation():
    """Phi_sigma(t) = t^2, Phi_c(t) = (t, t^2/2, 0), cuts 0, 1, 1.5 (sigma_scale 1):
    section averages sigma = (1, 2.5), c = ((1, .5, 0), (1, 1.25, 0)), deltas (1, .5):
    alpha = (1 - e^-1, 1 - e^-1.25) = (0.6321206, 0.7134952), T = (1, e^-1 = 0.3678794),
    C = 0.6321206 c1 + 0.3678794 * 0.7134952 c2 = (0.8946008, 0.6441606, 0)."""
    o = torch.tensor([[0.0, 0.0, 5.0]], dtype=torch.float64)
    d = torch.tensor([[0.0, 0.0, -1.0]], dtype=torch.float64)

    def phi_sigma(x):
        return x[:, 6:7] ** 2

    def phi_color(x):
        t = x[:, 6:7]
        return torch.cat([t, t**2 / 2, torch.zeros_like(t)], 1)

    cuts = torch.tensor([[0.0, 1.0, 1.5]], dtype=torch.float64)
    c = R.section_render(phi_sigma, phi_color, o, d, cuts, sigma_scale=1.0)
    torch.testing.assert_close(c, torch.tensor([[0.8946008, 0.6441606, 0.0]], dtype=torch.float64), atol=1e-6, rtol=0)
    # the compositing alone, and the transmittance it implies
    sd = torch.tensor([[1.0, 1.25]], dtype=torch.float64)
    cols = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(
        RS.composite(sd, cols), torch.tensor([[0.6321206, 0.2624802, 0.0]], dtype=torch.float64), atol=1e-6, rtol=0
    )
    # a negative section average is no density (relu), so the second section shows through unattenuated
    c2 = R.section_render(lambda x: -x[:, 6:7], phi_color, o, d, cuts, 1.0)
    assert float(c2.abs().max()) == 0.0


def test_ground_truth_quadrature_is_converged():
    scene = RS.get_scene("thin")
    o, d = _rays(n_side=6, position=(1.0, -3.0, 1.5))
    a = RS.render_gt(scene, o, d, 2.5, 4.5, 512)
    b = RS.render_gt(scene, o, d, 2.5, 4.5, 4096)
    assert float(b.max()) > 0.3  # the rays hit something
    assert float((a - b).abs().max()) < 1e-3
    with pytest.raises(ValueError, match="512"):
        RS.render_gt(scene, o, d, 2.5, 4.5, 256)


def test_views_split_and_cameras():
    train, test = RS.make_views(RS.get_scene("thin"), 5, 2, 4, gt_samples=512)
    assert len(train) == 5 and len(test) == 2
    assert train.rgb.shape == (5, 16, 3) and test.image(0).shape == (4, 4, 3)
    pos = np.concatenate([train.positions, test.positions])
    assert len({tuple(np.round(p, 6)) for p in pos}) == 7  # held-out viewpoints are not training ones
    np.testing.assert_allclose(np.linalg.norm(pos, axis=1), 3.5)
    assert (pos[:, 2] > 0).all()  # the thin scene is seen from the upper hemisphere
    np.testing.assert_allclose(np.linalg.norm(train.directions.numpy(), axis=-1), 1.0)


@pytest.mark.slow  # a long end-to-end run (make test-fast leaves it out)
def test_short_training_beats_a_constant_colour_image():
    """AutoInt K=8 (sampling network, section loss, the decaying density bias) on 'blobs' at 16x16,
    12 training views, 600 steps.

    Measured (3-4 s on the shared 2-core CPU): test PSNR 17.8 dB (seed 0; seeds 1, 2: 14.3, 15.2)
    against 11.2 dB for the mean training colour as a constant image; the test asks for a 2.5 dB
    lead (the worst of the three seeds had 3.1)."""
    s = replace(
        TINY,
        size=16,
        n_train=12,
        n_test=2,
        sections=(8,),
        hidden_sigma=(32, 32),
        hidden_color=(32, 32),
        frequencies=3,
        loss="section",
        steps=600,
        batch_rays=128,
        lr=5e-3,
        uniform_sections=False,
    )
    train, test = RS.make_views(RS.get_scene("blobs"), s.n_train, s.n_test, s.size, gt_samples=512)
    model = R.build_model("autoint-K8", s)
    info = R.train_model(model, train, s, method="autoint-K8")
    m, images = R.evaluate(model, test, s)
    const = R.constant_image_psnr(train, test)
    assert images[0].shape == (16, 16, 3)
    assert m["evals_per_ray"] == 9
    assert m["psnr"] > const + 2.5, (m, const)
    assert info["final_loss"] < 0.5 * 10 ** (-const / 10)  # the training loss fell well below the constant's


def test_example_specs_are_the_builtin_networks():
    for kind, out in (("sigma", 1), ("color", 3)):
        a = ac.compile(EXAMPLES / f"render_{kind}.yaml")
        b = ac.compile(R.field_spec(kind, R.RenderSettings()))
        assert a.spec_hash == b.spec_hash
        assert a.in_features == 7 and a.integration_columns == [6] and a.out_features == out
    paper = R.field_spec("sigma", replace(R.RenderSettings(), **R.PAPER))
    widths = [n["out"] for n in paper["graph"] if n["op"] == "linear"]
    assert widths == [256] * 8 + [1]
    assert [n["in"] for n in paper["graph"] if n["name"] == "fc4"] == [["act3", "enc", "d"]]


def test_grad_network_is_the_t_derivative_along_the_ray():
    """dPhi/dt with x = o + t d formed inside the graph: central differences of Phi in t."""
    net = ac.compile(R.field_spec("sigma", replace(TINY, dtype="float64")))
    o, d = _rays()
    t = torch.linspace(2.6, 4.4, o.shape[0], dtype=torch.float64)[:, None]
    x = torch.cat([o, d, t], 1)
    h = 1e-5
    fd = (net.integral(torch.cat([o, d, t + h], 1)) - net.integral(torch.cat([o, d, t - h], 1))) / (2 * h)
    torch.testing.assert_close(net.grad(x), fd, rtol=1e-6, atol=1e-8)


def test_resume_from_an_interrupted_run_gives_the_same_weights(tmp_path, monkeypatch):
    """Render trains on the runtime's loop and run directories: a run killed after step 9 resumes
    from its step-8 checkpoint and ends with the uninterrupted run's weights."""
    from autoint_compiler.apps import render_train as RT
    from autoint_compiler.runtime.runs import latest_checkpoint

    s = replace(TINY, steps=12, checkpoint_every=4, uniform_sections=False)
    train, _ = RS.make_views(RS.get_scene("blobs"), 2, 1, 6, gt_samples=512)
    full = R.build_model("autoint-K4", s)
    R.train_model(full, train, s, method="autoint-K4")

    calls = {"n": 0}
    real_loss = RT.loss_terms

    def crashing(*args):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return real_loss(*args)

    run_dir = tmp_path / "k4"
    monkeypatch.setattr(RT, "loss_terms", crashing)
    with pytest.raises(KeyboardInterrupt):
        R.train_model(R.build_model("autoint-K4", s), train, s, method="autoint-K4", run_dir=run_dir)
    monkeypatch.setattr(RT, "loss_terms", real_loss)
    assert latest_checkpoint(run_dir)[0] == 8
    resumed = R.build_model("autoint-K4", s)
    info = R.train_model(resumed, train, s, method="autoint-K4", run_dir=run_dir)
    assert info["resumed_from"] == 8 and info["model"] is resumed
    for (n, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=n)
    # a finished run is loaded, not retrained, with its losses and training time
    again = R.build_model("autoint-K4", s)
    info2 = R.train_model(again, train, s, method="autoint-K4", run_dir=run_dir)
    assert info2["resumed_from"] == 12
    assert info2["final_loss"] == pytest.approx(info["final_loss"])
    assert info2["train_s"] == pytest.approx(info["train_s"], abs=1e-3)
    torch.testing.assert_close(again.sigma_phi.fc0_weight, full.sigma_phi.fc0_weight, rtol=1e-5, atol=1e-6)
    # another configuration in the same run directory is started over, not resumed
    other = R.train_model(
        R.build_model("autoint-K4", replace(s, sigma_scale=5.0)),
        train,
        replace(s, sigma_scale=5.0),
        method="autoint-K4",
        run_dir=run_dir,
    )
    assert other["resumed_from"] == 0


def test_cli_writes_metrics_images_and_resumes(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    R.add_parser(sub)
    argv = [
        "render",
        "--out",
        str(tmp_path),
        "--scenes",
        "blobs",
        "--sections",
        "4",
        "--quad-samples",
        "8",
        "--size",
        "8",
        "--train-views",
        "3",
        "--test-views",
        "2",
        "--gt-samples",
        "512",
        "--steps",
        "6",
        "--batch",
        "16",
        "--hidden",
        "8,8",
        "--frequencies",
        "2",
        "--time-matched",
        "4",
        "--no-progress",
    ]
    args = parser.parse_args(argv)
    assert args.func is R.run_cli
    assert args.func(args) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics) == ["blobs"]
    assert list(metrics["blobs"]) == ["quadrature-N8", "autoint-K4", "autoint-K4@time"]
    for m in metrics["blobs"].values():
        assert {"psnr", "ssim", "render_ms", "evals_per_ray", "train_s"} <= set(m)  # the contract (DESIGN.md)
        assert m["divergences"] == 0 and m["ray_spread"] >= 0
        assert math.isfinite(m["psnr"]) and -1 <= m["ssim"] <= 1 and m["render_ms"] > 0
    assert metrics["blobs"]["autoint-K4"]["evals_per_ray"] == 5
    assert metrics["blobs"]["autoint-K4"]["steps"] == metrics["blobs"]["quadrature-N8"]["steps"] == 6
    # the time-matched row: as many steps as the quadrature step costs in AutoInt steps (measured)
    matched = json.loads((tmp_path / "time_matched.json").read_text())["blobs/autoint-K4@time"]
    assert matched["steps"] == metrics["blobs"]["autoint-K4@time"]["steps"] == max(6, round(6 * matched["ratio"]))
    assert "At equal training time" in (tmp_path / "results.md").read_text()
    assert metrics["blobs"]["quadrature-N8"]["evals_per_ray"] == 8
    assert (tmp_path / "blobs_compare.png").stat().st_size > 5000
    assert (tmp_path / "blobs" / "autoint-K4_view1.png").exists()
    assert list((tmp_path / "checkpoints" / "blobs" / "autoint-K4" / "checkpoints").glob("step-*.safetensors"))
    assert metrics["blobs"]["quadrature-N8"]["ray_spread"] < 1e-5  # a field of the position only (float32)
    (cached,) = (tmp_path / "data").glob("blobs_*.safetensors")  # ground truth cached as tensors
    train, test = RS.make_views(RS.get_scene("blobs"), 3, 2, 8, gt_samples=512)
    s = R.settings_from_args(args)
    c_train, c_test = R._views("blobs", s, tmp_path / "data")
    torch.testing.assert_close(c_test.rgb, test.rgb)
    torch.testing.assert_close(c_train.origins, train.origins)
    np.testing.assert_allclose(c_test.positions, test.positions)
    capsys.readouterr()
    assert args.func(args) == 0  # again: everything is loaded from the checkpoints
    out = capsys.readouterr().out
    assert out.count("resumed at step 6") == 2 + (matched["steps"] == 6)
    assert out.count(f"resumed at step {matched['steps']}") >= 1
    again = json.loads((tmp_path / "metrics.json").read_text())
    assert again["blobs"]["autoint-K4"]["psnr"] == pytest.approx(metrics["blobs"]["autoint-K4"]["psnr"])
    assert again["blobs"]["autoint-K4"]["train_s"] == pytest.approx(metrics["blobs"]["autoint-K4"]["train_s"], abs=1e-2)


def test_cli_errors_are_one_line(capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    R.add_parser(sub)
    with pytest.raises(SystemExit):
        parser.parse_args(["render", "--out", "x", "--scenes", "nope"])
    assert "unknown scene" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # bounded at parse time (issue 19), before any work
        parser.parse_args(["render", "--out", "x", "--gt-samples", "100"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--gt-samples" in err and "512" in err
    # python -m autoint_compiler.apps.render: the same command, the same one-line errors
    with pytest.raises(SystemExit) as info:  # bounded at parse time, one usage line naming the flag
        R.main(["--out", "x", "--consistency", "-1"])
    assert info.value.code == 2
    assert "--consistency" in capsys.readouterr().err.strip().splitlines()[-1]


def test_density_bias_decays_to_zero_and_the_trained_model_renders_without_it():
    from autoint_compiler.apps.render_train import density_bias_at

    s = replace(TINY, density_bias=0.2, bias_decay=0.5)
    assert [density_bias_at(s, k, 100) for k in (0, 25, 50, 100)] == pytest.approx([0.2, 0.1, 0.0, 0.0])
    assert density_bias_at(replace(s, bias_decay=0.0), 100, 100) == 0.2  # kept
    train, _ = RS.make_views(RS.get_scene("blobs"), 2, 1, 6, gt_samples=512)
    model = R.build_model("autoint-K4", s)
    assert model.density_bias == 0.2
    R.train_model(model, train, replace(s, steps=4), method="autoint-K4")
    assert model.density_bias == 0.0


def test_jitter_cuts_keeps_ends_order_and_a_minimum_section():
    from autoint_compiler.apps.render_model import jitter_cuts, uniform_cuts

    like = torch.zeros(1, dtype=torch.float64)
    cuts = uniform_cuts(4096, 8, 2.0, 6.0, like)
    assert torch.equal(jitter_cuts(cuts, 0.0, None), cuts)
    gen = torch.Generator().manual_seed(0)
    moved = jitter_cuts(cuts, 0.25, gen)
    assert torch.equal(moved[:, 0], cuts[:, 0]) and torch.equal(moved[:, -1], cuts[:, -1])
    lengths = moved[:, 1:] - moved[:, :-1]
    assert lengths.min() >= 0.5 * 0.5 - 1e-12  # section 0.5, each end moves <= 0.25 of it
    inner = moved[:, 1:-1] - cuts[:, 1:-1]
    assert inner.abs().max() <= 0.125 + 1e-12 and inner.abs().max() > 0.12  # up to +-0.25 x 0.5, and it moves
    assert abs(float(inner.mean())) < 0.005  # unbiased: the cut is where it was on average
    again = jitter_cuts(cuts, 0.25, torch.Generator().manual_seed(0))
    assert torch.equal(again, moved)


def test_cut_jitter_is_checked():
    from autoint_compiler.apps.render_model import RenderSettings

    with pytest.raises(ValueError, match="cut_jitter"):
        RenderSettings(cut_jitter=0.5)
    with pytest.raises(ValueError, match="cut_jitter"):
        RenderSettings(cut_jitter=-0.1)
