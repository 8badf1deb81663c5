"""Checkpoint files that cannot execute code: tensors in safetensors, everything else in JSON.

One file, `checkpoint.safetensors`. Its tensors are the tensor leaves of the run's nested
state dict, stored under their slash-joined key paths ("optimizer/generator"). The
safetensors header's `__metadata__` holds JSON strings:

- format "zipfast-checkpoint", format_version, zipfast_version;
- fingerprint: the settings that determine the trajectory (a resume must agree on all);
- state: the state dict with each tensor replaced by {"__tensor__": "<key path>"};
- sha256: a digest of the format fields, fingerprint, state, tensor table and tensor bytes,
  so a tampered, truncated or bit-flipped file is refused instead of resumed.

State contract: nested dicts with str keys whose leaves are torch.Tensors or JSON values
(str, int, float, bool, None, lists of them). Tuples come back as lists. Anything else is
refused when writing. Reading parses the header with `json` and lets safetensors build the
tensors: no pickle is ever run. Format-1 files (`checkpoint.pt`, torch.save of a dict) are
read only through `torch.load(weights_only=True)`, which refuses any pickled object other
than tensors and plain containers.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zipfast import __version__
from zipfast.errors import UserError
from zipfast.io import save_bytes

FORMAT = "zipfast-checkpoint"
FORMAT_VERSION = 2
LEGACY_FORMAT = "zipfast-checkpoint-v1"  # torch.save'd dicts written by zipfast 0.1.0
CHECKPOINT_NAME = "checkpoint.safetensors"
LEGACY_CHECKPOINT_NAME = "checkpoint.pt"
_TENSOR = "__tensor__"
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header
_TORCH_PICKLE_MAGIC = b"\x80\x02\x8a\x0a"  # pickle protocol 2, then torch's 10-byte magic number


class CheckpointError(UserError):
    """A checkpoint file that cannot be used: missing, empty, truncated, tampered, foreign."""


class CheckpointMismatchError(CheckpointError):
    """A valid checkpoint from a run whose trajectory settings differ from this one's."""


@dataclass
class Checkpoint:
    """A checkpoint read from `path`: its state dict and metadata."""

    path: Path
    state: dict
    fingerprint: dict
    format_version: int
    zipfast_version: str


# ------------------------------------------------------------------------------ state <-> (JSON, tensors)


def flatten_state(state: dict) -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON skeleton, {key path: tensor}) of a state dict; TypeError names a bad leaf."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value, path: str):
        if isinstance(value, torch.Tensor):
            # clone: safetensors refuses tensors sharing storage (views of one buffer)
            tensors[path] = value.detach().to("cpu", copy=True).contiguous()
            return {_TENSOR: path}
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if not isinstance(key, str) or "/" in key or key == _TENSOR:
                    raise TypeError(f"checkpoint state key {key!r} at {path or '/'!r} must be a str "
                                    f"without '/' (and not {_TENSOR!r})")
                out[key] = walk(item, f"{path}/{key}" if path else key)
            return out
        if isinstance(value, (list, tuple)):
            return [walk(item, f"{path}/{i}") for i, item in enumerate(value)]
        if value is None or isinstance(value, (str, bool, int, float)) and type(value) in (str, bool, int, float):
            return value
        raise TypeError(f"checkpoint state at {path!r} holds a {type(value).__module__}.{type(value).__name__}; "
                        "only tensors and JSON values (str, int, float, bool, None, lists, dicts) are allowed")

    return walk(state, ""), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of flatten_state; KeyError names a tensor the skeleton refers to but the file lacks."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {_TENSOR}:
            return tensors[skeleton[_TENSOR]]
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


# ------------------------------------------------------------------------------ writing


def _split(blob: bytes) -> tuple[dict, bytes]:
    """(header dict, data section) of safetensors bytes (header as written, incl. __metadata__)."""
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def _digest(meta: dict, table: dict, data: bytes) -> str:
    """sha256 over every metadata field but the digest itself, the tensor table and the bytes."""
    h = hashlib.sha256()
    fields = {k: v for k, v in meta.items() if k != "sha256"}
    h.update(json.dumps(fields, sort_keys=True).encode())
    h.update(b"\0")
    h.update(json.dumps(table, sort_keys=True).encode())
    h.update(b"\0")
    h.update(data)
    return h.hexdigest()


def checkpoint_bytes(state: dict, fingerprint: dict | None = None) -> bytes:
    """The bytes of a checkpoint file holding `state` (see the module docstring)."""
    from safetensors.torch import save

    skeleton, tensors = flatten_state(state)
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "zipfast_version": __version__,
            "fingerprint": json.dumps(fingerprint or {}, sort_keys=True),
            "state": json.dumps(skeleton, sort_keys=True)}
    table, data = _split(save(tensors))
    table.pop("__metadata__", None)
    meta["sha256"] = _digest(meta, table, data)
    blob = save(tensors, metadata=meta)
    assert _split(blob)[1] == data, "safetensors laid the tensors out differently with metadata"
    return blob


