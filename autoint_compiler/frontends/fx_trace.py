"""Tracing a user's ``nn.Module`` with torch.fx, leaving the module exactly as it was.

``trace(module, forward_kwargs)`` wraps the module in ``Bound`` (whose ``forward(x)`` calls the module with
the bound extra arguments), checks what fx cannot see (hooks, complex tensors, parametrizations other than
weight norm), and traces with a tracer that

- proxies buffers as well as parameters, and, through a ``TorchFunctionMode``, every torch call whose
  inputs include a module tensor (``self.B.T``, ``params['net.0.weight'].permute(1, 0)``,
  a parametrization's ``g·v/‖v‖``): these become graph nodes, read live, never trace-time constants;
- records the Python scalar attributes ``forward`` reads (``self.w0``) with their values;
- removes what fx adds to the traced module (``_tensor_constantN``), restoring the classes it swapped.

Errors are ``CompileError``s naming the construct and the user's source line.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ..errors import CompileError
from .fx_state import Recorded


class Bound(nn.Module):
    """``forward(x)`` = ``inner(x, **kwargs)``: the traced root (fx's additions land here, not on ``inner``)."""

    def __init__(self, inner: nn.Module, kwargs: dict):
        super().__init__()
        self.inner = inner
        self.__dict__["_kwargs"] = dict(kwargs)

    def forward(self, x):
        return self.inner(x, **self._kwargs)


class DictInput(nn.Module):
    """The dict-input adapter: ``DictInput(model, 'coords')`` is a module taking x whose forward is
    ``model({'coords': x, **extra})``. Compile it instead of ``model`` (it holds ``model``'s own tensors)."""

    def __init__(self, model: nn.Module, key: str, **extra):
        super().__init__()
        self.model = model
        self.__dict__["_key"] = key
        self.__dict__["_extra"] = extra

    def forward(self, x):
        return self.model({self._key: x, **self._extra})


# ---------------------------------------------------------------------------------------------------
# What fx cannot see: checked before tracing
# ---------------------------------------------------------------------------------------------------


def _weight_norm_hook(hook) -> bool:
    return type(hook).__name__ == "WeightNorm" and type(hook).__module__ == "torch.nn.utils.weight_norm"


def check_module(module: nn.Module, name: str) -> None:
    g = nn.modules.module
    for kind in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks"):
        if getattr(g, kind, None):
            raise CompileError(
                f"compile_module: a global module hook is registered (torch.nn.modules.module.{kind}); fx does "
                "not run hooks, so the compiled networks would not match: remove it while compiling"
            )
    for path, m in module.named_modules():
        where = f"{name}.{path}" if path else name
        pre = [h for h in m._forward_pre_hooks.values() if not _weight_norm_hook(h)]
        hooks = [(f"forward pre-hook {_hname(h)}", h) for h in pre] + [
            (f"forward hook {_hname(h)}", h) for h in m._forward_hooks.values()
        ]
        hooks += [(f"backward hook {_hname(h)}", h) for h in m._backward_hooks.values()]
        hooks += [(f"backward pre-hook {_hname(h)}", h) for h in getattr(m, "_backward_pre_hooks", {}).values()]
        if hooks:
            what = hooks[0][0]
            raise CompileError(
                f"compile_module: {where} ({type(m).__name__}) has a {what}: fx does not run hooks, so the "
                "compiled networks would not match the module; remove the hook (handle.remove()) or write its "
                "effect into forward"
            )
        for pname, p in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            if p is not None and p.is_complex():
                raise CompileError(
                    f"compile_module: {where}.{pname} is complex ({p.dtype}): complex-valued networks (e.g. "
                    "WIRE's Gabor wavelets) are not supported, the IR is real-valued; use a real activation "
                    "(sine, Gaussian) or split real and imaginary parts into separate real layers"
                )
        pz = getattr(m, "parametrizations", None)
        if isinstance(pz, nn.ModuleDict):
            for tname, plist in pz.items():
                for p in plist:
                    if type(p).__name__ != "_WeightNorm":
                        raise CompileError(
                            f"compile_module: {where}.{tname} has the parametrization {type(p).__name__}; only "
                            "weight norm (torch.nn.utils.parametrizations.weight_norm) is read live by the "
                            "compiler: remove it (torch.nn.utils.parametrize.remove_parametrizations)"
                        )


def _hname(h) -> str:
    return getattr(h, "__qualname__", None) or type(h).__name__


# ---------------------------------------------------------------------------------------------------
# The tracer
# ---------------------------------------------------------------------------------------------------


#: the batch size of the example input that gives traced tensors concrete shapes (``x.shape[:-1]``,
#: ``h.view(*h.shape[:-2], -1)``); a reshape to it as the leading dimension means "every row"
EXAMPLE_BATCH = 11


class _Shaped(fx.Proxy):
    """A proxy whose shape, dtype and device are concrete where the example run knows them."""

    def _example(self):
        return self.node.meta.get("example")

    def _known(self, name: str):
        v = self._example()
        return getattr(v, name) if torch.is_tensor(v) else fx.Proxy.__getattr__(self, name)

    @property
    def shape(self):
        return self._known("shape")

    @property
    def dtype(self):
        return self._known("dtype")

    @property
    def device(self):
        return self._known("device")

    @property
    def ndim(self):
        return self._known("ndim")

    def size(self, dim=None):
        v = self._example()
        if torch.is_tensor(v):
            return v.size() if dim is None else v.size(dim)
        return fx.Proxy.__getattr__(self, "size")(*(() if dim is None else (dim,)))

    def dim(self):
        v = self._example()
        return v.dim() if torch.is_tensor(v) else fx.Proxy.__getattr__(self, "dim")()


def _raw_attr(obj, name: str):
    """``getattr`` without fx's patched ``Module.__getattr__`` (which would trace the read)."""
    d = object.__getattribute__(obj, "__dict__")
    for key in ("_parameters", "_buffers", "_modules"):
        if name in d.get(key, {}):
            return d[key][name]
    return object.__getattribute__(obj, name)


class _Tracer(fx.Tracer):
    def __init__(self, example: torch.Tensor | None = None):
        super().__init__()
        self.record_stack_traces = True
        self.proxy_buffer_attributes = True
        self.example = example
        self.quiet = 0  # > 0 while example values are computed: the state-ops mode stands aside

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Shaped(node, self)

    # while an example value is computed, module attributes and calls are plain Python (nothing is traced)
    def getattr(self, attr, attr_val, parameter_proxy_cache):
        return attr_val if self.quiet else super().getattr(attr, attr_val, parameter_proxy_cache)

    def call_module(self, m, forward, args, kwargs):
        return forward(*args, **kwargs) if self.quiet else super().call_module(m, forward, args, kwargs)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        p = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        self.quiet += 1
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = self._example_value(kind, target, args, kwargs)
        except Exception:  # noqa: BLE001 - an example is a convenience: without it shapes stay symbolic
            value = None
        finally:
            self.quiet -= 1
        if value is not None:
            p.node.meta["example"] = value
        return p

    def _example_value(self, kind, target, args, kwargs):
        missing = []

        def ex(a):
            if isinstance(a, fx.Proxy):
                v = a.node.meta.get("example")
                if v is None:
                    missing.append(a)
                return v
            return a

        if kind == "placeholder":
            return None if self.example is None else self.example.clone()
        if kind == "get_attr":
            v = self.root
            for part in str(target).split("."):
                v = _raw_attr(v, part)
            return v.detach().clone() if torch.is_tensor(v) else None
        name = target if isinstance(target, str) else getattr(target, "__name__", "")
        writes = "out" in kwargs or kwargs.get("inplace") is True or (name.endswith("_") and not name.endswith("__"))
        if writes and not (args and isinstance(args[0], fx.Proxy)) or "out" in kwargs:
            return None  # never write into a tensor that is not an example (the user's state, an out= buffer)
        args = fx.node.map_aggregate(args, ex)
        kwargs = fx.node.map_aggregate(kwargs, ex)
        if missing:
            return None
        if kind == "call_function":
            return target(*args, **kwargs)
        if kind == "call_method":
            return getattr(args[0], target)(*args[1:], **kwargs)
        if kind == "call_module":  # forward, not __call__: no hook runs on the user's module
            return self.root.get_submodule(target).forward(*args, **kwargs)
        return None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # a parametrized module is traced through, so its weight's formula is recorded from live originals
        if isinstance(getattr(m, "parametrizations", None), nn.ModuleDict):
            return False
        if type(m).__module__ == "torch.nn.utils.parametrize" or type(m).__name__ == "_WeightNorm":
            return False  # ParametrizationList and the weight-norm formula itself
        return super().is_leaf_module(m, qualname)


_RANDOM = {
    "rand",
    "randn",
    "randint",
    "randperm",
    "rand_like",
    "randn_like",
    "randint_like",
    "normal",
    "bernoulli",
    "multinomial",
    "poisson",
    "normal_",
    "uniform_",
    "bernoulli_",
    "exponential_",
    "random_",
    "cauchy_",
}
_PASS = {torch.Tensor.__repr__, torch.Tensor.__format__, torch.Tensor.__bool__}


class _StateOps(TorchFunctionMode):
    """Record torch calls on module tensors as graph nodes (instead of computing them once, at trace time)."""

    def __init__(self, tracer: _Tracer, tensors: set[int]):
        super().__init__()
        self.tracer, self.tensors = tracer, tensors

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.tracer.quiet:
            return func(*args, **kwargs)
        if getattr(func, "__name__", "") in _RANDOM:
            import traceback

            frames = [
                f
                for f in traceback.extract_stack()
                if "/torch/" not in f.filename and "autoint_compiler" not in f.filename
            ]
            where = (
                f" at {frames[-1].filename}, line {frames[-1].lineno}: {(frames[-1].line or '').strip()}"
                if frames
                else ""
            )
            raise CompileError(
                f"compile_module cannot compile random numbers drawn in forward (torch.{func.__name__}){where}; "
                "instead: draw them once in __init__ and register them as a buffer (the module would differ on "
                "every call, the compiled networks cannot)"
            )
        flat, _ = tree_flatten((args, kwargs))
        if any(isinstance(a, fx.Proxy) for a in flat) or func in _PASS:
            return func(*args, **kwargs)
        if not any(torch.is_tensor(a) and id(a) in self.tensors for a in flat):
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        if not torch.is_tensor(out):
            return out  # shapes, dtypes, numbers: concrete, like any Python value while tracing
        return self.tracer.create_proxy("call_function", func, args, kwargs)


@dataclass
class Traced:
    graph: fx.Graph
    root: Bound
    constants: dict[str, torch.Tensor]  # fx's _tensor_constantN, taken off the module
    recorded: list[Recorded] = field(default_factory=list)


def _record_scalars(root: nn.Module, skip: nn.Module, tracer: _Tracer):
    """Swap each submodule's class for a subclass that logs reads of Python scalar attributes (by the traced
    code: not those of the example computation, ``_Tracer.quiet``)."""
    log: dict[tuple[int, str], Recorded] = {}
    swapped = []
    made: dict[type, type] = {}
    paths = {id(m): p for p, m in root.named_modules()}

    def make(cls):
        base_get = cls.__getattribute__

        def getattribute(self, name):
            v = base_get(self, name)
            if type(v) in (bool, int, float, str) and not name.startswith("_") and not tracer.quiet:
                d = object.__getattribute__(self, "__dict__")
                if name in d and (id(self), name) not in log:
                    path = paths.get(id(self), "")
                    log[(id(self), name)] = Recorded(self, name, v, f"{path}.{name}" if path else name)
            return v

        return type(
            cls.__name__,
            (cls,),
            {"__getattribute__": getattribute, "__module__": cls.__module__, "__qualname__": cls.__qualname__},
        )

    for m in root.modules():
        if m is skip:
            continue
        cls = type(m)
        if cls not in made:
            made[cls] = make(cls)
        swapped.append((m, cls))
        m.__class__ = made[cls]
    return log, swapped


class _Globals:
    """A module's global namespace read like an object (``Recorded`` re-reads ``getattr(owner, name)``)."""

    def __init__(self, namespace: dict):
        self.__dict__["_ns"] = namespace

    def __getattr__(self, name):
        return self._ns.get(name)


def _record_globals(root: nn.Module, log: dict) -> None:
    """Numeric module-level globals (``OMEGA = 30.0``) that the user's module classes' methods read: compiled
    in at trace time like attributes, so recorded and guarded the same way."""
    seen: set[int] = set()
    for m in root.modules():
        for cls in type(m).__mro__:
            if cls.__module__.startswith(("torch.", "builtins", "autoint_compiler.")) or id(cls) in seen:
                continue
            seen.add(id(cls))
            for attr, fn in vars(cls).items():
                if attr == "__init__" or not inspect.isfunction(fn):
                    continue
                ns, file = fn.__globals__, fn.__code__.co_filename.rsplit("/", 1)[-1]
                for name in _names(fn.__code__):
                    v = ns.get(name)
                    if type(v) in (bool, int, float) and (id(ns), name) not in log:
                        log[(id(ns), name)] = Recorded(_Globals(ns), name, v, f"global {name} ({file})")


def _names(code) -> set[str]:
    out = set(code.co_names)
    for c in code.co_consts:
        if inspect.iscode(c):
            out |= _names(c)
    return out


def trace(module: nn.Module, forward_kwargs: dict, name: str, example: torch.Tensor | None = None) -> Traced:
    check_module(module, name)
    kwargs = _bind_signature(module, forward_kwargs, name)
    root = Bound(module, kwargs)
    tracer = _Tracer(example)
    before = set(vars(module))
    tensors = {id(t) for t in module.parameters()} | {id(t) for t in module.buffers()}
    for m in module.modules():
        tensors |= {id(v) for v in vars(m).values() if torch.is_tensor(v)}
    log, swapped = _record_scalars(root, skip=root, tracer=tracer)
    _record_globals(module, log)
    try:
        with torch.random.fork_rng(devices=[]), _StateOps(tracer, tensors):  # examples draw no user randomness
            graph = tracer.trace(root)
    except CompileError:
        raise
    except Exception as exc:  # data-dependent control flow and the like: fx says what it met
        line = _last_user_line(exc)
        raise CompileError(
            f"compile_module: torch.fx could not trace {type(module).__name__}{line}: {exc}; write forward without "
            "branching on tensor values (use torch.where) or bind the argument with forward_kwargs="
        ) from None
    finally:
        for m, cls in swapped:
            m.__class__ = cls
        for key in set(vars(module)) - before:  # never leave fx's attributes on the user's module
            delattr(module, key)
    constants = {k: v for k, v in vars(root).items() if torch.is_tensor(v)}
    for k in constants:
        delattr(root, k)
    return Traced(graph, root, constants, list(log.values()))


def _last_user_line(exc: BaseException) -> str:
    import traceback

    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if "/torch/" not in f.filename and "autoint_compiler" not in f.filename
    ]
    if not frames:
        return ""
    f = frames[-1]
    return f" at {f.filename}, line {f.lineno}: {(f.line or '').strip()}"


