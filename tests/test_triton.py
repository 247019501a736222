"""The Triton backend against the torch backend (the reference), under the Triton interpreter on CPU.

Both generated modules are loaded with the same parameters; the integral network, the grad network,
``integrate`` and the parameter gradients of a grad-network loss must agree. Tolerances (max error over
max |reference|, see ``assert_rel_close``): float64 specs 1e-9 (only summation order differs), float32
example specs 2e-5 for outputs and 1e-4 for parameter gradients (float32 GEMMs in another order).
Sizes are tiny: the interpreter runs every kernel program in Python.
"""

from __future__ import annotations

import copy
import itertools
import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere

import pytest  # noqa: E402

triton = pytest.importorskip("triton", reason="triton is not installed (make setup installs it)")

import sympy as sp  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from conftest import REPO_ROOT, ac_graph_spec, ac_mlp_spec, assert_rel_close  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from autoint_compiler.backends import get_backend, triton_print  # noqa: E402
from autoint_compiler.backends.triton_backend import LOWERINGS, generate, plan_graph  # noqa: E402
from autoint_compiler.compiler import compile_source, load_module  # noqa: E402
from autoint_compiler.core import primitives as P  # noqa: E402
from autoint_compiler.errors import CompileError  # noqa: E402

F64 = dict(out=1e-9, grad=1e-9)
F32 = dict(out=2e-5, grad=1e-4)


_LOADS = itertools.count()


def _pair(spec, **options):
    """(torch module, triton module, triton source) for a spec; the Triton module is a fresh one each
    time (tests switch FUSE_NETWORK and wrap its launcher)."""
    cs = compile_source(spec)
    src = generate(cs.program, version="test", **options)
    return load_module(cs.name, cs.source), load_module(f"{cs.name}_triton{next(_LOADS)}", src), src


def _compare(spec, tol, n=20, seed=0, low=-1.0, high=1.0, integrate=False, train=True, **options):
    """Inference through the whole-network kernels (asserted to have run unless the module says why
    not) and through the per-layer kernels, then training through the per-layer kernels."""
    tm, xm, src = _pair(spec, **options)
    fused = _record_fused(xm)
    assert xm.FUSE_NETWORK is bool(options.get("fuse_network", True))
    xm.FUSE_NETWORK = True  # inference through the whole-network kernels first
    torch.manual_seed(seed)
    ref = tm.IntegralNet()
    net = xm.IntegralNet()
    net.load_state_dict(ref.state_dict())
    gref, gnet = tm.GradNet.from_integral(ref), xm.GradNet.from_integral(net)
    gen = torch.Generator().manual_seed(seed)
    x = low + (high - low) * torch.rand(n, tm.IN_FEATURES, generator=gen, dtype=tm.DTYPE)
    with torch.no_grad():
        assert_rel_close(net(x), ref(x), tol["out"], "integral network")
        assert_rel_close(gnet(x), gref(x), tol["out"], "grad network")
        if integrate:
            k = len(tm.INTEGRATION_COLUMNS)
            lo, hi = -torch.rand(n, k, generator=gen, dtype=tm.DTYPE), torch.rand(n, k, generator=gen, dtype=tm.DTYPE)
            assert_rel_close(net.integrate(lo, hi, x), ref.integrate(lo, hi, x), tol["out"], "integrate")
        expected = {k for k in ("_integral_fused_kernel", "_grad_fused_kernel") if f"def {k}(" in src}
        assert len(expected) + src.count("not fused into one kernel:") == 2, "a network neither fused nor says why"
        assert set(fused) == expected, fused
        xm.FUSE_NETWORK = False  # the per-layer kernels' inference path
        assert_rel_close(net(x), ref(x), tol["out"], "integral network (per-layer kernels)")
        assert_rel_close(gnet(x), gref(x), tol["out"], "grad network (per-layer kernels)")
        xm.FUSE_NETWORK = True
        extra = int(integrate and "_integral_fused_kernel" in expected)  # integrate() evaluates Phi once
        assert len(fused) == len(expected) + extra, "the per-layer path ran a whole-network kernel"
    if not train:
        return tm, xm
    weights = torch.randn(n, tm.OUT_FEATURES, generator=gen, dtype=tm.DTYPE)
    for module, g in ((ref, gref), (net, gnet)):
        module.zero_grad()
        ((g(x) * weights).sum() + (g(x) ** 2).mean()).backward()
    # the gradient with respect to x too (through slices, concat and posenc)
    xr, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    (gref(xr) * weights).sum().backward()
    (gnet(xt) * weights).sum().backward()
    assert_rel_close(_grad(xt), _grad(xr), tol["grad"], "d loss / dx")
    for (name, p), (_, q) in zip(ref.named_parameters(), net.named_parameters()):
        assert_rel_close(_grad(q), _grad(p), tol["grad"], f"gradient of {name}")
    return tm, xm


