"""ZIP + CMA-ES: ZIP's low-rank Fastfood space searched by CMA-ES (the pycma wrapper BPT-VLM runs),
an ablation of ZIP's optimiser. Nothing in the trainer, the evaluator or the CLI knows of it."""

from __future__ import annotations

from dataclasses import dataclass

from zipfast.methods.base import TEXT_SEEDS, Method, Parts, Seeds, need
from zipfast.methods.zip import SPACE_KEYS, text_evaluator, zip_space
from zipfast.optim.cma import PyCMA


@dataclass(frozen=True)
class ZIPCMAOptions:
    """From ZIP's initial point: `popsize` candidates per generation, all on one minibatch, initial step
    size `sigma0`; `point` is what is tested and checkpointed as the prompt: the distribution's mean, or
    the best candidate seen ("best", BPT-VLM's rule)."""

    popsize: int = 20
    sigma0: float = 0.03  # of 0.03, 0.1, 0.3 the best on the planted task (docs/methods.md); not tuned on real data
    point: str = "mean"

    def check(self) -> None:
        need(self, "zip-cma", "popsize", self.popsize >= 2, ">= 2")
        need(self, "zip-cma", "sigma0", self.sigma0 > 0, "> 0")
        need(self, "zip-cma", "point", self.point in ("mean", "best"), "mean or best")


def build(task, options: ZIPCMAOptions, seeds: Seeds) -> Parts:
    ev = text_evaluator(task, seeds)
    space, w0 = zip_space(task, ev, seeds)
    seed = seeds.seed_for(TEXT_SEEDS.optim) % (2 ** 32 - 1) + 1  # pycma seeds numpy's legacy RNG: 1 … 2^32 − 1
    # pycma's maxiter is unbounded: the trainer's budget ends the run
    opt = PyCMA(space.dim, options.popsize, options.sigma0, seed=seed, cma_budget=2 ** 62, x0=w0, report=options.point)
    return Parts(space, opt, ev)


METHOD = Method("zip-cma", "ZIP's low-rank Fastfood space searched by CMA-ES (an ablation of ZIP's optimiser)",
                ZIPCMAOptions, "popsize = 20 per generation", build, config_keys=SPACE_KEYS)
