"""The torch.fx frontend: a user's own ``nn.Module`` -> Φ's IR -> the same ``CompiledNetwork``.

``compile_module(module, in_features, integrate)`` traces the module symbolically, lowers each fx node
through ``LOWER_FUNCTIONS``/``LOWER_MODULES``/``LOWER_METHODS`` (one row per supported callable) to IR
ops, and binds the generated networks to **the module's own parameter tensors**: an optimizer step on
``net.grad`` changes the user's module, which keeps working as before. A callable without a row is a
``CompileError`` naming it and the user's source line (fx records the stack trace).

The input ``x`` [N, in_features] is split into named IR inputs: each integration column ``c`` is an
input ``x<c>`` of width 1, the other columns are grouped in contiguous runs (``x<a>_<b>``).
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..core import activations as A
from ..core.differentiate import orders_problem
from ..core.ir import Builder, IRGraph, ParamInfo
from ..core.names import param_attribute, safe_identifier
from ..core.program import Program, make_program
from ..errors import CompileError

# ---------------------------------------------------------------------------------------------------
# Lowering tables
# ---------------------------------------------------------------------------------------------------


def _act(name: str, **params):
    return lambda L, node, args, kwargs: L.pointwise(node, args[0], A.activation(name, **params))


def _softplus(L, node, args, kwargs):
    beta = kwargs.get("beta", args[1] if len(args) > 1 else 1.0)
    if beta != 1.0:
        L.unsupported(node, f"softplus with beta={beta} (only beta=1)")
    return L.pointwise(node, args[0], A.activation("softplus"))


def _gelu(L, node, args, kwargs):
    if kwargs.get("approximate", "none") != "none":
        L.unsupported(node, "gelu(approximate='tanh') (only the exact GELU)")
    return L.pointwise(node, args[0], A.activation("gelu"))


def _elu(L, node, args, kwargs):
    alpha = kwargs.get("alpha", args[1] if len(args) > 1 else 1.0)
    return L.pointwise(node, args[0], A.activation("elu", alpha=float(alpha)))


def _add(L, node, args, kwargs):
    return L.arith(node, "add", args[0], args[1])


def _sub(L, node, args, kwargs):
    return L.arith(node, "sub", args[0], args[1])


def _mul(L, node, args, kwargs):
    return L.arith(node, "mul", args[0], args[1])


def _div(L, node, args, kwargs):
    a, d = args[0], args[1]
    if not _is_number(d) or not isinstance(a, Ref):
        L.unsupported(node, "division by a tensor (only division by a number)")
    return L.b.scale(a, 1.0 / float(d))


def _neg(L, node, args, kwargs):
    return L.b.neg(args[0])


def _pow(L, node, args, kwargs):
    base, ex = args[0], args[1]
    if not isinstance(base, Ref) or not _is_number(ex) or not float(ex).is_integer():
        L.unsupported(node, f"power with exponent {ex!r} (only non-negative integer powers of a tensor)")
    ex = int(ex)
    if ex < 1:
        L.unsupported(node, f"power with exponent {ex} (only positive integer powers)")
    out = base
    for _ in range(ex - 1):
        out = L.b.mul(out, base)
    return out


def _cat(L, node, args, kwargs):
    parts = args[0]
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    if dim not in (1, -1):
        L.unsupported(node, f"torch.cat along dim={dim} (only feature concatenation, dim=1 or -1)")
    return L.b.concat([L.tensor(node, p) for p in parts])


def _getitem(L, node, args, kwargs):
    src, idx = args
    if isinstance(idx, tuple) and len(idx) == 2 and idx[0] in (slice(None), Ellipsis) and isinstance(idx[1], slice):
        s = idx[1]
        width = L.b.g.width(src)
        start, stop, step = s.indices(width)
        if step == 1 and stop > start:
            return L.b.slice(src, start, stop)
    L.unsupported(node, f"indexing with {idx!r} (only column slices x[:, a:b])")


def _pointwise_fn(name: str):
    return lambda L, node, args, kwargs: L.pointwise(node, args[0], A.activation(name))


#: fx call_function targets -> lowering
LOWER_FUNCTIONS: dict[Any, Any] = {
    F.silu: _act("swish"),
    F.relu: _act("relu"),
    torch.relu: _act("relu"),
    F.gelu: _gelu,
    F.softplus: _softplus,
    F.elu: _elu,
    F.selu: _act("selu"),
    torch.tanh: _act("tanh"),
    F.tanh: _act("tanh"),
    torch.sigmoid: _act("sigmoid"),
    F.sigmoid: _act("sigmoid"),
    torch.sin: _pointwise_fn("sin"),
    torch.cos: _pointwise_fn("cos"),
    torch.exp: _pointwise_fn("exp"),
    torch.log: _pointwise_fn("log"),
    operator.add: _add,
    torch.add: _add,
    operator.sub: _sub,
    torch.sub: _sub,
    operator.mul: _mul,
    torch.mul: _mul,
    operator.truediv: _div,
    operator.neg: _neg,
    torch.neg: _neg,
    operator.pow: _pow,
    torch.cat: _cat,
    operator.getitem: _getitem,
}

#: fx call_method names -> lowering (x.sin(), h.relu(), ...)
LOWER_METHODS: dict[str, Any] = {
    "sin": _pointwise_fn("sin"),
    "cos": _pointwise_fn("cos"),
    "exp": _pointwise_fn("exp"),
    "log": _pointwise_fn("log"),
    "tanh": _act("tanh"),
    "sigmoid": _act("sigmoid"),
    "relu": _act("relu"),
    "neg": _neg,
    "add": _add,
    "sub": _sub,
    "mul": _mul,
    "pow": _pow,
    "__getitem__": _getitem,
}


def _module_act(name: str, **params):
    return lambda L, node, mod, args: L.pointwise(node, args[0], A.activation(name, **params))


#: leaf module types -> lowering (nn.Linear binds the module's own weight and bias)
LOWER_MODULES: dict[type, Any] = {
    nn.Linear: lambda L, node, mod, args: L.linear(node, mod, args[0]),
    nn.SiLU: _module_act("swish"),
    nn.ReLU: _module_act("relu"),
    nn.Tanh: _module_act("tanh"),
    nn.Sigmoid: _module_act("sigmoid"),
    nn.SELU: _module_act("selu"),
    nn.ELU: lambda L, node, mod, args: L.pointwise(node, args[0], A.activation("elu", alpha=float(mod.alpha))),
    nn.GELU: lambda L, node, mod, args: _gelu(L, node, args, {"approximate": mod.approximate}),
    nn.Softplus: lambda L, node, mod, args: _softplus(L, node, args, {"beta": mod.beta}),
    nn.Identity: lambda L, node, mod, args: args[0],
}


# ---------------------------------------------------------------------------------------------------
# The tracer-to-IR lowering
# ---------------------------------------------------------------------------------------------------


def _source_line(node: fx.Node) -> str:
    trace = (node.stack_trace or "").strip().splitlines()
    files = [i for i, line in enumerate(trace) if line.strip().startswith("File ") and "/torch/" not in line]
    if not files:
        return "source line unknown"
    i = files[-1]
    where = trace[i].strip()
    code = trace[i + 1].strip() if i + 1 < len(trace) else ""
    return f"{where}: {code}" if code else where


class _Lowering:
    def __init__(self, gm: fx.GraphModule, in_features: int, integrate: dict[int, int], name: str):
        self.gm = gm
        self.g = IRGraph()
        self.g.graph["name"] = f"{name}.integral"
        self.g.graph["base_name"] = name
        self.g.graph["title"] = "Phi"
        self.b = Builder(self.g)
        self.bindings: dict[str, nn.Linear] = {}  # IR parameter name -> the user's module
        self.param_of: dict[int, str] = {}  # id(nn.Linear) -> IR parameter name
        self.values: dict[fx.Node, Any] = {}
        self.x = self._inputs(in_features, integrate)

    def _inputs(self, d: int, integrate: dict[int, int]) -> int:
        cuts = sorted({0, d} | {c for c in integrate} | {c + 1 for c in integrate})
        parts = []
        for a, b in zip(cuts, cuts[1:]):
            name = f"x{a}" if b - a == 1 else f"x{a}_{b - 1}"
            self.g.graph["inputs"][name] = (a, b)
            parts.append(self.b.input(name, a, b))
        return self.b.concat(parts)

    # -- helpers the tables call ------------------------------------------------------------------
    def unsupported(self, node: fx.Node, what: str):
        raise CompileError(f"cannot differentiate {what} at {_source_line(node)}")

    def tensor(self, node: fx.Node, v) -> int:
        if not isinstance(v, Ref):
            self.unsupported(node, f"a non-tensor value {v!r}")
        return v

    def pointwise(self, node, a, fn) -> int:
        if not isinstance(a, Ref):
            self.unsupported(node, f"{fn.label} of a Python number")
        return self.b.pointwise(a, fn)

    def arith(self, node: fx.Node, op: str, a, c):
        num_a, num_c = _is_number(a), _is_number(c)
        if not (isinstance(a, Ref) or num_a) or not (isinstance(c, Ref) or num_c) or (num_a and num_c):
            self.unsupported(node, f"{op} of {type(a).__name__} and {type(c).__name__}")
        if op == "mul" and (num_a or num_c):
            return self.b.scale(c if num_a else a, float(a if num_a else c))
        if num_a or num_c:
            k = self.b.const([float(a if num_a else c)])
            a, c = (k, c) if num_a else (a, k)
        wa, wc = self.g.width(a), self.g.width(c)
        if wa != wc and 1 not in (wa, wc):
            self.unsupported(node, f"{op} of widths {wa} and {wc} (equal widths or width 1 broadcast)")
        return getattr(self.b, op)(a, c)

    def linear(self, node: fx.Node, mod: nn.Linear, a: int) -> int:
        if self.g.width(a) != mod.in_features:
            self.unsupported(node, f"nn.Linear({mod.in_features}, ...) applied to {self.g.width(a)} features")
        name = self.param_of.get(id(mod))
        if name is None:
            base = safe_identifier(str(node.target), default="linear")
            name, k = base, 1
            while name in self.bindings:
                name, k = f"{base}_{k}", k + 1
            bound = 1.0 / math.sqrt(mod.in_features)
            self.g.graph["params"][name] = ParamInfo(
                mod.out_features, mod.in_features, mod.bias is not None, bound, bound
            )
            self.bindings[name] = mod
            self.param_of[id(mod)] = name
        return self.b.linear(a, name)

    # -- the walk ----------------------------------------------------------------------------------
    def run(self) -> IRGraph:
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise CompileError(
                f"compile_module: forward must take exactly one tensor x, got {len(placeholders)} inputs"
            )
        out = None
        for node in self.gm.graph.nodes:
            args = fx.node.map_arg(node.args, lambda n: self.values[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: self.values[n])
            if node.op == "placeholder":
                v = self.x
            elif node.op == "call_module":
                mod = self.gm.get_submodule(node.target)
                rule = LOWER_MODULES.get(type(mod))
                if rule is None:
                    self.unsupported(node, f"module {type(mod).__name__} ({node.target})")
                v = rule(self, node, mod, args)
            elif node.op == "call_function":
                rule = LOWER_FUNCTIONS.get(node.target)
                if rule is None:
                    self.unsupported(node, f"function {_callable_name(node.target)}")
                v = rule(self, node, args, kwargs)
            elif node.op == "call_method":
                rule = LOWER_METHODS.get(node.target)
                if rule is None:
                    self.unsupported(node, f"method Tensor.{node.target}")
                v = rule(self, node, args, kwargs)
            elif node.op == "get_attr":
                v = self._attr(node)
            elif node.op == "output":
                out = args[0]
                continue
            else:  # pragma: no cover - fx has no other node kinds
                self.unsupported(node, f"fx node kind {node.op}")
            if not isinstance(v, int) or isinstance(v, bool) or v not in self.g:
                self.unsupported(node, f"{node.op} {node.target} (it does not produce a tensor of x)")
            if node.op != "placeholder":
                self.b.name(v, node.name)
            self.values[node] = Ref(v)
        if not isinstance(out, Ref):
            raise CompileError("compile_module: forward must return one tensor [N, out_features] computed from x")
        self.g.graph["outputs"] = [out]
        return self.g

    def _attr(self, node: fx.Node) -> int:
        value = self.gm
        for part in str(node.target).split("."):
            value = getattr(value, part)
        if isinstance(value, nn.Parameter):
            self.unsupported(node, f"a parameter used outside nn.Linear ({node.target})")
        if not torch.is_tensor(value) or value.dim() > 2 or (value.dim() == 2 and value.shape[0] != 1):
            self.unsupported(node, f"the attribute {node.target} (only constant rows [w] or [1, w])")
        return self.b.const(value.detach().double().flatten().tolist())


class Ref(int):
    """An IR node id (distinct from a Python number that a traced expression also carries)."""


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, (Ref, bool))


def _callable_name(fn) -> str:
    mod = getattr(fn, "__module__", "") or ""
    return f"{mod}.{getattr(fn, '__name__', repr(fn))}".lstrip(".")


# ---------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------


def _orders(integrate, in_features: int) -> dict[int, int]:
    items = integrate.items() if isinstance(integrate, dict) else [(c, 1) for c in integrate]
    orders: dict[int, int] = {}
    for col, k in items:
        if isinstance(col, bool) or not isinstance(col, int) or not 0 <= col < in_features:
            raise CompileError(
                f"compile_module: integrate names column {col!r}, expected an index in 0..{in_features - 1}"
            )
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise CompileError(f"compile_module: order of column {col} must be a positive integer, got {k!r}")
        orders[col] = orders.get(col, 0) + k
    if not orders:
        raise CompileError("compile_module: integrate must name at least one input column")
    if (problem := orders_problem(orders)) is not None:
        raise CompileError(f"compile_module: integrate: {problem}")
    return orders


def trace_module(
    module: nn.Module, in_features: int, integrate, *, dtype: str | None = None, name: str | None = None
) -> tuple[Program, dict[str, nn.Linear]]:
    """Trace ``module`` into a Program; also returns IR parameter name -> the user's ``nn.Linear``."""
    if not isinstance(module, nn.Module):
        raise CompileError(f"compile_module: expected an nn.Module, got {type(module).__name__}")
    if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
        raise CompileError(f"compile_module: in_features must be a positive integer, got {in_features!r}")
    orders = _orders(integrate, in_features)
    tracer = fx.Tracer()
    tracer.record_stack_traces = True
    try:
        graph = tracer.trace(module)
    except Exception as exc:  # data-dependent control flow and the like: fx says what it met
        raise CompileError(f"compile_module: torch.fx could not trace {type(module).__name__}: {exc}") from None
    gm = fx.GraphModule(tracer.root, graph)
    name = safe_identifier(name or type(module).__name__.lower(), default="module")
    lowering = _Lowering(gm, in_features, orders, name)
    integral = lowering.run()
    from ..core.passes import dce

    integral = dce(integral)
    if dtype is None:
        p = next(module.parameters(), None)
        dtype = "float64" if p is not None and p.dtype == torch.float64 else "float32"
    wrt = tuple(f"x{c}" for c, k in orders.items() for _ in range(k))
    program = make_program(integral, name=name, dtype=dtype, wrt=wrt, source=f"<module {type(module).__name__}>")
    return program, lowering.bindings