def _record_fused(module) -> list[str]:
    """The names of the whole-network kernels ``module`` launches from now on."""
    names, launch = [], module._fused

    def recorded(kernel, *args):
        names.append(kernel.fn.__name__ if hasattr(kernel, "fn") else kernel.__name__)
        return launch(kernel, *args)

    module._fused = recorded
    return names


def _grad(t):
    """t.grad, or zeros where autograd never reached t (a parameter the grad network does not use)."""
    return torch.zeros_like(t) if t.grad is None else t.grad


# ---------------------------------------------------------------------------------------------------
# Every op
# ---------------------------------------------------------------------------------------------------

ACTIVATION_GROUPS = [
    ["sin", "cos", "exp", "tanh", "sigmoid"],
    ["swish", "silu", "softplus", "relu", "requ"],
    ["gelu", "elu", {"op": "elu", "alpha": 0.5}, "selu", {"op": "sine", "w0": 3.0}],
    [
        {"op": "formula", "formula": "x*tanh(log(1+exp(x)))"},
        {"op": "formula", "formula": "x*erf(x) + sqrt(1 + x*x) + cosh(x) - sinh(x)"},
    ],
]


def _activation_graph(group):
    nodes = [{"name": "h", "op": "linear", "in": ["t", "y"], "out": 5}]
    terms = []
    for k, act in enumerate(group):
        node = {"name": f"a{k}", "in": ["h"]} | ({"op": act} if isinstance(act, str) else dict(act))
        nodes.append(node)
        terms.append(f"a{k}")
    acc = terms[0]
    for k, term in enumerate(terms[1:]):
        nodes.append({"name": f"s{k}", "op": "add", "in": [acc, term]})
        acc = f"s{k}"
    nodes.append({"name": "o", "op": "linear", "in": [acc], "out": 2})
    return nodes


@pytest.mark.parametrize("group", ACTIVATION_GROUPS, ids=lambda g: "-".join(str(a)[:8] for a in g))
def test_activations(group):
    _compare(ac_graph_spec(_activation_graph(group), inputs={"t": 1, "y": 2}), F64)


def test_log_activation_and_two_variables():
    nodes = [
        {"name": "h", "op": "linear", "in": ["t", "u", "y"], "out": 4},
        {"name": "s", "op": "sigmoid", "in": ["h"]},
        {"name": "l", "op": "log", "in": ["s"]},
        {"name": "o", "op": "linear", "in": ["l"], "out": 1},
    ]
    _compare(ac_graph_spec(nodes, inputs={"t": 1, "u": 1, "y": 1}, integrate=("t", "u")), F64)


KITCHEN_SINK = [
    {"name": "e", "op": "posenc", "in": ["t"], "frequencies": 2, "include_input": True},
    {"name": "f", "op": "posenc", "in": ["y"], "frequencies": 1, "include_input": False},
    {"name": "h", "op": "linear", "in": ["e", "f", "y", "u"], "out": 6},
    {"name": "a", "op": "tanh", "in": ["h"]},
    {"name": "b", "op": "sin", "in": ["h"]},
    {"name": "m", "op": "mul", "in": ["a", "b"]},
    {"name": "d", "op": "sub", "in": ["m", "a"]},
    {"name": "p", "op": "add", "in": ["d", "b"]},
    {"name": "c", "op": "constant", "value": 0.5, "out": 6},
    {"name": "q", "op": "add", "in": ["p", "c"]},
    {"name": "n", "op": "neg", "in": ["q"]},
    {"name": "sc", "op": "scale", "in": ["n"], "value": -1.5},
    {"name": "sl", "op": "slice", "in": ["sc"], "start": 1, "stop": 4},
    {"name": "sm", "op": "sum", "in": ["sl"]},
    {"name": "w", "op": "mul", "in": ["sm", "t"]},
    {"name": "bw", "op": "mul", "in": ["sm", "sl"]},
    {"name": "h2", "op": "linear", "in": ["bw", "w", "t"], "out": 5, "bias": False},
    {"name": "r", "op": "softplus", "in": ["h2"]},
    {"name": "o", "op": "linear", "in": ["r", "sc"], "out": 2},
]


