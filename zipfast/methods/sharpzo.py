"""SharpZO: sharpness-aware CMA-ES warm-up, then sparse ZO-SGD with Z-pruning, on a dense random
projection of the context tokens (paper version by default; `preset=released` for the released code)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from zipfast.env import check_memory
from zipfast.methods.base import TEXT_SEEDS, Method, Parts, Seeds, need
from zipfast.methods.zip import CONTEXT_KEYS, text_evaluator
from zipfast.optim.sharpzo import GRAD_ESTIMATORS, MASK_ENDS, SharpZO
from zipfast.spaces.context import ProjectionSpace

# The released code's run script (EuroSAT): coordinate-wise ĝ (2d queries, ε = 1e-3), no pruning
# (--prompt_trainer zo), accumulated stage-2 direction, bounds ±5, change point 100 generations.
# Its ε* has norm ρ/√40 (ĝ is normalised over a [40, d] copy); rho below reproduces that. It starts
# from the 4 tokens of "a photo of a", and its stage-2 parameter is [popsize, d] from the second step.
SHARPZO_RELEASED = {"grad_estimator": "cge", "grad_mu": 1e-3, "prune": False, "mask_end": "bottom",
                    "accumulate": True, "bound": 5.0, "change_point": 100, "rho": 0.1 / 40 ** 0.5,
                    "popsize_rows": True, "init_text": "a photo of a"}


@dataclass(frozen=True)
class SharpZOOptions:
    """`dim`: intrinsic dimension d of w; `std`: entry std of the projection A [m·D, d]; `init_text`: the
    words whose token embeddings are the initial context (empty: the run's context, TRAINER.ZIP.CTX_INIT
    or random N_CTX tokens); the rest as `zipfast.optim.sharpzo.SharpZO`. `preset="released"` starts from
    the released code's settings instead (explicit options still win)."""

    preset: str = "paper"
    dim: int = 512
    std: float = 1.0
    popsize: int = 40
    sigma0: float = 0.4
    rho: float = 0.1
    change_point: int = 50
    grad_estimator: str = "rge"
    grad_dirs: int = 5
    grad_mu: float = 1e-3
    mu: float = 1e-3
    lr: float = 1e-3
    pairs: int = 1
    prune: bool = True
    prune_interval: int = 200
    keep_fraction: float = 0.1
    mask_end: str = "top"
    accumulate: bool = False
    bound: float = 0.0
    popsize_rows: bool = False
    init_text: str = ""

    @staticmethod
    def preset_values(values: dict) -> dict:
        """The given values over the preset's (the released code's settings for preset=released)."""
        return {**SHARPZO_RELEASED, **values} if values.get("preset", "paper") == "released" else values

    def check(self) -> None:
        m = "sharpzo"
        need(self, m, "preset", self.preset in ("paper", "released"), "paper or released")
        for f in ("dim", "popsize", "grad_dirs", "pairs", "prune_interval"):
            need(self, m, f, getattr(self, f) >= 1, ">= 1")
        need(self, m, "popsize", self.popsize >= 2, ">= 2")
        for f in ("std", "sigma0", "grad_mu", "mu", "lr"):
            need(self, m, f, getattr(self, f) > 0, "> 0")
        need(self, m, "rho", self.rho >= 0, ">= 0")
        need(self, m, "change_point", self.change_point >= 0, ">= 0")
        need(self, m, "bound", self.bound >= 0, ">= 0 (0 = unbounded)")
        need(self, m, "keep_fraction", 0 < self.keep_fraction <= 1, "in (0, 1]")
        need(self, m, "grad_estimator", self.grad_estimator in GRAD_ESTIMATORS, " or ".join(GRAD_ESTIMATORS))
        need(self, m, "mask_end", self.mask_end in MASK_ENDS, " or ".join(MASK_ENDS))


def build(task, options: SharpZOOptions, seeds: Seeds) -> Parts:
    ev = text_evaluator(task, seeds, options.init_text)
    # The projection A [m·D, d] float32 is the largest tensor: refuse a dim no memory can hold.
    prompt = ev.ctx0.numel()
    check_memory(f"--method-opt dim={options.dim} (sharpzo's projection A: {prompt:,} prompt values × {options.dim:,})",
                 prompt * options.dim * 4, "lower dim (the default is 512)", ev.ctx0.device)
    space = ProjectionSpace.create(ev.ctx0, options.dim, options.std, seeds.generator(TEXT_SEEDS.space))
    kw = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)
          if f.name not in ("preset", "dim", "std", "init_text")}
    return Parts(space, SharpZO(space.init_params(), seed=seeds.seed_for(TEXT_SEEDS.optim), **kw), ev)


METHOD = Method("sharpzo", "SharpZO: sharpness-aware CMA-ES, then sparse ZO-SGD with Z-pruning", SharpZOOptions,
                "stage 1: 2·grad_dirs + popsize = 50 per generation (cge: 2·d + popsize); "
                "stage 2: 2·pairs = 2 per step, + 2·grad_dirs every P steps", build, config_keys=CONTEXT_KEYS)
