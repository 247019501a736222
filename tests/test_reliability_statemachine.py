"""A stateful property test of run directories (issue 19), the way crash-consistency is tested in
storage engines: hypothesis drives one run folder through random sequences of training, SIGKILL at
random points (a forked training process killed inside a checkpoint write -- before its fsync or right
after its rename -- or between steps), resume, resume with another spec, hand edits of checkpoint
metadata and truncation. After every step:

* no completed checkpoint is lost: the newest whole checkpoint never goes back, a whole checkpoint
  that disappears was rotated away (``keep_checkpoints`` newer ones exist) and one that stays is
  byte-identical;
* nothing outside the run folder is written (the folder's siblings, the working directory);
* every refusal is a one-line ``CheckpointError`` and leaves the folder exactly as it was;
* a run that completes has bit-identical parameters to an uninterrupted one, and leaves no
  temporary file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import tempfile
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import autoint_compiler as ac
from autoint_compiler.runtime import fileio
from autoint_compiler.runtime import train as train_mod
from autoint_compiler.runtime.checkpoint import CheckpointError
from autoint_compiler.runtime.runs import CHECKPOINT_PATTERN
from autoint_compiler.runtime.train import TrainConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked training process"),
]

SPEC = {"name": "sm_net", "inputs": {"t": 1}, "integrate": ["t"], "output": 1, "seed": 0,
        "mlp": {"hidden": [5], "activation": "tanh"}}  # fmt: skip
OTHER = {**SPEC, "mlp": {"hidden": [3], "activation": "tanh"}}
STEPS, EVERY, KEEP = 12, 3, 2


def _loss(module, gen, step):
    t = torch.rand(8, 1, generator=gen) * 2 - 1
    return torch.mean((module(t) - torch.sin(2 * t)) ** 2)


def _cfg(run_dir=None, **kw):
    base = dict(steps=STEPS, lr=1e-2, batch_size=8, seed=2, progress=False, threads=1, checkpoint_every=EVERY,
                keep_checkpoints=KEEP)  # fmt: skip
    base.update(kw)
    return TrainConfig(run_dir=None if run_dir is None else str(run_dir), **base)


def _train(run_dir, spec=SPEC, callback=None, **kw):
    net = ac.compile(spec)
    train_mod.train(net, _loss, _cfg(run_dir, **kw), callback=callback)
    return {k: v.clone() for k, v in net.integral.state_dict().items()}


_REFERENCE: dict = {}


def _reference():
    if not _REFERENCE:
        _REFERENCE.update(_train(None))
    return _REFERENCE


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _checkpoints(run: Path) -> dict[int, Path]:
    folder = run / "checkpoints"
    if not folder.is_dir():
        return {}
    return {int(m.group(1)): p for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))}


def _wait(pid: int, timeout: float) -> int:
    """``waitpid`` with a deadline: a child that hangs is killed and the test fails (never hangs)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the training process did not finish in {timeout} s")
        time.sleep(0.01)


class RunDirectoryMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="ac-statemachine-"))
        self.run = self.root / "run"
        (self.root / "sibling.txt").write_text("the user's own file")
        self.cwd = os.getcwd()
        os.chdir(self.root)  # a stray relative write would land beside the run folder
        self.damaged: set[int] = set()  # steps whose file this machine damaged
        self.whole: dict[int, bytes] = {}  # step -> digest of each whole checkpoint seen
        self.best = 0  # newest whole step seen
        self.outside = self._outside()

    def teardown(self):
        os.chdir(self.cwd)
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ helpers

    def _outside(self) -> dict[str, bytes]:
        return {k: v for k, v in _files(self.root).items() if not k.startswith("run/") and k != "run"}

    def _has_whole(self) -> bool:
        return any(s not in self.damaged for s in _checkpoints(self.run))

    def _expect_refusal(self, fn, *fragments):
        before = _files(self.run) if self.run.exists() else {}
        with pytest.raises(CheckpointError) as info:
            fn()
        msg = str(info.value)
        assert "\n" not in msg and "Traceback" not in msg, msg
        assert any(f in msg for f in fragments), msg
        assert (_files(self.run) if self.run.exists() else {}) == before, "a refusal changed the run folder"

    def _completed(self, state):
        ref = _reference()
        assert state.keys() == ref.keys() and all(torch.equal(state[k], ref[k]) for k in ref), "not bit-identical"
        names = {p.name for p in self.run.iterdir()}
        assert names == {"checkpoints", "config.json", "log.jsonl", "spec.yaml"}, names
        stray = [p.name for p in self.run.rglob("*") if p.name.endswith(".tmp")]
        assert not stray, stray
        self.damaged &= set(_checkpoints(self.run))  # damaged files newer than the resume point were set aside

    def _damage(self, step: int) -> None:
        """This machine damaged ``step``: it no longer counts as completed (the newest whole one may go back)."""
        self.damaged.add(step)
        self.whole.pop(step, None)
        self.best = max((s for s in _checkpoints(self.run) if s not in self.damaged), default=0)

    # ------------------------------------------------------------------ rules

    @rule()
    def train_fresh(self):
        if _checkpoints(self.run):
            self._expect_refusal(lambda: _train(self.run), "already holds checkpoints")
        else:
            self._completed(_train(self.run))

    @rule()
    def resume(self):
        if _checkpoints(self.run) and not self._has_whole():
            self._expect_refusal(lambda: _train(self.run, resume=True), "reads back")
        else:
            self._completed(_train(self.run, resume=True))

    @precondition(lambda self: bool(_checkpoints(self.run)))
    @rule(change=st.sampled_from(["spec", "lr", "steps"]))
    def resume_differently(self, change):
        kw = {"lr": 0.5} if change == "lr" else {"steps": STEPS + 3} if change == "steps" else {}
        spec = OTHER if change == "spec" else SPEC
        self._expect_refusal(lambda: _train(self.run, spec, resume=True, **kw), "different", "reads back")

    @rule(where=st.sampled_from(["fsync", "replace", "step"]), k=st.integers(1, 8))
    def killed(self, where, k):
        """Fork a training process (resuming when there is something to resume) and SIGKILL it at the
        k-th fsync (its temp file written, not renamed), right after the k-th rename, or at a step."""
        resume = bool(_checkpoints(self.run))
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 0
            try:
                count = [0]
                real_fsync, real_replace = os.fsync, os.replace

                def fsync(fd):
                    count[0] += where == "fsync"
                    if where == "fsync" and count[0] == k:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return real_fsync(fd)

                def replace(a, b):
                    real_replace(a, b)
                    count[0] += where == "replace"
                    if where == "replace" and count[0] == k:
                        os.kill(os.getpid(), signal.SIGKILL)

                fileio.os.fsync, fileio.os.replace = fsync, replace

                def at_step(step, loss):
                    if where == "step" and step == (k * 5) % STEPS:
                        os.kill(os.getpid(), signal.SIGKILL)

                _train(self.run, callback=at_step, resume=resume)
            except CheckpointError:
                code = 3
            except BaseException:  # noqa: BLE001 - reported through the exit status
                code = 4
            finally:
                os._exit(code)
        status = _wait(pid, 300)
        event(f"training process {'killed' if os.WIFSIGNALED(status) else 'exited'} ({where})")
        if os.WIFEXITED(status):
            code = os.WEXITSTATUS(status)
            assert code in (0, 3), f"the training process failed (status {code})"
            if code == 3:
                assert resume and not self._has_whole()
            else:
                self.damaged &= set(_checkpoints(self.run))
        else:
            assert os.WTERMSIG(status) == signal.SIGKILL

    @precondition(lambda self: bool(_checkpoints(self.run)))
    @rule(
        pick=st.integers(0, 5),
        field=st.sampled_from(["run_config", "optim_param_groups", "run_world_size", "run_step", "format"]),
        value=st.sampled_from(["5", '"text"', "[]", "{", "-1", "two"]),
    )
    def edit_metadata(self, pick, field, value):
        steps = sorted(_checkpoints(self.run))
        step = steps[-1 - pick % len(steps)]
        path = _checkpoints(self.run)[step]
        raw = path.read_bytes()
        try:
            (n,) = struct.unpack("<Q", raw[:8])
            header = json.loads(raw[8 : 8 + n])
        except (struct.error, ValueError):  # already truncated into its header
            return
        header["__metadata__"][field] = value
        text = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
        self._damage(step)

    @precondition(lambda self: bool(_checkpoints(self.run)))
    @rule(pick=st.integers(0, 5), keep=st.floats(0.0, 0.999))
    def truncate(self, pick, keep):
        steps = sorted(_checkpoints(self.run))
        step = steps[-1 - pick % len(steps)]
        path = _checkpoints(self.run)[step]
        os.truncate(path, int(path.stat().st_size * keep))
        self._damage(step)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def nothing_written_outside(self):
        assert self._outside() == self.outside
        assert os.getcwd() == str(self.root)

    @invariant()
    def no_completed_checkpoint_lost(self):
        now = _checkpoints(self.run)
        whole = {s: hashlib.sha256(p.read_bytes()).hexdigest() for s, p in now.items() if s not in self.damaged}
        for step, digest in self.whole.items():
            if step in whole:
                assert whole[step] == digest, f"checkpoint {step} was rewritten with other content"
            else:  # gone: only the rotation may take it, and only behind KEEP newer ones
                assert sum(s > step for s in now) >= KEEP, f"completed checkpoint {step} lost"
        newest = max(whole, default=0)
        assert newest >= self.best, f"the newest whole checkpoint went back from step {self.best} to {newest}"
        self.best = max(self.best, newest)
        self.whole = whole


RunDirectoryMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("AUTOINT_STATEMACHINE_EXAMPLES", "6")),  # more for a longer hunt
    stateful_step_count=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # a failure prints its steps; no minutes of shrinking
)
test_run_directory_machine = RunDirectoryMachine.TestCase