@pytest.mark.parametrize("integrate", [("t",), ("t", "u")])
def test_every_structural_op(integrate):
    spec = ac_graph_spec(KITCHEN_SINK, inputs={"t": 1, "y": 2, "u": 1}, integrate=integrate)
    _compare(spec, F64, integrate=True)
    ops = {
        d["op"] for g in (compile_source(spec).integral_ir, compile_source(spec).grad_ir) for _, d in g.nodes(data=True)
    }
    # the spec reaches every op of the IR the torch backend emits (expand and wcol come from the rules)
    assert {"posenc", "linear", "add", "sub", "mul", "neg", "scale", "sum", "constant", "concat", "slice",
            "pointwise", "input"} <= ops  # fmt: skip


def test_linear_chains_without_an_activation_stack():
    """h3 multiplies the primal and both tangents of h2 with no unit between: one layer of 3 chains."""
    nodes = [
        {"name": "h1", "op": "linear", "in": ["t", "u", "y"], "out": 5},
        {"name": "a", "op": "tanh", "in": ["h1"]},
        {"name": "h2", "op": "linear", "in": ["a"], "out": 4},
        {"name": "h3", "op": "linear", "in": ["h2"], "out": 3},
        {"name": "b", "op": "sin", "in": ["h3"]},
        {"name": "o", "op": "linear", "in": ["b"], "out": 1},
    ]
    spec = ac_graph_spec(nodes, inputs={"t": 1, "u": 1, "y": 1}, integrate=("t", "u"))
    plan = plan_graph(compile_source(spec).grad_ir)
    assert any(len(layer.members) >= 3 and layer.region is None for layer in plan.layers), plan.layers
    _compare(spec, F64)


@pytest.mark.parametrize(
    "spec",
    [
        ac_graph_spec([{"name": "o", "op": "linear", "in": ["t", "y"], "out": 2}], inputs={"t": 1, "y": 2}),
        ac_mlp_spec(inputs={"t": 1, "s": 1, "r": 1}, integrate=("t", "s", "r"), hidden=(4, 3), activation="requ"),
    ],
    ids=["linear-only: constant grad network", "requ, 3 variables: a dead primal chain"],
)
def test_degenerate_networks(spec):
    _compare(spec, F64, integrate=True)


# ---------------------------------------------------------------------------------------------------
# The example specs (float32, widths cut down for the interpreter) and stacking on/off
# ---------------------------------------------------------------------------------------------------


def _small(path, width=8):
    spec = yaml.safe_load((REPO_ROOT / "examples" / path).read_text())
    spec = copy.deepcopy(spec)
    if "mlp" in spec:
        spec["mlp"]["hidden"] = [min(w, width) for w in spec["mlp"]["hidden"]]
        if "encoding" in spec["mlp"]:
            spec["mlp"]["encoding"]["frequencies"] = min(spec["mlp"]["encoding"]["frequencies"], 2)
    for node in spec.get("graph", []):
        if "out" in node and node is not spec["graph"][-1]:
            node["out"] = min(node["out"], width)
    return spec


@pytest.mark.parametrize("path", sorted(p.name for p in (REPO_ROOT / "examples").glob("*.yaml")))
def test_examples(path):
    _compare(_small(path), F32, n=18, integrate=path == "box2d.yaml")


