"""BAR: a reprogramming frame around a shrunken image, one-sided randomized gradient-free steps
(1 + q queries each) with a polynomially decaying step size, focal loss."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from zipfast.evaluate.image import ImageEvaluator
from zipfast.methods.base import IMAGE_SEEDS, MINIBATCH_KEYS, Method, MethodOptionError, Parts, Seeds
from zipfast.methods.bptvlm import positive, positive_int
from zipfast.optim.bar_rgf import BARGradientFree
from zipfast.spaces.frame import ReprogrammingFrame

log = logging.getLogger("zipfast.methods")
SECTION = "TRAINER.BAR."


@dataclass
class BAROptions:
    """Defaults: the paper's (configs/trainers/BAR/vit_b16.yaml)."""

    frame_size: int = 224  # TRAINER.BAR.FRAME_SIZE (the input size INPUT.SIZE sits inside)
    smooth: float = 0.01  # SMOOTH: β, the step along each random direction
    sigma: float = 1.0  # SIMGA (sic): std of the direction draw before normalisation
    lrs: tuple = (10.0, 0.1)  # LRS: initial and final step size
    decaying: float = 0.9  # DECAYING: decay over this fraction of the steps, and the decay power
    focal_g: float = 2.0  # FOCAL_G: focal-loss γ
    q: int = 5  # TRAINER.BASIC.SP_AVG: random directions per step (1 + q queries)
    max_epoch: int = 1000  # OPTIM.MAX_EPOCH: with minibatches per epoch, the decay horizon

    def check(self) -> None:
        self.lrs = tuple(self.lrs)
        positive_int(self, "frame_size", SECTION + "FRAME_SIZE")
        positive_int(self, "q", "TRAINER.BASIC.SP_AVG")
        positive_int(self, "max_epoch", "OPTIM.MAX_EPOCH")
        for n, k in (("smooth", "SMOOTH"), ("sigma", "SIMGA"), ("decaying", "DECAYING")):
            positive(self, n, SECTION + k)
        positive(self, "focal_g", SECTION + "FOCAL_G", allow_zero=True)
        if len(self.lrs) != 2 or not all(isinstance(v, (int, float)) and v >= 0 for v in self.lrs):
            raise MethodOptionError(f"{SECTION}LRS (lrs) must be [initial, final] step sizes ≥ 0, got {self.lrs!r}")


OFFICIAL_KEYS = {"frame_size": SECTION + "FRAME_SIZE", "smooth": SECTION + "SMOOTH", "sigma": SECTION + "SIMGA",
                 "lrs": SECTION + "LRS", "decaying": SECTION + "DECAYING", "focal_g": SECTION + "FOCAL_G",
                 "q": "TRAINER.BASIC.SP_AVG", "max_epoch": "OPTIM.MAX_EPOCH"}
TRAIN_PY_DEFAULTS = {"METHOD": "reprogramming", "PREC": "fp32", "LRS": [0.01, 0.0001], "FRAME_SIZE": 224,
                     "SMOOTH": 0.01, "SIMGA": 1.0, "DECAYING": 0.9, "FOCAL_G": 2.0}
PAPER_KEYS = ("frame_size", "smooth", "sigma", "lrs", "decaying", "focal_g", "q")


def image_size(frame_size: int) -> int:
    """BAR's image size inside a frame: 194/224 of it, rounded down to even (the official INPUT.SIZE
    194 inside FRAME_SIZE 224)."""
    inner = frame_size * 194 // 224
    return inner - inner % 2


def fit(cfg, options: BAROptions, model, given) -> tuple:
    """(cfg, options, notes) on `model`: its input size is the frame's (unless frame_size is given), the
    image inside the frame is `image_size(frame)` (unless image_size is given: the official INPUT.SIZE)."""
    from zipfast.evaluate.base import adapt_config
    from zipfast.models import model_image_size

    size = model_image_size(model)
    if "image_size" in given:  # the official surface: INPUT.SIZE is the image inside FRAME_SIZE
        return cfg, options, []
    # INPUT.SIZE is the image inside the frame: set below from the frame, not adapted
    cfg, notes = adapt_config(dataclasses.replace(cfg, image_size=size or cfg.image_size), model, True)
    cfg, options, frame_notes = fit_sizes(cfg, options, size, "frame_size" in given)
    return cfg, options, notes + frame_notes


def fit_sizes(cfg, options: BAROptions, model_size: int | None, frame_given: bool):
    """(cfg, options, notes) for a model of input size `model_size`: the frame is that size (unless
    `frame_given`) and the image inside it `image_size(frame)`; a changed frame is logged and noted."""
    notes = []
    if model_size is not None and not frame_given and model_size != options.frame_size:
        notes.append(f"BAR: frame size {options.frame_size} -> {model_size} (the model's input size)")
        log.info("%s", notes[-1])
        options = dataclasses.replace(options, frame_size=model_size)
    return dataclasses.replace(cfg, image_size=image_size(options.frame_size)).validate(), options, notes


def build(task, options: BAROptions, seeds: Seeds) -> Parts:
    c, m = task.config, options
    precision = c.precision
    substitution = None
    if precision == "auto":
        # BAR's one-sided differences move W by β = 0.01 along a unit vector of 150,528 dims: the loss
        # changes by ~1e-5 relative, far below bf16/fp16 rounding. The official BAR runs fp32.
        precision = "fp32"
        substitution = "BAR's loss differences are below bf16/fp16 resolution"
        log.info("BAR: precision auto -> fp32 (its loss differences are below bf16/fp16 resolution)")
    ev = ImageEvaluator.create(task, task.backends, precision, expected_size=(m.frame_size, SECTION + "FRAME_SIZE"),
                               focal_gamma=m.focal_g)
    if substitution:  # listed in the report's fallbacks
        ev.engine.fallbacks.append({"what": "precision", "requested": c.precision, "used": precision,
                                    "why": substitution})
    space = ReprogrammingFrame(m.frame_size, c.image_size, c.pixel_mean, c.pixel_std)
    opt = BARGradientFree(space.init_params(seeds.generator(IMAGE_SEEDS.params)), m.q, m.smooth, m.sigma, m.lrs,
                          m.decaying, m.max_epoch * ev.steps_per_epoch, seeds.seed_for(IMAGE_SEEDS.optim))
    return Parts(space, opt, ev)


METHOD = Method("bar", "BAR: a reprogramming frame around the image, one-sided random gradient-free", BAROptions,
                "1 + q = 6 per step", build, ("image",), official=("BAR", "BAR"), official_keys=OFFICIAL_KEYS,
                official_defaults=TRAIN_PY_DEFAULTS, paper_keys=PAPER_KEYS,
                prompt_keys=("frame_size",), fit=fit, config_keys=MINIBATCH_KEYS)
