"""The YAML network spec: loading (``yaml.safe_load`` only), schema validation (pydantic) and the
semantic checks a schema cannot express (references, cycles, integration variables).

Every problem becomes a ``SpecError`` that names the file, the field path (``mlp.hidden[1]``) and what
was expected.
"""

from __future__ import annotations

import math
import os
import re
import reprlib
from pathlib import Path
from typing import Any, Literal, Union

import networkx as nx
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from ..core.activations import ACTIVATIONS, FormulaError, parse_formula
from ..core.differentiate import MAX_TOTAL_ORDER, orders_problem
from ..core.formula import check_derivative_cost
from ..core.names import is_identifier, safe_identifier
from ..core.ops import OPS
from ..errors import SpecError

# ---------------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------------

# Budgets, checked before anything is built or allocated (documented in README "Limits").
MAX_WIDTH = 65536  # any layer, constant or encoding output
MAX_OCTAVES = 32  # positional-encoding frequencies (2^31 pi is still exact in float32)
MAX_W0 = 1e4  # sine frequency
MAX_ALPHA = 1e3  # |alpha| of elu
MAX_PARAMETERS = 2**27  # ~134M parameters: 0.5 GiB in float32, 1 GiB in float64
MAX_GRAPH_NODES = 10_000
MAX_SPEC_BYTES = 1_000_000  # a spec file or string
MAX_DEPTH = 64  # nesting of mappings and lists
MAX_ITEMS = 200_000  # scalars, mappings and lists, counted with every alias expanded
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.manual_seed accepts


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NamedActivation(_Strict):
    name: str
    w0: float | None = None
    alpha: float | None = None


class FormulaActivation(_Strict):
    formula: str


ActivationSpec = Union[str, NamedActivation, FormulaActivation]


