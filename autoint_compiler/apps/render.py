"""Neural volume rendering with AutoInt (Lindell et al., CVPR 2021, Sec. 5.2), against a NeRF-style
quadrature baseline, on procedural scenes (:mod:`.render_scenes`).

The radiance field
------------------
Density and colour are two compiled AutoInt networks over the ray (``examples/render_sigma.yaml``,
``examples/render_color.yaml``): inputs ``o`` (ray origin, 3), ``d`` (unit direction, 3) and ``t``
(1), ``integrate: [t]``. Inside the graph the point ``x = o + t d`` is formed (``concat``, ``mul``,
``add``), positionally encoded and concatenated with ``d``; an MLP maps that to the output. So
``Phi(o, d, t) = G(o + t d, d)`` and the grad network is ``dPhi/dt = d . grad_x G``: the integrand
lives at 3-D points (which is what lets it generalise to new views), while ``Phi`` stays a function
of the ray, as an antiderivative along rays must.

Piecewise (section) model, used to render
-----------------------------------------
Each ray's segment ``[near, far]`` is cut into ``K`` sections: equal ones by default, or
(``--learned-sections``) cut points from a sampling network (small MLP of the ray: its point closest
to the origin and its direction) giving ``K`` section weights ``w = (1 - eps) softmax(logits) + eps / K``,
``t_i = near + (far - near) cumsum(w)_i``. With ``delta_i = t_{i+1} - t_i``:

    sigma_i = s * relu((Phi_sigma(t_{i+1}) - Phi_sigma(t_i)) / delta_i + b),
    c_i     = (Phi_c(t_{i+1}) - Phi_c(t_i)) / delta_i,
    alpha_i = 1 - exp(-sigma_i delta_i),  T_i = prod_{j<i} (1 - alpha_j),  C = sum_i T_i alpha_i c_i,

``2 (K + 1)`` integral-network evaluations per ray (``s`` = ``sigma_scale``; colours are clipped to
[0, 1] only for the images and metrics). ``b`` (``density_bias``) is 0.1 at the start of training
and decays linearly to 0 over the first ``bias_decay`` (10 %) of the steps: random networks start
with half the section averages negative, and a relu passes them no gradient; it is 0 when rendering.
(The learned sampler made long runs unstable: docs/results/render.)

Training (first-order backprop only)
------------------------------------
Each step draws a batch of training rays. Two image losses are implemented (``--loss``):

* ``section`` (default): the section model above, with the integral networks at the cut points;
  MSE to the pixel colour. This is exactly what is rendered at test time, so what is measured is
  what is optimised; it trains the sampling network if there is one (the cut points move the
  sections) and it is cheap (``2 (K + 1)`` integral-network rows per ray, a plain backward pass through Phi).
* ``samples``: the paper's scheme: ``S`` stratified samples of ``t`` inside every section (128 per
  ray, 4 per section at K = 32 in the original); the grad networks give ``sigma = s relu(g_sigma)``
  and ``c = g_c`` there, composited as a quadrature with ``delta = delta_i / S``; MSE to the pixel
  colour; a small penalty on ``relu(-g_sigma)`` keeps the raw density non-negative (relu of a section
  average is the average of the relus only where nothing is negative). The grad networks learn the
  integrand sample by sample, but the colour of empty space is left unconstrained, and a section
  average of colour averages it in: rendering with sections then goes wrong.
* ``both``: the sum (cut points detached in the samples term: the sampler is trained by the term
  that renders).

In our measurements (docs/results/render/README.md) ``section`` gave the best held-out PSNR at the
same number of steps and 3-5x less training time than ``both``; ``samples`` alone renders badly
with sections, for the reason above, although its grad networks form a fair quadrature field.

Baseline: NeRF-style quadrature with plain MLPs of the same widths on the encoded 3-D point,
``N`` stratified samples per ray in training, bin midpoints at test time, same steps, batch, lr.

Modules by job: :mod:`.render_model` (settings, networks, the section model), :mod:`.render_train`
(the losses, training on the runtime's loop with its resume and divergence guard),
:mod:`.render_eval` (rendering, timing, metrics, ray consistency, figure, table), this module (the
experiment and its CLI); the names below are re-exported here.

Time-matched rows: AutoInt's training step is several times cheaper than quadrature's, so at equal
steps it gets far less compute. For each K in ``time_matched`` the experiment measures the seconds
per training step of ``quadrature-N<max N>`` and ``autoint-K<K>`` interleaved in this process and
trains ``autoint-K<K>@time`` for ``steps * (quadrature step / AutoInt step)`` steps.

CLI: ``autoint-compile render [--quick] --out DIR`` writes ``DIR/metrics.json`` (scene -> method ->
``{psnr, ssim, render_ms, evals_per_ray, train_s, steps, ray_spread, divergences}``, methods
``quadrature-N<N>``, ``autoint-K<K>`` and ``autoint-K<K>@time``), ``DIR/settings.json`` (settings,
machine, and per scene the divergence events, restarts and time matching), ``DIR/results.md``, the
test views ``DIR/<scene>/<method>_view<i>.png`` and ``DIR/<scene>_compare.png``; run directories
(safetensors checkpoints) go to ``DIR/checkpoints/<scene>/<method>`` and an interrupted run resumes
from them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ._argtypes import SEED, float_range, int_list, int_range, positive_float
from ._cli import check_device, fail, standalone_main
from .render_eval import (
    constant_image_psnr,
    evaluate,
    format_table,
    format_time_matched,
    image_metrics,
    interleaved_render_ms,
    plot_compare,
    ray_consistency,
    render_rays,
    render_views,
    save_png,
)
from .render_model import (
    COLOR_ACTS,
    DENSITY_ACTS,
    PAPER,
    QUICK,
    AutoIntField,
    QuadratureField,
    RenderSettings,
    SamplingNet,
    build_model,
    field_spec,
    method_names,
    posenc,
    section_render,
    stratified_in_sections,
    uniform_cuts,
)
from .render_scenes import SCENES, Views, get_scene, make_views
from .render_train import consistency_penalty, loss_terms, step_seconds, train_model

__all__ = [
    "RenderSettings",
    "QUICK",
    "PAPER",
    "COLOR_ACTS",
    "DENSITY_ACTS",
    "field_spec",
    "posenc",
    "SamplingNet",
    "uniform_cuts",
    "section_render",
    "stratified_in_sections",
    "AutoIntField",
    "QuadratureField",
    "build_model",
    "method_names",
    "loss_terms",
    "consistency_penalty",
    "train_model",
    "step_seconds",
    "render_rays",
    "render_views",
    "interleaved_render_ms",
    "image_metrics",
    "evaluate",
    "constant_image_psnr",
    "ray_consistency",
    "plot_compare",
    "format_table",
    "format_time_matched",
    "run",
    "add_parser",
    "settings_from_args",
    "run_cli",
    "main",
]

#: the keys of a method's entry in metrics.json (the first five are the contract, DESIGN.md)
METRIC_KEYS = ("psnr", "ssim", "render_ms", "evals_per_ray", "train_s", "steps", "ray_spread", "divergences")


# ----------------------------------------------------------------------------- the experiment


def _views(scene: str, s: RenderSettings, cache: Path | None) -> tuple[Views, Views]:
    key = dict(
        scene=scene, size=s.size, n_train=s.n_train, n_test=s.n_test, gt=s.gt_samples, radius=s.radius, fov=s.fov
    )
    key.update(near=s.near, far=s.far, seed=s.seed)
    tag = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = cache / f"{scene}_{tag}.safetensors" if cache is not None else None
    fields = ("origins", "directions", "rgb")
    if path is not None and path.exists():  # tensors only (safetensors: no pickle)
        from safetensors.torch import load_file

        data = load_file(str(path))
        return tuple(  # type: ignore[return-value]
            Views(*(data[f"{part}.{f}"] for f in fields), data[f"{part}.positions"].numpy(), s.size)
            for part in ("train", "test")
        )
    train, test = make_views(
        get_scene(scene),
        s.n_train,
        s.n_test,
        s.size,
        radius=s.radius,
        fov_deg=s.fov,
        near=s.near,
        far=s.far,
        gt_samples=s.gt_samples,
        seed=s.seed,
    )
    if path is not None:
        from safetensors.torch import save

        from ..runtime.checkpoint import atomic_write_bytes

        tensors = {}
        for part, v in (("train", train), ("test", test)):
            tensors.update({f"{part}.{f}": getattr(v, f).contiguous() for f in fields})
            tensors[f"{part}.positions"] = torch.from_numpy(np.ascontiguousarray(v.positions))
        atomic_write_bytes(path, save(tensors, metadata={"key": json.dumps(key, sort_keys=True)}))
    return train, test


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _time_matched_steps(scene: str, k: int, base: str, train: Views, s: RenderSettings, out: Path) -> dict[str, Any]:
    """Steps for ``autoint-K<k>@time``: ``s.steps`` times the ratio of the seconds per training step
    of ``base`` and ``autoint-K<k>``, measured interleaved; kept in ``out/time_matched.json`` so a
    resumed experiment trains (and resumes) the same run."""
    path = out / "time_matched.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    key = f"{scene}/autoint-K{k}@time"
    if key in known and known[key].get("base_steps") == s.steps and known[key].get("base") == base:
        return known[key]
    sec = step_seconds({base: build_model(base, s), f"autoint-K{k}": build_model(f"autoint-K{k}", s)}, train, s)
    ratio = sec[base] / sec[f"autoint-K{k}"]
    entry = {
        "base": base,
        "base_steps": s.steps,
        "step_s": sec,
        "ratio": ratio,
        "steps": max(s.steps, int(round(s.steps * ratio))),
    }
    known[key] = entry
    path.write_text(json.dumps(known, indent=2) + "\n")
    return entry


def _train_and_score(
    method: str, steps: int, train: Views, test: Views, s: RenderSettings, out: Path, scene: str, resume: bool
) -> tuple[Any, dict[str, Any], dict[str, Any], list[np.ndarray]]:
    arch = method.split("@")[0]
    model = build_model(arch, s)
    run_dir = out / "checkpoints" / scene / method if resume else None
    info = train_model(
        model,
        train,
        s,
        method=method,
        run_dir=run_dir,
        desc=f"{scene} {method}",
        steps=steps,
        checkpoint_every=max(1, round(s.checkpoint_every * steps / max(1, s.steps))),  # as many as equal-steps runs
        rebuild=lambda: build_model(arch, replace(s, seed=s.seed + 100)),
    )
    model = info.pop("model")
    m, imgs = evaluate(model, test, replace(s, timing_repeats=1))  # timed again, interleaved, below
    m.update(
        train_s=float(info["train_s"]),
        steps=int(info["steps"]),
        ray_spread=ray_consistency(model, seed=s.seed),
        divergences=len(info["recoveries"]) + len(info["restarts"]),
    )
    return model, m, info, imgs


def run(s: RenderSettings, out: str | Path, *, verbose: bool = True, resume: bool = True) -> dict[str, Any]:
    """Train every method on every scene, render the test views, write the outputs to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    extra: dict[str, dict[str, Any]] = {}
    t_start = time.perf_counter()
    settings_d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items() if k != "extra"}

    def write_metrics() -> None:  # after every method: a partial run leaves valid (partial) results
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    try:
        for scene in s.scenes:
            t0 = time.perf_counter()
            train, test = _views(scene, s, out / "data")
            if verbose:
                print(
                    f"[{scene}] {len(train)} train / {len(test)} test views, {s.size}x{s.size}, "
                    f"ground truth ({s.gt_samples} samples/ray) in {time.perf_counter() - t0:.1f} s",
                    flush=True,
                )
            metrics[scene], images, models = {}, {}, {}
            extra[scene] = {
                "constant_color_psnr": constant_image_psnr(train, test),
                "final_loss": {},
                "recoveries": {},
                "restarts": {},
                "time_matched": {},
            }
            todo: list[tuple[str, int]] = [(m, s.steps) for m in method_names(s)]
            base = f"quadrature-N{max(s.quad_samples)}" if s.quad_samples else None
            matched = [k for k in s.time_matched if k in s.sections] if base else []
            while todo:
                method, steps = todo.pop(0)
                model, m, info, imgs = _train_and_score(method, steps, train, test, s, out, scene, resume)
                metrics[scene][method] = {k: m[k] for k in METRIC_KEYS}
                ex = extra[scene]
                ex["final_loss"][method] = info["final_loss"]
                ex["recoveries"][method] = info["recoveries"]
                ex["restarts"][method] = info["restarts"]
                ex.setdefault("not_recovered", {})[method] = bool(info["collapsed"])
                images[method], models[method] = imgs, model
                for i, img in enumerate(imgs):
                    save_png(out / scene / f"{method}_view{i}.png", img)
                if verbose:
                    note = f" (resumed at step {info['resumed_from']})" if info["resumed_from"] else ""
                    if m["divergences"]:
                        fate = (
                            "NOT recovered: still no better than a constant image" if info["collapsed"] else "recovered"
                        )
                        note += f" ({m['divergences']} divergence(s) detected, {fate})"
                    print(
                        f"[{scene}] {method:<16} PSNR {m['psnr']:6.2f} dB  SSIM {m['ssim']:.3f}  "
                        f"{m['render_ms']:8.1f} ms/image  train {m['train_s']:6.1f} s ({m['steps']} steps)  "
                        f"ray spread {m['ray_spread']:.3f}" + note,
                        flush=True,
                    )
                write_metrics()
                if not todo and matched:  # every equal-steps model is trained: the time-matched ones
                    for k in matched:
                        tm = _time_matched_steps(scene, k, base, train, s, out)
                        extra[scene]["time_matched"][f"autoint-K{k}@time"] = tm
                        todo.append((f"autoint-K{k}@time", tm["steps"]))
                        if verbose:
                            print(
                                f"[{scene}] seconds per training step, interleaved: {base} {tm['step_s'][base]:.4f}, "
                                f"autoint-K{k} {tm['step_s'][f'autoint-K{k}']:.4f} (x{tm['ratio']:.1f}): "
                                f"autoint-K{k}@time trains {tm['steps']} steps",
                                flush=True,
                            )
                    matched = []
            # render times again, all methods interleaved (round-robin), fastest of the rounds per view:
            # on a shared machine a burst of load then hits every method alike, not one of them
            for method, ms in interleaved_render_ms(models, test, s).items():
                metrics[scene][method]["render_ms"] = ms
            write_metrics()
            if verbose:
                print(
                    f"[{scene}] render ms/image, interleaved timing: "
                    + ", ".join(f"{k} {v['render_ms']:.1f}" for k, v in metrics[scene].items()),
                    flush=True,
                )
            for i in range(len(test)):
                save_png(out / scene / f"gt_view{i}.png", test.image(i))
            plot_compare(scene, test, images, metrics[scene], out / f"{scene}_compare.png", views=(0, 1))
    finally:
        torch.set_num_threads(old_threads)
    total = time.perf_counter() - t_start
    info = {
        "settings": settings_d,
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": s.threads,
        "total_s": total,
        "scenes": extra,
    }
    (out / "settings.json").write_text(json.dumps(info, indent=2) + "\n")
    baseline = f"quadrature-N{max(s.quad_samples)}" if s.quad_samples else "quadrature-N128"
    table = format_table(metrics, baseline)
    matched = format_time_matched(metrics, baseline)
    if matched:
        table += "\nAt equal training time (the @time rows):\n\n" + matched
    (out / "results.md").write_text(
        table + f"\nCPU: {info['cpu']} ({info['cpu_count']} cores), torch {torch.__version__}, "
        f"{s.threads} thread(s); whole run {total:.0f} s.\n"
    )
    if verbose:
        print()
        print(table)
        print(f"total {total:.1f} s")
    return {"metrics": metrics, "info": info}


