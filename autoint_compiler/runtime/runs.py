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
``SIGKILL`` leaves behind are removed when the run is opened again.

Only rank 0 writes; every rank reads the checkpoint when resuming (a shared filesystem, as usual
for ``torchrun`` on one machine).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from . import distributed, fileio
from .checkpoint import (
    MAX_CHECKPOINT_BYTES,
    CheckpointError,
    load_checkpoint,
    read_extra_tensors,
    read_metadata,
    save_checkpoint,
)

__all__ = ["RunDir", "CHECKPOINT_PATTERN", "list_checkpoints", "latest_checkpoint"]

CHECKPOINT_PATTERN = re.compile(r"^step-(\d{8,})\.safetensors$")
#: TrainConfig fields that must match to resume a run (the others -- progress, threads, device --
#: do not change the result on one device)
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
    """The newest checkpoint whose header reads back (a corrupt one is skipped), or ``None``."""
    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            meta = read_metadata(path)
        except CheckpointError:
            continue
        if meta.get("run_step") == str(step):
            return step, path
    return None


def _config_dict(cfg: Any) -> dict[str, Any]:
    d = asdict(cfg)
    return {k: v for k, v in d.items() if k not in ("run_dir",)}


def _spec_yaml(net: Any) -> str:
    import yaml

    spec = getattr(net, "spec", None)
    if spec is None:
        return ""
    data = spec.model_dump(mode="json", by_alias=True, exclude_none=True)  # None = the default: reloadable
    return yaml.safe_dump(data, sort_keys=False)


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
        """Create or reopen the directory; returns the checkpoint to resume from (or ``None``)."""
        if self.path.exists() and not self.path.is_dir():
            raise CheckpointError(f"run directory {self.path}: exists and is not a directory")
        found = latest_checkpoint(self.path)
        if found is not None and not resume:
            raise CheckpointError(
                f"run directory {self.path}: already holds checkpoints (newest: {found[1].name}); "
                "pass resume=True (--resume) to continue it, or choose another directory"
            )
        if resume and found is not None:
            self._check_config(found[1])
        distributed.barrier()  # every rank has looked before rank 0 changes anything
        if self.main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            fileio.remove_stale_temps(self.ckpt_dir, "step-*")  # only this module's files: the
            for own in ("spec.yaml", "config.json", "log.jsonl"):  # folder may hold a user's others
                fileio.remove_stale_temps(self.path, own)
            for step, path in list_checkpoints(self.path):  # unreadable leftovers newer than the resume point
                if found is None or step > found[0]:
                    path.unlink()
            fileio.atomic_write_text(self.path / "spec.yaml", _spec_yaml(self.net))
            info = {"config": _config_dict(self.cfg), "world_size": self.world, "torch": torch.__version__}
            fileio.atomic_write_text(self.path / "config.json", json.dumps(info, indent=2, default=str) + "\n")
            self._trim_log(found[0] if found else 0)
        distributed.barrier()
        return found if resume else None

    def _check_config(self, path: Path) -> None:
        meta = read_metadata(path)
        try:
            saved = json.loads(meta.get("run_config", "{}"))
        except ValueError:
            raise CheckpointError(f"checkpoint {path}: corrupt run_config metadata") from None
        now = _config_dict(self.cfg)
        diff = [k for k in RESUME_KEYS if k in saved and saved[k] != now.get(k)]
        if diff:
            k = diff[0]
            raise CheckpointError(
                f"run directory {self.path}: cannot resume with a different {k} "
                f"(the run has {saved[k]!r}, this config {now.get(k)!r})"
            )
        world = meta.get("run_world_size")
        if world is not None and int(world) != self.world:
            raise CheckpointError(
                f"run directory {self.path}: the run was trained on {world} rank(s); resume it with "
                f"the same number (got {self.world})"
            )

    def _trim_log(self, step: int) -> None:
        log = self.path / "log.jsonl"
        if not log.is_file():
            return
        keep = []
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
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
        old = log.read_text(encoding="utf-8") if log.is_file() else ""
        fileio.atomic_write_text(log, old + json.dumps(entry) + "\n")

    def restore(self, path: Path, opt: torch.optim.Optimizer, gen: torch.Generator, losses: torch.Tensor) -> int:
        """Load parameters, optimizer, RNG states and losses from ``path``; returns its step."""
        meta = load_checkpoint(path, self.net, max_bytes=MAX_CHECKPOINT_BYTES)  # with optimizer state and losses
        step = int(meta["run_step"])
        extra = read_extra_tensors(path)
        r = distributed.rank()
        try:
            groups = json.loads(meta["optim_param_groups"])
            state: dict[int, dict[str, Any]] = {}
            for key, value in extra.items():
                if key.startswith("optim."):
                    _, idx, name = key.split(".", 2)
                    state.setdefault(int(idx), {})[name] = value
            opt.load_state_dict({"state": state, "param_groups": groups})
            gen.set_state(extra[f"rng.{r}.gen"])
            torch.set_rng_state(extra[f"rng.{r}.torch"])
            if gen.device.type == "cuda" and f"rng.{r}.cuda" in extra:
                torch.cuda.set_rng_state(extra[f"rng.{r}.cuda"], gen.device)
            saved = extra[f"losses.{r}"]
        except (KeyError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint {path}: training state missing or corrupt ({exc})") from None
        if saved.numel() != step or step > losses.numel():
            raise CheckpointError(f"checkpoint {path}: {saved.numel()} losses for step {step}")
        losses[:step] = saved.to(losses.device)
        self._last_step = step
        self.prior_s = float(meta.get("run_train_s", "0"))
        self.lr_factor = float(meta.get("run_lr_factor", "1.0"))
        self._t0 = time.perf_counter()
        return step
