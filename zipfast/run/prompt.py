"""A trained image-side prompt (BPT-VLM, BAR, BlackVIP) read back from its checkpoint, to be
evaluated on other classes or another dataset (base→new, cross-dataset, OOD).

A prompt is its method, its point (BAR: the frame parameters W; BlackVIP: the decoder vector;
BPT-VLM: the best candidate y seen, which the training run tested), the state that turns the
point into a prompt (BPT-VLM: the projections A_L, A_V; BlackVIP: the decoder's BatchNorm
running statistics) and the settings that shape it (PROMPT_SETTINGS, and the method's `prompt_keys`).
None of these depends on the class names: BAR and BlackVIP classify with the evaluated
dataset's hand-written template, BPT-VLM puts its text context before each class name.
"""

from __future__ import annotations

import logging

from zipfast.methods import get
from zipfast.run.checkpoint import Checkpoint, CheckpointMismatchError
from zipfast.run.state import read_run, upgrade

log = logging.getLogger("zipfast.run")
# TrainConfig fields that shape a prompt (the frame's and the clipping's normalisation, the
# model whose towers it feeds): they must agree, and the checkpoint's win in eval-only runs.
PROMPT_SETTINGS = ("model", "pretrained", "image_size", "pixel_mean", "pixel_std")
_TUPLES = ("pixel_mean", "pixel_std")


def trainer_name(method: str) -> str:
    """The official TRAINER.NAME that runs `method` (ZIP for the text-side optimisers on ZIP's trainer)."""
    m = get(method)
    return m.official[0] if m.official and m.needs_images else "ZIP"


def checkpoint_trainer(ck: Checkpoint) -> tuple[str, str]:
    """(official trainer name, method) of the run that wrote ck."""
    try:
        method = str(upgrade(ck).state["method"])
        return trainer_name(method), method
    except Exception:  # not a run's checkpoint: named as such by the caller
        return "unknown", "unknown"


def read_prompt_checkpoint(path, method: str) -> Checkpoint:
    """The checkpoint at path (a file or a run folder) in layout v2, refused unless `method` wrote it."""
    return require_method(read_run(path), method)


def require_method(ck: Checkpoint, method: str) -> Checkpoint:
    """ck, or CheckpointMismatchError (exit 2) naming both trainers unless `method` wrote it."""
    trainer, theirs = checkpoint_trainer(ck)
    if theirs != method:
        mine = trainer_name(method)
        raise CheckpointMismatchError(
            f"checkpoint {str(ck.path)!r} holds a prompt of --trainer {trainer} (method {theirs!r}), not of "
            f"--trainer {mine} (method {method!r}): evaluate it with --trainer {trainer}, or pass "
            f"--model-dir the folder of a {mine} run")
    return ck


def refuse_image_checkpoint(path, trainer: str) -> None:
    """For a ZIP-side evaluation: CheckpointMismatchError naming both trainers when path holds a
    prompt of a method that needs images."""
    ck = read_run(path)
    theirs, method = checkpoint_trainer(ck)
    if get(method).needs_images:
        raise CheckpointMismatchError(
            f"checkpoint {str(ck.path)!r} holds a prompt of --trainer {theirs} (method {method!r}), not of "
            f"--trainer {trainer}: evaluate it with --trainer {theirs}, or pass --model-dir the folder of a "
            f"{trainer} run")


def prompt_settings(ck: Checkpoint) -> tuple[dict, dict]:
    """(TrainConfig fields, method settings) of ck that an evaluation of its prompt must use."""
    fp = ck.fingerprint
    fields = {k: tuple(fp[k]) if k in _TUPLES else fp[k] for k in PROMPT_SETTINGS if k in fp}
    return fields, dict(fp.get("method_config") or {})


def check_prompt_settings(ck: Checkpoint, method: str, config: dict, method_config: dict,
                          weights: str | None = None) -> None:
    """Refuse ck when a setting that shapes its prompt differs from this run's (config:
    TrainConfig.to_dict(), method_config: the method's settings as a dict, weights: the frozen
    model's fingerprint, compared instead of the weights' path where the checkpoint has one); names each."""
    from zipfast.run.identity import differences

    fp, theirs_m = ck.fingerprint, ck.fingerprint.get("method_config") or {}
    diff = differences(fp, {**config, "weights": weights}, keys=(*PROMPT_SETTINGS, "weights"))
    diff += [f"{k}={theirs_m.get(k)!r} (checkpoint) vs {method_config[k]!r} (this run)"
             for k in get(method).prompt_keys if theirs_m.get(k) != method_config[k]]
    if "encoder" in method_config:  # BlackVIP: the decoder was trained on this encoder's features
        mine, theirs = str(method_config.get("encoder", "")), str(theirs_m.get("encoder", ""))
        if _random_encoder(mine) != _random_encoder(theirs):
            diff.append(f"BlackVIP encoder {theirs or 'the hub weights'!r} (checkpoint) vs {mine or 'the hub weights'!r} "
                        "(this run): a decoder trained on random encoder weights does not fit pretrained ones, or the "
                        "reverse; pass --blackvip-encoder as the training run did")
        elif _random_encoder(mine) and fp.get("seed") != config["seed"]:  # a random-weight encoder is seeded by SEED
            diff.append(f"seed={fp.get('seed')!r} (checkpoint) vs {config['seed']!r} (this run), which seeds "
                        f"BlackVIP's random-weight encoder (encoder 'none')")
        elif mine != theirs:
            log.warning("BlackVIP encoder %r differs from the training run's %r: the prompt is evaluated with the "
                        "weights given now", mine or "the hub weights", theirs or "the hub weights")
    if diff:
        raise CheckpointMismatchError(f"the prompt in {str(ck.path)!r} was shaped by other settings: "
                                      + "; ".join(diff))


def _random_encoder(source: str) -> bool:
    return source.lower() in ("none", "random")
