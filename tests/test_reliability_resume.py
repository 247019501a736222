"""Run directories and checkpoints under damage and hand edits (issue 19): a refused resume writes
nothing; reads are bounded by what the header declares and the run needs; every metadata field is
validated into a one-line ``CheckpointError``; a damaged newest checkpoint falls back to the newest
whole one and says so; a SIGKILL mid-save leaves no temporary file once the file is saved again."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ac_subprocess_env

import autoint_compiler as ac
from autoint_compiler.runtime import fileio
from autoint_compiler.runtime.checkpoint import (
    CheckpointError,
    checkpoint_problem,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from autoint_compiler.runtime.runs import list_checkpoints
from autoint_compiler.runtime.train import TrainConfig, fit_samples

SPEC = {
    "name": "rel_net",
    "inputs": {"t": 1},
    "integrate": ["t"],
    "output": 1,
    "seed": 0,
    "mlp": {"hidden": [6], "activation": "tanh"},
}


def _sampler(n, gen):
    t = torch.rand(n, 1, generator=gen) * 2 - 1
    return t, torch.cos(3 * t)


def _cfg(run_dir, **kw):
    base = dict(steps=6, lr=1e-2, batch_size=16, seed=1, progress=False, threads=1, checkpoint_every=3)
    base.update(kw)
    return TrainConfig(run_dir=str(run_dir), **base)


def _state(net):
    return {k: v.clone() for k, v in net.integral.state_dict().items()}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _edit_metadata(path: Path, **changes) -> None:
    """Rewrite a checkpoint's header with metadata fields replaced (``None`` removes one); data kept."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    for k, v in changes.items():
        if v is None:
            header["__metadata__"].pop(k, None)
        else:
            header["__metadata__"][k] = v
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted 6-step run's final parameters."""
    net = ac.compile(SPEC)
    fit_samples(net, _sampler, TrainConfig(steps=6, lr=1e-2, batch_size=16, seed=1, progress=False, threads=1))
    return _state(net)


def _trained_run(tmp_path, steps=6):
    run = tmp_path / "run"
    fit_samples(ac.compile(SPEC), _sampler, _cfg(run, steps=steps))
    return run


def _resume(run, spec=SPEC, **kw):
    net = ac.compile(spec)
    fit_samples(net, _sampler, _cfg(run, resume=True, **kw))
    return net


# --------------------------------------------------------------------------- a refused resume writes nothing


@pytest.mark.parametrize(
    "how",
    ["other spec", "other lr", "other world size", "other steps"],
)
def test_refused_resume_leaves_every_file_as_it_was(tmp_path, how):
    run = _trained_run(tmp_path)
    if how == "other world size":
        for _, p in list_checkpoints(run):
            _edit_metadata(p, run_world_size="2")
    before = _snapshot(run)
    spec = {**SPEC, "mlp": {"hidden": [7], "activation": "tanh"}} if how == "other spec" else SPEC
    kw = {"lr": 0.5} if how == "other lr" else {"steps": 9} if how == "other steps" else {}
    with pytest.raises(CheckpointError) as info:
        _resume(run, spec, **kw)
    msg = str(info.value)
    assert "\n" not in msg and str(run) in msg
    assert {"other spec": "spec hash mismatch", "other lr": "different lr", "other steps": "different steps",
            "other world size": "2 rank(s)"}[how] in msg  # fmt: skip
    assert _snapshot(run) == before


def test_files_in_the_way_are_refused_before_any_write(tmp_path):
    run = _trained_run(tmp_path)
    (run / "config.json").unlink()
    (run / "config.json").mkdir()
    before = _snapshot(run)
    with pytest.raises(CheckpointError, match="config.json exists and is not a regular file"):
        _resume(run)
    assert _snapshot(run) == before


# --------------------------------------------------------------------------- bounded reads


def test_padded_checkpoint_is_refused_without_reading_the_padding(tmp_path):
    """A valid checkpoint followed by 20 GB (a sparse file): refused from its header, in well under a
    second and without the memory (a whole read would need 20 GB)."""
    path = save_checkpoint(tmp_path / "a.safetensors", ac.compile(SPEC))
    size = path.stat().st_size
    os.truncate(path, size + 20 * 2**30)
    with pytest.raises(CheckpointError, match="bytes after the data its header declares"):
        load_checkpoint(path, ac.compile(SPEC), max_bytes=64 * 2**30)
    assert "bytes after" in checkpoint_problem(path)


