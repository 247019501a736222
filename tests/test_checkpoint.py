"""Checkpoints: bit-exact round trip, clear errors, atomic writes."""

from __future__ import annotations

import os

import pytest
import torch

import autoint_compiler as ac
from autoint_compiler.runtime import checkpoint as ckpt
from autoint_compiler.runtime.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint

SPEC = {
    "name": "ckpt_net",
    "inputs": {"t": 1, "y": 2},
    "integrate": ["t"],
    "output": 2,
    "mlp": {"hidden": [16, 16], "activation": "swish", "encoding": {"inputs": ["y"], "frequencies": 2}},
    "seed": 0,
}


def _perturbed(seed: int):
    net = ac.compile(SPEC)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.integral.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


def test_round_trip_is_bit_exact(tmp_path):
    a = _perturbed(1)
    b = _perturbed(2)
    assert a.spec_hash == b.spec_hash
    assert not all(torch.equal(p, q) for p, q in zip(a.integral.parameters(), b.integral.parameters()))
    path = save_checkpoint(tmp_path / "a.safetensors", a, extra={"step": 7})
    meta = load_checkpoint(path, b)
    sa, sb = a.integral.state_dict(), b.integral.state_dict()
    assert sa.keys() == sb.keys() and len(sa) > 0
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    # the grad network shares the parameters, so it is restored too (bit-exactly)
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.grad(x), b.grad(x))
    assert torch.equal(a.integral(x), b.integral(x))
    assert meta["spec_hash"] == a.spec_hash
    assert meta["spec_name"] == a.name
    assert meta["format_version"] == ckpt.FORMAT_VERSION
    assert meta["step"] == "7"
    assert read_metadata(path) == meta


def test_load_keeps_parameter_objects_shared(tmp_path):
    a = _perturbed(1)
    b = _perturbed(2)
    ids = [id(p) for p in b.integral.parameters()]
    load_checkpoint(save_checkpoint(tmp_path / "a.safetensors", a), b)
    assert [id(p) for p in b.integral.parameters()] == ids
    assert {id(p) for p in b.grad.parameters()} <= set(ids)


def test_mismatched_spec_hash_fails_clearly(tmp_path):
    a = _perturbed(1)
    path = save_checkpoint(tmp_path / "a.safetensors", a)
    other = ac.compile({**SPEC, "mlp": {**SPEC["mlp"], "activation": "tanh"}})
    assert other.spec_hash != a.spec_hash
    before = [p.clone() for p in other.integral.parameters()]
    with pytest.raises(CheckpointError, match="spec hash mismatch") as info:
        load_checkpoint(path, other)
    msg = str(info.value)
    assert str(path) in msg and a.spec_hash in msg and other.spec_hash in msg
    assert isinstance(info.value, ValueError)
    # nothing was loaded
    assert all(torch.equal(p, q) for p, q in zip(before, other.integral.parameters()))


def test_check_hash_false_still_checks_shapes(tmp_path):
    a = _perturbed(1)
    path = save_checkpoint(tmp_path / "a.safetensors", a)
    wider = ac.compile({**SPEC, "mlp": {**SPEC["mlp"], "hidden": [8, 16]}})
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(path, wider, check_hash=False)


def test_missing_and_garbage_files(tmp_path):
    net = _perturbed(1)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors", net)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_checkpoint(bad, net)


def test_foreign_safetensors_file_is_rejected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not an autoint checkpoint"):
        load_checkpoint(path, _perturbed(1))


def test_reserved_metadata_keys(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "a.safetensors", _perturbed(1), extra={"spec_hash": "x"})


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_interrupted_write_keeps_old_checkpoint(tmp_path, monkeypatch, fail_at):
    old = _perturbed(1)
    path = save_checkpoint(tmp_path / "model.safetensors", old)
    old_bytes = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("simulated crash mid-write")

    # fsync runs after the new bytes are in the temp file; replace is the commit point
    monkeypatch.setattr(ckpt.os, fail_at, boom)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, _perturbed(2))
    monkeypatch.undo()

    assert path.read_bytes() == old_bytes
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]  # no temp file left behind
    fresh = _perturbed(3)
    load_checkpoint(path, fresh)
    assert all(torch.equal(p, q) for p, q in zip(old.integral.parameters(), fresh.integral.parameters()))


def test_partial_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    """The writer dies after writing half the bytes: the destination is untouched."""
    path = save_checkpoint(tmp_path / "model.safetensors", _perturbed(1))
    old_bytes = path.read_bytes()
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()
            return False

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ckpt.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _perturbed(2))
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


def test_overwrite_replaces_content(tmp_path):
    path = tmp_path / "sub" / "model.safetensors"
    save_checkpoint(path, _perturbed(1))
    b = _perturbed(2)
    save_checkpoint(path, b)
    c = _perturbed(3)
    load_checkpoint(path, c)
    assert all(torch.equal(p, q) for p, q in zip(b.integral.parameters(), c.integral.parameters()))
