"""Pretrained weights a new user gets wrong: an uncached tag with no network, a file that is not
weights (or would run code), and weights made for another model. Each is one line, exit 2."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zipfast import weights
from zipfast.cli import main
from zipfast.models import ModelLoadError, load_clip

REPO = Path(__file__).resolve().parents[1]
TAG_MODEL, TAG = "ViT-B-32", "laion2b_s34b_b79k"  # on the hub only: never in a test's empty cache
NO_NETWORK = "http://127.0.0.1:9"  # the discard port: nothing listens, every connection is refused


def _no_weights_only_advice(text: str):
    assert "weights_only" not in text and "arbitrary code" not in text, text


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("zipfast train: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------ a tag, offline


def test_uncached_tag_without_network_fails_at_once(tmp_path):
    # Outside `make` (no HF_HUB_OFFLINE) and with no network: the hub client is never asked (it
    # would log a retry warning a line for about a minute); one line says what to pass instead.
    env = {k: v for k, v in os.environ.items()
           if k.upper() not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NO_PROXY", "HF_HUB_CACHE")}
    env.update(PYTHONPATH=str(REPO), HF_HOME=str(tmp_path / "hf"), HTTPS_PROXY=NO_NETWORK, HTTP_PROXY=NO_NETWORK,
               https_proxy=NO_NETWORK, http_proxy=NO_NETWORK)
    res = subprocess.run([sys.executable, "-m", "zipfast.cli", "train", "--data", "planted", "--model", TAG_MODEL,
                          "--pretrained", TAG, "--output-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    line = _one_error_line(res.stderr)
    assert "Retry" not in res.stderr
    for part in (TAG_MODEL, repr(TAG), "not in the local cache", "--pretrained /path/to/", "pretrained=path"):
        assert part in line, line
    _no_weights_only_advice(line)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty hub cache, HF_HUB_OFFLINE off, and a hub client that fails the test if asked."""
    import huggingface_hub
    import huggingface_hub.constants as hf
    import open_clip.pretrained

    def asked(*a, **k):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", asked)
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", asked)


def test_unreachable_hub_is_never_asked(empty_hub, monkeypatch):
    monkeypatch.setattr(weights, "hub_unreachable", lambda: "no network (test)")
    with pytest.raises(ModelLoadError) as e:
        load_clip(TAG_MODEL, TAG)
    msg = str(e.value)
    assert "no network (test)" in msg and TAG_MODEL in msg and "--pretrained" in msg
    assert "\n" not in msg


def test_probe_sees_a_refused_proxy(empty_hub, monkeypatch):
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, NO_NETWORK)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    why = weights.hub_unreachable()
    assert why and "cannot be reached" in why, why


def test_offline_mode_needs_no_probe(monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    assert weights.hub_unreachable() == "HF_HUB_OFFLINE=1 is set"


def test_a_failed_download_is_summarised_whole_words():
    # the hub's own message, which the old error cut to "…trying to locate the f)"
    cause = ("An error happened while trying to locate the file on the Hub and we cannot find the requested files "
             "in the local cache. Please check your connection and try again or make sure your Internet connection "
             "is on.")
    try:
        try:
            raise OSError(cause)
        except OSError as inner:
            raise RuntimeError(f"Failed to download weights for tag {TAG!r}: {inner}") from inner
    except RuntimeError as e:
        msg = str(weights.fetch_error(TAG_MODEL, TAG, e))
    summary = msg[msg.index("(OSError: ") + len("(OSError: "):msg.index("). ")]
    assert summary == "An error happened while trying to locate the file on the Hub and we cannot find the requested " \
                      "files in the local cache.", msg
    assert "--pretrained /path/to/" in msg


@pytest.mark.parametrize("limit", [20, 37, 60, 100])
def test_short_never_cuts_a_word(limit):
    text = "could not locate the requested weights file anywhere on this machine or in any cache directory"
    out = weights.short(text, limit)
    words = set(text.split())
    assert len(out) <= limit + 2
    assert all(w in words for w in out.removesuffix(" …").split()), out


# ------------------------------------------------------------------ a file that is not weights


def _evil_pickle(path: Path, marker: Path, protocol: int):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps({"visual.proj": Evil()}, protocol=protocol))


