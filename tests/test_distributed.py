"""Data-parallel training: DistributedDataParallel around the compiled networks, and train() under
``torchrun --nproc-per-node 2`` (gloo, CPU).

The contract: a user wraps ``net.grad`` in ``DistributedDataParallel`` with default arguments and gets
a working, synchronised step, for every example spec; ``train()`` runs unchanged under torchrun, each
rank on its shard of the global batch, ranks identical afterwards and equal to one process on the
whole batch. (Until the generated GradNet registers exactly the parameters it reads, DDP around
``net.grad`` fails at the second step with "parameters that were not used in producing loss".)
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, TESTS_DIR, ac_subprocess_env

import autoint_compiler as ac
from autoint_compiler.runtime import distributed
from autoint_compiler.runtime.train import LineData, TrainConfig, fit_line_integrals

EXAMPLES = sorted(p.name for p in (REPO_ROOT / "examples").glob("*.yaml"))


@pytest.fixture
def process_group(tmp_path):
    """A one-rank gloo process group in this process (DDP's reducer runs as with more ranks)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _steps(net, module, n=3):
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    dtype = next(net.parameters()).dtype
    for _ in range(n):
        x = torch.rand(16, net.in_features, generator=g, dtype=dtype) * 2 - 1
        opt.zero_grad()
        module(x).pow(2).mean().backward()
        opt.step()


@pytest.mark.parametrize("example", EXAMPLES)
def test_ddp_default_arguments_on_grad_network(example, process_group):
    """``DistributedDataParallel(net.grad)``, default arguments: several steps run, and they change
    the parameters exactly as the same steps without DDP (one rank: the all-reduce is the identity)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    net, ref = ac.compile(REPO_ROOT / "examples" / example), ac.compile(REPO_ROOT / "examples" / example)
    ddp = DDP(net.grad)
    _steps(net, ddp)
    _steps(ref, ref.grad)
    for (k, a), b in zip(net.integral.state_dict().items(), ref.integral.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (example, k)


@pytest.mark.parametrize("example", ["field3d.yaml", "graph_mix.yaml"])
def test_ddp_default_arguments_on_integral_network(example, process_group):
    from torch.nn.parallel import DistributedDataParallel as DDP

    net = ac.compile(REPO_ROOT / "examples" / example)
    _steps(net, DDP(net.integral))


def test_fit_line_integrals_integral_mode_calls_the_module_it_is_handed(monkeypatch):
    """mode="integral" goes through the module train() hands over (what DDP/torch.compile wrap),
    never around it through ``net.integrate``."""
    net = ac.compile(
        {
            "name": "lines_mod",
            "inputs": {"y": 1, "t": 1},
            "integrate": ["t"],
            "output": 1,
            "mlp": {"hidden": [8]},
            "seed": 0,
        }
    )
    calls = []

    class Spy(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            calls.append(x.shape[0])
            return self.inner(x)

    monkeypatch.setattr(distributed, "wrap", lambda module, device: Spy(module))
    monkeypatch.setattr(type(net.integral), "integrate", lambda *a, **k: pytest.fail("net.integrate was called"))
    n = 32
    g = torch.Generator().manual_seed(0)
    lines = LineData(x=torch.rand(n, 2, generator=g), lower=torch.zeros(n), upper=torch.ones(n), value=torch.ones(n))
    fit_line_integrals(net, lines, TrainConfig(steps=3, batch_size=8, progress=False, threads=1), mode="integral")
    assert calls == [16, 16, 16]  # both ends of 8 lines, in one call per step


def test_sharding_helpers():
    assert [distributed.local_batch(10, r, 3) for r in range(3)] == [4, 3, 3]
    assert [distributed.shard_range(10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert distributed.rank_seed(5, 0) == 5 and distributed.rank_seed(5, 1) != distributed.rank_seed(5, 2)
    with pytest.raises(ValueError, match="smaller than the number of ranks"):
        distributed.local_batch(1, 0, 2)
    assert not distributed.is_distributed() and distributed.is_main()


@pytest.mark.slow  # a long end-to-end run (make test-fast leaves it out)
def test_torchrun_two_ranks_match_one_process(tmp_path):
    """torchrun --nproc-per-node 2 (gloo): train() through DDP on both ranks, each on half of a
    deterministic global batch, for the integral and the grad network. Both ranks end with identical
    parameters, equal (float64, 1e-9) to one process trained on the whole batch; only rank 0 wrote
    the run directory."""
    sys.path.insert(0, str(TESTS_DIR))
    import ddp_worker

    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(TESTS_DIR / "ddp_worker.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=ac_subprocess_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in reports] == [2, 2] and all(r["ddp"] for r in reports)
    stages = ("integral", "grad", "samples")
    failures = {f"rank{r['rank']}.{w}": r[w]["error"] for r in reports for w in stages if "error" in r[w]}
    assert not failures, failures
    for which in ("integral", "grad"):
        a, b = reports[0][which], reports[1][which]
        assert a["params"] == b["params"], f"{which}: ranks differ"
        assert a["losses"] == b["losses"]  # the logged losses are averaged over ranks
        single = ddp_worker.run_stage(which)
        for k, v in single["params"].items():
            assert torch.allclose(torch.tensor(a["params"][k]), torch.tensor(v), rtol=0, atol=1e-9), (which, k)
        assert torch.allclose(torch.tensor(a["losses"]), torch.tensor(single["losses"]), rtol=1e-9)
        ckpts = sorted(p.name for p in (tmp_path / f"run_{which}" / "checkpoints").iterdir())
        assert ckpts == ["step-00000002.safetensors", "step-00000004.safetensors", "step-00000005.safetensors"]
    # fit_samples: each rank sampled its own half-batch (per-rank seeds), the parameters stayed in sync
    a, b = reports[0]["samples"], reports[1]["samples"]
    assert len(a["first_batch"]) == len(b["first_batch"]) == ddp_worker.GLOBAL_BATCH // 2
    assert a["first_batch"] != b["first_batch"]
    assert a["params"] == b["params"] and a["losses"] == b["losses"]