def test_float16_storage_with_float32_accumulation():
    """IntegralNet(dtype=torch.float16): half-precision parameters and activations, float32 GEMM
    accumulation and elementwise math. Against the torch backend in float32 on the same (rounded) weights
    and inputs: within 3e-3 (measured about 5e-4: one float16 rounding per stored activation)."""
    from conftest import ac_max_rel_err

    tm, xm, _ = _pair(_small("box2d.yaml"))
    torch.manual_seed(0)
    net = xm.IntegralNet(dtype=torch.float16)
    ref = tm.IntegralNet()
    ref.load_state_dict({k: v.float() for k, v in net.state_dict().items()})
    x = (torch.rand(18, tm.IN_FEATURES) * 2 - 1).half()
    g, gref = xm.GradNet.from_integral(net), tm.GradNet.from_integral(ref)
    fused = _record_fused(xm)
    with torch.no_grad():
        for whole in (False, True):  # per-layer kernels, then the whole-network kernels (float32 in registers)
            xm.FUSE_NETWORK = whole
            assert net(x).dtype == torch.float16 and g(x).dtype == torch.float16
            assert ac_max_rel_err(net(x).float(), ref(x.float())) < 3e-3
            assert ac_max_rel_err(g(x).float(), gref(x.float())) < 3e-3
    xm.FUSE_NETWORK = False
    assert len(fused) == 4, fused  # two calls of each network, fused
    (g(x).float() ** 2).sum().backward()
    (gref(x.float()) ** 2).sum().backward()
    for (name, p), q in zip(ref.named_parameters(), net.parameters()):
        if p.grad is not None:
            assert q.grad.dtype == torch.float16
            assert ac_max_rel_err(q.grad.float(), p.grad) < 3e-3, name
    with pytest.raises(RuntimeError, match="bfloat16 needs a GPU"):
        xm.IntegralNet(dtype=torch.bfloat16)(x.bfloat16())


def test_unstacked_lowering_agrees():
    _compare(_small("box2d.yaml"), F32, stack=False)


def test_chains_share_one_gemm():
    """box2d's hidden layers: the four chains of each layer run as one layer kernel (bias on one chain)."""
    cs = compile_source(_small("box2d.yaml"))
    plan = plan_graph(cs.grad_ir)
    sizes = sorted(len(layer.members) for layer in plan.layers)
    assert sizes.count(4) == 2, sizes  # layers 1 and 2: primal, two tangents, mixed tangent
    _, _, src = _pair(_small("box2d.yaml"))
    assert "acc3 += _dot(x3, w, PREC, ACC)" in src
    assert "(True, False, False, False)" in src


# ---------------------------------------------------------------------------------------------------
# Whole-network kernels: wide values in 128-column chunks, the width limit, one weight load per layer
# ---------------------------------------------------------------------------------------------------

#: values up to 100 wide in 32- or 64-column chunks: a positional encoding, a slice and a concat that
#: cross chunk boundaries, a sum over every chunk and a width-1 column broadcast
WIDE = [
    {"name": "h0", "op": "linear", "in": ["t", "y"], "out": 20},
    {"name": "a0", "op": "tanh", "in": ["h0"]},
    {"name": "e", "op": "posenc", "in": ["a0"], "frequencies": 2, "include_input": True},
    {"name": "h", "op": "linear", "in": ["e", "t"], "out": 70},
    {"name": "a", "op": "cos", "in": ["h"]},  # cos(0) = 1: the padding must be masked before the sum
    {"name": "sl", "op": "slice", "in": ["a"], "start": 20, "stop": 50},
    {"name": "sm", "op": "sum", "in": ["a"]},
    {"name": "b", "op": "mul", "in": ["sm", "a"]},
    {"name": "h2", "op": "linear", "in": ["sl", "b"], "out": 20},
    {"name": "r", "op": "softplus", "in": ["h2"]},
    {"name": "o", "op": "linear", "in": ["r", "sm"], "out": 2},
]


@pytest.mark.parametrize("integrate,chunk", [(("t",), 32), (("t", "u"), 64)])
def test_wide_values_fuse_in_chunks(integrate, chunk):
    spec = ac_graph_spec(WIDE, inputs={"t": 1, "y": 2, "u": 1}, integrate=integrate)
    spec["graph"][0]["in"] = ["t", "y", "u"]
    _, _, src = _pair(spec, fused_chunk=chunk)
    assert "_fz_move(" in src and "_fz_repeat(" in src
    last = (100 - 1) // chunk  # the posenc value's last chunk
    assert any(line.strip().startswith("v") and f"_{last} = " in line for line in src.splitlines()), "chunks missing"
    _compare(spec, F64, n=17, integrate=True, train=chunk == 64, fused_chunk=chunk)