def compile_module(
    module: nn.Module,
    in_features: int,
    integrate,
    *,
    dtype=None,
    backend: str | None = None,
    name: str | None = None,
    fuse: bool = True,
):
    """Compile a user's ``nn.Module`` (Φ, taking x [N, in_features]) into a ``CompiledNetwork`` whose
    ``.integral`` computes the module and whose ``.grad`` is ∂Φ/∂x[:, c] for the columns in ``integrate``
    (a list of column indices, or a mapping column -> order), reading the module's own parameters."""
    from ..compiler import generate_source, instantiate

    if dtype is not None and not isinstance(dtype, str):
        dtype = {torch.float64: "float64", torch.float32: "float32"}.get(dtype)
        if dtype is None:
            raise CompileError("compile_module: dtype must be torch.float32 or torch.float64")
    program, bindings = trace_module(module, in_features, integrate, dtype=dtype, name=name)
    backend = backend or "torch"
    cs = generate_source(program, backend, **({"fuse": fuse} if backend == "torch" else {}))
    p = next(module.parameters(), None)
    net = instantiate(
        cs,
        backend,
        device=p.device if p is not None else None,
        dtype=torch.float64 if program.dtype == "float64" else torch.float32,
    )
    with torch.no_grad():
        for pname, mod in bindings.items():  # bind the user's own tensors (same objects, no copies)
            net.integral.register_parameter(param_attribute(pname, "weight"), mod.weight)
            if mod.bias is not None:
                net.integral.register_parameter(param_attribute(pname, "bias"), mod.bias)
    net.grad = type(net.grad).from_integral(net.integral)
    net.module_ref = module
    return net