def test_header_declaring_more_than_the_network_needs_is_refused(tmp_path):
    header = {"w": {"dtype": "F64", "shape": [2**31], "data_offsets": [0, 8 * 2**31]}, "__metadata__": {}}
    text = json.dumps(header).encode()
    path = tmp_path / "big.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    with pytest.raises(CheckpointError, match="declares 171798.* bytes, more than a checkpoint of this network"):
        load_checkpoint(path, ac.compile(SPEC))  # refused from the header alone
    os.truncate(path, 8 + len(text) + 8 * 2**31)  # exactly what it declares: 16 GiB, sparse
    with pytest.raises(CheckpointError, match="larger than the limit"):
        load_checkpoint(path, ac.compile(SPEC))


@pytest.mark.parametrize(
    "header,match",
    [
        (b"[1, 2]", "a JSON list, expected an object"),
        (b"null", "a JSON null, expected an object"),
        (b'"text"', "a JSON str, expected an object"),
        (b'{"w": 5}', "tensor 'w'"),
        (b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}', "tensor 'w'"),
        (b'{"w": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}}', "tensor 'w'"),
        (b'{"__metadata__": {"a": 1}}', "expected strings"),
        (b"{not json", "not JSON"),
    ],
)
def test_read_metadata_refuses_malformed_headers(tmp_path, header, match):
    path = tmp_path / "h.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(CheckpointError, match=match) as info:
        read_metadata(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


# --------------------------------------------------------------------------- hand-edited metadata

EDITS = [
    ("run_config", "5"),
    ("run_config", '"a string"'),
    ("run_config", "[1]"),
    ("run_config", "{"),
    ("run_config", '{"lr": [1, 2]}'),
    ("optim_param_groups", "5"),
    ("optim_param_groups", "[]"),
    ("optim_param_groups", '[{"params": "x"}]'),
    ("optim_param_groups", '[{"params": [0, 1, 2, 3], "lr": "fast"}]'),
    ("run_world_size", "two"),
    ("run_world_size", "0"),
    ("run_world_size", "1" * 30),
    ("run_step", "x"),
    ("run_step", "5"),
    ("run_config", None),
    ("run_step", None),
    ("format_version", "9"),
]


@pytest.mark.parametrize("field,value", EDITS, ids=[f"{f}={v}" for f, v in EDITS])
def test_hand_edited_metadata_falls_back_to_the_previous_checkpoint(tmp_path, field, value, reference, capsys):
    run = _trained_run(tmp_path)
    (_, older), (_, newest) = list_checkpoints(run)
    _edit_metadata(newest, **{field: value})
    net = _resume(run)
    err = capsys.readouterr().err
    assert f"resuming from {older.name}" in err and newest.name in err
    assert (newest.parent / (newest.name + ".corrupt")).is_file()  # set aside, not deleted
    got = _state(net)
    assert all(torch.equal(got[k], reference[k]) for k in reference)  # retrained from step 3: bit-identical


@pytest.mark.parametrize("field,value", EDITS[:12], ids=[f"{f}={v}" for f, v in EDITS[:12]])
def test_hand_edited_only_checkpoint_is_a_one_line_refusal(tmp_path, field, value):
    run = tmp_path / "run"
    fit_samples(ac.compile(SPEC), _sampler, _cfg(run, checkpoint_every=0))
    ((_, only),) = list_checkpoints(run)
    _edit_metadata(only, **{field: value})
    before = _snapshot(run)
    with pytest.raises(CheckpointError) as info:
        _resume(run, checkpoint_every=0)
    msg = str(info.value)
    assert "\n" not in msg and "none of its 1 checkpoint(s) reads back" in msg and field in msg
    assert _snapshot(run) == before


def test_training_state_of_the_wrong_kind_is_refused(tmp_path):
    """An optimizer setting of the right JSON kind but not of this optimizer: refused when restoring,
    and the optimizer, RNG and network are left as they were."""
    run = tmp_path / "run"
    fit_samples(ac.compile(SPEC), _sampler, _cfg(run, checkpoint_every=0))
    ((_, only),) = list_checkpoints(run)
    groups = json.loads(read_metadata(only)["optim_param_groups"])
    groups[0]["betas"] = 0.9  # a number where Adam keeps a pair
    _edit_metadata(only, optim_param_groups=json.dumps(groups))
    with pytest.raises(CheckpointError, match="optimizer setting 'betas'"):
        _resume(run, checkpoint_every=0)


# --------------------------------------------------------------------------- truncation


@pytest.mark.parametrize("keep", [0.5, 0.0, 0.999])
def test_truncated_newest_checkpoint_falls_back_and_says_so(tmp_path, keep, reference, capsys):
    run = _trained_run(tmp_path)
    (s_old, older), (_, newest) = list_checkpoints(run)
    os.truncate(newest, int(newest.stat().st_size * keep))
    assert checkpoint_problem(newest) is not None and checkpoint_problem(older) is None
    net = _resume(run)
    err = capsys.readouterr().err
    assert "note:" in err and f"resuming from {older.name}" in err
    assert "truncated" in err or "too short" in err
    got = _state(net)
    assert all(torch.equal(got[k], reference[k]) for k in reference)
    assert [s for s, _ in list_checkpoints(run)] == [3, 6]  # the run completed again


# --------------------------------------------------------------------------- SIGKILL mid-save

KILL_IN_SAVE = r"""
import os, signal, sys
import autoint_compiler as ac
from autoint_compiler.runtime import fileio
from autoint_compiler.runtime.checkpoint import save_checkpoint
real_fsync = os.fsync
def fsync(fd):
    if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".model.safetensors."):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_fsync(fd)
fileio.os.fsync = fsync
save_checkpoint(sys.argv[1], ac.compile(eval(sys.argv[2])))
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to spot the temp file")
def test_sigkill_mid_save_leaves_no_temp_after_the_next_save(tmp_path):
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, ac.compile(SPEC))
    old = path.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-c", KILL_IN_SAVE, str(path), repr(SPEC)],
        env=ac_subprocess_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    stray = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(stray) == 1 and path.read_bytes() == old  # the old file intact, one temp left
    save_checkpoint(path, ac.compile(SPEC))  # the next save of the same file clears it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_a_live_writers_temp_file_is_never_removed(tmp_path):
    import fcntl

    live = tmp_path / ".a.txt.live.tmp"
    dead = tmp_path / ".a.txt.dead.tmp"
    dead.write_text("left by a killed writer")
    fd = os.open(live, os.O_CREAT | os.O_WRONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as atomic_write_bytes holds it until its rename
        fileio.atomic_write_text(tmp_path / "a.txt", "x")
        assert sorted(p.name for p in tmp_path.iterdir()) == [".a.txt.live.tmp", "a.txt"]
    finally:
        os.close(fd)
    assert [p.name for p in fileio.remove_stale_temps(tmp_path, "a.txt")] == [".a.txt.live.tmp"]


# --------------------------------------------------------------------------- spec hash


def test_spec_hash_leaves_out_name_and_init(tmp_path):
    a = ac.compile(SPEC)
    renamed = ac.compile({**SPEC, "name": "another_name"})
    reinit = ac.compile({**SPEC, "init": "xavier", "seed": 5})
    wider = ac.compile({**SPEC, "mlp": {"hidden": [7], "activation": "tanh"}})
    other_act = ac.compile({**SPEC, "mlp": {"hidden": [6], "activation": "swish"}})
    assert a.spec_hash == renamed.spec_hash == reinit.spec_hash
    assert len({a.spec_hash, wider.spec_hash, other_act.spec_hash}) == 3
    path = save_checkpoint(tmp_path / "a.safetensors", reinit)
    load_checkpoint(path, renamed)  # a renamed spec loads its checkpoints
    assert all(torch.equal(p, q) for p, q in zip(reinit.integral.parameters(), renamed.integral.parameters()))
    with pytest.raises(CheckpointError, match="check_hash=False"):  # the error offers the override
        load_checkpoint(path, other_act)
    _edit_metadata(path, spec_hash=a.program.legacy_hash)  # written by an older version: still loads
    load_checkpoint(path, a)


def test_padded_newest_checkpoint_is_not_read_on_resume(tmp_path, reference, capsys):
    """A valid checkpoint padded to 20 GB (sparse): resume refuses it by its size without reading it
    (no 20 GB in memory), falls back to the previous one and finishes bit-identically."""
    import resource

    run = _trained_run(tmp_path)
    (_, older), (_, newest) = list_checkpoints(run)
    os.truncate(newest, newest.stat().st_size + 20 * 2**30)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    net = _resume(run)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 512 * 1024  # far below the padding (ru_maxrss is in KiB on Linux)
    err = capsys.readouterr().err
    assert "larger than the limit" in err and f"resuming from {older.name}" in err
    got = _state(net)
    assert all(torch.equal(got[k], reference[k]) for k in reference)
