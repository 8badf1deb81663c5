"""Parameter spaces that act on the image side: flat vectors w [K, dim] → what the image tower sees.

Two kinds (`zipfast.engine.image` evaluates both, batched or one candidate at a time):

- pixel prompters (`prepare(images)` once per minibatch, then `apply(prepared, w)` →
  prompted pixels [K, B, 3, H, W]): BAR's reprogramming frame (`bar.ReprogrammingFrame`),
  BlackVIP's coordinator (`blackvip.CoordinatorPrompter`);
- token prompters (`visual_tokens(w)` → [K, n, W] appended to the patch sequence, and
  `text_ctx(w)` → text context [K, m, D]): BPT-VLM (`bptvlm.BPTVLMSpace`).
"""

from zipfast.spaces.frame import ReprogrammingFrame
from zipfast.spaces.coordinator import CoordinatorPrompter
from zipfast.spaces.bptvlm import BPTVLMSpace

__all__ = ["ReprogrammingFrame", "CoordinatorPrompter", "BPTVLMSpace"]
