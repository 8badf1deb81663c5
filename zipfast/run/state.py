"""The state a run checkpoints (layout v2, every method), and the v1 layouts it reads.

Layout v2 (`state["format"] == STATE_FORMAT`):

    format, method, config (TrainConfig.to_dict()), point (the prompt's point [dim], None for zero-shot),
    optimizer (its state_dict), space (its state_dict), step, queries, elapsed, last_record,
    template, zipfast (version)

and the fingerprint: method, method_config (the resolved options), classnames, the config values of
the evaluator's trajectory keys, and the evaluator's own (text width and context length, or the
fixed template). The file format (safetensors + JSON, no pickle) is zipfast.run.checkpoint's.

v1 layouts, written before the one trainer: the text trainer's (no "format"; the point at "w" or in
the optimiser) and the image trainer's ("zipfast-image-checkpoint-v1", with a minibatch counter).
`upgrade` turns both into v2 in memory, filling the settings added since with the values those
runs ran, so every v1 checkpoint resumes bit for bit.
"""

from __future__ import annotations

import dataclasses

import torch

from zipfast.data.transforms import DEFAULT_CHOICES
from zipfast.methods import get, options_dict, resolve_options
from zipfast.evaluate.zeroshot import DEFAULT_TEMPLATE
from zipfast.run.checkpoint import Checkpoint, CheckpointMismatchError, read_checkpoint

STATE_FORMAT = "zipfast-run-v2"
IMAGE_V1 = "zipfast-image-checkpoint-v1"
# trajectory settings added to the text fingerprint after its first checkpoints, as those ran
_TEXT_V1_IMPLIED = {"method": "zip", "method_options": {}, "perturbation": "official"}


def layout(state: dict) -> str:
    """STATE_FORMAT, IMAGE_V1 or "text-v1"."""
    fmt = state.get("format")
    return fmt if fmt in (STATE_FORMAT, IMAGE_V1) else "text-v1"


def upgrade(ck: Checkpoint) -> Checkpoint:
    """ck with its state and fingerprint in layout v2 (unchanged when already v2)."""
    kind = layout(ck.state)
    if kind == STATE_FORMAT:
        return dataclasses.replace(ck, fingerprint=_with_defaults(dict(ck.fingerprint)))
    state, fp = dict(ck.state), dict(ck.fingerprint)
    try:
        if kind == IMAGE_V1:
            method = str(fp["method"])
            fp = {"augment": "pil", "transforms": list(DEFAULT_CHOICES),
                  "template": None if "text" in get(method).towers else DEFAULT_TEMPLATE, "method_config": {}, **fp}
            state["point"] = _point(state["optimizer"])
            state.pop("batches", None)  # checked against the optimiser's on load (Trainer.load_checkpoint)
            state["v1_batches"] = ck.state.get("batches")
        else:
            config = dict(state["config"])
            fp = {**_TEXT_V1_IMPLIED, **fp}
            method = str(fp["method"])
            fp["method_config"] = options_dict(resolve_options(method, fp["method_options"]))
            if state.get("optimizer") is not None and "w" not in state["optimizer"]:
                state["optimizer"] = {**state["optimizer"], "w": state["w"]}  # before the optimiser owned it
            state["point"] = state.pop("w", None)
            state["config"] = config
            state["template"] = None
    except (KeyError, TypeError) as e:
        raise CheckpointMismatchError(f"checkpoint {str(ck.path)!r} lacks the trainer's state ({e}); "
                                      "it was not written by zipfast's trainer") from None
    state.update(format=STATE_FORMAT, method=method)
    return dataclasses.replace(ck, state=state, fingerprint=_with_defaults(fp))


def _with_defaults(fp: dict) -> dict:
    """Method options added after a checkpoint was written: their defaults are what it ran."""
    method = fp.get("method")
    if isinstance(method, str) and isinstance(fp.get("method_config"), dict):
        try:
            fp["method_config"] = {**options_dict(resolve_options(method)), **fp["method_config"]}
        except ValueError:  # an unknown method: the fingerprint comparison names it
            pass
    return fp


def _point(opt_state: dict):
    from zipfast.optim import point_from_state

    return point_from_state(opt_state)


def read_run(path) -> Checkpoint:
    """A run's checkpoint (a file or its run folder) in layout v2; CheckpointError (exit 2) names
    the file and what is wrong with it."""
    ck = upgrade(read_checkpoint(path))
    if not isinstance(ck.state.get("config"), dict):
        raise CheckpointMismatchError(f"checkpoint {str(ck.path)!r} lacks the trainer's state (config); "
                                      "it was not written by zipfast's trainer")
    point = ck.state.get("point")
    if point is not None and not (isinstance(point, torch.Tensor) and point.is_floating_point()
                                  and bool(torch.isfinite(point).all())):
        raise CheckpointMismatchError(f"checkpoint {str(ck.path)!r}: its prompt's point is not a finite float "
                                      "vector (NaN/inf or another type); it cannot be evaluated or resumed: use "
                                      "another checkpoint")
    return ck
