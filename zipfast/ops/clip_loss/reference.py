"""CLIP loss per candidate, the readable truth:

    logits[k] = exp(logit_scale) · normalise(img) [B, E] @ normalise(txt[k]) [C, E]ᵀ
    loss[k]   = mean_b cross-entropy(logits[k, b], label_b)
    acc[k]    = 100 · mean_b [argmax_c logits[k, b, c] == label_b]   (first maximum wins)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zipfast import reference as ref


def clip_loss(text_features: torch.Tensor, image_features: torch.Tensor, labels: torch.Tensor,
              logit_scale: torch.Tensor):
    """text [K, C, E], image [B, E], labels [B] (int64), logit_scale [] (log scale) → (loss [K], acc [K] in %)."""
    logits = ref.clip_logits(image_features.float(), text_features.float(), logit_scale)  # [K, B, C]
    K, B, C = logits.shape
    ce = F.cross_entropy(logits.reshape(K * B, C), labels.repeat(K), reduction="none").view(K, B).mean(1)
    acc = (logits.argmax(-1) == labels).float().mean(1) * 100
    return ce, acc


def clip_loss_fast(text_features: torch.Tensor, image_features: torch.Tensor, labels: torch.Tensor,
                   logit_scale: torch.Tensor):
    """The PyTorch path: the same maths with one normalisation per tensor, the scale folded into
    the image side, and log-sum-exp minus the label's logit instead of a [K·B, C] gather."""
    img = F.normalize(image_features.float(), dim=-1) * logit_scale.float().exp()
    txt = F.normalize(text_features.float(), dim=-1)
    logits = torch.matmul(img, txt.transpose(-1, -2))  # [K, B, C]
    idx = labels.view(1, -1, 1).expand(logits.shape[0], -1, 1)
    picked = logits.gather(-1, idx).squeeze(-1)
    ce = (torch.logsumexp(logits, -1) - picked).mean(1)
    acc = (logits.argmax(-1) == labels).float().mean(1) * 100
    return ce, acc
