"""Image-side query engines: K candidate prompts × B images → K losses.

The candidates of BPT-VLM, BAR and BlackVIP change what the image tower sees, so image
features depend on the candidate (unlike ZIP, where one image pass serves all queries).

- `ReferenceImageEngine` is the truth and the official structure: each candidate is
  evaluated on its own (its candidate-independent work, e.g. BlackVIP's encoder, redone
  per candidate, as the official code does for every query).
- `BatchedImageEngine` is an implementation of the same contract: the candidate-
  independent work runs once per minibatch (BlackVIP's frozen encoder, the patch
  embedding of BPT-VLM's images), and all K × B prompted images go through the image tower
  in one batched pass, chunked to a memory limit (results do not depend on the chunking
  up to float rounding). Text features, when the candidate changes them too (BPT-VLM),
  come from one batched text pass (`zipfast.engine.batched.BatchedEngine`) for all K.

Prompters (`zipfast.spaces`) come in two kinds: "pixels" (prepare(images) → prepared,
apply(prepared, w [k, dim]) → prompted images [k, B, 3, H, W]) and "tokens"
(visual_tokens(w [k, dim]) → [k, n, W] appended after the patch tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zipfast.errors import UserError
from zipfast.engine.text import PRECISIONS, autocast_for, resolve_precision
from zipfast.env import precision_substitution
from zipfast.engine.towers import ImageTower


class ImageEngine:
    """features(prompter, w [K, dim], images) → L2-normalised image features [K, B, E] (fp32).

    images: [B, 3, H, W] shared by all candidates, or (token prompters) [K, B, 3, H, W], one
    minibatch per candidate.
    """

    name = "image-engine"

    def __init__(self, tower: ImageTower, precision: str = "fp32"):
        if precision not in PRECISIONS and precision != "auto":
            raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        self.tower = tower
        self.device = next(tower.visual.parameters()).device
        self.precision = resolve_precision(precision, self.device)
        why = precision_substitution(precision, self.device)  # e.g. fp16 → bf16 on a CPU: the report lists it
        self.fallbacks = [{"what": "precision", "requested": precision, "used": self.precision, "why": why}] \
            if why else []

    def features(self, prompter, w: torch.Tensor, images: torch.Tensor, out: torch.Tensor | None = None,
                 precision: str | None = None):
        """out: optional preallocated [K, B, E] float32 tensor that every chunk writes into.
        precision: this call's (default: the engine's). The whole query, prompter included
        (BlackVIP's encoder and decoder), runs under its autocast, as an official query does."""
        K, B = w.shape[0], images.shape[-4]
        if out is None:
            out = torch.empty(K, B, self.tower.output_dim, device=self.device)
        elif tuple(out.shape) != (K, B, self.tower.output_dim):
            raise ValueError(f"out has shape {tuple(out.shape)}, expected {(K, B, self.tower.output_dim)}")
        if prompter.kind == "tokens":
            self.tower.require_tokens()
            if images.dim() == 5 and images.shape[0] != w.shape[0]:
                raise ValueError(f"{w.shape[0]} candidates but per-candidate images for {images.shape[0]}")
        elif images.dim() != 4:
            raise ValueError(f"pixel prompts take one minibatch [B, 3, H, W] for all candidates, "
                             f"got {tuple(images.shape)}")
        precision = self.precision if precision is None else resolve_precision(precision, self.device)
        with torch.no_grad(), autocast_for(self.device, precision):
            self._features(prompter, w, images.to(self.device), out)
        return out

    def _features(self, prompter, w, images, out):
        """Runs under the query's autocast (set by `features`)."""
        raise NotImplementedError

    @staticmethod
    def _tower(fn, x):
        return F.normalize(fn(x).float(), dim=-1)


class ReferenceImageEngine(ImageEngine):
    """One candidate at a time, everything recomputed per candidate (the official structure)."""

    name = "image-reference"

    def _features(self, prompter, w, images, out):
        for k in range(w.shape[0]):
            if prompter.kind == "pixels":
                x = prompter.apply(prompter.prepare(images), w[k:k + 1])[0]
                out[k] = self._tower(self.tower.encode_pixels, x)
            else:
                imgs = images[k] if images.dim() == 5 else images
                tokens = prompter.visual_tokens(w[k:k + 1]).to(self.device)
                emb = self.tower.embed(imgs)
                x = torch.cat([emb, tokens.expand(emb.shape[0], -1, -1).to(emb.dtype)], 1)
                out[k] = self._tower(self.tower.encode_tokens, x)


class BatchedImageEngine(ImageEngine):
    """All K × B prompted images through the tower in as few passes as the memory limit allows."""

    name = "image-batched"

    def __init__(self, tower: ImageTower, precision: str = "fp32", memory_limit_mb: float = 1024.0):
        super().__init__(tower, precision)
        self.memory_limit = memory_limit_mb * 2 ** 20

    def rows_per_pass(self, tokens: int, width: int) -> int:
        """Images per tower pass under the memory limit: fp32 residual, qkv, attention output and
        the 4× MLP hidden of every token row, plus the attention scores (≈ 16 floats per width
        unit and token, T floats per token and head-group)."""
        per_image = 4 * tokens * (16 * width + 2 * tokens)
        return max(1, int(self.memory_limit // per_image))

    def _geometry(self, extra: int = 0) -> tuple[int, int]:
        """(tokens, width) of one image's pass; a non-ViT tower is sized as a ResNet-50's last stage."""
        if self.tower.token_prompts_ok:
            return self.tower.n_tokens + extra, self.tower.width
        return 50 + extra, 2048

    def _features(self, prompter, w, images, out):
        K = w.shape[0]
        if prompter.kind == "pixels":
            B = images.shape[0]
            rows = self.rows_per_pass(*self._geometry())
            prepared = prompter.prepare(images)  # once per minibatch, not per candidate
            k_chunk = max(1, rows // B)
            for k0 in range(0, K, k_chunk):
                x = prompter.apply(prepared, w[k0:k0 + k_chunk])  # [k, B, 3, H, W]
                self._rows(self.tower.encode_pixels, x.flatten(0, 1), rows, out[k0:k0 + k_chunk].view(-1, out.shape[-1]))
            return
        tokens = prompter.visual_tokens(w).to(self.device)  # [K, n, W]
        rows = self.rows_per_pass(*self._geometry(tokens.shape[1]))
        if images.dim() == 5:  # one minibatch per candidate
            B = images.shape[1]
            emb = self._embed(images.flatten(0, 1), rows)
            emb = emb.view(K, B, *emb.shape[1:])
        else:  # shared: the patch embedding runs once for all candidates
            B = images.shape[0]
            emb = self._embed(images, rows).unsqueeze(0).expand(K, -1, -1, -1)
        k_chunk = max(1, rows // B)
        for k0 in range(0, K, k_chunk):
            e, t = emb[k0:k0 + k_chunk], tokens[k0:k0 + k_chunk]
            x = torch.cat([e, t.unsqueeze(1).expand(-1, B, -1, -1).to(e.dtype)], 2)
            self._rows(self.tower.encode_tokens, x.flatten(0, 1), rows, out[k0:k0 + k_chunk].view(-1, out.shape[-1]))

    def _embed(self, images, rows):
        return torch.cat([self.tower.embed(images[i:i + rows]) for i in range(0, images.shape[0], rows)])

    def _rows(self, fn, x, rows, out):
        """The tower on x [N, ...] in slices of at most `rows` images, written into out [N, E]."""
        for i in range(0, x.shape[0], rows):
            out[i:i + rows] = self._tower(fn, x[i:i + rows])


IMAGE_BACKENDS = ("image-batched", "image-reference")


def make_image_engine(backend: str, tower: ImageTower, precision: str = "fp32", **options) -> ImageEngine:
    """"auto" → the batched engine."""
    name = "image-batched" if backend in ("auto", "torch-batched") else backend
    if name in ("image-reference", "torch-reference"):
        return ReferenceImageEngine(tower, precision)
    if name == "image-batched":
        return BatchedImageEngine(tower, precision, **options)
    raise UserError(f"unknown image backend {backend!r}; choose auto or one of {', '.join(IMAGE_BACKENDS)}")


# ------------------------------------------------------------------------------ logits and losses


def image_logits(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale) -> torch.Tensor:
    """image_features [K, B, E], text_features [K or 1, C, E] (both normalised) → logits [K, B, C]."""
    scale = torch.as_tensor(logit_scale, dtype=torch.float32).exp().to(image_features.device)
    return scale * image_features.float() @ text_features.float().to(image_features.device).transpose(-1, -2)


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """logits [K, B, C], labels [B] (or [K, B]) → mean focal loss per candidate [K]:
    mean_b −(1 − p_t)^γ · log p_t (γ = 0 is cross-entropy)."""
    logp = torch.log_softmax(logits.float(), -1)
    lab = labels.expand(logits.shape[:-1]).unsqueeze(-1)
    logpt = logp.gather(-1, lab).squeeze(-1)
    return (-(1 - logpt.exp()) ** gamma * logpt).mean(-1)


def losses_and_accuracy(logits: torch.Tensor, labels: torch.Tensor, focal_gamma: float | None = None):
    """logits [K, B, C], labels [B] or [K, B] → (loss [K], accuracy in % [K]); cross-entropy
    unless focal_gamma is given (BAR's focal loss)."""
    labels = labels.to(logits.device)
    if focal_gamma is None:
        lab = labels.expand(logits.shape[:-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), lab.flatten(), reduction="none").view(lab.shape).mean(-1)
    else:
        loss = focal_loss(logits, labels, focal_gamma)
    acc = (logits.argmax(-1) == labels).float().mean(-1) * 100
    return loss, acc
