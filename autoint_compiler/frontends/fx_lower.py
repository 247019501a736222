"""An fx graph (``fx_trace.trace``) -> Φ's IR, through the table of accepted calls (``fx_calls``).

Values along the walk: ``Ref``/``Col`` (IR nodes computed from x), ``State`` (module tensors, read live:
they become IR parameters bound to the module, ``fx_state``), Python values. An in-place call (``relu_``,
``+=``, ``inplace=True``) rebinds every alias of its target, so later reads see the new value; one on a
slice is refused. Every refusal is a ``CompileError`` naming the construct, the user's source line and
what to write instead.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
from torch import fx, nn

from ..core import activations as A
from ..core.ir import Builder, IRGraph, ParamInfo
from ..core.names import param_attribute, safe_identifier
from ..errors import CompileError
from . import fx_state as S
from .fx_calls import (
    BATCH,
    CALLS,
    KNOWN_REFUSALS,
    MODULES,
    Batch,
    Col,
    Grid,
    Ref,
    bind,
    callable_name,
    finite,
    is_number,
    like,
)
from .fx_state import Recorded, State
from .fx_trace import EXAMPLE_BATCH, Traced, _weight_norm_hook, all_tensors

_OWN_FILES = ("/torch/", "autoint_compiler/frontends/fx")


def source_line(node: fx.Node) -> str:
    trace = (node.stack_trace or "").strip().splitlines()
    files = [
        i for i, line in enumerate(trace) if line.strip().startswith("File ") and not any(f in line for f in _OWN_FILES)
    ]
    if not files:
        return "source line unknown"
    i = files[-1]
    where = trace[i].strip()
    code = trace[i + 1].strip() if i + 1 < len(trace) else ""
    return f"{where}: {code}" if code else where


def _has(obj, cls) -> bool:
    if isinstance(obj, cls):
        return True
    if isinstance(obj, (list, tuple)):
        return any(_has(o, cls) for o in obj)
    if isinstance(obj, dict):
        return any(_has(o, cls) for o in obj.values())
    return False


class Lowering:
    def __init__(
        self, traced: Traced, in_features: int, orders: dict[int, int], name: str, dtype: torch.dtype, output=None
    ):
        self.traced = traced
        self.root = traced.root
        self.dtype = dtype
        p = next(self.root.parameters(), None)
        self.device = p.device if p is not None else torch.device("cpu")
        self.output = output
        self.g = IRGraph()
        self.g.graph["name"] = f"{name}.integral"
        self.g.graph["base_name"] = name
        self.g.graph["title"] = "Phi"
        self.b = Builder(self.g)
        self.bindings: dict[str, State] = {}  # generated attribute -> live state
        self.param_names: dict[tuple, str] = {}
        self.values: dict[fx.Node, Any] = {}
        self.alias: dict[fx.Node, fx.Node] = {}  # node -> the node owning its storage
        self.viewed: set[fx.Node] = set()  # storage owners a slice was taken of
        self.view_nodes: set[fx.Node] = set()
        self._keep = False
        self._views = False
        self.x = self._inputs(in_features, orders)
        self._tensors = None

    def _inputs(self, d: int, integrate: dict[int, int]) -> int:
        cuts = sorted({0, d} | {c for c in integrate} | {c + 1 for c in integrate})
        parts = []
        for a, b in zip(cuts, cuts[1:]):
            name = f"x{a}" if b - a == 1 else f"x{a}_{b - 1}"
            self.g.graph["inputs"][name] = (a, b)
            parts.append(self.b.input(name, a, b))
        return Ref(self.b.concat(parts))

    # -- messages ------------------------------------------------------------------------------------
    @staticmethod
    def display(path: str) -> str:
        return path[len("inner.") :] if path.startswith("inner.") else path

    def refuse(self, node: fx.Node, what: str, instead: str):
        where = source_line(node)
        if where == "source line unknown" and node.op == "call_module":  # called from torch's code (Sequential)
            where = f"submodule {self.display(str(node.target))}"
        raise CompileError(f"compile_module cannot compile {what} at {where}; instead: {instead}")

    def finite(self, node, v, what: str) -> float:
        if isinstance(v, bool) or not finite(v):
            self.refuse(node, f"{what}={v!r}", f"a finite number for {what}")
        return float(v)

    # -- values ------------------------------------------------------------------------------------
    def ref(self, node, v) -> Ref:
        if isinstance(v, Grid):
            self.refuse(
                node,
                f"a tensor [N, {v.dims[0]}, {v.dims[1]}] where a tensor [N, features] is expected",
                "reshape it first: t.reshape(t.shape[0], -1)",
            )
        if isinstance(v, Col):
            self.refuse(
                node,
                "a 1-D column where a tensor [N, features] is expected",
                "keep it 2-D: x[:, i:i+1], or col.unsqueeze(-1)",
            )
        if not isinstance(v, Ref):
            self.refuse(
                node, f"a {type(v).__name__} where a tensor computed from x is expected", "compute it from the input x"
            )
        return v

    def keep(self, node, v):
        """An identity on values (clone, detach, requires_grad_, ...)."""
        if not isinstance(v, Ref):
            self.refuse(node, f"{node.target} of a {type(v).__name__}", "apply it to a tensor computed from x")
        self._keep = True
        return v

    def views(self, a: Ref, sizes: list[int]) -> tuple:
        self._views = True
        out, start = [], 0
        for s in sizes:
            out.append(Ref(self.b.slice(a, start, start + s)))
            start += s
        return tuple(out)

    def pointwise(self, node, a, fn) -> Ref:
        if not isinstance(a, Ref):
            self.refuse(node, f"{fn.label} of a {type(a).__name__}", "apply it to a tensor computed from x")
        return like(a, self.b.pointwise(a, fn))

    def _complex(self, node, *vs):
        if any(isinstance(v, complex) for v in vs):
            self.refuse(
                node,
                "arithmetic with a complex number",
                "a real-valued network: complex-valued networks "
                "(e.g. WIRE's exp(1j·ω·x)) are not supported, the IR is real-valued",
            )

    def operand(self, node, v, other) -> tuple[int, bool]:
        """An IR node for an arithmetic operand; second: True for a column [N] (or a scalar)."""
        if isinstance(v, Ref):
            return int(v), isinstance(v, Col)
        if is_number(v):
            return self.b.const([float(v)]), True
        if isinstance(v, State):
            return self.row(node, v), v.value.dim() == 0
        self.refuse(
            node, f"arithmetic with a {type(v).__name__}", "use tensors computed from x, numbers or module tensors"
        )

    def arith(self, node, op: str, a, c):
        self._complex(node, a, c)
        if is_number(a) and is_number(c):
            return {"add": a + c, "sub": a - c, "mul": a * c}[op]
        if op == "mul" and (is_number(a) or is_number(c)):
            v, k = (c, a) if is_number(a) else (a, c)
            if isinstance(v, Ref):
                # 0 * v is a zero row (a region of scale-by-0 nodes would fuse to constants, not tensors)
                out = self.b.const([0.0] * self.g.width(v)) if float(k) == 0.0 else self.b.scale(v, float(k))
                return like(v, out)
        if isinstance(a, Grid) or isinstance(c, Grid):
            return self.grid_arith(node, op, a, c)
        na, ca = self.operand(node, a, c)
        nc, cc = self.operand(node, c, a)
        wa, wc = self.g.width(na), self.g.width(nc)
        col_a, col_c = isinstance(a, Col), isinstance(c, Col)
        if (col_a and not cc and wc != 1) or (col_c and not ca and wa != 1):
            self.refuse(
                node,
                f"{op} of a 1-D column and a tensor of {max(wa, wc)} features (torch broadcasts them "
                "to [N, N] or fails)",
                "make the column 2-D first: col.unsqueeze(-1)",
            )
        if wa != wc and 1 not in (wa, wc):
            self.refuse(node, f"{op} of widths {wa} and {wc}", "equal widths, or width 1 (broadcast)")
        out = getattr(self.b, op)(na, nc)
        both_cols = (col_a or ca) and (col_c or cc) and (col_a or col_c)
        return Col(out) if both_cols else Ref(out)

    # -- tensors [N, a, b] (Grid): row-major in one IR node -----------------------------------------------
    def _dims(self, node, v) -> tuple[int, int] | None:
        """The [a, b] trailing shape of an operand of a grid op (None: a number)."""
        if isinstance(v, Grid):
            return v.dims
        if isinstance(v, Col):
            self.refuse(node, "a 1-D column with a tensor [N, a, b]", "make the column 2-D: col.unsqueeze(-1)")
        if isinstance(v, Ref):
            return (1, self.g.width(v))
        if is_number(v):
            return None
        if isinstance(v, State):
            t = v.value
            if t.dim() > 3 or (t.dim() == 3 and t.shape[0] != 1):
                self.refuse(
                    node,
                    f"module tensor {v.text} of shape {tuple(t.shape)} with a tensor [N, a, b]",
                    "a tensor of shape [a, b], [b] or [a, 1]",
                )
            shape = tuple(t.shape[-2:]) if t.dim() >= 2 else ((1, t.shape[0]) if t.dim() == 1 else (1, 1))
            return shape
        self.refuse(node, f"a {type(v).__name__} with a tensor [N, a, b]", "tensors, numbers or module tensors")

    def _expand_grid(self, node, v, dims: tuple[int, int]) -> int:
        """``v`` broadcast to [N, a, b] (or a row [1, a·b]), as one IR node, row-major."""
        a, b = dims
        if is_number(v):
            return self.b.const([float(v)] * (a * b))
        if isinstance(v, State):
            self._check_state(node, v)
            if v.constant:
                return self.b.const(v.value.broadcast_to((a, b)).double().flatten().tolist())
            return self.row(node, S.apply(lambda t: t.broadcast_to((a, b)).reshape(-1), (v,), {}, v.text))
        p, q = self._dims(node, v)
        nid = int(v)
        if q != b:  # [p, 1] -> [p, b]: each row's one value repeated
            nid = self.b.concat([self.b.expand(self.b.slice(nid, i, i + 1), b) for i in range(p)])
        if p != a:  # [1, b] -> [a, b]: the row repeated
            nid = self.b.concat([nid] * a)
        return nid

    def grid_arith(self, node, op: str, a, c) -> Grid:
        da, dc = self._dims(node, a), self._dims(node, c)
        shapes = [d for d in (da, dc) if d is not None]
        dims = tuple(max(d[k] for d in shapes) for k in (0, 1))
        if any(d[k] not in (1, dims[k]) for d in shapes for k in (0, 1)):
            self.refuse(node, f"{op} of shapes {da} and {dc} (they do not broadcast)", "shapes that broadcast")
        out = getattr(self.b, op)(self._expand_grid(node, a, dims), self._expand_grid(node, c, dims))
        return Grid.make(out, *dims)

    def grid_cat(self, node, parts, dim) -> Ref:
        if not all(isinstance(p, Ref) for p in parts):
            self.refuse(node, "torch.cat of a tensor [N, a, b] with a non-tensor", "tensors computed from x")
        dims = [self._dims(node, p) for p in parts]
        if dim in (-1, 2) and len({d[0] for d in dims}) == 1:
            rows, out = dims[0][0], []
            for i in range(rows):
                out += [self.b.slice(int(p), i * d[1], (i + 1) * d[1]) for p, d in zip(parts, dims)]
            return Grid.make(self.b.concat(out), rows, sum(d[1] for d in dims))
        if dim in (-2, 1) and len({d[1] for d in dims}) == 1:
            return Grid.make(self.b.concat([int(p) for p in parts]), sum(d[0] for d in dims), dims[0][1])
        self.refuse(node, f"torch.cat of tensors [N, a, b] of shapes {dims} along dim={dim}", "matching shapes")

    def grid_stack(self, node, parts, dim) -> Ref:
        widths = {self.g.width(p) for p in parts}
        if len(widths) != 1:
            self.refuse(node, f"torch.stack of widths {sorted(widths)}", "tensors of one width")
        (w,) = widths
        if dim in (-2, 1):
            return Grid.make(self.b.concat([int(p) for p in parts]), len(parts), w)
        if dim in (-1, 2):
            cols = [self.b.slice(int(p), j, j + 1) for j in range(w) for p in parts]
            return Grid.make(self.b.concat(cols), w, len(parts))
        self.refuse(node, f"torch.stack along dim={dim}", "dim=-1 or -2")

    def divide(self, node, a, c):
        self._complex(node, a, c)
        if is_number(c):
            if float(c) == 0.0:
                self.refuse(node, "a division by zero", "divide by a non-zero number")
            return self.arith(node, "mul", a, 1.0 / float(c))
        if isinstance(c, State):
            return self.arith(node, "mul", a, S.apply(torch.reciprocal, (c,), {}, f"1/{c.text}"))
        if isinstance(c, Ref):
            inv = self.pointwise(node, c, A.formula("1/x"))
            return inv if is_number(a) and float(a) == 1.0 else self.arith(node, "mul", a, inv)
        self.refuse(node, f"a division by a {type(c).__name__}", "divide by a number or a tensor")

    def power(self, node, base, ex):
        self._complex(node, base, ex)
        if isinstance(base, State) or isinstance(ex, State):
            self.refuse(node, "a power mixing module state and x", "write it with * or torch.exp")
        if is_number(base) and isinstance(ex, Ref):
            if float(base) <= 0:
                self.refuse(node, f"{base} ** x", "a positive base (c ** x = exp(x·ln c))")
            return self.pointwise(node, self.arith(node, "mul", ex, math.log(float(base))), A.activation("exp"))
        if not isinstance(base, Ref) or not is_number(ex):
            self.refuse(node, f"a power {type(base).__name__} ** {type(ex).__name__}", "x ** number")
        ex = float(ex)
        if ex == 0.5:
            return self.pointwise(node, base, A.formula("sqrt(x)"))
        if ex == -1.0:
            return self.divide(node, 1.0, base)
        if not ex.is_integer() or ex < 1 or ex > 64:
            self.refuse(node, f"a power with exponent {ex:g}", "a positive integer exponent, 0.5 or -1")
        out = base
        for _ in range(int(ex) - 1):
            out = self.arith(node, "mul", out, base)
        return out

    # -- module state --------------------------------------------------------------------------------
    def _param_name(self, hint: str) -> str:
        base = safe_identifier(hint, default="param")
        name, k = base, 1
        while name in self.g.graph["params"]:
            name, k = f"{base}_{k}", k + 1
        return name

    def _check_state(self, node, s: State):
        v = s.value
        if not torch.is_tensor(v) or not (v.is_floating_point() or (s.constant and not v.is_complex())):
            self.refuse(node, f"module value {s.text} ({type(v).__name__})", "a floating-point tensor")
        # a constant (made in forward or captured by a closure) is folded in exactly: torch promotes a 0-d
        # one to the network's dtype, and a float32 one into a float64 network without rounding
        harmless = s.constant and (v.dim() == 0 or self.dtype == torch.float64)
        if v.dtype != self.dtype and not harmless:
            self.refuse(
                node,
                f"module tensor {s.text} of dtype {v.dtype} in a {self.dtype} network",
                "give every module tensor the network's dtype (module.to(dtype)), or pass dtype=",
            )

    def row(self, node, s: State) -> int:
        """A state used elementwise: a constant row, or a one-column parameter bound live."""
        self._check_state(node, s)
        v = s.value
        if v.dim() > 2 or (v.dim() == 2 and v.shape[0] != 1):
            self.refuse(
                node,
                f"module tensor {s.text} of shape {tuple(v.shape)} used elementwise",
                "a row: shape [features], [1, features] or a scalar",
            )
        if s.constant:
            return self.b.const(v.double().flatten().tolist())
        name = self._param_name(self.display(s.text))
        w = max(v.numel(), 1)
        self.g.graph["params"][name] = ParamInfo(w, 1, False, 1.0, 1.0)
        self.bindings[param_attribute(name, "weight")] = S.row(s)
        return self.g.add("wcol", (), param=name, col=0, out=w)

    def linear(self, node, a, W, bias, hint: str | None = None) -> Ref:
        a = self.ref(node, a)
        for s, what in ((W, "weight"), (bias, "bias")):
            if s is not None and not isinstance(s, State):
                self.refuse(
                    node,
                    f"a linear layer whose {what} is computed from x",
                    f"a {what} that is a parameter or buffer of the module",
                )
        self._check_state(node, W)
        w = W.value
        width = self.g.width(a)
        if w.dim() != 2 or w.shape[1] != width:
            self.refuse(
                node,
                f"a linear map with weight {W.text} of shape {tuple(w.shape)} applied to {width} features",
                f"a weight of shape [out, {width}]",
            )
        if bias is not None:
            self._check_state(node, bias)
            if bias.value.shape != (w.shape[0],):
                self.refuse(node, f"bias {bias.text} of shape {tuple(bias.value.shape)}", f"shape [{w.shape[0]}]")
        key = (W.leaf or id(W), (bias.leaf or id(bias)) if bias is not None else None)
        name = self.param_names.get(key)
        if name is None:
            name = self._param_name(hint or self.display(W.text).removesuffix(".weight"))
            bound = 1.0 / math.sqrt(max(width, 1))
            self.g.graph["params"][name] = ParamInfo(int(w.shape[0]), width, bias is not None, bound, bound)
            self.bindings[param_attribute(name, "weight")] = W
            if bias is not None:
                self.bindings[param_attribute(name, "bias")] = bias
            self.param_names[key] = name
        return Ref(self.b.linear(a, name))

    def tensor_state(self, path: str, text: str | None = None) -> State:
        """The module tensor at ``path`` of the root, read live (a weight-normed weight as its formula)."""
        owner_path, _, attr = path.rpartition(".")
        owner = self.root.get_submodule(owner_path) if owner_path else self.root
        for hook in owner._forward_pre_hooks.values():
            if _weight_norm_hook(hook) and hook.name == attr:
                prefix = f"{owner_path}." if owner_path else ""
                g = S.leaf(self.root, f"{prefix}{attr}_g", self.display(f"{prefix}{attr}_g"))
                v = S.leaf(self.root, f"{prefix}{attr}_v", self.display(f"{prefix}{attr}_v"))
                return S.apply(torch._weight_norm, (v, g, hook.dim), {}, self.display(path))
        return S.leaf(self.root, path, text or self.display(path))

    def module_linear(self, node, mod: nn.Linear, a) -> Ref:
        path = str(node.target)
        W = self.tensor_state(f"{path}.weight")
        b = S.leaf(self.root, f"{path}.bias", self.display(f"{path}.bias")) if mod.bias is not None else None
        return self.linear(node, a, W, b, hint=self.display(path))

    def get_attr(self, node) -> Any:
        path = str(node.target)
        if path in self.traced.constants:
            return self._constant(node, self.traced.constants[path])
        try:
            value = S.resolve(self.root, path)
        except AttributeError:
            self.refuse(node, f"the attribute {self.display(path)}", "an attribute of the module")
        if isinstance(value, nn.Module):
            self.refuse(node, f"the module {self.display(path)} used as a value", "call it")
        if not torch.is_tensor(value):
            self.refuse(node, f"the attribute {self.display(path)} ({type(value).__name__})", "a tensor attribute")
        return self.tensor_state(path)

    def _constant(self, node, t: torch.Tensor) -> State:
        if self._tensors is None:
            self._tensors = [(self.display(p), v) for p, v in all_tensors(self.root)]
        if t.requires_grad:
            self.refuse(
                node,
                "a tensor computed from the module's parameters outside the traced graph (fx would freeze it)",
                "compute it inside forward from the parameters themselves",
            )
        for p, v in self._tensors:
            if v.numel() and t.numel() and v.untyped_storage().data_ptr() == t.untyped_storage().data_ptr():
                self.refuse(
                    node,
                    f"a tensor computed from the module tensor {p} outside the traced graph (fx would freeze it)",
                    f"register {p} as a buffer (self.register_buffer({p.rpartition('.')[2]!r}, "
                    "...)) so it is read live",
                )
        return S.constant(t, "a constant tensor")

    # -- structure -------------------------------------------------------------------------------------
    def attribute(self, node, obj, name: str):
        if isinstance(obj, Ref):
            if name == "shape":
                if isinstance(obj, Grid):
                    return (BATCH, *obj.dims)
                return (BATCH,) if isinstance(obj, Col) else (BATCH, self.g.width(obj))
            if name == "dtype":
                return self.dtype
            if name == "device":
                return self.device
            if name == "ndim":
                return 1 if isinstance(obj, Col) else 3 if isinstance(obj, Grid) else 2
            self.refuse(node, f"the attribute .{name} of a tensor computed from x", "shape, dtype or device")
        try:
            return getattr(obj, name)
        except AttributeError:
            self.refuse(node, f"the attribute .{name} of a {type(obj).__name__}", "an attribute it has")

    def getitem(self, node, obj, idx):
        if isinstance(obj, (tuple, list, dict)) and not isinstance(obj, Ref):
            try:
                return obj[idx]
            except (IndexError, KeyError, TypeError) as exc:
                self.refuse(node, f"indexing {type(obj).__name__} with {idx!r} ({exc})", "a valid index")
        if isinstance(obj, Col):
            if idx in ((slice(None), None), (Ellipsis, None)):
                return Ref(int(obj))
            self.refuse(node, f"indexing a 1-D column with {idx!r}", "col[:, None] or col.unsqueeze(-1)")
        if not isinstance(obj, Ref):
            self.refuse(node, f"indexing a {type(obj).__name__} with {idx!r}", "index a tensor computed from x")
        if isinstance(obj, Grid):
            self.refuse(node, f"indexing a tensor [N, a, b] with {idx!r}", "reshape it to [N, a·b] first")
        if idx in (slice(None), Ellipsis):
            return self.keep(node, obj)
        w = self.g.width(obj)
        if idx in ((Ellipsis, None, slice(None)), (slice(None), None), (slice(None), None, slice(None))):
            return Grid.make(int(obj), 1, w)  # x[..., None, :]: [N, 1, w]
        if idx in ((Ellipsis, None), (slice(None), slice(None), None)):
            return Grid.make(int(obj), w, 1)  # x[..., None]: [N, w, 1]
        if isinstance(idx, tuple) and len(idx) in (2, 3) and idx[0] in (slice(None), Ellipsis):
            width = self.g.width(obj)
            sel, rest = idx[1], idx[2:]
            if rest not in ((), (None,)):
                self.refuse(node, f"indexing with {idx!r}", "x[:, a:b], x[:, i] or x[:, i, None]")
            self._views = True
            if isinstance(sel, slice):
                start, stop, step = sel.indices(width)
                if step == 1 and stop > start and not rest:
                    return Ref(self.b.slice(obj, start, stop))
            elif isinstance(sel, int) and not isinstance(sel, bool) and -width <= sel < width:
                i = sel % width
                out = self.b.slice(obj, i, i + 1)
                return Ref(out) if rest else Col(out)
            elif isinstance(sel, (list, tuple)) and all(isinstance(i, int) and -width <= i < width for i in sel):
                if not rest and sel:
                    return Ref(self.b.concat([self.b.slice(obj, i % width, i % width + 1) for i in sel]))
        self.refuse(
            node, f"indexing with {idx!r}", "select columns: x[:, a:b], x[:, i] (1-D), x[:, i:i+1] or x[:, [i, j]]"
        )

    def reshape(self, node, obj, shape):
        if not isinstance(obj, Ref):
            self.refuse(node, "view/reshape of a non-tensor", "reshape a tensor computed from x")
        w = self.g.width(obj)
        dims = [BATCH if i == 0 and d == EXAMPLE_BATCH and not isinstance(d, bool) else d for i, d in enumerate(shape)]
        if isinstance(obj, Grid):
            if len(dims) == 2 and (dims[0] is BATCH or dims[0] == -1) and dims[1] in (w, -1):
                return Ref(int(obj))  # [N, a, b] -> [N, a·b]: row-major, the node itself
            self.refuse(
                node, f"view/reshape to {tuple(dims)} of a tensor [N, {obj.dims[0]}, {obj.dims[1]}]", "reshape(N, -1)"
            )
        if len(dims) == 2 and (dims[0] is BATCH or dims[0] == -1) and dims[1] in (w, -1) and not isinstance(obj, Col):
            return self.keep(node, obj)
        if len(dims) == 2 and (dims[0] is BATCH or dims[0] == -1) and dims[1] == 1 and isinstance(obj, Col):
            return Ref(int(obj))
        if len(dims) == 1 and (dims[0] is BATCH or dims[0] == -1) and w == 1:
            return Col(int(obj))
        self.refuse(node, f"view/reshape to {tuple(dims)} of a tensor [N, {w}]", "keep tensors [N, features]")

    # -- the walk ------------------------------------------------------------------------------------
    def call(self, node: fx.Node, args, kwargs):
        kind, target = node.op, node.target
        if kind == "call_module":
            mod = self.root.get_submodule(str(target))
            where = f"{type(mod).__name__} ({self.display(str(target))})"
            row = MODULES.get(type(mod))
            if row is None:
                why = KNOWN_REFUSALS.get(type(mod))
                self.refuse(
                    node,
                    f"the module {where}",
                    why
                    or "a supported module or plain torch code in forward (see the README's fx section for the list)",
                )
            if kwargs or len(args) != 1:
                self.refuse(node, f"calling {where} with {len(args)} arguments", "call it on one tensor")
            for attr in row.attributes:  # compiled in: guarded like the attributes forward reads
                v = getattr(mod, attr)
                scalar = type(v) in (bool, int, float, str, type(None))
                if (scalar or (type(v) is tuple and all(type(e) is int for e in v))) and attr != "inplace":
                    path = f"{self.display(str(target))}.{attr}"
                    self.traced.recorded.append(Recorded(mod, attr, v, path))
            return row.rule(self, node, mod, args[0]), bool(getattr(mod, "inplace", False))
        key = target if kind == "call_function" else ("method", target)
        name = callable_name(key)
        if not _has((args, kwargs), Ref):
            return self.state_call(node, key, name, args, kwargs), False
        call = CALLS.get(key) if _hashable(key) else None
        if call is None:
            why = KNOWN_REFUSALS.get(key) if _hashable(key) else None
            self.refuse(
                node,
                f"{name}",
                why or "a supported call (see the README's fx section), or write it with supported ones",
            )
        return bind(call, self, node, args, kwargs), call.inplace or kwargs.get("inplace") is True

    def state_call(self, node, key, name: str, args, kwargs):
        """A call on module state and Python values only: a state recomputed live (``B.T``, ``g·v/‖v‖``)."""
        if isinstance(key, tuple):
            method = key[1]
            if method.endswith("_") and not method.endswith("__"):
                self.refuse(
                    node,
                    f"the in-place {name} on module state",
                    "an out-of-place op (it would change the module's tensors on every call)",
                )

            def func(obj, *a, **k):
                return getattr(obj, method)(*a, **k)
        else:
            func = key
            fname = getattr(key, "__name__", "")
            if fname.endswith("_") and not fname.endswith("__") or kwargs.get("inplace") is True:
                self.refuse(node, f"the in-place {name} on module state", "an out-of-place op")
        if key is operator.getitem and isinstance(args[0], (tuple, list, dict)):
            return self.getitem(node, args[0], args[1])  # x.shape[-1], a split's parts, a dict's entries
        if any(w in name for w in ("rand", "normal", "bernoulli", "dropout", "multinomial")):
            self.refuse(node, f"the random {name}", "deterministic code: compiled networks must equal the module")
        if _has((args, kwargs), Batch):
            self.refuse(node, f"{name} with the batch size x.shape[0]", "shapes that do not depend on the batch")
        states = S.states_in((args, kwargs))
        if not states:
            try:
                return func(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - reported with the user's line
                self.refuse(node, f"{name} ({type(exc).__name__}: {exc})", "valid arguments")
        text = f"{name}({', '.join(s.text for s in states)})"
        if getattr(key, "__name__", "") == "__get__" and hasattr(getattr(key, "__self__", None), "__name__"):
            text = f"{states[0].text}.{key.__self__.__name__}"  # B.T, w.mT: an attribute of a tensor
        try:
            s = S.apply(func, args, kwargs, text)
        except Exception as exc:  # noqa: BLE001
            self.refuse(node, f"{name} on module state ({type(exc).__name__}: {exc})", "valid arguments")
        return s if torch.is_tensor(s.value) else s.value

    def mutate(self, node: fx.Node, value) -> None:
        target = node.args[0] if node.args else None
        if not isinstance(target, fx.Node):
            self.refuse(node, "an in-place op on a value that is not a traced tensor", "an out-of-place op")
        owner = self.alias.get(target, target)
        if target in self.view_nodes or owner in self.viewed:
            self.refuse(
                node,
                "an in-place op on a slice (or on a tensor a slice was taken of)",
                "an out-of-place op: h = F.relu(h)",
            )
        for n, o in list(self.alias.items()):
            if o is owner:
                self.values[n] = value
        self.values[owner] = value
        self.alias[node] = owner

    def run(self) -> tuple[IRGraph, Any]:
        out = None
        for node in self.traced.graph.nodes:
            if node.op == "placeholder":
                self.values[node] = self.x
                self.alias[node] = node
                continue
            if node.op == "output":
                out = fx.node.map_arg(node.args[0], lambda n: self.values[n])
                break
            args = fx.node.map_arg(node.args, lambda n: self.values[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: self.values[n])
            self._keep = self._views = False
            inplace = False
            try:
                if node.op == "get_attr":
                    v = self.get_attr(node)
                else:
                    v, inplace = self.call(node, args, kwargs)
            except CompileError:
                raise
            except Exception as exc:  # a case the table's rules did not foresee: still one line, with the place
                self.refuse(
                    node,
                    f"{node.op} {node.target} ({type(exc).__name__}: {exc})".replace("\n", " "),
                    "rewrite this line with the supported calls (README, fx section)",
                )
            self.values[node] = v
            first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
            if self._keep and first is not None:
                self.alias[node] = self.alias.get(first, first)
            else:
                self.alias[node] = node
            if self._views and first is not None:
                self.view_nodes.add(node)
                self.viewed.add(self.alias.get(first, first))
            if first is not None and first in self.view_nodes and node.target is operator.getitem:
                self.view_nodes.add(node)
            if inplace:
                self.mutate(node, v)
            if isinstance(v, Ref) and node.name:
                self.b.name(int(v), node.name)
        return self.g, out

    def finish(self, out, output) -> IRGraph:
        where = "forward's return value"
        if output is not None:
            if isinstance(out, dict):
                if output not in out:
                    raise CompileError(
                        f"compile_module: output={output!r} is not a key of {where} (keys: {', '.join(map(repr, out))})"
                    )
                out = out[output]
            elif isinstance(out, (tuple, list)) and not isinstance(out, Ref):
                if isinstance(output, bool) or not isinstance(output, int) or not -len(out) <= output < len(out):
                    raise CompileError(
                        f"compile_module: output={output!r} is not an index of {where} (a "
                        f"{type(out).__name__} of {len(out)})"
                    )
                out = out[output]
            else:
                raise CompileError(
                    f"compile_module: output={output!r} selects from a tuple or dict, but forward "
                    "returns one tensor: drop output="
                )
        elif isinstance(out, dict):
            raise CompileError(
                f"compile_module: forward returns a dict: pass output=<key> to choose the tensor to "
                f"compile (keys: {', '.join(map(repr, out))})"
            )
        elif isinstance(out, (tuple, list)) and not isinstance(out, Ref):
            raise CompileError(
                f"compile_module: forward returns a {type(out).__name__} of {len(out)}: pass "
                f"output=<index> (0..{len(out) - 1}) to choose the tensor to compile"
            )
        if isinstance(out, Col):
            raise CompileError(
                "compile_module: the output is 1-D [N]: return a tensor [N, out_features] (out.unsqueeze(-1))"
            )
        if not isinstance(out, Ref):
            raise CompileError(
                f"compile_module: the output is a {type(out).__name__}, not a tensor [N, out_features] computed from x"
            )
        self.g.graph["outputs"] = [int(out)]
        return self.g


def _hashable(k) -> bool:
    try:
        hash(k)
    except TypeError:
        return False
    return True
