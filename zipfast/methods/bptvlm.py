"""BPT-VLM: CMA-ES (pycma, as the official shallow_cma) over text and visual prompt tokens, each a random
projection of its own intrinsic space. A candidate's fitness is its mean loss over one epoch of
minibatches (each one query), every candidate drawing the next epoch, as the official trainer."""

from __future__ import annotations

from dataclasses import dataclass

from zipfast.data import synthetic
from zipfast.env import check_memory
from zipfast.evaluate.image import ImageEvaluator
from zipfast.methods.base import IMAGE_SEEDS, MINIBATCH_KEYS, Method, MethodOptionError, Parts, Seeds
from zipfast.optim.cma import BEST_RULES, PyCMA
from zipfast.spaces.bptvlm import BPTVLMSpace

SECTION = "TRAINER.BPTVLM."


@dataclass
class BPTVLMOptions:
    """Defaults: the paper's (configs/trainers/BPTVLM/vit_b16.yaml)."""

    tokens_l: int = 5  # TRAINER.BPTVLM.TOKENS_L
    tokens_v: int = 5  # TOKENS_V
    intrinsic_dim_l: int = 2000  # INTRINSIC_DIM_L
    intrinsic_dim_v: int = 2000  # INTRINSIC_DIM_V
    sigma: float = 1.0  # SIGMA: CMA-ES σ0 and the projections' scale
    pop_size: int = 15  # POP_SIZE
    cma_budget: int = 6000  # BUDGET: only sets pycma's maxiter = BUDGET / POP_SIZE
    bound: float = 0.0  # BOUND: > 0 bounds the search to ±BOUND
    # which candidate is tested: "epoch" (lowest fitness) or "running" (the official trainer's rule:
    # lowest running mean after any minibatch; zipfast.optim.cma.PyCMA). --trainer BPTVLM: "running"
    best: str = "epoch"

    def check(self) -> None:
        for name, key in (("tokens_l", "TOKENS_L"), ("tokens_v", "TOKENS_V"), ("intrinsic_dim_l", "INTRINSIC_DIM_L"),
                          ("intrinsic_dim_v", "INTRINSIC_DIM_V"), ("pop_size", "POP_SIZE"), ("cma_budget", "BUDGET")):
            positive_int(self, name, SECTION + key)
        if self.pop_size < 2:
            raise MethodOptionError(f"{SECTION}POP_SIZE must be at least 2, got {self.pop_size}")
        positive(self, "sigma", SECTION + "SIGMA")
        positive(self, "bound", SECTION + "BOUND", allow_zero=True)
        if self.best not in BEST_RULES:
            raise MethodOptionError(f"bptvlm option best {self.best!r}: choose epoch (lowest fitness) or running "
                                    "(the official trainer's running-mean rule)")


def positive_int(opts, name: str, key: str) -> None:
    v = getattr(opts, name)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise MethodOptionError(f"{key} ({name}) must be a positive integer, got {v!r}")


def positive(opts, name: str, key: str, allow_zero: bool = False) -> None:
    v = getattr(opts, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 if allow_zero else v > 0):
        raise MethodOptionError(f"{key} ({name}) must be a {'non-negative' if allow_zero else 'positive'} number, "
                                f"got {v!r}")


# option → official yaml key; the official trainer's train.py defaults (extend_cfg), which an official
# command line starts from; and what the official surface sets beyond the yaml (its behaviour).
OFFICIAL_KEYS = {"tokens_l": SECTION + "TOKENS_L", "tokens_v": SECTION + "TOKENS_V",
                 "intrinsic_dim_l": SECTION + "INTRINSIC_DIM_L", "intrinsic_dim_v": SECTION + "INTRINSIC_DIM_V",
                 "sigma": SECTION + "SIGMA", "pop_size": SECTION + "POP_SIZE", "cma_budget": SECTION + "BUDGET",
                 "bound": SECTION + "BOUND"}
TRAIN_PY_DEFAULTS = {"PREC": "fp32", "OPT_TYPE": "shallow_cma", "POP_SIZE": 15, "BUDGET": 6000, "BOUND": 0,
                     "TOKENS_L": 5, "TOKENS_V": 5, "SIGMA": 1, "INTRINSIC_DIM_L": 2000, "INTRINSIC_DIM_V": 2000}
# the keys bench-paper passes (the paper's values, over train.py's defaults)
PAPER_KEYS = ("tokens_l", "tokens_v", "intrinsic_dim_l", "intrinsic_dim_v", "sigma", "pop_size")
# On the generated image task: 5 tokens × 64 wide = 320 text and 320 visual parameters, so the paper's
# 2,000 + 2,000 intrinsic dimensions (for 5 × 512 text / 5 × 768 visual parameters) would exceed the
# parameters they project to.
TASK_DEFAULTS = {synthetic.NAME: {"intrinsic_dim_l": 200, "intrinsic_dim_v": 200}}


def check_projection_memory(m: BPTVLMOptions, text_width: int, visual_width: int, device=None) -> None:
    """ConfigError before allocating a projection no memory can hold: text [tokens_l·D, intrinsic_dim_l]
    and visual [tokens_v·W, intrinsic_dim_v], float32 (the two largest tensors of the method)."""
    for side, tokens, width, dim in (("l", m.tokens_l, text_width, m.intrinsic_dim_l),
                                     ("v", m.tokens_v, visual_width, m.intrinsic_dim_v)):
        what = (f"--method-opt tokens_{side}={tokens} and intrinsic_dim_{side}={dim} (TRAINER.BPTVLM.TOKENS_{side.upper()}, "
                f"INTRINSIC_DIM_{side.upper()}: a projection of {tokens:,} tokens × {width} wide × {dim:,})")
        check_memory(what, tokens * width * dim * 4, f"lower tokens_{side} or intrinsic_dim_{side} (the paper's are 5 and "
                     "2000)", device)


def build(task, options: BPTVLMOptions, seeds: Seeds) -> Parts:
    c, m = task.config, options
    check_projection_memory(m, task.model.token_embedding.weight.shape[1], task.model.visual.conv1.weight.shape[0],
                            task.device)
    ev = ImageEvaluator.create(task, task.backends, c.precision, expected_size=(c.image_size, "INPUT.SIZE (image_size)"),
                               text_tokens=m.tokens_l, epochs=True)
    model = task.model
    space = BPTVLMSpace.create(model.token_embedding.weight, model.visual.conv1.weight, m.tokens_l, m.tokens_v,
                               m.intrinsic_dim_l, m.intrinsic_dim_v, m.sigma, seeds.generator(IMAGE_SEEDS.space)
                               ).to(task.device)
    # pycma is seeded with SEED itself, as the official shallow_cma
    return Parts(space, PyCMA(space.dim, m.pop_size, m.sigma, c.seed, m.cma_budget, m.bound, m.best), ev)


METHOD = Method("bptvlm", "BPT-VLM: CMA-ES over 5 text + 5 visual prompt tokens (2,000 + 2,000 dims)",
                BPTVLMOptions, "pop_size × minibatches per epoch = 15 per generation", build, ("text", "image"),
                official=("BPTVLM", "BPTVLM"), official_keys=OFFICIAL_KEYS, official_defaults=TRAIN_PY_DEFAULTS,
                official_behaviour={"best": "running"}, paper_keys=PAPER_KEYS,
                prompt_keys=("tokens_l", "tokens_v", "intrinsic_dim_l", "intrinsic_dim_v"), task_defaults=TASK_DEFAULTS,
                config_keys=MINIBATCH_KEYS)
