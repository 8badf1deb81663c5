"""Prompt spaces: a batch of flat vectors w [K, dim] → a prompt of any kind.

- text context tokens [K, m, D] (`contexts(w)`): ZIP's low-rank Fastfood space
  (`context.ZIPSpace`) and the dense random projection p0 + A·w (`context.ProjectionSpace`,
  SharpZO's);
- pixels (`prepare(images)` once per minibatch, then `apply(prepared, w)` → prompted pixels
  [K, B, 3, H, W]): BAR's reprogramming frame (`frame.ReprogrammingFrame`), BlackVIP's
  coordinator (`coordinator.CoordinatorPrompter`);
- visual and text tokens at once (`visual_tokens(w)` → [K, n, W] appended to the patch sequence,
  `text_ctx(w)` → [K, m, D]): BPT-VLM (`bptvlm.BPTVLMSpace`).

The evaluators (zipfast.evaluate) call these; a space knows nothing of the optimiser searching it.
"""

from zipfast.spaces.bptvlm import BPTVLMSpace
from zipfast.spaces.context import ProjectionSpace, ZIPSpace
from zipfast.spaces.coordinator import CoordinatorPrompter
from zipfast.spaces.frame import ReprogrammingFrame

__all__ = ["ZIPSpace", "ProjectionSpace", "ReprogrammingFrame", "CoordinatorPrompter", "BPTVLMSpace"]
