"""Test predictions of a learned prompt or of given class text features, on cached test image features."""

from __future__ import annotations

import torch

_CHUNK = 4096


def predict_with_text(trainer, text_features: torch.Tensor):
    """(predictions [M], labels [M]) for class text features [C, E] on the trainer's test split."""
    feats, labels = trainer.source.test_set()
    preds = []
    for i in range(0, len(labels), _CHUNK):
        preds.append(trainer.engine.logits_from_text(feats[i:i + _CHUNK], text_features).argmax(-1).cpu())
    return torch.cat(preds), labels.cpu()


def predict_prompt(trainer, w: torch.Tensor | None = None):
    """Predictions of the prompt of w (default: the trainer's current point): one text pass."""
    w = trainer.w if w is None else w.to(trainer.device)
    txt = trainer.engine.text_features(trainer.space.contexts(w.unsqueeze(0)))[0]
    return predict_with_text(trainer, txt)
