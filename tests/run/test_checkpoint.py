"""zipfast/checkpoint.py: safetensors + JSON checkpoints that never run code, refuse bad files by name."""

import json
import os
from pathlib import Path
import pathlib
import pickle

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zipfast import ZIPTrainer
from zipfast.run.checkpoint import (CHECKPOINT_NAME, LEGACY_FORMAT, CheckpointError, checkpoint_bytes, flatten_state,
                                read_checkpoint, write_checkpoint)
from zipfast.cli import main
from zipfast.config import TrainConfig
from zipfast.errors import OutputDirError


def _cfg(**kw):
    values = dict(model="zipfast-planted", pretrained="none", dataset="planted", budget=30, n_ctx=4,
                  intrinsic_dim=40, rank=2, batch_size=16, device="cpu", checkpoint_every=0, seed=5)
    values.update(kw)
    return TrainConfig(**values)


def _trainer(planted_task, out=None, **kw):
    model, tokenizer, task = planted_task
    return ZIPTrainer(model, task.classnames, _cfg(**kw), task, tokenizer=tokenizer, output_dir=out, progress=False)


@pytest.fixture(scope="module")
def run_ckpt(planted_task, tmp_path_factory):
    """A finished 3-step run's checkpoint file (opt spsa-gc, so momentum is a tensor too)."""
    out = tmp_path_factory.mktemp("ckpt_run")
    tr = _trainer(planted_task, out, opt_type="spsa-gc")
    tr.fit()
    return out / CHECKPOINT_NAME, tr


# ------------------------------------------------------------------------------ the state contract


def test_trainer_state_round_trips_exactly(run_ckpt):
    path, tr = run_ckpt
    ck = read_checkpoint(path)
    assert ck.format_version == 2 and ck.fingerprint == json.loads(json.dumps(tr.fingerprint()))
    st_ = ck.state
    assert torch.equal(st_["point"], tr.w.cpu()) and st_["point"].dtype == torch.float32
    gen = st_["optimizer"]["generator"]
    assert gen.dtype == torch.uint8 and torch.equal(gen, tr.optimizer.generator.get_state())
    assert torch.equal(st_["optimizer"]["momentum"], tr.optimizer.momentum.cpu())
    assert st_["optimizer"]["spsa_params"] == list(tr.optimizer.state_dict()["spsa_params"])  # tuple -> list
    for key in ("B", "Pi", "G", "divisor"):
        assert torch.equal(st_["space"]["fastfood"][key], getattr(tr.space.fastfood, key).cpu()), key
    assert (st_["step"], st_["queries"]) == (3, 30) and st_["last_record"] == tr.last_record


@pytest.mark.parametrize("method, options", [
    ("zo-sgd", {"pairs": 2}),
    ("sharpzo", {"dim": 16, "popsize": 4, "change_point": 2, "grad_dirs": 1, "prune_interval": 3}),
    ("zsclip", {}),
])
def test_every_method_state_fits_the_format_and_resumes_exactly(planted_task, tmp_path, method, options):
    """The optimisers' states (SharpZO's CMA-ES stage included) go through checkpoint.safetensors
    and a 12 + 12-query run equals a 24-query run (for SharpZO: across its stage switch)."""
    kw = dict(method=method, method_options=options)
    full = _trainer(planted_task, tmp_path / "full", budget=24, **kw)
    full.fit()
    _trainer(planted_task, tmp_path / "half", budget=12, **kw).fit()
    resumed = _trainer(planted_task, tmp_path / "half", budget=24, **kw)
    resumed.load_checkpoint(tmp_path / "half" / CHECKPOINT_NAME)
    resumed.fit()
    assert resumed.queries == full.queries
    if method == "zsclip":
        assert resumed.w is None and read_checkpoint(tmp_path / "half" / CHECKPOINT_NAME).state["optimizer"] is None
    else:
        assert torch.equal(resumed.w.cpu(), full.w.cpu())
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k != "time_s"}  # noqa: E731
                       for x in (p / "log.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "half") == strip(tmp_path / "full")


_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**62, 2**62), st.text(max_size=8),
                  st.floats(allow_nan=False, width=64))
