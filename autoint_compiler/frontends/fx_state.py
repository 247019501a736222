"""Live module state for the torch.fx frontend.

Every tensor a traced module reads at call time — a parameter, a buffer, a tensor attribute, one reached
through ``named_parameters()`` or a dict of them, or anything computed from those (``B.T``, a weight-norm
``g·v/‖v‖``) — is a ``State``: a function of the user's module, re-evaluated on every call of the
compiled networks. ``LiveState`` installs them: a parameter is registered as the very same tensor (an
optimizer step on ``net.grad`` trains the user's module), a buffer as the very same buffer, a computed
tensor is recomputed before each forward from the live sources (which are registered as parameters, so
optimizers see them), and a tensor the user replaced (``module.B = new``) is picked up on the next call.
Python scalar attributes that ``forward`` read while tracing are recorded constants: a call after one of
them changed raises instead of silently using the old value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..core.names import safe_identifier
from ..errors import CompileError


def resolve(root: nn.Module, path: str) -> Any:
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(eq=False)
class State:
    """A tensor as a function of the (wrapped) user module: ``fn(root)``; ``value`` at trace time."""

    fn: Callable[[nn.Module], torch.Tensor]
    sources: tuple[str, ...]  # paths of the module tensors it reads
    value: Any
    text: str  # as the user would write it, for messages
    leaf: str | None = None  # the path, when the state is one module tensor read as is

    @property
    def constant(self) -> bool:
        return not self.sources


def leaf(root: nn.Module, path: str, text: str) -> State:
    return State(lambda m, p=path: resolve(m, p), (path,), resolve(root, path), text, leaf=path)


def constant(value: torch.Tensor, text: str) -> State:
    value = value.detach()
    return State(lambda m, v=value: v, (), value, text)


def _map(obj, f):
    if isinstance(obj, State):
        return f(obj)
    if isinstance(obj, (list, tuple)):
        items = [_map(o, f) for o in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    if isinstance(obj, dict):
        return {k: _map(v, f) for k, v in obj.items()}
    return obj


def states_in(obj) -> list[State]:
    found: list[State] = []
    _map(obj, lambda s: found.append(s) or s)
    return found


def apply(func, args, kwargs, text: str) -> State:
    """``func(*args, **kwargs)`` over states: a new state, recomputed from the live sources each call."""
    inner = states_in((args, kwargs))
    sources = tuple(dict.fromkeys(p for s in inner for p in s.sources))

    def fn(m):
        cache: dict[int, Any] = {}

        def ev(s):
            if id(s) not in cache:
                cache[id(s)] = s.fn(m)
            return cache[id(s)]

        return func(*_map(args, ev), **_map(kwargs, ev))

    with torch.no_grad():
        value = func(*_map(args, lambda s: s.value), **_map(kwargs, lambda s: s.value))
    return State(fn, sources, value, text)


def row(s: State) -> State:
    """A state used elementwise, as the weight [w, 1] of a one-column parameter (``wcol`` reads it)."""
    return apply(lambda t: t.reshape(-1, 1), (s,), {}, s.text)


# ---------------------------------------------------------------------------------------------------
# Installing states into the generated networks
# ---------------------------------------------------------------------------------------------------


@dataclass
class Recorded:
    """A Python scalar attribute ``forward`` read while tracing: its value is compiled in."""

    owner: Any
    name: str
    value: Any
    path: str


@dataclass(eq=False)
class LiveState:
    """The forward pre-hook of both generated networks: binds every state to its current tensor."""

    root: nn.Module
    bindings: dict[str, State]  # generated attribute -> state
    recorded: list[Recorded] = field(default_factory=list)
    display: Callable[[str], str] = str  # module path -> the user's name for it

    def check_recorded(self) -> None:
        for r in self.recorded:
            now = getattr(r.owner, r.name, None)
            if type(now) is not type(r.value) or now != r.value:
                raise CompileError(
                    f"module attribute {self.display(r.path)} was {r.value!r} when compile_module traced forward "
                    f"and is now {now!r}: the compiled networks use {r.value!r}; call compile_module again after "
                    "changing it"
                )

    def sources_of(self, s: State) -> list[tuple[str, nn.Parameter]]:
        out = []
        for p in s.sources:
            t = resolve(self.root, p)
            if isinstance(t, nn.Parameter):
                out.append(("_src_" + safe_identifier(self.display(p), default="t"), t))
        return out

    def set(self, net: nn.Module, attr: str, persistent_buffer: bool) -> None:
        s = self.bindings[attr]
        v = s.fn(self.root)
        if not torch.is_tensor(v):
            raise CompileError(f"module state {s.text} is no longer a tensor (it is {type(v).__name__})")
        if s.leaf is not None and isinstance(v, nn.Parameter):
            if net._parameters.get(attr) is not v:
                net.__dict__.pop(attr, None)
                net._buffers.pop(attr, None)
                net._parameters[attr] = v
            return
        net._parameters.pop(attr, None)
        if s.leaf is not None and not v.requires_grad and persistent_buffer:
            if net._buffers.get(attr) is not v:
                net.__dict__.pop(attr, None)
                net._buffers[attr] = v
            return
        net._buffers.pop(attr, None)
        net.__dict__[attr] = v
        for name, p in self.sources_of(s):  # optimizers see what a computed tensor is made of
            if net._parameters.get(name) is not p:
                net._parameters[name] = p

    def install(self, net: nn.Module, attrs: list[str], owner: bool) -> None:
        for attr in attrs:
            self.set(net, attr, persistent_buffer=owner)
        net.__dict__["_autoint_live_attrs"] = list(attrs)
        net.__dict__["_autoint_owner"] = owner
        net.register_forward_pre_hook(_pre_hook(self))

    def refresh(self, net: nn.Module) -> None:
        self.check_recorded()
        owner = net.__dict__.get("_autoint_owner", False)
        for attr in net.__dict__.get("_autoint_live_attrs", ()):
            self.set(net, attr, persistent_buffer=owner)


def _pre_hook(live: LiveState):
    def hook(module, args):
        live.refresh(module)

    return hook


def reads(net: nn.Module, attr: str) -> bool:
    """Does a generated network read ``attr`` (GradNet registers only what it reads)?"""
    return attr in net._parameters or attr in net._buffers or attr in net.__dict__