def write_checkpoint(path, state: dict, fingerprint: dict | None = None) -> Path:
    """Write atomically (temp file + fsync + rename): a crash leaves the previous file intact."""
    path = Path(path)
    save_bytes(checkpoint_bytes(state, fingerprint), path)
    return path


# ------------------------------------------------------------------------------ reading


def resolve_checkpoint_path(path) -> Path:
    """A checkpoint file path; a run directory resolves to the checkpoint inside it."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in (CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"directory {str(path)!r} holds no checkpoint ({CHECKPOINT_NAME}); pass the "
                              "checkpoint file of the run to resume or evaluate")
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; check the path (a run stopped before its "
                              "first checkpoint has none: start it again, with --overwrite)")
    if not path.is_file():  # a named pipe would block the read forever, a device never end it
        raise CheckpointError(f"checkpoint {str(path)!r} is not a regular file (a named pipe, socket or device); "
                              "pass the checkpoint.safetensors file of a run")
    return path


def read_checkpoint(path) -> Checkpoint:
    """Read and verify a checkpoint file; CheckpointError names the file and what is wrong."""
    path = resolve_checkpoint_path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {os.strerror(e.errno or 0) or e}") from e
    if not blob:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes); it is not a checkpoint (a copy may "
                              "have failed): use another checkpoint, or start afresh with --overwrite")
    # torch.save: a zip archive, or (before torch 1.6) a pickle opening with its magic number. A
    # safetensors header length can look like "\x80\x02" too, so the magic is matched in full.
    if blob[:4] == b"PK\x03\x04" or blob[:4] == _TORCH_PICKLE_MAGIC:
        return _read_legacy(path, blob)
    return _read_safetensors(path, blob)


def _bad(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {str(path)!r} {what}")


def _read_safetensors(path: Path, blob: bytes) -> Checkpoint:
    foreign = "is not a zipfast checkpoint ({}); pass a checkpoint.safetensors written by zipfast"
    if len(blob) < 8:
        raise _bad(path, f"is truncated or not a checkpoint ({len(blob)} bytes)")
    n = int.from_bytes(blob[:8], "little")
    if n > min(len(blob) - 8, _MAX_HEADER):
        raise _bad(path, foreign.format(f"its first bytes are not a safetensors header, or the file is "
                                        f"truncated: header length {n}, file size {len(blob)}"))
    try:
        header = json.loads(blob[8:8 + n])
    except (UnicodeDecodeError, ValueError):
        raise _bad(path, foreign.format("its header is not JSON")) from None
    except RecursionError:  # nesting deeper than Python's stack: no checkpoint is written so
        raise _bad(path, foreign.format("its header nests deeper than any checkpoint")) from None
    if not isinstance(header, dict):
        raise _bad(path, foreign.format("its header is not a JSON object"))
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _bad(path, foreign.format("a safetensors file without zipfast metadata, e.g. model weights"))
    try:
        version = int(meta["format_version"])
        ends = [int(t["data_offsets"][1]) for t in header.values()]
    except (KeyError, TypeError, ValueError, IndexError):
        raise _bad(path, "has malformed zipfast metadata; the file was modified or corrupted") from None
    if version > FORMAT_VERSION:
        raise _bad(path, f"has format version {version}, written by zipfast {meta.get('zipfast_version')}; this "
                         f"zipfast {__version__} reads up to version {FORMAT_VERSION}: upgrade zipfast")
    data = blob[8 + n:]
    expected = max(ends, default=0)
    if len(data) != expected:
        raise _bad(path, f"is truncated or padded: {len(data)} bytes of tensor data where the header "
                         f"describes {expected}; use an earlier checkpoint")
    if meta.get("sha256") != _digest(meta, header, data):
        raise _bad(path, "fails its checksum (sha256): it was modified or corrupted after zipfast wrote it; "
                         "use an earlier checkpoint")
    try:
        from safetensors.torch import load

        tensors = load(blob)
        state = unflatten_state(json.loads(meta["state"]), tensors)
        fingerprint = json.loads(meta["fingerprint"])
    except Exception as e:  # the checksum passed, so this is a writer bug or a forged digest
        raise _bad(path, f"cannot be decoded ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict):
        raise _bad(path, "holds no state dict")
    return Checkpoint(path, state, fingerprint, version, str(meta.get("zipfast_version")))


def _read_legacy(path: Path, blob: bytes) -> Checkpoint:
    try:
        sd = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError (a forbidden object), RuntimeError (truncated zip), EOFError…
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise _bad(path, f"was refused: it is a PyTorch file that is truncated, corrupt or holds Python objects "
                         f"other than tensors and plain values, and zipfast never runs code from a file "
                         f"({type(e).__name__}: {reason})") from None
    if not isinstance(sd, dict) or sd.get("format") != LEGACY_FORMAT:
        raise _bad(path, f"is not a zipfast checkpoint (a PyTorch file without the {LEGACY_FORMAT!r} marker); "
                         "pass a checkpoint written by zipfast")
    return Checkpoint(path, sd, sd.get("fingerprint") or {}, 1, str(sd.get("zipfast")))
