"""Resumable training runs: a run directory with the resolved spec, the config, periodic checkpoints.

Layout of ``TrainConfig(run_dir=DIR, checkpoint_every=K, keep_checkpoints=M)``::

    DIR/spec.yaml                                 the validated spec, defaults filled in
    DIR/config.json                               the TrainConfig, world size, torch version
    DIR/log.jsonl                                 one line per checkpoint: step, mean loss, seconds
    DIR/checkpoints/step-00000100.safetensors     every K steps and at the end; the last M are kept

A checkpoint is one safetensors file (so one atomic rename commits all of it): the network's
parameters (loadable with :func:`autoint_compiler.runtime.checkpoint.load_checkpoint`) plus the training
state under ``__train__/``: Adam's moments and step counts, every rank's generator and torch RNG
states, every rank's per-step losses so far. ``resume=True`` loads the newest checkpoint that reads
back and continues from its step; parameters, optimizer and RNG are restored exactly, so on CPU the
resumed run reaches **bit-identical** parameters to an uninterrupted one (tested). A run killed at
any moment -- even while writing a checkpoint -- loses at most the steps since the last completed
checkpoint: files are written to a temporary name, fsync'ed and renamed, and the temporary files a
``SIGKILL`` leaves behind are removed when the run is opened again (and by the next save of the file).

Opening checks everything before it writes anything (a refused resume leaves the folder as it was);
a damaged newest checkpoint is set aside as ``<name>.corrupt`` and the run resumes from the newest
one that reads back, with a note on stderr.

Only rank 0 writes; every rank reads the checkpoint when resuming (a shared filesystem, as usual
for ``torchrun`` on one machine).
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from . import distributed, fileio
from .checkpoint import (
    FORMAT,
    MAX_CHECKPOINT_BYTES,
    TRAIN_PREFIX,
    CheckpointError,
    _read,
    _size_bound,
    accepted_hashes,
    check_fits,
    checkpoint_problem,
    copy_into,
    read_metadata,
    save_checkpoint,
)

__all__ = ["RunDir", "CHECKPOINT_PATTERN", "list_checkpoints", "latest_checkpoint"]

CHECKPOINT_PATTERN = re.compile(r"^step-(\d{8,})\.safetensors$")
#: TrainConfig fields that must match to resume a run (the others -- progress, threads, device --
#: do not change the result on one device)
#: the largest log.jsonl read (one short line per checkpoint)
MAX_LOG_BYTES = 64 * 2**20
RESUME_KEYS = ("steps", "lr", "batch_size", "seed", "lr_schedule", "lr_min_factor", "grad_clip", "weight_decay")


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the run's checkpoints, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        m = CHECKPOINT_PATTERN.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    """The newest checkpoint whose header reads back and whose size is what the header declares (a
    corrupt or truncated one is skipped), or ``None``."""
    for step, path in reversed(list_checkpoints(run_dir)):
        if checkpoint_problem(path) is not None:
            continue
        try:
            meta = read_metadata(path)
        except CheckpointError:  # pragma: no cover - replaced between the two reads
            continue
        if meta.get("run_step") == str(step):
            return step, path
    return None


def _config_dict(cfg: Any) -> dict[str, Any]:
    d = asdict(cfg)
    return {k: v for k, v in d.items() if k not in ("run_dir",)}


def _spec_yaml(net: Any) -> str:
    """The YAML spec the network was compiled from (its frontend left it in ``program.meta``), or ""
    for a network from another frontend (a traced nn.Module)."""
    program = getattr(net, "program", None)
    return program.meta.get("spec_yaml", "") if program is not None else ""


def _to_u8(b: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(b), dtype=torch.uint8).clone() if b else torch.zeros(0, dtype=torch.uint8)


class RunDir:
    """The run directory of one :func:`autoint_compiler.runtime.train.train` call (see the module docstring)."""

    def __init__(self, path: str | Path, net: Any, cfg: Any):
        self.path = Path(path)
        self.ckpt_dir = self.path / "checkpoints"
        self.net = net
        self.cfg = cfg
        self.main = distributed.is_main()
        self.world = distributed.world_size()
        self._t0 = time.perf_counter()
        self._last_step = 0
        self.prior_s = 0.0  # training seconds of the sessions before this one (from the checkpoint)
        self.lr_factor = 1.0  # the divergence guard's learning-rate factor (saved, restored)
        self.final_train_s: float | None = None

    @property
    def train_s(self) -> float:
        """Training seconds so far, over every session of the run (at the final checkpoint: as saved)."""
        if self.final_train_s is not None:
            return self.final_train_s
        return self.prior_s + time.perf_counter() - self._t0

    def _saving_train_s(self, step: int) -> float:
        value = self.prior_s + time.perf_counter() - self._t0
        if step >= int(self.cfg.steps):
            self.final_train_s = value  # what the run reports is what the checkpoint says
        return value

    # ------------------------------------------------------------------ opening

    def open(self, resume: bool) -> tuple[int, Path] | None:
        """Create or reopen the directory; returns the checkpoint to resume from (or ``None``).

        Everything is checked before anything is written: a refused open (a different spec or
        config, another world size, a file in the way) leaves the directory exactly as it was.
        Resuming takes the newest checkpoint that reads back whole and whose every metadata field
        is valid; newer damaged ones are set aside as ``<name>.corrupt`` (never deleted) and a note
        says so on stderr."""
        self.notes: list[str] = []
        self._loaded = None
        self._check_layout()
        entries = list_checkpoints(self.path)
        if entries and not resume:
            raise CheckpointError(
                f"run directory {self.path}: already holds checkpoints (newest: {entries[-1][1].name}); "
                "pass resume=True (--resume) to continue it, or choose another directory"
            )
        found = None
        damaged: list[tuple[int, Path, str]] = []
        if resume:
            for step, path in reversed(entries):
                try:
                    self._loaded = self._read_checkpoint(step, path)
                except _Damaged as exc:
                    damaged.append((step, path, str(exc)))
                    continue
                found = (step, path)
                break
            if entries and found is None:
                raise CheckpointError(
                    f"run directory {self.path}: none of its {len(entries)} checkpoint(s) reads back "
                    f"(newest: {damaged[0][2]}); move the folder away to start again"
                )
        log = self._read_log()
        distributed.barrier()  # every rank has looked before rank 0 changes anything
        if self.main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            fileio.remove_stale_temps(self.ckpt_dir, "step-*")  # only this module's files: the
            for own in ("spec.yaml", "config.json", "log.jsonl"):  # folder may hold a user's others
                fileio.remove_stale_temps(self.path, own)
            for _step, path, why in damaged:  # all newer than the resume point: set aside, not deleted
                kept = path.with_name(path.name + ".corrupt")
                path.replace(kept)
                self.notes.append(
                    f"note: {why.split(': ', 1)[-1]}; resuming from {found[1].name}, the damaged file is "
                    f"kept as {kept.name}"
                )
            fileio.atomic_write_text(self.path / "spec.yaml", _spec_yaml(self.net))
            info = {"config": _config_dict(self.cfg), "world_size": self.world, "torch": torch.__version__}
            fileio.atomic_write_text(self.path / "config.json", json.dumps(info, indent=2, default=str) + "\n")
            self._trim_log(log, found[0] if found else 0)
            for note in self.notes:
                print(f"run directory {self.path}: {note}", file=sys.stderr)
        distributed.barrier()
        return found

    def _check_layout(self) -> None:
        """Refuse, before any write, a run folder whose own paths are taken by something else."""
        if self.path.exists() and not self.path.is_dir():
            raise CheckpointError(f"run directory {self.path}: exists and is not a directory")
        if self.ckpt_dir.exists() and not self.ckpt_dir.is_dir():
            raise CheckpointError(f"run directory {self.path}: {self.ckpt_dir.name} exists and is not a directory")
        for own in ("spec.yaml", "config.json", "log.jsonl"):
            p = self.path / own
            if p.exists() and not p.is_file():  # (a dangling symlink is written through: it creates its target)
                raise CheckpointError(f"run directory {self.path}: {own} exists and is not a regular file")

    def _read_log(self) -> str:
        log = self.path / "log.jsonl"
        if not log.is_file():
            return ""
        try:
            raw = fileio.read_regular_file(log, MAX_LOG_BYTES)
        except OSError as exc:
            raise CheckpointError(f"run directory {self.path}: cannot read log.jsonl ({exc})") from None
        return raw.decode("utf-8", errors="replace")

    def _bound(self) -> int:
        """The most bytes a checkpoint of this run can need: the network's bound (parameters and Adam's
        two moments), the losses of every rank, and every rank's RNG states."""
        return min(MAX_CHECKPOINT_BYTES, _size_bound(self.net) + 8 * self.cfg.steps * self.world + self.world * 2**20)

    def _read_checkpoint(self, step: int, path: Path) -> "_Loaded":
        """Read ``path`` whole (bounded) and check every field against this run: a mismatch of spec,
        config or world size is a :class:`CheckpointError` (the resume is refused); anything else
        wrong with the file is :class:`_Damaged` (the caller falls back to an older checkpoint)."""
        try:
            tensors, meta = _read(path, self._bound())
        except CheckpointError as exc:
            raise _Damaged(str(exc)) from None
        if meta.get("format") == FORMAT and meta.get("spec_hash") not in accepted_hashes(self.net):
            raise CheckpointError(
                f"run directory {self.path}: cannot resume with a different spec: spec hash mismatch (the "
                f"run's checkpoint {path.name} is of spec {_short(meta.get('spec_name'))} with hash "
                f"{_short(meta.get('spec_hash'))}, "
                f"this network {_short(getattr(self.net, 'name', '?'))} has hash {self.net.spec_hash}); "
                "choose another run directory"
            )
        try:
            model = check_fits(path, tensors, meta, self.net)
        except CheckpointError as exc:
            raise _Damaged(str(exc)) from None
        fields = _run_metadata(path, meta, step)
        self._check_config(path, fields)
        train = {k[len(TRAIN_PREFIX) :]: v for k, v in tensors.items() if k.startswith(TRAIN_PREFIX)}
        _check_train_tensors(path, train, self.net, step, self.world)
        return _Loaded(path, step, model, train, fields["optim_param_groups"], fields["run_train_s"],
                       fields["run_lr_factor"])  # fmt: skip

    def _check_config(self, path: Path, fields: dict[str, Any]) -> None:
        saved, now = fields["run_config"], _config_dict(self.cfg)
        diff = [k for k in RESUME_KEYS if k in saved and saved[k] != now.get(k)]
        if diff:
            k = diff[0]
            raise CheckpointError(
                f"run directory {self.path}: cannot resume with a different {k} "
                f"(the run has {_short(saved[k])}, this config {now.get(k)!r})"
            )
        if fields["run_step"] > self.cfg.steps:
            raise _Damaged(f"checkpoint {path}: step {fields['run_step']} is past the run's {self.cfg.steps} steps")
        if fields["run_world_size"] != self.world:
            raise CheckpointError(
                f"run directory {self.path}: the run was trained on {fields['run_world_size']} rank(s); resume "
                f"it with the same number (got {self.world})"
            )

    def _trim_log(self, text: str, step: int) -> None:
        log = self.path / "log.jsonl"
        if not text and not log.is_file():
            return
        keep = []
        for line in text.splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (ValueError, KeyError, TypeError, RecursionError):
                continue
        fileio.atomic_write_text(log, "".join(k + "\n" for k in keep))

    # ------------------------------------------------------------------ save / restore

    def save(self, step: int, opt: torch.optim.Optimizer, gen: torch.Generator, losses: torch.Tensor) -> None:
        """Checkpoint after ``step`` steps (a collective: every rank calls it, rank 0 writes)."""
        rng = {
            "gen": gen.get_state().cpu().numpy().tobytes(),
            "torch": torch.get_rng_state().numpy().tobytes(),
        }
        if gen.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(gen.device).numpy().tobytes()
        mine = json.dumps({k: v.hex() for k, v in rng.items()}).encode()
        all_rng = distributed.gather_bytes(mine)
        all_losses = distributed.gather_bytes(losses[:step].detach().cpu().numpy().tobytes())
        if not self.main:
            return
        tensors: dict[str, torch.Tensor] = {}
        state = opt.state_dict()
        for idx, pstate in state["state"].items():
            for key, value in pstate.items():
                t = value if torch.is_tensor(value) else torch.tensor(value)
                tensors[f"optim.{idx}.{key}"] = t
        for r, blob in enumerate(all_rng):
            for key, hexed in json.loads(blob).items():
                tensors[f"rng.{r}.{key}"] = _to_u8(bytes.fromhex(hexed))
        for r, blob in enumerate(all_losses):
            tensors[f"losses.{r}"] = (
                torch.frombuffer(bytearray(blob), dtype=torch.float64).clone()
                if blob
                else (torch.zeros(0, dtype=torch.float64))
            )
        extra = {
            "run_step": step,
            "run_world_size": self.world,
            "run_config": json.dumps({k: _config_dict(self.cfg)[k] for k in RESUME_KEYS}, sort_keys=True),
            "optim_param_groups": json.dumps(state["param_groups"]),
            "run_train_s": f"{self._saving_train_s(step):.3f}",
            "run_lr_factor": repr(self.lr_factor),
        }
        path = self.ckpt_dir / f"step-{step:08d}.safetensors"
        save_checkpoint(path, self.net, extra=extra, extra_tensors=tensors)
        self._log(step, losses)
        keep = max(1, int(self.cfg.keep_checkpoints))
        for _, old in list_checkpoints(self.path)[:-keep]:
            try:
                old.unlink()
            except FileNotFoundError:  # pragma: no cover
                pass

    def _log(self, step: int, losses: torch.Tensor) -> None:
        window = losses[self._last_step : step]
        entry = {
            "step": step,
            "loss": float(window.mean()) if window.numel() else None,
            "seconds": round(time.perf_counter() - self._t0, 3),
        }
        self._last_step = step
        log = self.path / "log.jsonl"
        fileio.atomic_write_text(log, self._read_log() + json.dumps(entry) + "\n")

    def restore(self, path: Path, opt: torch.optim.Optimizer, gen: torch.Generator, losses: torch.Tensor) -> int:
        """Load parameters, optimizer, RNG states and losses from ``path`` (read and checked by
        :meth:`open`); returns its step. Nothing is changed unless all of it fits."""
        loaded = self._loaded if self._loaded is not None and self._loaded.path == path else None
        if loaded is None:
            step = int(CHECKPOINT_PATTERN.match(path.name).group(1))
            try:
                loaded = self._read_checkpoint(step, path)
            except _Damaged as exc:
                raise CheckpointError(str(exc)) from None
        self._loaded = None
        step, extra, r = loaded.step, loaded.train, distributed.rank()
        if step > losses.numel():
            raise CheckpointError(f"checkpoint {path}: step {step} is past the run's {losses.numel()} steps")
        groups = _matching_groups(path, loaded.groups, opt)
        state: dict[int, dict[str, Any]] = {}
        for key, value in extra.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        saved_opt = opt.state_dict()
        saved_gen, saved_rng = gen.get_state(), torch.get_rng_state()
        try:
            opt.load_state_dict({"state": state, "param_groups": groups})
            gen.set_state(extra[f"rng.{r}.gen"])
            torch.set_rng_state(extra[f"rng.{r}.torch"])
            if gen.device.type == "cuda" and f"rng.{r}.cuda" in extra:
                torch.cuda.set_rng_state(extra[f"rng.{r}.cuda"], gen.device)
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            opt.load_state_dict(saved_opt)
            gen.set_state(saved_gen)
            torch.set_rng_state(saved_rng)
            raise CheckpointError(f"checkpoint {path}: training state does not fit ({_short(str(exc))})") from None
        copy_into(self.net, loaded.model)
        losses[:step] = extra[f"losses.{r}"].to(losses.device)
        self._last_step = step
        self.prior_s, self.lr_factor = loaded.train_s, loaded.lr_factor
        self._t0 = time.perf_counter()
        return step