def _bind_signature(module: nn.Module, forward_kwargs: dict, name: str) -> dict:
    """The extra arguments of ``forward``: from ``forward_kwargs``, else their defaults."""
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return dict(forward_kwargs)
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional:
        raise CompileError(f"compile_module: {name}.forward{sig} takes no input argument for x")
    first = positional[0].name
    if first in forward_kwargs:
        raise CompileError(f"compile_module: forward_kwargs binds {first!r}, which is the input x of {name}.forward")
    names = {p.name for p in params}
    takes_var_kw = any(p.kind == p.VAR_KEYWORD for p in params)
    unknown = sorted(set(forward_kwargs) - names) if not takes_var_kw else []
    if unknown:
        raise CompileError(f"compile_module: forward_kwargs names {unknown}, which {name}.forward{sig} does not take")
    out = dict(forward_kwargs)
    for p in params[params.index(positional[0]) + 1 :]:
        if p.name in out or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is inspect.Parameter.empty:
            raise CompileError(
                f"compile_module: {name}.forward{sig} takes a second input {p.name!r} without a default: pass "
                f"forward_kwargs={{{p.name!r}: ...}} (a constant for the compiled networks), or wrap the module so "
                "that forward takes x alone"
            )
        out[p.name] = p.default
    for k, v in out.items():
        if torch.is_tensor(v):
            raise CompileError(
                f"compile_module: forward_kwargs[{k!r}] is a tensor: register it on the module as a buffer "
                "(read live) and read it in forward, or pass a Python value"
            )
    return out


def all_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    out = list(module.named_parameters()) + list(module.named_buffers())
    for path, m in module.named_modules():
        derived = {h.name for h in m._forward_pre_hooks.values() if _weight_norm_hook(h)}  # recomputed per call
        for k, v in vars(m).items():
            if torch.is_tensor(v) and not isinstance(v, nn.Parameter) and k not in derived:
                out.append((f"{path}.{k}" if path else k, v))
    return out
