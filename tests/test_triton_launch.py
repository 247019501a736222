"""Whole-network kernels: every block configuration the autotuner may pick, checked without a GPU.

On an H200 (triton 3.6) a 64-row block on 8 warps gave wrong results or an illegal memory access
while every interpreter test passed: the interpreter ignores warps. So (1) the configurations are
checked against the rule the GPU measurement showed (at least 16 rows per warp: one 4-warp group per
64 rows of a tensor-core GEMM), and (2) each configuration's row block runs under the interpreter at
odd row counts (partial last blocks), on non-contiguous inputs, against the torch backend.
"""

from __future__ import annotations

import itertools
import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere

import pytest  # noqa: E402

triton = pytest.importorskip("triton", reason="triton is not installed (make setup installs it)")

import torch  # noqa: E402
from conftest import assert_rel_close  # noqa: E402

from autoint_compiler.backends.triton_backend import generate  # noqa: E402
from autoint_compiler.compiler import compile_source, load_module  # noqa: E402

_LOADS = itertools.count()

SPEC = {
    "name": "launch",
    "inputs": {"t": 1, "s": 1, "y": 2},
    "integrate": ["t", "s"],
    "output": 2,
    "mlp": {"hidden": [24, 24], "activation": "swish"},
}


def _modules(**options):
    cs = compile_source(SPEC)
    src = generate(cs.program, version="test", **options)
    return load_module(cs.name, cs.source), load_module(f"launch_triton{next(_LOADS)}", src)


def _gpu_configs(xm):
    """What ``_fused_configs`` returns on a GPU (the module's INTERPRET switched off for the call)."""
    xm.INTERPRET = False
    try:
        return {w: xm._fused_configs(w) for w in (16, 64, 128, 256)}
    finally:
        xm.INTERPRET = True


def test_every_gpu_configuration_has_at_least_16_rows_per_warp():
    _, xm = _modules()
    configs = _gpu_configs(xm)
    assert all(configs.values())
    for widest, cs in configs.items():
        for c in cs:
            assert c.kwargs["BLOCK_M"] >= 16 * c.num_warps, (widest, c)
            assert c.kwargs["BLOCK_M"] & (c.kwargs["BLOCK_M"] - 1) == 0
    # the fastest configuration measured on the H200 for width 128 is among them
    assert any((c.kwargs["BLOCK_M"], c.num_warps) == (128, 8) for c in configs[128])


def test_a_configuration_breaking_the_rule_is_refused_in_debug_mode():
    _, xm = _modules()
    xm.DEBUG = True
    kernel = xm._grad_fused_kernel
    kernel.configs = [triton.Config({"BLOCK_M": 64}, num_warps=8)]
    xm.INTERPRET = False  # the rule is about GPUs; the host-side check runs before any launch
    try:
        with pytest.raises(RuntimeError, match="fewer than 16 rows per warp"):
            xm._debug_check(kernel, torch.zeros(3, 4), ())
    finally:
        xm.INTERPRET = True


@pytest.mark.parametrize("chunk", [16, 32])
def test_every_row_block_at_odd_sizes_and_strided_inputs(chunk):
    """Each row block the autotuner may pick (and the interpreter's own), on row counts that leave a
    partial last block, with x a non-contiguous view: equal to the torch backend."""
    tm, xm = _modules(fused_chunk=chunk)
    xm.DEBUG = True  # host-side argument checks on every launch
    torch.manual_seed(0)
    ref = tm.IntegralNet()
    net = xm.IntegralNet()
    net.load_state_dict(ref.state_dict())
    gref, gnet = tm.GradNet.from_integral(ref), xm.GradNet.from_integral(net)
    blocks = sorted({c.kwargs["BLOCK_M"] for cs in _gpu_configs(xm).values() for c in cs} | {16})
    launched = []
    launch = xm._fused

    def recorded(kernel, *args):
        launched.append(kernel.configs[0].kwargs["BLOCK_M"])
        return launch(kernel, *args)

    xm._fused = recorded
    for block in blocks:
        for k in ("_integral_fused_kernel", "_grad_fused_kernel"):
            getattr(xm, k).configs = [triton.Config({"BLOCK_M": block})]
        for rows in (1, block - 1, block + 3):
            wide = torch.rand(rows, 2 * tm.IN_FEATURES) * 2 - 1
            x = wide[:, ::2]  # strides (2 * D, 2): not contiguous
            assert not x.is_contiguous()
            with torch.no_grad():
                assert_rel_close(net(x), ref(x.contiguous()), 2e-5, f"integral, {rows} rows, block {block}")
                assert_rel_close(gnet(x), gref(x.contiguous()), 2e-5, f"grad, {rows} rows, block {block}")
    assert sorted(set(launched)) == blocks  # every block really ran through the whole-network kernel


def test_too_many_live_columns_keep_the_per_layer_kernels_and_say_why():
    """Four chains of 128 columns (two integration variables) exceed the register budget measured on
    the GPU: the grad network keeps the per-layer kernels, Φ (one chain) is still one kernel."""
    from autoint_compiler.backends.triton_fused import MAX_LIVE_COLUMNS

    wide = {**SPEC, "mlp": {"hidden": [128, 128], "activation": "swish"}}
    cs = compile_source(wide)
    src = generate(cs.program, version="test")
    assert "def _integral_fused_kernel(" in src and "def _grad_fused_kernel(" not in src
    assert f"4 chains x 128 columns = 512 live columns per row exceed MAX_LIVE_COLUMNS = {MAX_LIVE_COLUMNS}" in src
    one_var = {**wide, "integrate": ["t"]}  # two chains of 128: within the budget
    assert "def _grad_fused_kernel(" in generate(compile_source(one_var).program, version="test")