# ---------------------------------------------------------------------------------------------------
# checking a run checkpoint's metadata and training state
# ---------------------------------------------------------------------------------------------------


class _Damaged(CheckpointError):
    """A checkpoint that does not read back, or whose fields are malformed (not a mismatch)."""


@dataclass
class _Loaded:
    path: Path
    step: int
    model: dict[str, torch.Tensor]
    train: dict[str, torch.Tensor]
    groups: list[dict[str, Any]]
    train_s: float = 0.0  # cumulative training seconds of the sessions before (optional field)
    lr_factor: float = 1.0  # the divergence guard's learning-rate factor (optional field)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_field(path: Path, meta: dict[str, str], key: str, kind: type, what: str) -> Any:
    if key not in meta:
        raise _Damaged(f"checkpoint {path}: metadata field {key!r} is missing")
    try:
        value = json.loads(meta[key])
    except (ValueError, RecursionError):
        raise _Damaged(f"checkpoint {path}: metadata field {key!r} is not JSON (expected {what})") from None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _Damaged(f"checkpoint {path}: metadata field {key!r} is {_short(value)}, expected {what}")
    return value


def _run_metadata(path: Path, meta: dict[str, str], step: int) -> dict[str, Any]:
    """Every run field of a checkpoint's metadata, parsed and checked (:class:`_Damaged` if not)."""
    out: dict[str, Any] = {}
    for key, lo, hi in (("run_step", 0, 10**12), ("run_world_size", 1, 2**16)):
        text = meta.get(key)
        if text is None:
            raise _Damaged(f"checkpoint {path}: metadata field {key!r} is missing")
        if not (text.isascii() and text.isdigit() and len(text) <= 13 and lo <= int(text) <= hi):
            raise _Damaged(f"checkpoint {path}: metadata field {key!r} is {_short(text)}, expected an integer "
                           f"from {lo} to {hi}")  # fmt: skip
        out[key] = int(text)
    if out["run_step"] != step:
        raise _Damaged(f"checkpoint {path}: metadata says step {out['run_step']}, its name step {step}")
    config = _json_field(path, meta, "run_config", dict, "a JSON object")
    for k in RESUME_KEYS:
        if k in config and not (config[k] is None or isinstance(config[k], (int, float, str))):
            raise _Damaged(f"checkpoint {path}: run_config[{k!r}] is {_short(config[k])}, expected a number or string")
    out["run_config"] = config
    groups = _json_field(path, meta, "optim_param_groups", list, "a JSON list of parameter groups")
    if not groups or not all(
        isinstance(g, dict)
        and isinstance(g.get("params"), list)
        and all(type(i) is int and i >= 0 for i in g["params"])
        and all(isinstance(k, str) for k in g)
        for g in groups
    ):
        raise _Damaged(f"checkpoint {path}: metadata field 'optim_param_groups' is not a list of parameter groups")
    for g in groups:
        for k, v in g.items():
            if k != "params" and not _setting_ok(v):
                raise _Damaged(
                    f"checkpoint {path}: metadata field 'optim_param_groups': setting {k[:40]!r} is {_short(v)}, "
                    "expected a number"
                )
    out["optim_param_groups"] = groups
    for key, default, lo, hi in (("run_train_s", 0.0, 0.0, 1e9), ("run_lr_factor", 1.0, 1e-12, 1.0)):
        text = meta.get(key)  # optional: checkpoints written before these fields existed
        try:
            value = default if text is None else float(text)
        except ValueError:
            value = float("nan")
        if not lo <= value <= hi:  # NaN fails too
            raise _Damaged(f"checkpoint {path}: metadata field {key!r} is {_short(text)}, expected a number "
                           f"from {lo:g} to {hi:g}")  # fmt: skip
        out[key] = value
    return out