# ----------------------------------------------------------------------------- CLI


def _scene_list(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [n for n in names if n not in SCENES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown scene(s) {bad or text!r}; choose from {', '.join(SCENES)}")
    return names


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``render`` subcommand (handler in ``func``)."""
    p = subparsers.add_parser(
        "render",
        help="volume rendering: AutoInt section model vs quadrature on procedural scenes",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--out", required=True, help="output directory (metrics.json, PNGs, checkpoints)")
    p.add_argument("--quick", action="store_true", help="small configuration (minutes on a 2-core CPU)")
    p.add_argument("--paper-size", action="store_true", help="the original's 8x256 field networks, posenc 10, skip 4")
    p.add_argument("--scenes", type=_scene_list, default=None, help=f"comma-separated from {','.join(SCENES)}")
    p.add_argument("--sections", type=int_list(1, 1024, tuple_type=True), default=None, help="K values, e.g. 8,16,32")
    p.add_argument(
        "--quad-samples",
        type=int_list(1, 65536, allow_none=True, tuple_type=True),
        default=None,
        help="N values of the baseline, e.g. 64,128 (none: skip it)",
    )
    sec = p.add_mutually_exclusive_group()
    sec.add_argument("--uniform-sections", action="store_true", help="equal sections (the default)")
    sec.add_argument(
        "--learned-sections", action="store_true", help="a sampling network places the cuts (unstable: see the docs)"
    )
    p.add_argument("--loss", choices=["both", "samples", "section"], default=None, help="AutoInt training loss")
    p.add_argument("--size", type=int_range(4, 2048), default=None, help="image side in pixels")
    p.add_argument("--train-views", type=int_range(1, 10_000), default=None)
    p.add_argument("--test-views", type=int_range(1, 10_000), default=None)
    p.add_argument(
        "--gt-samples", type=int_range(512, 2**20), default=None, help="ground-truth samples per ray (>= 512)"
    )
    p.add_argument("--steps", type=int_range(1, 10**9), default=None)
    p.add_argument("--batch", type=int_range(1, 2**24), default=None, help="rays per step")
    p.add_argument("--lr", type=positive_float, default=None)
    p.add_argument(
        "--samples-per-ray", type=int_range(1, 4096), default=None, help="grad-network samples per ray (AutoInt)"
    )
    p.add_argument(
        "--hidden",
        type=int_list(1, 65536, what="widths", tuple_type=True),
        default=None,
        help="widths of both field networks, e.g. 64,64,64",
    )
    p.add_argument("--frequencies", type=int_range(1, 32), default=None, help="posenc octaves of the point")
    p.add_argument("--seed", type=SEED, default=None)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--threads", type=int_range(0, 4096), default=1, help="CPU threads (default 1; 0: torch's default)")
    p.add_argument(
        "--time-matched",
        type=int_list(1, 1024, allow_none=True, tuple_type=True),
        default=None,
        help="K values that also get a row trained as long as the largest quadrature (none: skip)",
    )
    p.add_argument(
        "--consistency",
        type=float_range(0, 1e6),
        default=None,
        help="weight of the ray-consistency regulariser (AutoInt; 0: off)",
    )
    p.add_argument(
        "--cut-jitter",
        type=float_range(0, 0.49),
        default=None,
        help="AutoInt training: move interior section cuts by up to this share of a section each step "
        "(default 0.25; 0: fixed equal sections)",
    )
    p.add_argument(
        "--color-mode",
        choices=["uniform", "weighted"],
        default=None,
        help="section colour: plain or density-weighted mean",
    )
    p.add_argument(
        "--density-bias",
        type=float_range(0, 1e3),
        default=None,
        help="added to AutoInt's raw section density before the relu (default 0.1: no dead sections at the start)",
    )
    p.add_argument(
        "--ray-encoding",
        choices=["point", "plucker"],
        default=None,
        help="AutoInt network input: posenc(o + t d), d (point) or posenc(o x d), posenc(o.d + t), d (plucker)",
    )
    p.add_argument("--no-guard", action="store_true", help="no divergence detection and recovery")
    p.add_argument("--no-resume", action="store_true", help="ignore and do not write checkpoints")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_cli)
    return p


def settings_from_args(args: argparse.Namespace) -> RenderSettings:
    kw: dict[str, Any] = {}
    if args.quick:
        kw.update(QUICK)
    if args.paper_size:
        kw.update(PAPER)
    direct = {
        "scenes": args.scenes,
        "sections": args.sections,
        "quad_samples": args.quad_samples,
        "loss": args.loss,
        "size": args.size,
        "n_train": args.train_views,
        "n_test": args.test_views,
        "gt_samples": args.gt_samples,
        "steps": args.steps,
        "batch_rays": args.batch,
        "lr": args.lr,
        "samples_per_ray": args.samples_per_ray,
        "frequencies": args.frequencies,
        "seed": args.seed,
        "time_matched": args.time_matched,
        "consistency_weight": args.consistency,
        "color_mode": args.color_mode,
        "cut_jitter": args.cut_jitter,
        "density_bias": args.density_bias,
        "ray_encoding": args.ray_encoding,
    }
    kw.update({k: v for k, v in direct.items() if v is not None})
    if args.hidden is not None:
        kw["hidden_sigma"] = kw["hidden_color"] = tuple(args.hidden)
    kw.update(
        device=args.device,
        threads=args.threads or None,
        progress=False if args.no_progress else None,
    )
    if args.no_guard:
        kw["guard"] = False
    if args.learned_sections:
        kw["uniform_sections"] = False
    return replace(RenderSettings(), **kw)


def run_cli(args: argparse.Namespace) -> int:
    if (status := check_device(args.device)) is not None:
        return status
    try:
        s = settings_from_args(args)
    except ValueError as exc:
        return fail(str(exc))
    run(s, args.out, resume=not args.no_resume)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return standalone_main("render", add_parser, argv, "autoint_compiler.apps.render")


if __name__ == "__main__":
    sys.exit(main())