def _tiny_state_dict():
    torch.manual_seed(0)
    model, _, _ = load_clip("zipfast-tiny", "none")
    return model.state_dict()


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """{kind: path} of files that are not weights; the pickles would touch `marker` if run."""
    root = tmp_path_factory.mktemp("bad")
    rng = torch.Generator().manual_seed(3)
    (root / "random.pt").write_bytes(bytes(torch.randint(0, 256, (4096,), generator=rng, dtype=torch.uint8).tolist()))
    (root / "notes.bin").write_text("these are my notes, not weights\n" * 20)
    torch.save(_tiny_state_dict(), root / "whole.pt")
    data = (root / "whole.pt").read_bytes()
    (root / "truncated.pt").write_bytes(data[:len(data) // 2])
    marker = root / "MARKER"
    _evil_pickle(root / "code-p2.pt", marker, 2)
    _evil_pickle(root / "code.pt", marker, pickle.DEFAULT_PROTOCOL)
    torch.save([torch.zeros(2)], root / "list.pt")
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(64)}, str(root / "cut.safetensors"))
    cut = (root / "cut.safetensors").read_bytes()
    (root / "cut.safetensors").write_bytes(cut[:len(cut) - 100])
    files = {p.stem: p for p in root.iterdir() if p.name not in ("whole.pt", "MARKER")}
    return files, marker


BAD = ["random", "notes", "truncated", "code-p2", "code", "list", "cut"]


@pytest.mark.parametrize("kind", BAD)
def test_cli_refuses_a_file_that_is_not_weights(kind, bad_files, tmp_path, capsys, monkeypatch):
    files, marker = bad_files
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch's switch to unsafe loads: still safe
    rc = main(["train", "--data", "planted", "--model", "zipfast-tiny", "--pretrained", str(files[kind]),
               "--output-dir", str(tmp_path / "run"), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    line = _one_error_line(err)
    assert f"weights file {str(files[kind])!r} is not a readable weights file" in line, line
    assert ".safetensors" in line and ".pt" in line
    _no_weights_only_advice(line)
    assert not marker.exists(), "a pickle in a --pretrained file ran its code"


def test_pickled_code_never_runs_through_the_api(bad_files):
    files, marker = bad_files
    for kind in ("code", "code-p2"):
        with pytest.raises(ModelLoadError, match="never runs"):
            load_clip("zipfast-tiny", str(files[kind]))
    assert not marker.exists()


# ------------------------------------------------------------------ weights of another model


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    sd = _tiny_state_dict()
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    torch.save(sd, path)
    return sd, path


def test_cli_refuses_weights_of_another_model(tiny_file, tmp_path, capsys):
    # zipfast-tiny and zipfast-tiny224 differ in the patch size: visual.conv1 is [64, 3, 16, 16] vs [64, 3, 32, 32]
    _, path = tiny_file
    rc = main(["train", "--data", "planted", "--model", "zipfast-tiny224", "--pretrained", str(path),
               "--output-dir", str(tmp_path / "run"), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    line = _one_error_line(err)
    assert f"weights file {str(path)!r} does not fit model zipfast-tiny224" in line, line
    assert "visual.conv1.weight: file has [64, 3, 16, 16], model has [64, 3, 32, 32]" in line, line
    assert "it looks like weights of zipfast-tiny." in line, line


def test_text_width_mismatch_names_both_models(tmp_path):
    # what open_clip reported as "text pos_embed width changed!"
    torch.manual_seed(0)
    planted, _, _ = load_clip("zipfast-planted", "none")
    path = tmp_path / "planted.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in planted.state_dict().items()}, str(path))
    with pytest.raises(ModelLoadError) as e:
        load_clip("zipfast-tiny", str(path))
    msg = str(e.value)
    assert "does not fit model zipfast-tiny:" in msg and "positional_embedding: file has [77, 256], model has [77, 64]" \
        in msg and "looks like weights of zipfast-planted" in msg, msg


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "module", "safetensors-as-bin"])
def test_a_state_dict_of_the_model_loads(tiny_file, tmp_path, wrap):
    sd, _ = tiny_file
    path = tmp_path / "w.bin"
    if wrap == "safetensors-as-bin":  # recognised by its header, not its name
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        obj = {"state_dict": sd, "epoch": 3} if wrap == "state_dict" else sd
        if wrap == "module":
            obj = {f"module.{k}": v for k, v in sd.items()}
        torch.save(obj, path)
    torch.manual_seed(1)  # another random init: only the file can make them equal
    model, _, _ = load_clip("zipfast-tiny", str(path))
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())