def _setting_ok(v: Any, depth: int = 0) -> bool:
    """An optimizer setting as JSON holds it: a finite number, a flag, null, or a short list of numbers."""
    if v is None or isinstance(v, bool):
        return True
    if isinstance(v, (int, float)):
        return math.isfinite(v)
    if isinstance(v, list) and depth == 0 and len(v) <= 8:
        return all(_setting_ok(x, 1) and not isinstance(x, list) for x in v)
    return False


_ADAM_STATE = {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}


def _check_train_tensors(path: Path, train: dict[str, torch.Tensor], net: Any, step: int, world: int) -> None:
    """Names, shapes and dtypes of the training state against the network and the run."""
    module = net.integral if hasattr(net, "integral") else net
    shapes = [tuple(p.shape) for p in module.parameters()]
    for key, value in train.items():
        if key.startswith("optim."):
            parts = key.split(".", 2)
            ok = len(parts) == 3 and parts[1].isdigit() and int(parts[1]) < len(shapes) and parts[2] in _ADAM_STATE
            if ok and parts[2] == "step":
                ok = value.numel() == 1 and value.is_floating_point()
            elif ok:
                ok = tuple(value.shape) == shapes[int(parts[1])] and value.is_floating_point()
            if not ok:
                raise _Damaged(f"checkpoint {path}: optimizer state {key[:60]!r} does not fit the network")
    for r in range(world):
        for name in ("gen", "torch"):
            t = train.get(f"rng.{r}.{name}")
            if t is None or t.dtype != torch.uint8 or t.dim() != 1:
                raise _Damaged(f"checkpoint {path}: RNG state rng.{r}.{name} is missing or malformed")
        t = train.get(f"losses.{r}")
        if t is None or t.dtype != torch.float64 or tuple(t.shape) != (step,):
            raise _Damaged(f"checkpoint {path}: losses.{r} is missing or not {step} float64 losses")


def _matching_groups(path: Path, groups: list[dict[str, Any]], opt: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The saved parameter groups, checked against ``opt``'s own: same count, parameters and keys, and
    every value of the same kind (a number stays a number, a pair of betas a pair)."""
    mine = opt.state_dict()["param_groups"]
    if len(groups) != len(mine):
        raise CheckpointError(f"checkpoint {path}: {len(groups)} optimizer parameter group(s), expected {len(mine)}")

    def kind(v: Any) -> str:
        if isinstance(v, bool) or v is None:
            return "flag"
        if isinstance(v, (int, float)):
            return "number" if math.isfinite(v) else "bad"
        if isinstance(v, (list, tuple)):
            return f"{len(v)}:" + ",".join(kind(x) for x in v)
        return type(v).__name__

    for g, m in zip(groups, mine):
        if sorted(g["params"]) != sorted(m["params"]) or set(g) != set(m):
            raise CheckpointError(f"checkpoint {path}: optimizer parameter groups do not fit this optimizer")
        for k, v in g.items():
            if k != "params" and kind(v) != kind(m[k]):
                raise CheckpointError(
                    f"checkpoint {path}: optimizer setting {k!r} is {_short(v)}, expected one like {m[k]!r}"
                )
    return groups