def test_an_op_without_a_whole_network_lowering_keeps_the_per_layer_kernels(monkeypatch):
    from autoint_compiler.backends import triton_fused

    monkeypatch.delitem(triton_fused.LOWERINGS, "posenc")
    cs = compile_source(_small("field3d.yaml"))
    src = generate(cs.program, version="test")
    assert src.count("# not fused into one kernel: no whole-network lowering for op(s) posenc") == 2


def test_whole_network_lowerings_cover_every_triton_op():
    from autoint_compiler.backends import triton_fused

    assert set(triton_fused.LOWERINGS) == set(LOWERINGS)


def test_fused_options_are_checked():
    with pytest.raises(CompileError, match="fused_chunk must be a power of two >= 16, got 48"):
        _pair(_small("box2d.yaml"), fused_chunk=48)
    with pytest.raises(CompileError, match="fused_precision must be tf32x3, tf32 or ieee, got 'fp8'"):
        _pair(_small("box2d.yaml"), fused_precision="fp8")


def test_padding_masks_are_skipped_only_where_zero_stays_zero():
    from autoint_compiler.backends.triton_fused import _keeps_zero

    u0, u1, c = sp.symbols("u0 u1 c", real=True)
    assert _keeps_zero(-u0, [u0]) and _keeps_zero(u0 * u1 - 2 * u0**2, [u0]) and _keeps_zero(u0 * c, [u0])
    assert not _keeps_zero(u0 + c, [u0])  # a broadcast column: nonzero in the padding
    assert not _keeps_zero(sp.cos(u0) * u1, [u0, u1]) and not _keeps_zero(u0 * sp.log(c), [u0])  # 0 * inf
    assert not _keeps_zero(u0 + sp.Rational(1, 2), [u0]) and not _keeps_zero(u0 / u1, [u0, u1])


def test_a_whole_network_kernel_too_big_for_the_gpu_falls_back_to_the_per_layer_kernels():
    from triton.runtime.errors import OutOfResources

    tm, xm, _ = _pair(_small("box2d.yaml"))
    torch.manual_seed(0)
    ref, net = tm.IntegralNet(), xm.IntegralNet()
    net.load_state_dict(ref.state_dict())
    gref, gnet = tm.GradNet.from_integral(ref), xm.GradNet.from_integral(net)
    tries = []

    class TooBig:  # a kernel whose every launch needs more shared memory than the GPU has
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                tries.append(1)
                raise OutOfResources(300_000, 232_448, "shared memory")

            return launch

    xm._grad_fused_kernel = TooBig()
    xm.FUSE_NETWORK = True
    x = torch.rand(9, tm.IN_FEATURES) * 2 - 1
    with torch.no_grad(), pytest.warns(UserWarning, match="does not fit this GPU .*the per-layer kernels run"):
        assert_rel_close(gnet(x), gref(x), F32["out"], "grad network after the fallback")
    with torch.no_grad():
        assert_rel_close(gnet(x), gref(x), F32["out"], "grad network, second call")
    assert len(tries) == 1  # not tried again


def test_too_wide_a_network_keeps_the_per_layer_kernels_and_says_why():
    from autoint_compiler.backends.triton_fused import MAX_WIDTH, plan_fused

    nodes = [
        {"name": "h", "op": "linear", "in": ["t", "y"], "out": MAX_WIDTH + 1},
        {"name": "a", "op": "tanh", "in": ["h"]},
        {"name": "o", "op": "linear", "in": ["a"], "out": 1},
    ]
    cs = compile_source(ac_graph_spec(nodes, inputs={"t": 1, "y": 1}))
    assert "exceeds MAX_WIDTH" in plan_fused(cs.grad_ir)
    src = generate(cs.program, version="test")
    assert src.count(f"# not fused into one kernel: a value {MAX_WIDTH + 1} wide exceeds MAX_WIDTH") == 2
    assert "def _grad_fused_kernel(" not in src and "_inference(x, self)" not in src


def test_whole_network_kernel_loads_each_weight_block_once_for_all_chains():
    """box2d's grad network in one kernel: each hidden layer's weight is loaded once and multiplied
    into its four chains; only the output is stored."""
    _, _, src = _pair(_small("box2d.yaml"))
    body = src.split("def _grad_fused_kernel(")[1].split("\n\n\n")[0]
    loads = [ln for ln in body.splitlines() if ln.strip().startswith("w1_0 = tl.load(")]
    dots = [ln for ln in body.splitlines() if "_dot(" in ln and ", w1_0," in ln]
    assert len(loads) == 1 and len(dots) == 4, (loads, dots)
    assert body.count("tl.store(") == 1