def _check_activation(value: Any) -> Any:
    """Validate one activation entry; returns it normalised to a model."""
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ValueError(f"expected an activation name, {{name: ..., w0: ...}} or {{formula: '...'}}, got {value!r}")
    if "formula" in value:
        extra = sorted(set(value) - {"formula"})
        if extra:
            raise ValueError(f"unknown key {extra[0]!r} beside 'formula' (expected only formula)")
        try:
            parse_formula(value["formula"])
        except FormulaError as exc:
            raise ValueError(f"bad formula: {exc}") from None
        return FormulaActivation(formula=value["formula"])
    extra = sorted(set(value) - {"name", "w0", "alpha"})
    if extra:
        raise ValueError(f"unknown key {extra[0]!r} (expected name, w0, alpha or formula)")
    name = value.get("name")
    if not isinstance(name, str) or name not in ACTIVATIONS:
        known = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown activation {name!r}; expected one of: {known}; or {{formula: '...'}}")
    allowed = {p for p, _ in ACTIVATIONS[name].params}
    for key in ("w0", "alpha"):
        if key in value:
            if key not in allowed:
                raise ValueError(f"activation {name!r} takes no parameter {key!r}")
            v = value[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{key} must be a number, got {_short(v)}")
            problem = _param_problem(key, v)
            if problem:
                raise ValueError(problem)
    return NamedActivation(**{k: (float(v) if k != "name" else v) for k, v in value.items()})


def _param_problem(key: str, v: Any) -> str | None:
    """Range of an activation parameter (MLP and graph form alike), or ``None`` if it is fine."""
    if isinstance(v, int) and abs(v) > 10**18 or isinstance(v, float) and not math.isfinite(v):
        return f"{key} must be a finite number, got {_short(v)}"
    if key == "w0" and not 0 < v <= MAX_W0:
        return f"w0 must be > 0 and <= {MAX_W0:g}, got {_short(v)}"
    if key == "alpha" and not abs(v) <= MAX_ALPHA:
        return f"alpha must be between -{MAX_ALPHA:g} and {MAX_ALPHA:g}, got {_short(v)}"
    return None


class EncodingSpec(_Strict):
    inputs: list[str] = Field(min_length=1)
    frequencies: int | dict[str, int]  # one count for all inputs, or one per input
    include_input: bool = True

    @field_validator("frequencies")
    @classmethod
    def _frequencies(cls, v):
        for key, n in v.items() if isinstance(v, dict) else [(None, v)]:
            if not 1 <= n <= MAX_OCTAVES:
                where = f"[{key!r}]: " if key is not None else ""
                raise ValueError(f"{where}expected a number of octaves between 1 and {MAX_OCTAVES}, got {n}")
        return v

    def octaves(self, name: str) -> int:
        return self.frequencies[name] if isinstance(self.frequencies, dict) else self.frequencies


class MLPSpec(_Strict):
    hidden: list[int] = Field(min_length=1, max_length=256)
    activation: Any = Field(default="swish", validate_default=True)
    encoding: EncodingSpec | None = None
    skips: list[int] = Field(default_factory=list)
    bias: bool = True

    @field_validator("hidden")
    @classmethod
    def _widths(cls, v: list[int]) -> list[int]:
        for i, w in enumerate(v):
            if not 1 <= w <= MAX_WIDTH:
                raise ValueError(f"hidden[{i}]: expected a width between 1 and {MAX_WIDTH}, got {_short(w)}")
        return v

    @field_validator("activation", mode="before")
    @classmethod
    def _activation(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("expected at least one activation in the list")
            out = []
            for i, item in enumerate(v):
                try:
                    out.append(_check_activation(item))
                except ValueError as exc:
                    raise ValueError(f"[{i}]: {exc}") from None
            return out
        return _check_activation(v)


#: graph-node ops with their YAML attributes: name -> (required, optional-with-default). A graph op
#: named like an IR op lowers to that op (spec_build.py): its arity and width come from the core op
#: table (``core/ops.py``); activations and formulas are ``pointwise``.
GRAPH_OPS: dict[str, tuple[dict[str, type], dict[str, Any]]] = {
    "linear": ({"out": int}, {"bias": True}),
    "posenc": ({"frequencies": int}, {"include_input": True}),
    "add": ({}, {}),
    "sub": ({}, {}),
    "mul": ({}, {}),
    "scale": ({"value": float}, {}),
    "neg": ({}, {}),
    "sum": ({}, {}),
    "constant": ({"value": float}, {"out": 1}),
    "concat": ({}, {}),
    "slice": ({"start": int, "stop": int}, {}),
    "formula": ({"formula": str}, {}),
}
for _name, _row in ACTIVATIONS.items():
    GRAPH_OPS[_name] = ({}, {p: d for p, d in _row.params})

#: how many inputs each op takes, from the op table; one-input ops concatenate several inputs
BINARY_OPS = {op for op in GRAPH_OPS if op in OPS and OPS[op].arity == 2}
NULLARY_OPS = {op for op in GRAPH_OPS if op in OPS and OPS[op].arity == 0}


class GraphNode(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True, populate_by_name=True)
    name: str
    op: str
    inputs: list[str] = Field(default_factory=list, alias="in")




class NetworkSpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    inputs: dict[str, int] = Field(min_length=1)
    integrate: list[str] = Field(min_length=1)
    output: int | None = Field(default=None, ge=1, le=65536)
    mlp: MLPSpec | None = None
    graph: list[GraphNode] | None = None
    backend: Literal["torch", "triton"] = "torch"
    dtype: Literal["float32", "float64"] = "float32"
    precision: Literal["fp32", "tf32", "bf16", "fp16"] = "fp32"
    init: Literal["default", "siren", "xavier"] = "default"
    seed: int | None = Field(default=None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    _source: str = PrivateAttr(default="<dict>")  # where it was read from, for errors found later

    @property
    def source(self) -> str:
        return self._source

    @field_validator("integrate", mode="before")
    @classmethod
    def _expand_orders(cls, v: Any) -> Any:
        """``{t: 2, y: 1}`` is ``[t, t, y]``: the canonical, stored form lists each variable once per
        derivative (the order of the mixed partial does not matter for smooth networks)."""
        if not isinstance(v, dict):
            return v
        out: list = []
        for name, k in v.items():
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_TOTAL_ORDER:
                raise ValueError(f"order of {name!r} must be an integer from 1 to {MAX_TOTAL_ORDER}, got {k!r}")
            out += [name] * k
        return out

    @field_validator("integrate")
    @classmethod
    def _order_budget(cls, v: list[str]) -> list[str]:
        counts: dict[str, int] = {}
        for name in v:
            counts[name] = counts.get(name, 0) + 1
        if (problem := orders_problem(counts)) is not None:
            raise ValueError(problem)
        return v

    @property
    def orders(self) -> dict[str, int]:
        """Integration variable -> order, in first-appearance order."""
        out: dict[str, int] = {}
        for n in self.integrate:
            out[n] = out.get(n, 0) + 1
        return out

    @property
    def ident(self) -> str:
        """The spec name as a safe Python identifier (module and class prefix)."""
        return safe_identifier(self.name)

    def column_of(self, name: str) -> tuple[int, int]:
        start = 0
        for n, d in self.inputs.items():
            if n == name:
                return start, start + d
            start += d
        raise KeyError(name)

    def to_yaml(self) -> str:
        """The validated spec as YAML that loads back to the same spec (defaults filled in; a field
        left at None is left out, which is its default)."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False)


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------


def load_spec(spec: Any) -> NetworkSpec:
    """A validated ``NetworkSpec`` from a path, a YAML string, a dict or a ``NetworkSpec``."""
    if isinstance(spec, NetworkSpec):
        return spec
    source, data = _read(spec)
    return validate(data, source)


def _looks_like_path(spec: str) -> bool:
    if "\n" in spec or len(spec) > 4096:
        return False
    text = spec.strip()
    if text.lower().endswith((".yaml", ".yml")):
        return True
    try:  # a one-line string naming an existing file is that file (whatever its suffix)
        return bool(text) and not text.startswith(("{", "[")) and Path(text).is_file()
    except (OSError, ValueError):
        return False


def _read(spec: Any) -> tuple[str, Any]:
    if isinstance(spec, dict):
        return "<dict>", spec
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and _looks_like_path(spec)):
        from ..runtime import fileio

        path = Path(spec)
        try:
            raw = fileio.read_regular_file(path, MAX_SPEC_BYTES)
        except FileNotFoundError:
            raise SpecError(str(path), [("", "file not found")]) from None
        except fileio.UnsafeFileError as exc:
            why = str(exc).split(": ", 1)[-1]
            raise SpecError(str(path), [("", f"cannot read the spec: {why}")]) from None
        except OSError as exc:
            raise SpecError(str(path), [("", f"cannot read the file ({exc.__class__.__name__}: {exc})")]) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(str(path), [("", f"cannot read the file (not UTF-8: {exc.reason})")]) from None
        return str(path), _parse_yaml(text, str(path))
    if isinstance(spec, str):
        if len(spec) > MAX_SPEC_BYTES:
            raise SpecError("<string>", [("", f"spec text longer than {MAX_SPEC_BYTES} characters")])
        return "<string>", _parse_yaml(spec, "<string>")
    raise SpecError("<spec>", [("", f"expected a path, a YAML string or a dict, got {type(spec).__name__}")])


_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_INT_DIGITS = 40


class _HugeInt:
    """An integer literal too long to convert: :func:`_data_problems` reports it at its field path."""

    __slots__ = ("digits",)

    def __init__(self, digits: int):
        self.digits = digits

    def __repr__(self) -> str:
        return f"<integer of {self.digits} digits>"


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys (plain PyYAML keeps the last one silently),
    accepts merge keys (``<<: *base``; explicit keys override merged ones), reads ``3e1`` as a
    number (YAML 1.2; YAML 1.1 wants ``3.0e+1``) and refuses integers of more than 40 digits."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, f"a {type(key).__name__} cannot be a key", key_node.start_mark
                ) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_short(key)} (first on line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        text = str(node.value)
        digits = sum(ch.isalnum() for ch in text)
        if digits > _MAX_INT_DIGITS:  # never converted (quadratic); reported with its field path
            return _HugeInt(digits)
        return super().construct_yaml_int(node)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        depth = events = 0
        for event in yaml.parse(text, Loader=_StrictLoader):  # the parser does not recurse; the composer does
            events += 1
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    raise SpecError(
                        source,
                        [
                            (
                                "",
                                f"invalid YAML: line {mark.line + 1}, column {mark.column + 1}: "
                                f"nested deeper than {MAX_DEPTH} levels",
                            )
                        ],
                    )
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            if events > MAX_ITEMS:
                raise SpecError(source, [("", f"spec too large (over {MAX_ITEMS} YAML nodes)")])
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(source, [("", f"invalid YAML: {where}{problem}")]) from None
    except SpecError:
        raise
    except (ValueError, RecursionError, OverflowError) as exc:  # e.g. an int the constructor cannot hold
        raise SpecError(source, [("", f"invalid YAML: {_short(str(exc))}")]) from None


def _data_problems(data: Any) -> list[tuple[str, str]]:
    """Structure checks before the schema: depth, size with every alias expanded, self-reference,
    non-string keys, numbers that are not finite or do not fit 64 bits.

    Iterative (hostile input cannot recurse) and linear in the *distinct* containers: a container
    shared through YAML aliases is walked once, its expanded size and height memoised, so an alias
    bomb is measured without being expanded."""
    problems: list[tuple[str, str]] = []
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, str, int, bool]] = [(data, "", 0, False)]
    while stack:
        obj, path, depth, done = stack.pop()
        is_dict = isinstance(obj, dict)
        if not is_dict and not isinstance(obj, (list, tuple)):
            problem = _scalar_problem(obj)
            if problem:
                problems.append((path, problem))
                if len(problems) >= 20:
                    break
            continue
        oid = id(obj)
        children = list(obj.values()) if is_dict else list(obj)
        if done:
            on_path.discard(oid)
            total, h = 1, 0
            for c in children:
                if isinstance(c, (dict, list, tuple)):
                    total += size.get(id(c), 1)
                    h = max(h, height.get(id(c), 0) + 1)
                else:
                    total += 1
            size[oid], height[oid] = total, h
            if total > MAX_ITEMS:
                return [("", f"spec too large (over {MAX_ITEMS} values once aliases are expanded)")]
            if depth + h > MAX_DEPTH:
                return [(_short_path(path), f"nested deeper than {MAX_DEPTH} levels")]
            continue
        if oid in size:
            if depth + height[oid] > MAX_DEPTH:
                return [(_short_path(path), f"nested deeper than {MAX_DEPTH} levels")]
            continue
        if oid in on_path:
            return [(_short_path(path), "refers to itself (a recursive alias)")]
        if depth > MAX_DEPTH:
            return [(_short_path(path), f"nested deeper than {MAX_DEPTH} levels")]
        on_path.add(oid)
        stack.append((obj, path, depth, True))
        if is_dict:
            for key, value in obj.items():
                if not isinstance(key, str):
                    problems.append((path or "(top level)", f"key {_short(key)} is not a string (quote it)"))
                    continue
                stack.append((value, f"{path}.{key}" if path else key, depth + 1, False))
        else:
            for i, value in enumerate(obj):
                stack.append((value, f"{path}[{i}]", depth + 1, False))
    return problems


def _short_path(path: str) -> str:
    return path if len(path) <= 60 else path[:40] + "..."


def _scalar_problem(obj: Any) -> str | None:
    if isinstance(obj, bool):
        return None
    if isinstance(obj, _HugeInt):
        return f"integer of {obj.digits} digits is out of range"
    if isinstance(obj, int) and not SEED_RANGE[0] <= obj <= SEED_RANGE[1]:
        digits = len(str(abs(obj))) if obj.bit_length() < 14000 else "over 4000"
        return f"integer of {digits} digits is out of range"
    if isinstance(obj, float) and not math.isfinite(obj):
        return f"expected a finite number, got {obj}"
    return None


def validate(data: Any, source: str = "<dict>") -> NetworkSpec:
    if not isinstance(data, dict):
        raise SpecError(source, [("", f"expected a mapping at the top level, got {_kind(data)}")])
    problems = _data_problems(data)
    if problems:
        raise SpecError(source, problems)
    try:
        spec = NetworkSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, _describe_all(exc.errors(), data)) from None
    except (RecursionError, OverflowError, ValueError) as exc:  # pragma: no cover - guarded by _data_problems
        raise SpecError(source, [("", f"cannot validate the spec ({_short(str(exc))})")]) from None
    problems = _semantic_problems(spec)
    if problems:
        raise SpecError(source, problems)
    spec._source = source
    return spec


def _kind(v: Any) -> str:
    return {type(None): "nothing (empty document)", list: "a list", str: "a string"}.get(type(v), type(v).__name__)


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


_MESSAGES = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown key",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
}


def _describe_all(errors: list[dict], data: Any) -> list[tuple[str, str]]:
    """pydantic's errors as ``(field path, message)``, one per field: the type tags pydantic puts in
    the locations of a union's members (``int``, ``dict[str,int]``, ``EncodingSpec``) are dropped,
    the members' complaints about one field become one ("expected an integer or a mapping"), and a
    member whose container type fitted (its errors are deeper) speaks for the union."""
    described: list[tuple[str, str]] = []
    for err in errors:
        described.append(_describe({**err, "loc": _strip_tags(tuple(err["loc"]), data)}))
    paths = [p for p, _ in described]
    out: dict[str, list[str]] = {}
    for path, msg in described:
        deeper = any(q != path and (q.startswith(path + ".") or q.startswith(path + "[")) for q in paths)
        if deeper and msg.startswith("expected ") and path:  # a union member that did not fit at all
            continue
        if msg not in out.setdefault(path, []):
            out[path].append(msg)
    return [(path, _merge(msgs)) for path, msgs in out.items()]


def _merge(msgs: list[str]) -> str:
    if len(msgs) == 1:
        return msgs[0]
    heads, gots = zip(*(m.partition(", got ")[::2] for m in msgs))
    if all(h.startswith("expected ") for h in heads) and len(set(gots)) == 1:
        wants = list(dict.fromkeys(h[len("expected ") :] for h in heads))
        return "expected " + " or ".join(wants) + (f", got {gots[0]}" if gots[0] else "")
    return "; or ".join(msgs)


_TYPE_TAGS = {"int", "float", "str", "bool", "none", "list", "dict"}


def _strip_tags(loc: tuple, data: Any) -> tuple:
    """``loc`` without pydantic's union-member tags: a part is kept when it names a key or index of the
    data along the way (or, past the data, looks like a field name)."""
    out: list[Any] = []
    cur = data
    for part in loc:
        if isinstance(part, int):
            out.append(part)
            cur = cur[part] if isinstance(cur, list) and 0 <= part < len(cur) else None
        elif isinstance(cur, dict) and part in cur:
            out.append(part)
            cur = cur[part]
        elif part in _TYPE_TAGS or "[" in part or part[:1].isupper() or "-" in part:
            continue  # a union member's tag: the value stays where it is
        else:
            out.append(part)
            cur = None
    return tuple(out)


def _describe(err: dict) -> tuple[str, str]:
    loc = tuple(err["loc"])
    path = _path(loc)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = err.get("input")
    if kind == "extra_forbidden":
        parent_path, key = _path(loc[:-1]), loc[-1]
        allowed = _allowed_keys(loc[:-1])
        hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        return parent_path or "(top level)", f"unknown key {key!r}{hint}"
    if kind == "value_error":
        msg = str(ctx.get("error", err["msg"]))
        if msg.startswith("hidden["):  # the widths validator names the element itself
            idx, _, rest = msg.partition(": ")
            return f"{path}{idx[len('hidden') :]}", rest
        if msg.startswith("[") and "]: " in msg:
            idx, _, rest = msg.partition(": ")
            return f"{path}{idx}", rest
        return path, msg
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        op = {"greater_than_equal": ">=", "less_than_equal": "<=", "greater_than": ">", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()))
        return path, f"expected a value {op} {bound}, got {got!r}"
    if kind in ("string_too_long", "string_too_short"):  # strings: counted in characters
        text = _length_text(ctx, kind.replace("string_", "")).replace("item(s)", "character(s)")
        return path, f"expected {text}, got {len(got)} characters"
    if kind in ("too_short", "too_long"):
        return path, f"expected {_length_text(ctx, kind)}, got {len(got) if hasattr(got, '__len__') else _short(got)}"
    if kind == "literal_error":
        return path, f"expected {ctx.get('expected')}, got {got!r}"
    if kind == "missing":
        return path, "required field is missing"
    base = _MESSAGES.get(kind, err["msg"])
    return path, f"{base}, got {_short(got)}"


def _length_text(ctx: dict, kind: str) -> str:
    if kind == "too_short":
        return f"at least {ctx.get('min_length')} item(s)"
    return f"at most {ctx.get('max_length')} item(s)"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 40, 40


def _short(v: Any) -> str:
    """A bounded repr: reprlib never walks more than a few elements (a YAML alias bomb stays cheap)."""
    text = _REPR.repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys a mapping at ``loc`` accepts, by walking the schema models."""
    model: Any = NetworkSpec
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        ann = field.annotation
        candidates = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)]
        nxt = None
        for c in candidates:
            inner = getattr(c, "__args__", None)
            for t in (c, *(inner or ())):
                if isinstance(t, type) and issubclass(t, BaseModel):
                    nxt = t
        if nxt is None and hasattr(ann, "__args__"):
            for a in ann.__args__:
                for t in getattr(a, "__args__", ()):
                    if isinstance(t, type) and issubclass(t, BaseModel):
                        nxt = t
        if nxt is None:
            return []
        model = nxt
    return [f.alias or n for n, f in model.model_fields.items()]


# ---------------------------------------------------------------------------------------------------
# Semantic checks
# ---------------------------------------------------------------------------------------------------


def _semantic_problems(spec: NetworkSpec) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for name, dim in spec.inputs.items():
        if not is_identifier(name):
            problems.append((f"inputs.{name!r}", "expected an identifier (letters, digits, _; not a keyword)"))
        if not 1 <= dim <= 4096:
            problems.append((f"inputs.{name}", f"expected a dimension between 1 and 4096, got {dim}"))
    seen = set()
    for i, var in enumerate(spec.integrate):
        if var in seen:  # a repeated variable is a higher order (integrate: [t, t] = {t: 2})
            continue
        seen.add(var)
        if var not in spec.inputs:
            expected = ", ".join(spec.inputs)
            problems.append((f"integrate[{i}]", f"unknown input {var!r}; expected one of: {expected}"))
        elif spec.inputs[var] != 1:
            problems.append((f"integrate[{i}]", f"input {var!r} has dimension {spec.inputs[var]}; expected 1"))
    if (spec.mlp is None) == (spec.graph is None):
        problems.append(("", "expected exactly one of 'mlp' or 'graph'"))
        return problems
    if spec.mlp is not None:
        problems += _mlp_problems(spec)
    else:
        problems += _graph_problems(spec)
    if problems:
        return problems
    problems += _budget_problems(spec)
    problems += _formula_cost_problems(spec)
    return problems


def _formula_cost_problems(spec: NetworkSpec) -> list[tuple[str, str]]:
    """Each formula's derivatives up to the integration order must stay small (compile time)."""
    order = len(spec.integrate)
    found: list[tuple[str, str]] = []
    if spec.mlp is not None:
        acts = spec.mlp.activation if isinstance(spec.mlp.activation, list) else [spec.mlp.activation]
        for i, act in enumerate(acts):
            if isinstance(act, FormulaActivation):
                where = "mlp.activation" + (f"[{i}]" if isinstance(spec.mlp.activation, list) else "")
                found.append((where, act.formula))
    else:
        for i, node in enumerate(spec.graph or []):
            if node.op == "formula":
                found.append((f"graph[{i}].formula", node_attrs(node)["formula"]))
    problems = []
    for where, text in found:
        try:
            check_derivative_cost(parse_formula(text), order)
        except FormulaError as exc:
            problems.append((where, f"bad formula: {exc}"))
    return problems


def parameter_count(spec: NetworkSpec) -> tuple[int, int]:
    """``(parameters, widest layer)`` of a validated spec, computed from the spec alone (nothing is
    built): the budget :data:`MAX_PARAMETERS` is checked against it before anything is allocated."""
    if spec.mlp is not None:
        mlp = spec.mlp
        enc = mlp.encoding
        width_in = 0
        for name, dim in spec.inputs.items():
            if enc is not None and name in enc.inputs:
                width_in += dim * (2 * enc.octaves(name) + (1 if enc.include_input else 0))
            else:
                width_in += dim
        total, prev, widest = 0, width_in, width_in
        for i, h in enumerate(mlp.hidden):
            fan_in = prev + (width_in if i in mlp.skips else 0)
            total += fan_in * h + (h if mlp.bias else 0)
            prev, widest = h, max(widest, h, fan_in)
        out = spec.output or 1
        total += prev * out + (out if mlp.bias else 0)
        return total, widest
    widths = dict(spec.inputs)
    total = widest = 0
    for node in spec.graph or []:
        a = node_attrs(node)
        w_in = sum(widths.get(r, 0) for r in node.inputs)
        w = _width(node.op, [widths.get(r, 0) for r in node.inputs], a)
        if node.op == "linear":
            total += w_in * w + (w if a.get("bias", True) else 0)
        widths[node.name] = w
        widest = max(widest, w, w_in)
    return total, widest


def _width(op: str, widths: list[int], a: dict[str, Any]) -> int:
    """A graph node's width by its IR op's width rule (``core/ops.py``), its YAML attributes read as
    the op's; an activation or formula keeps its (concatenated) input's width."""
    if op not in OPS:
        return sum(widths)
    if op in BINARY_OPS:  # broadcasting width 1 (a mismatch is reported when the graph is built)
        return max(widths, default=0)
    ir_attrs = {
        "linear": lambda: {"out": int(a["out"])},
        "posenc": lambda: {"freqs": (1.0,) * int(a["frequencies"]), "include_input": a.get("include_input", True)},
        "constant": lambda: {"value": (0.0,) * int(a.get("out", 1))},
    }.get(op, lambda: a)()
    return max(0, OPS[op].width([] if op in NULLARY_OPS else [sum(widths)], ir_attrs))


def _budget_problems(spec: NetworkSpec) -> list[tuple[str, str]]:
    params, widest = parameter_count(spec)
    where = "mlp" if spec.mlp is not None else "graph"
    if widest > MAX_WIDTH:
        return [
            (where, f"a layer would be {widest} wide (at most {MAX_WIDTH}, including encodings and concatenations)")
        ]
    if params > MAX_PARAMETERS:
        return [
            (
                where,
                f"the network would have {params:,} parameters (at most {MAX_PARAMETERS:,}: "
                f"{MAX_PARAMETERS * 4 / 2**30:.1f} GiB in float32)",
            )
        ]
    return []


def _mlp_problems(spec: NetworkSpec) -> list[tuple[str, str]]:
    mlp = spec.mlp
    problems = []
    if spec.output is None:
        problems.append(("output", "required field is missing (the MLP's output width)"))
    if isinstance(mlp.activation, list) and len(mlp.activation) != len(mlp.hidden):
        n, got = len(mlp.hidden), len(mlp.activation)
        problems.append(("mlp.activation", f"expected one activation per hidden layer ({n}), got {got}"))
    if mlp.encoding is not None:
        for i, name in enumerate(mlp.encoding.inputs):
            if name not in spec.inputs:
                expected = ", ".join(spec.inputs)
                problems.append((f"mlp.encoding.inputs[{i}]", f"unknown input {name!r}; expected one of: {expected}"))
        if len(set(mlp.encoding.inputs)) != len(mlp.encoding.inputs):
            problems.append(("mlp.encoding.inputs", "an input is listed twice"))
        if isinstance(mlp.encoding.frequencies, dict):
            listed = set(mlp.encoding.inputs)
            for key in mlp.encoding.frequencies:
                if key not in listed:
                    problems.append((f"mlp.encoding.frequencies.{key}", f"{key!r} is not in encoding.inputs"))
            for name in mlp.encoding.inputs:
                if name not in mlp.encoding.frequencies:
                    problems.append(("mlp.encoding.frequencies", f"missing the number of octaves for {name!r}"))
    for i, s in enumerate(mlp.skips):
        if len(mlp.hidden) == 1:
            problems.append((f"mlp.skips[{i}]", "no skip is possible with a single hidden layer"))
        elif not 1 <= s < len(mlp.hidden):
            last = len(mlp.hidden) - 1
            problems.append((f"mlp.skips[{i}]", f"expected a hidden layer index between 1 and {last}, got {s}"))
    if len(set(mlp.skips)) != len(mlp.skips):
        problems.append(("mlp.skips", "a layer is listed twice"))
    return problems


def _graph_problems(spec: NetworkSpec) -> list[tuple[str, str]]:
    problems = []
    nodes = spec.graph
    if not nodes:
        return [("graph", "expected at least one node")]
    if len(nodes) > MAX_GRAPH_NODES:
        return [("graph", f"expected at most {MAX_GRAPH_NODES} nodes, got {len(nodes)}")]
    names: dict[str, int] = {}
    for i, node in enumerate(nodes):
        where = f"graph[{i}]"
        if not is_identifier(node.name):
            msg = f"expected an identifier (letters, digits, _), got {_short(node.name)}"
            problems.append((f"{where}.name", msg))
        elif node.name.startswith("__"):
            msg = f"expected a name not starting with '__' (Python mangles those), got {node.name!r}"
            problems.append((f"{where}.name", msg))
        if node.name in spec.inputs:
            problems.append((f"{where}.name", f"{node.name!r} is already an input name"))
        if node.name in names:
            first = names[node.name]
            problems.append((f"{where}.name", f"duplicate node name {node.name!r} (first at graph[{first}])"))
        names.setdefault(node.name, i)
        if node.op not in GRAPH_OPS:
            problems.append((f"{where}.op", f"unknown op {node.op!r}; expected one of: {', '.join(sorted(GRAPH_OPS))}"))
            continue
        problems += _attr_problems(node, where)
        n_in = len(node.inputs)
        if node.op in NULLARY_OPS and n_in:
            problems.append((f"{where}.in", f"op {node.op!r} takes no inputs, got {n_in}"))
        elif node.op in BINARY_OPS and n_in != 2:
            problems.append((f"{where}.in", f"op {node.op!r} takes exactly 2 inputs, got {n_in}"))
        elif node.op not in NULLARY_OPS and n_in == 0:
            problems.append((f"{where}.in", f"op {node.op!r} needs at least one input"))
    if problems:
        return problems
    g = nx.DiGraph()
    g.add_nodes_from(n.name for n in nodes)
    for i, node in enumerate(nodes):
        for j, ref in enumerate(node.inputs):
            if ref in spec.inputs:
                continue
            if ref not in names:
                known = ", ".join(list(spec.inputs) + [n.name for n in nodes])
                msg = f"unknown reference {ref!r}; expected an input or node name ({known})"
                problems.append((f"graph[{i}].in[{j}]", msg))
            else:
                g.add_edge(ref, node.name)
    if problems:
        return problems
    try:
        cycle = nx.find_cycle(g)
        path = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
        return [("graph", f"the nodes form a cycle: {path}")]
    except nx.NetworkXNoCycle:
        pass
    last = nodes[-1].name
    live = nx.ancestors(g, last) | {last}
    for i, node in enumerate(nodes):
        if node.name not in live:
            msg = f"node {node.name!r} does not contribute to the output (the last node, {last!r}); remove it"
            problems.append((f"graph[{i}]", msg))
    if problems:
        return problems
    used_inputs = {r for n in nodes for r in n.inputs}
    for var in spec.integrate:
        if var not in used_inputs:
            problems.append(("integrate", f"integration variable {var!r} is not used by any graph node"))
    if not problems:
        for name in spec.inputs:
            if name not in used_inputs:  # the compiler cannot yet carry an input column nothing reads
                problems.append((f"inputs.{name}", f"input {name!r} is not used by any graph node"))
    return problems


def _attr_problems(node: GraphNode, where: str) -> list[tuple[str, str]]:
    required, optional = GRAPH_OPS[node.op]
    attrs = dict(node.model_extra or {})
    problems = []
    for key in sorted(attrs):
        if key not in required and key not in optional:
            allowed = ", ".join(["name", "op", "in", *required, *optional])
            problems.append((f"{where}.{key}", f"unknown key for op {node.op!r}; expected one of: {allowed}"))
    for key, typ in required.items():
        if key not in attrs:
            problems.append((f"{where}.{key}", f"required for op {node.op!r} ({_type_name(typ)})"))
    for key, value in attrs.items():
        typ = required.get(key) or (type(optional[key]) if key in optional else None)
        if typ is None:
            continue
        if not _type_ok(value, typ):
            problems.append((f"{where}.{key}", f"expected {_type_name(typ)}, got {_short(value)}"))
        elif key == "out" and not 1 <= value <= MAX_WIDTH:
            problems.append((f"{where}.{key}", f"expected a width between 1 and {MAX_WIDTH}, got {_short(value)}"))
        elif key == "frequencies" and not 1 <= value <= MAX_OCTAVES:
            msg = f"expected a number of octaves between 1 and {MAX_OCTAVES}, got {_short(value)}"
            problems.append((f"{where}.{key}", msg))
        elif key in ("start", "stop") and not 0 <= value <= MAX_WIDTH:
            problems.append((f"{where}.{key}", f"expected an index between 0 and {MAX_WIDTH}, got {_short(value)}"))
        elif key in ("w0", "alpha") and (problem := _param_problem(key, value)):
            problems.append(
                (
                    f"{where}.{key}",
                    problem.split(", got")[0].replace(f"{key} must be", "expected a number") + f", got {_short(value)}",
                )
            )
        elif key == "value" and not math.isfinite(float(value)):
            problems.append((f"{where}.{key}", f"expected a finite number, got {_short(value)}"))
        elif key == "formula":
            try:
                parse_formula(value)
            except FormulaError as exc:
                problems.append((f"{where}.formula", f"bad formula: {exc}"))
    return problems


def _type_ok(value: Any, typ: type) -> bool:
    if typ is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typ)


def _type_name(typ: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[typ]


def node_attrs(node: GraphNode) -> dict[str, Any]:
    """A graph node's op attributes with the defaults filled in."""
    required, optional = GRAPH_OPS[node.op]
    out = dict(optional)
    out.update(node.model_extra or {})
    return out
