"""Zero-shot CLIP: a hand-written template prompt, 0 queries (nothing to search)."""

from __future__ import annotations

from dataclasses import dataclass

from zipfast.methods.base import Method, Parts, Seeds, need
from zipfast.evaluate.zeroshot import template_for
from zipfast.methods.zip import text_evaluator


@dataclass(frozen=True)
class ZeroShotOptions:
    """`template` with "{}" for the class name; empty = the dataset's official template when its name is
    known (zipfast.datasets.specs), else "a photo of a {}."."""

    template: str = ""

    def check(self) -> None:
        need(self, "zsclip", "template", self.template == "" or _one_slot(self.template),
             'a text with exactly one "{}" (the class name) and no other braces')


def _one_slot(template: str) -> bool:
    try:
        return template.count("{}") == 1 and template.format("x") == template.replace("{}", "x")
    except (IndexError, KeyError, ValueError):
        return False


def build(task, options: ZeroShotOptions, seeds: Seeds) -> Parts:
    ev = text_evaluator(task, seeds)
    ev.use_template(options.template or template_for(task.config.dataset))
    return Parts(None, None, ev)


METHOD = Method("zsclip", "zero-shot CLIP: a hand-written template prompt", ZeroShotOptions, "0", build,
                official=("ZeroshotCLIP", ""))
