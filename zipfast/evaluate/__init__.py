"""Evaluators: K candidates of a prompt space + the round's minibatch → K losses and accuracies.

One contract for every method (`Evaluator` in `base`): an evaluator does only the work that
depends on the candidate (a text pass, an image pass, or both), caches what does not (image
features of the text-side methods, BlackVIP's encoder output per minibatch), predicts on the
test split, and states its cost per candidate in queries. `TextEvaluator` serves the methods
whose candidates change the text prompt; `ImageEvaluator` those that change what the image
tower sees (and, for BPT-VLM, the text prompt too).
"""

from zipfast.evaluate.base import Evaluator, Task
from zipfast.evaluate.image import ImageEvaluator
from zipfast.evaluate.text import TextEvaluator

__all__ = ["Evaluator", "Task", "TextEvaluator", "ImageEvaluator"]
