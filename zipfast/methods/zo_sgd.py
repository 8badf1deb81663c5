"""ZO-SGD (MeZO-style): Gaussian two-point estimates on ZIP's low-rank space, no clipping."""

from __future__ import annotations

from dataclasses import dataclass

from zipfast.methods.base import TEXT_SEEDS, Method, Parts, Seeds, need
from zipfast.methods.zip import SPACE_KEYS, text_evaluator, zip_space
from zipfast.optim.zo_sgd import ZOSGD


@dataclass(frozen=True)
class ZOSGDOptions:
    """`pairs` Gaussian antithetic pairs per step (2·pairs queries), perturbation scale `mu`, constant
    step size `lr`."""

    pairs: int = 5
    mu: float = 0.01
    lr: float = 1e-3

    def check(self) -> None:
        need(self, "zo-sgd", "pairs", self.pairs >= 1, ">= 1")
        need(self, "zo-sgd", "mu", self.mu > 0, "> 0")
        need(self, "zo-sgd", "lr", self.lr > 0, "> 0")


def build(task, options: ZOSGDOptions, seeds: Seeds) -> Parts:
    ev = text_evaluator(task, seeds)
    space, w0 = zip_space(task, ev, seeds)
    return Parts(space, ZOSGD(w0, options.pairs, options.mu, options.lr, seed=seeds.seed_for(TEXT_SEEDS.optim)), ev)


METHOD = Method("zo-sgd", "ZO-SGD: Gaussian two-point estimator on ZIP's space, no clipping", ZOSGDOptions,
                "2·pairs = 10 per step", build, config_keys=SPACE_KEYS)
