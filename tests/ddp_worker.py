"""The worker of tests/test_distributed.py's torchrun test (not a test module itself).

``python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_worker.py OUT`` trains
the same small float64 network through :func:`autoint_compiler.runtime.train.train` on every rank, each rank
taking its shard of one deterministic global batch per step, and writes ``OUT/rank<r>.json`` with
each stage's outcome and final parameters. :func:`run_stage` with no process group is the
single-process reference on the whole global batch.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import torch

GLOBAL_BATCH = 8
STEPS = 5
SPEC = {
    "name": "ddp_net",
    "inputs": {"t": 1, "y": 1},
    "integrate": ["t"],
    "output": 1,
    "dtype": "float64",
    "seed": 0,
    "mlp": {"hidden": [16, 16], "activation": "swish", "encoding": {"inputs": ["y"], "frequencies": 2}},
}


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.rand(GLOBAL_BATCH, 2, generator=g, dtype=torch.float64) * 2 - 1
    return x, torch.sin(3 * x[:, :1]) * x[:, 1:]


def run_stage(which: str, run_dir: str | None = None) -> dict:
    """Train through ``train(module=which)``; returns the final parameters (lists) and losses."""
    import autoint_compiler as ac
    from autoint_compiler.runtime import distributed
    from autoint_compiler.runtime.train import TrainConfig, train

    net = ac.compile(SPEC)
    col = net.integration_columns[0]

    def loss_fn(m, gen, step):
        x, y = global_batch(step)
        lo, hi = distributed.shard_range(GLOBAL_BATCH)
        x, y = x[lo:hi], y[lo:hi]
        if which == "grad":
            pred = m(x)
        else:  # fit y as the integral over t in [0, x_t] (Phi(x_t) - Phi(0)), through the module
            ends = torch.cat([x, x], 0)
            ends[hi - lo :, col] = 0.0
            phi = m(ends)
            pred = phi[: hi - lo] - phi[hi - lo :]
        return torch.mean((pred - y) ** 2)

    cfg = TrainConfig(
        steps=STEPS, lr=1e-2, batch_size=GLOBAL_BATCH, progress=False, threads=1, run_dir=run_dir, checkpoint_every=2
    )
    hist = train(net, loss_fn, cfg, module=which)
    return {
        "params": {k: v.tolist() for k, v in net.integral.state_dict().items() if "weight" in k or "bias" in k},
        "losses": hist.losses,
    }


def run_samples_stage() -> dict:
    """fit_samples under torchrun: each rank draws its half of the batch from its own generator."""
    import autoint_compiler as ac
    from autoint_compiler.runtime.train import TrainConfig, fit_samples

    net = ac.compile(SPEC)
    first: list[list[float]] = []

    def sample(n, gen):
        x = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 2 - 1
        if not first:
            first.append(x[:, 0].tolist())
        return x, torch.sin(3 * x[:, :1]) * x[:, 1:]

    cfg = TrainConfig(steps=STEPS, lr=1e-2, batch_size=GLOBAL_BATCH, progress=False, threads=1, seed=7)
    hist = fit_samples(net, sample, cfg)
    return {
        "params": {k: v.tolist() for k, v in net.integral.state_dict().items() if "weight" in k or "bias" in k},
        "losses": hist.losses,
        "first_batch": first[0],
    }


def main(out: str) -> int:
    from autoint_compiler.runtime import distributed

    torch.set_num_threads(1)
    distributed.setup()
    r = distributed.rank()
    report: dict = {"rank": r, "world": distributed.world_size(), "ddp": distributed.is_distributed()}
    for which in ("integral", "grad", "samples"):
        try:
            if which == "samples":
                report[which] = run_samples_stage()
                continue
            report[which] = run_stage(which, run_dir=str(Path(out) / f"run_{which}"))
        except Exception as exc:  # reported, so the test shows which stage failed and why
            report[which] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "tb": traceback.format_exc()[-1500:]}
    Path(out, f"rank{r}.json").write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
