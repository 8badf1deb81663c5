"""ZIP (the paper's method): the low-rank Fastfood space over the context tokens, clipped SPSA.

Its settings are the flat `TrainConfig` fields of the official TRAINER.ZIP / TRAINER.BASIC keys
(n_ctx, ctx_init, intrinsic_dim, rank, opt_type, sp_avg, spsa_params, moms, perturbation);
`ZIPOptions` is empty. `zip_space` is shared by the methods that search ZIP's space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from zipfast.errors import ConfigError
from zipfast.evaluate.text import TextEvaluator
from zipfast.methods.base import MINIBATCH_KEYS, TEXT_SEEDS, Method, Parts, Seeds
from zipfast.optim import SPSA
from zipfast.spaces.context import ZIPSpace

# ZIP's official keys of the settings the space reads (the config layer's OFFICIAL_KEYS include them).
OFFICIAL_KEYS = {"n_ctx": "TRAINER.ZIP.N_CTX", "ctx_init": "TRAINER.ZIP.CTX_INIT",
                 "intrinsic_dim": "TRAINER.ZIP.INTRINSIC_DIM", "rank": "TRAINER.ZIP.RANK",
                 "opt_type": "TRAINER.BASIC.OPT_TYPE", "sp_avg": "TRAINER.BASIC.SP_AVG",
                 "spsa_params": "TRAINER.ZIP.SPSA_PARAMS", "moms": "TRAINER.ZIP.MOMS", "precision": "TRAINER.ZIP.PREC"}
# The flat settings (Method.config_keys) that `text_evaluator`'s context and `zip_space` read, for every
# method that uses them; ZIP's SPSA reads SPSA_KEYS besides.
CONTEXT_KEYS = ("n_ctx", "ctx_init", *MINIBATCH_KEYS)
SPACE_KEYS = (*CONTEXT_KEYS, "intrinsic_dim", "rank")
SPSA_KEYS = ("opt_type", "perturbation", "sp_avg", "spsa_params", "moms")
# The ZIP paper's search space for ZIP (Park et al., ICLR 2025, arXiv 2504.06838, appendix Table 16, the
# hyperparameter search ranges, as issue 19 quotes it): initial step size a, step decay alpha, initial
# perturbation c, perturbation decay gamma, intrinsic dimensionality and rank: 4·4·3·2·3·3 = 864 points.
PAPER_GRID = {"a": (1.0, 0.1, 0.01, 0.005), "alpha": (0.6, 0.5, 0.4, 0.3), "c": (0.01, 0.005, 0.001),
              "gamma": (0.2, 0.1), "intrinsic_dim": (500, 1000, 2000), "rank": (1, 3, 5)}


@dataclass(frozen=True)
class ZIPOptions:
    """ZIP has no options here: it reads the flat TrainConfig fields (opt_type, sp_avg, spsa_params, moms,
    n_ctx, intrinsic_dim, rank)."""

    def check(self) -> None:
        pass


def text_evaluator(task, seeds: Seeds, init_text: str = "") -> TextEvaluator:
    """The text-side evaluator of a run: its backend's engine; the context from TRAINER.ZIP.CTX_INIT,
    else the method's `init_text`, else random."""
    ctx_init = task.config.ctx_init
    words = ctx_init if ctx_init.replace("_", " ").strip() else init_text
    return TextEvaluator.create(task, task.backends["text"], words, seeds.seed_for(TEXT_SEEDS.ctx0))


def zip_space(task, evaluator: TextEvaluator, seeds: Seeds):
    """(ZIPSpace from the evaluator's initial context, its initial point w0 [d])."""
    c = task.config
    check_intrinsic_dim(c.intrinsic_dim, evaluator.n_ctx, evaluator.tower.width)
    space = ZIPSpace.create(evaluator.ctx0, c.intrinsic_dim, c.rank, seeds.generator(TEXT_SEEDS.space))
    return space, space.init_params(seeds.generator(TEXT_SEEDS.params))


def check_intrinsic_dim(intrinsic_dim: int, n_ctx: int, width: int) -> None:
    """Each token's d // m intrinsic coordinates must fit its Fastfood length L = 2^⌈log2 D⌉."""
    L = 1 << max(0, math.ceil(math.log2(width)))
    if intrinsic_dim // n_ctx > L:
        raise ConfigError(
            f"{OFFICIAL_KEYS['intrinsic_dim']} (intrinsic_dim) {intrinsic_dim} is too large for {n_ctx} context "
            f"tokens of width {width}: each token gets {intrinsic_dim} // {n_ctx} = {intrinsic_dim // n_ctx} "
            f"coordinates, its Fastfood projection takes at most {L}; use at most {L * n_ctx}")


def check_config(cfg) -> None:
    """The budget pays for one step (2·sp_avg queries)."""
    if cfg.budget < 2 * cfg.sp_avg:
        raise ConfigError(f"TRAINER.BASIC.MAX_API_CALLS: budget {cfg.budget} is smaller than one step "
                          f"(2*sp_avg = {2 * cfg.sp_avg} queries)")


def build(task, options: ZIPOptions, seeds: Seeds) -> Parts:
    c = task.config
    ev = text_evaluator(task, seeds)
    space, w0 = zip_space(task, ev, seeds)
    opt = SPSA(w0, c.opt_type, c.sp_avg, c.spsa_params, c.moms, seed=seeds.seed_for(TEXT_SEEDS.optim),
               perturbation=c.perturbation)
    return Parts(space, opt, ev)


METHOD = Method("zip", "ZIP: low-rank Fastfood space, clipped SPSA (the official defaults)", ZIPOptions,
                "2·sp_avg = 10 per step", build, official=("ZIP", "ZIP"), check_config=check_config,
                config_keys=(*SPACE_KEYS, *SPSA_KEYS), paper_grid=PAPER_GRID,
                hint="Lower the step size a (TRAINER.ZIP.SPSA_PARAMS[2]) or perturbation c, or use precision fp32.")