# ---------------------------------------------------------------------------------------------------
# Random MLPs with 1-3 integration variables
# ---------------------------------------------------------------------------------------------------


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_vars=st.integers(1, 3),
    hidden=st.lists(st.integers(2, 7), min_size=1, max_size=2),
    activation=st.sampled_from(["tanh", "swish", "softplus", "gelu", "sine", "sigmoid"]),
    output=st.integers(1, 2),
    seed=st.integers(0, 100),
)
def test_random_mlps(n_vars, hidden, activation, output, seed):
    names = ["t", "s", "r"][:n_vars]
    spec = ac_mlp_spec(
        inputs={"y": 1, **{v: 1 for v in names}},
        integrate=names,
        hidden=hidden,
        activation=activation if activation != "sine" else {"name": "sine", "w0": 2.0},
        output=output,
        seed=seed,
    )
    _compare(spec, F64, n=12, seed=seed)


# ---------------------------------------------------------------------------------------------------
# Errors, determinism, the registry, the printer
# ---------------------------------------------------------------------------------------------------


def test_cpu_tensor_outside_the_interpreter_is_a_clear_error(monkeypatch):
    _, xm, _ = _pair(_small("oned_poly.yaml"))
    net = xm.IntegralNet()
    monkeypatch.setattr(xm, "INTERPRET", False)
    with pytest.raises(RuntimeError, match="CUDA tensors.*TRITON_INTERPRET=1"):
        net(torch.zeros(4, xm.IN_FEATURES))
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        xm.GradNet.from_integral(net)(torch.zeros(4, xm.IN_FEATURES))


def test_op_without_lowering_is_a_compile_error():
    cs = compile_source(_small("oned_poly.yaml"))
    g = cs.grad_ir.copy()
    g.add_node(10_000, op="frobnicate", inputs=(), attrs={}, width=1, batched=True)
    with pytest.raises(CompileError, match="no Triton lowering for op 'frobnicate'"):
        plan_graph(g)


def test_deterministic_and_registered():
    spec = _small("box2d.yaml")
    cs = compile_source(spec)
    assert generate(cs.program, version="x") == generate(compile_source(spec).program, version="x")
    assert get_backend("triton").generate is generate
    with pytest.raises(CompileError, match="unknown option"):
        generate(cs.program, version="x", bogus=1)


