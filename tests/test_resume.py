"""Resumable runs: a run directory with spec, config and periodic checkpoints; a resumed run reaches
bit-identical parameters to an uninterrupted one on CPU, also after SIGKILL (mid-write included),
and leaves no stray files."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, ac_subprocess_env

import autoint_compiler as ac
from autoint_compiler.runtime.checkpoint import CheckpointError, load_checkpoint, read_metadata
from autoint_compiler.runtime.runs import latest_checkpoint, list_checkpoints
from autoint_compiler.runtime.train import LineData, TrainConfig, fit_line_integrals, fit_samples

SPEC = {
    "name": "resume_net",
    "inputs": {"t": 1},
    "integrate": ["t"],
    "output": 1,
    "seed": 0,
    "mlp": {"hidden": [16, 16], "activation": "swish"},
}


def _sampler(n, gen):
    t = torch.rand(n, 1, generator=gen) * 4 - 2
    return t, torch.sin(2 * t) + torch.randn(n, 1, generator=gen) * 0.01  # noise: uses the RNG stream too


def _state(net):
    return {k: v.clone() for k, v in net.integral.state_dict().items()}


def _assert_bit_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class Interrupt(Exception):
    pass


def _interrupt_at(n):
    def cb(step, loss):
        if step == n:
            raise Interrupt

    return cb


def _cfg(run_dir=None, **kw):
    base = dict(
        steps=23, lr=1e-2, batch_size=32, seed=4, progress=False, threads=1, checkpoint_every=5, keep_checkpoints=2
    )
    base.update(kw)
    return TrainConfig(run_dir=None if run_dir is None else str(run_dir), **base)


def test_resume_is_bit_exact_and_keeps_last_m(tmp_path):
    ref = ac.compile(SPEC)
    h_ref = fit_samples(ref, _sampler, _cfg())
    net = ac.compile(SPEC)
    from autoint_compiler.runtime import train as train_mod

    with pytest.raises(Interrupt):  # dies at step 17: checkpoints at 5, 10, 15 written
        train_mod.train(net, lambda m, g, s: _loss(m, g), _cfg(tmp_path / "run"), callback=_interrupt_at(17))
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [10, 15]  # keep_checkpoints=2
    fresh = ac.compile(SPEC)  # a new process would start from the spec's initial weights
    hist = train_mod.train(fresh, lambda m, g, s: _loss(m, g), _cfg(tmp_path / "run", resume=True))
    ref2 = ac.compile(SPEC)
    h2 = train_mod.train(ref2, lambda m, g, s: _loss(m, g), _cfg())
    _assert_bit_equal(_state(fresh), _state(ref2))
    assert hist.losses == h2.losses and len(hist.losses) == 23
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [20, 23]
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "log.jsonl", "spec.yaml"]
    assert ac.compile(run / "spec.yaml").spec_hash == fresh.spec_hash
    assert json.loads((run / "config.json").read_text())["config"]["steps"] == 23
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [5, 10, 15, 20, 23]
    # the final checkpoint loads as a plain model checkpoint
    other = ac.compile(SPEC)
    load_checkpoint(latest_checkpoint(run)[1], other)
    _assert_bit_equal(_state(other), _state(fresh))
    assert h_ref.losses == h2.losses  # fit_samples and this loss draw the same batches


def _loss(m, gen):
    x, y = _sampler(32, gen)
    return torch.mean((m(x) - y) ** 2)


def test_resume_line_integrals_integral_mode(tmp_path):
    g = torch.Generator().manual_seed(0)
    n = 64
    spec = {**SPEC, "name": "resume_lines", "inputs": {"y": 1, "t": 1}}
    lines = LineData(
        x=torch.rand(n, 2, generator=g),
        lower=torch.zeros(n),
        upper=torch.rand(n, generator=g),
        value=torch.rand(n, generator=g),
    )
    ref = ac.compile(spec)
    fit_line_integrals(ref, lines, _cfg(steps=12), mode="integral")
    net = ac.compile(spec)
    from autoint_compiler.runtime import train as train_mod

    real = train_mod.train

    def interrupted(*a, **k):
        return real(*a, **k, callback=_interrupt_at(8))

    train_mod.train = interrupted
    try:
        with pytest.raises(Interrupt):
            fit_line_integrals(net, lines, _cfg(tmp_path, steps=12), mode="integral")
    finally:
        train_mod.train = real
    resumed = ac.compile(spec)
    fit_line_integrals(resumed, lines, _cfg(tmp_path, steps=12, resume=True), mode="integral")
    _assert_bit_equal(_state(resumed), _state(ref))


def test_run_dir_refusals(tmp_path):
    net = ac.compile(SPEC)
    fit_samples(net, _sampler, _cfg(tmp_path, steps=6))
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        fit_samples(ac.compile(SPEC), _sampler, _cfg(tmp_path, steps=6))
    with pytest.raises(CheckpointError, match="different lr"):
        fit_samples(ac.compile(SPEC), _sampler, _cfg(tmp_path, steps=6, lr=0.5, resume=True))
    other = {**SPEC, "mlp": {"hidden": [8], "activation": "tanh"}}
    with pytest.raises(CheckpointError, match="spec hash mismatch"):
        fit_samples(ac.compile(other), _sampler, _cfg(tmp_path, steps=6, resume=True))
    with pytest.raises(ValueError, match="needs a run_dir"):
        fit_samples(ac.compile(SPEC), _sampler, _cfg(steps=2, resume=True))
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        fit_samples(ac.compile(SPEC), _sampler, _cfg(tmp_path / "file", steps=2))
    # resuming a finished run is a no-op that returns the same parameters
    again = ac.compile(SPEC)
    fit_samples(again, _sampler, _cfg(tmp_path, steps=6, resume=True))
    _assert_bit_equal(_state(again), _state(net))


CLI = [
    sys.executable,
    "-m",
    "autoint_compiler.apps.oned",
    "--signal",
    "poly",
    "--hidden",
    "16,16",
    "--batch",
    "64",
    "--intervals",
    "10",
    "--no-progress",
    "--checkpoint-every",
    "100",
    "--keep-checkpoints",
    "2",
    "--mc-seeds",
    "0",
]


def _cli(args):
    from autoint_compiler.apps.oned import main

    return main([*CLI[3:], *args])


def _final_state(run):
    net = ac.compile(REPO_ROOT / "examples" / "oned_poly.yaml")
    _, path = latest_checkpoint(run)
    spec = ac.compile(
        {
            "name": "oned_poly",
            "inputs": {"t": 1},
            "integrate": ["t"],
            "output": 1,
            "seed": 0,
            "dtype": "float32",
            "mlp": {"hidden": [16, 16], "activation": "swish"},
        }
    )
    load_checkpoint(path, spec)
    del net
    return int(read_metadata(path)["run_step"]), _state(spec)


@pytest.mark.slow  # a long end-to-end run (make test-fast leaves it out)
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    """SIGKILL the CLI mid-training, resume with --resume: the same parameters as a run that was never
    interrupted, bit for bit (CPU, one thread); no temporary files left."""
    env = ac_subprocess_env(OMP_NUM_THREADS="1")
    steps = ["--steps", "1000"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*CLI, *steps, "--run-dir", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list_checkpoints(killed / "poly")) >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read().decode()[-500:]
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    step_at_kill = latest_checkpoint(killed / "poly")[0]
    assert 0 < step_at_kill < 1000
    # resume and the uninterrupted reference run in this process (the same CLI code, one thread)
    assert _cli([*steps, "--run-dir", str(killed), "--resume"]) == 0
    assert _cli([*steps, "--run-dir", str(tmp_path / "whole")]) == 0
    s1, a = _final_state(killed / "poly")
    s2, b = _final_state(tmp_path / "whole" / "poly")
    assert s1 == s2 == 1000
    _assert_bit_equal(a, b)
    leftovers = [p for p in killed.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers


KILL_MID_WRITE = r"""
import os, signal, sys
from autoint_compiler.runtime import fileio
real_fsync, count = os.fsync, [0]
def fsync(fd):
    if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".step-"):
        count[0] += 1
        if count[0] == 3:  # the third checkpoint: its temp file holds data, the rename has not happened
            os.kill(os.getpid(), signal.SIGKILL)
    return real_fsync(fd)
fileio.os.fsync = fsync
from autoint_compiler.apps.oned import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # a long end-to-end run (make test-fast leaves it out)
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to spot the checkpoint's temp file")
def test_killed_while_writing_a_checkpoint(tmp_path):
    env = ac_subprocess_env(OMP_NUM_THREADS="1")
    args = CLI[3:] + ["--steps", "500", "--run-dir", str(tmp_path / "run")]
    proc = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, *args], env=env, capture_output=True, timeout=180)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    folder = tmp_path / "run" / "poly" / "checkpoints"
    names = sorted(p.name for p in folder.iterdir())
    assert [n for n in names if not n.startswith(".")] == ["step-00000100.safetensors", "step-00000200.safetensors"]
    assert any(n.startswith(".step-00000300.safetensors.") and n.endswith(".tmp") for n in names), names
    assert latest_checkpoint(tmp_path / "run" / "poly")[0] == 200  # lost at most one interval
    assert _cli(["--steps", "500", "--run-dir", str(tmp_path / "run"), "--resume"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000400.safetensors", "step-00000500.safetensors"]
    assert not [p for p in (tmp_path / "run").rglob("*") if p.name.startswith(".")]