_tensor = st.builds(lambda shape, dt: (torch.arange(int(torch.tensor(shape).prod()) if shape else 1)
                                       .reshape(shape or ()) % 7).to(dt),
                    st.lists(st.integers(0, 3), max_size=3),
                    st.sampled_from([torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool,
                                     torch.bfloat16, torch.float16, torch.int32]))
_key = st.text(alphabet=st.characters(blacklist_characters="/", blacklist_categories=("Cs",)), min_size=1,
               max_size=6).filter(lambda k: k != "__tensor__")
_state = st.recursive(st.one_of(_leaf, _tensor),
                      lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_key, inner, max_size=3)),
                      max_leaves=12)


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b and type(a) is type(b)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=st.dictionaries(_key, _state, max_size=4))
def test_any_contract_state_round_trips(state, tmp_path):
    path = tmp_path / "c.safetensors"
    path.write_bytes(checkpoint_bytes(state, {"seed": 1}))  # the bytes write_checkpoint writes (minus fsync)
    ck = read_checkpoint(path)
    assert _same(state, ck.state) and ck.fingerprint == {"seed": 1}


@pytest.mark.parametrize("bad, where", [
    ({"a": {"b": __import__("numpy").float64(1.0)}}, "a/b"),
    ({"x": [1, object()]}, "x/1"),
    ({"k": {3: 1}}, "3"),
    ({"a/b": 1}, "a/b"),
])
def test_state_outside_the_contract_is_refused_by_path(bad, where):
    with pytest.raises(TypeError, match=where):
        flatten_state(bad)


# ------------------------------------------------------------------------------ hostile files