def test_generated_module_passes_ruff(tmp_path):
    """The generated source is lint-clean (E, F, W, I, lines within 120 columns) like the torch backend's."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("ruff")
    ruff = str(exe) if exe.exists() else shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    for name in ("box2d.yaml", "field3d.yaml", "graph_mix.yaml"):
        cs = compile_source(REPO_ROOT / "examples" / name)
        path = tmp_path / f"{cs.name}_triton.py"
        path.write_text(generate(cs.program, version="test"), encoding="utf-8")
        cmd = [ruff, "check", "--isolated", "--no-cache", "--select", "E,F,W,I", "--line-length", "120", str(path)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{name}:\n{out.stdout}{out.stderr}"


def test_parameters_are_shared_and_named_like_torch():
    tm, xm, _ = _pair(_small("field3d.yaml"))
    ref, net = tm.IntegralNet(), xm.IntegralNet()
    assert [n for n, _ in ref.named_parameters()] == [n for n, _ in net.named_parameters()]
    gnet = xm.GradNet.from_integral(net)
    own = {id(p) for p in net.parameters()}  # GradNet registers the ones it reads, as the same tensors
    assert list(gnet.parameters()) and all(id(p) in own for p in gnet.parameters())
    assert [n for n, _ in gnet.named_parameters()] == [n for n, _ in tm.GradNet.from_integral(ref).named_parameters()]
    for (n, p), (_, q) in zip(ref.named_parameters(), net.named_parameters()):
        assert p.shape == q.shape and p.dtype == q.dtype, n
    assert (xm.SPEC_HASH, xm.IN_FEATURES, xm.OUT_FEATURES, xm.INTEGRATION_COLUMNS, xm.DTYPE) == (
        xm.SPEC_HASH, tm.IN_FEATURES, tm.OUT_FEATURES, tm.INTEGRATION_COLUMNS, tm.DTYPE)  # fmt: skip


def test_printer_table():
    u = sp.Symbol("u", real=True)
    names = {u: "u"}
    assert triton_print.to_triton(u * P.sigmoid(u), names) == "u*tl.sigmoid(u)"
    assert triton_print.to_triton(u**3, names) == "(u * u * u)"
    assert triton_print.to_triton(1 / u**2, names) == "(1.0 / (u * u))"
    assert triton_print.to_triton(2 / u**2, names) == "2.0/(u * u)"
    assert triton_print.to_triton(sp.sqrt(u), names) == "tl.sqrt(u)"
    assert "tl.exp" in triton_print.to_triton(sp.exp(-(u**2) / 2) / sp.sqrt(2 * sp.pi), names)
    for fn in (P.softplus, P.relu, P.step, P.ndtr, P.expm1_neg, sp.tanh, sp.atan, sp.sinh, sp.cosh, sp.tan):
        code = triton_print.to_triton(fn(u), names)
        assert code.startswith(triton_print.FUNCTIONS[fn]), code
    with pytest.raises(CompileError, match="no Triton lowering for the function 'acos'"):
        triton_print.to_triton(sp.acos(u), names)


def test_helpers_match_torch_at_extremes():
    """The tl-core helpers (no libdevice in the interpreter) are finite and accurate at ±1e4 and 0."""
    src = "\n\n".join("@triton.jit\n" + text for _, text in triton_print.HELPERS)
    mod = load_module("triton_helpers", "import triton\nimport triton.language as tl\n\n" + src + KERNEL)
    xs = torch.tensor([-1e4, -30.0, -3.0, -1e-6, 0.0, 1e-6, 0.5, 3.0, 30.0, 1e4], dtype=torch.float64)
    out = torch.empty(6, xs.numel(), dtype=torch.float64)
    mod.helpers_kernel[(1,)](xs, out, xs.numel(), BLOCK=16)
    ref = torch.stack([
        torch.tanh(xs), torch.logaddexp(xs, torch.zeros_like(xs)), torch.special.ndtr(xs),
        torch.expm1(torch.clamp(xs, max=0)), torch.atan(xs), torch.log1p(torch.exp(-xs.abs())),
    ])  # fmt: skip
    assert torch.isfinite(out).all()
    err = (out - ref).abs().max(1).values
    assert (err[[0, 1, 2, 3, 5]] < 1e-12).all(), err
    assert err[4] < 1e-7, err  # atan: a float32-grade polynomial (Cephes atanf), documented


KERNEL = """


@triton.jit
def helpers_kernel(X, OUT, N, BLOCK: tl.constexpr):
    r = tl.arange(0, BLOCK)
    m = r < N
    x = tl.load(X + r, mask=m, other=0.0)
    tl.store(OUT + r, _tanh(x), mask=m)
    tl.store(OUT + N + r, _softplus(x), mask=m)
    tl.store(OUT + 2 * N + r, _ndtr(x), mask=m)
    tl.store(OUT + 3 * N + r, _expm1_neg(x), mask=m)
    tl.store(OUT + 4 * N + r, _atan(x), mask=m)
    tl.store(OUT + 5 * N + r, _log1p(tl.exp(-tl.abs(x))), mask=m)
"""


def test_compile_with_backend_triton_returns_the_same_contract():
    """``ac.compile(spec, backend="triton")`` and ``backend: triton`` in a spec go through the registry."""
    import autoint_compiler as ac

    spec = REPO_ROOT / "examples" / "box2d.yaml"
    net = ac.compile(spec, backend="triton", dtype=torch.float64, seed=0)
    ref = ac.compile(spec, dtype=torch.float64, seed=0)
    assert net.backend == "triton" and net.integration_columns == ref.integration_columns
    x = torch.rand(8, net.in_features, dtype=torch.float64)
    assert torch.allclose(net.grad(x), ref.grad(x), rtol=1e-9, atol=1e-12)
    assert torch.allclose(net.integrate(x[:, :2], x[:, :2] + 0.5, x), ref.integrate(x[:, :2], x[:, :2] + 0.5, x))