class _WritesMarker:
    """Unpickling this object calls Path.write_text(marker): code execution from a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return pathlib.Path.write_text, (pathlib.Path(self.marker), "pwned")


def test_malicious_pickle_is_refused_and_never_runs(run_ckpt, tmp_path, capsys):
    path, tr = run_ckpt
    # The payload is live: plain pickle would run it.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_WritesMarker(probe)))
    assert probe.read_text() == "pwned"

    marker = tmp_path / "marker"
    state = {**tr.state_dict(), "format": LEGACY_FORMAT, "fingerprint": tr.fingerprint(), "x": _WritesMarker(marker)}
    for name in ("evil.pt", CHECKPOINT_NAME):  # the extension changes nothing: content decides
        evil = tmp_path / name
        torch.save(state, evil)
        with pytest.raises(CheckpointError, match="never runs code") as exc:
            read_checkpoint(evil)
        assert str(evil) in str(exc.value)
        assert main(["eval", str(evil), "--device", "cpu"]) == 2
        assert str(evil) in capsys.readouterr().err
        rc = main(["train", "--data", "planted", "--budget", "40", "--device", "cpu", "--no-progress",
                   "--resume", str(evil), "--output-dir", str(tmp_path / "out")])
        assert rc == 2 and str(evil) in capsys.readouterr().err
    assert not marker.exists()


def test_legacy_pt_checkpoint_loads_through_weights_only(planted_task, run_ckpt, tmp_path):
    """A format-1 file (torch.save of the state dict, as zipfast 0.1.0 wrote) still resumes."""
    path, tr = run_ckpt
    legacy = tmp_path / "checkpoint.pt"
    torch.save({**tr.state_dict(), "format": LEGACY_FORMAT, "fingerprint": tr.fingerprint()}, legacy)
    other = _trainer(planted_task, opt_type="spsa-gc")
    other.load_checkpoint(legacy)
    assert read_checkpoint(legacy).format_version == 1
    assert torch.equal(other.w.cpu(), tr.w.cpu()) and other.step == 3


def _tampered(blob: bytes) -> bytes:
    b = bytearray(blob)
    b[-3] ^= 0x01  # one bit of tensor data
    return bytes(b)


def _edited_metadata(blob: bytes) -> bytes:
    n = int.from_bytes(blob[:8], "little")
    header = blob[8:8 + n].decode().replace('\\"queries\\": 30', '\\"queries\\": 10')
    assert header != blob[8:8 + n].decode()
    return len(header.encode()).to_bytes(8, "little") + header.encode() + blob[8 + n:]


def _foreign(blob: bytes) -> bytes:
    from safetensors.torch import save

    return save({"visual.proj": torch.zeros(4, 4)})


def _future(blob: bytes) -> bytes:
    return checkpoint_bytes({"a": 1}).replace(b'"format_version":"2"', b'"format_version":"9"')


@pytest.mark.parametrize("make, problem", [
    (lambda b: b"", "is empty"),
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b[:6], "truncated"),
    (lambda b: os.urandom(4096), "not a zipfast checkpoint"),
    (lambda b: b"\x80\x02\x8a\x0a" + os.urandom(64), "refused"),
    (lambda b: b"PK\x03\x04" + os.urandom(64), "refused"),
    (_tampered, "checksum"),
    (_edited_metadata, "checksum"),
    (_foreign, "without zipfast metadata"),
    (_future, "upgrade zipfast"),
], ids=["empty", "half", "6-bytes", "random", "random-pickle", "random-zip", "bit-flip", "edited-step",
        "model-weights", "future-version"])
def test_bad_checkpoint_exits_2_naming_the_file(run_ckpt, tmp_path, capsys, make, problem):
    path, _ = run_ckpt
    bad = tmp_path / "bad" / CHECKPOINT_NAME
    bad.parent.mkdir()
    bad.write_bytes(make(path.read_bytes()))
    with pytest.raises(CheckpointError, match=problem) as exc:
        read_checkpoint(bad)
    assert str(bad) in str(exc.value)
    assert main(["eval", str(bad), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and problem in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_checkpoint_that_is_not_a_regular_file_is_refused_without_reading(kind, tmp_path, capsys):
    # a named pipe would block the read forever; /dev/zero would never end it
    if kind == "fifo":
        path = tmp_path / CHECKPOINT_NAME
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
        if not path.exists():
            pytest.skip("no /dev/zero here")
    with pytest.raises(CheckpointError, match="not a regular file"):
        read_checkpoint(path)
    assert main(["eval", str(path), "--device", "cpu"]) == 2
    assert main(["train", "--data", "planted", "--resume", str(path), "--device", "cpu", "--no-progress",
                 "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("not a regular file") == 2 and str(path) in err and "Traceback" not in err


def test_a_failed_write_leaves_the_previous_checkpoint_intact(run_ckpt, tmp_path, monkeypatch):
    path = tmp_path / CHECKPOINT_NAME
    path.write_bytes(run_ckpt[0].read_bytes())
    import zipfast.io

    def crash(f, *a):
        raise OSError(28, "No space left on device")  # ENOSPC half-way through the temp file

    monkeypatch.setattr(zipfast.io.os, "fsync", crash)
    with pytest.raises(OutputDirError, match="disk is full"):
        write_checkpoint(path, {"w": torch.ones(3)})
    monkeypatch.undo()
    assert read_checkpoint(path).state["step"] == 3 and os.listdir(tmp_path) == [CHECKPOINT_NAME]


def test_a_directory_resolves_to_its_checkpoint(run_ckpt):
    path, _ = run_ckpt
    assert read_checkpoint(path.parent).path == path
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        read_checkpoint(path.parent.parent)


# ------------------------------------------------------------------------------ file modes


@pytest.mark.parametrize("umask, mode", [(0o027, 0o640)])  # neither mkstemp's 0600 nor a fixed 0644
def test_files_follow_the_umask_also_after_resume(planted_task, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        out = tmp_path / "run"
        _trainer(planted_task, out, budget=20).fit()
        resumed = _trainer(planted_task, out, budget=30)
        resumed.load_checkpoint(out / CHECKPOINT_NAME)
        resumed.fit()
    finally:
        os.umask(old)
    for name in (CHECKPOINT_NAME, "log.jsonl", "report.json"):
        assert (out / name).stat().st_mode & 0o777 == mode, name


def _same_state(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("method, options, nan_round", [
    ("zip", {}, 3),  # with perturbation "official": the ask draws from the optimiser's generator
    ("zo-sgd", {"pairs": 2}, 3),
    ("sharpzo", {"dim": 16, "popsize": 4, "change_point": 2, "grad_dirs": 1, "prune_interval": 3}, 3),  # a probe
    ("sharpzo", {"dim": 16, "popsize": 4, "change_point": 2, "grad_dirs": 1, "prune_interval": 3}, 5),  # the switch
])
def test_a_nonfinite_loss_checkpoints_the_optimiser_before_its_round(planted_task, tmp_path, monkeypatch, method,
                                                                    options, nan_round):
    """Whatever an ask changed (a generator's draw, SharpZO's stage switch, CMA-ES's population) is
    undone: the checkpoint holds the state after the previous round, and resuming from it without
    the fault continues exactly like an uninterrupted run."""
    from copy import deepcopy

    from zipfast.run.trainer import NonFiniteLossError

    kw = dict(method=method, method_options=options, perturbation="official", budget=40, checkpoint_every=0)
    full = _trainer(planted_task, tmp_path / "full", **kw)
    states = [deepcopy(full.optimizer.state_dict())]
    full.step_hooks.append(lambda tr, rec: states.append(deepcopy(tr.optimizer.state_dict())))
    full.fit()
    assert len(states) > nan_round

    broken = _trainer(planted_task, tmp_path / "run", **kw)
    real, calls = broken.engine.losses, []

    def losses(ctx, feats, labels):
        calls.append(1)
        loss, acc = real(ctx, feats, labels)
        return (torch.full_like(loss, float("nan")) if len(calls) == nan_round else loss), acc

    monkeypatch.setattr(broken.engine, "losses", losses)
    with pytest.raises(NonFiniteLossError):
        broken.fit()
    saved = read_checkpoint(tmp_path / "run" / CHECKPOINT_NAME).state["optimizer"]
    assert _same_state(saved, states[nan_round - 1])
    monkeypatch.undo()
    resumed = _trainer(planted_task, tmp_path / "run", **kw)
    resumed.load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)
    resumed.fit()
    assert torch.equal(resumed.w.cpu(), full.w.cpu()) and resumed.queries == full.queries


def test_a_deeply_nested_header_or_config_is_refused_by_name(tmp_path, capsys):
    header = ('{"a":' * 200000 + "1" + "}" * 200000).encode()
    path = tmp_path / CHECKPOINT_NAME
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(CheckpointError, match="nests deeper"):
        read_checkpoint(path)
    yml = tmp_path / "deep.yaml"
    yml.write_text("a: " + "[" * 100000 + "]" * 100000 + "\n")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("TRAINER:\n  ZIP:\n    CTX_INIT: caf\xe9\n".encode("latin-1"))
    for cfg, named in ((yml, "nests deeper"), (bad, "is not UTF-8 text (byte 0xe9")):
        assert main(["train", "--data", "planted", "--config-file", str(cfg), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert named in err and str(cfg) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("change", ["no optimizer", "short point", "negative step", "queries abc"])
def test_a_sound_file_with_unfit_content_is_refused_naming_it(change, tmp_path, capsys):
    """The checksum holds (zipfast wrote the file) but the content does not fit the method: exit 2, not a crash."""
    out = tmp_path / "run"
    args = ["train", "--data", "planted", "--budget", "20", "--device", "cpu", "--no-progress"]
    assert main([*args, "--output-dir", str(out)]) == 0
    ck = read_checkpoint(out / CHECKPOINT_NAME)
    state = dict(ck.state)
    if change == "no optimizer":
        state.pop("optimizer")
    elif change == "short point":
        state["point"] = state["point"][:-1]
        state["optimizer"] = dict(state["optimizer"], w=state["optimizer"]["w"][:-1])
    elif change == "negative step":
        state["optimizer"] = dict(state["optimizer"], step=-3)
    else:
        state["queries"] = "abc"
    write_checkpoint(out / CHECKPOINT_NAME, state, ck.fingerprint)
    capsys.readouterr()
    rc = main([*args[:4], "40", *args[5:], "--resume", str(out / CHECKPOINT_NAME)])
    err = capsys.readouterr().err
    assert rc == 2 and str(out / CHECKPOINT_NAME) in err and "Traceback" not in err, err
    if change == "short point":  # eval reads only the prompt (point and space): a point that does not fit is refused
        assert main(["eval", str(out / CHECKPOINT_NAME), "--device", "cpu"]) == 2
        assert "Traceback" not in capsys.readouterr().err
