"""The frozen CLIP towers of an open_clip model, driven by embeddings instead of raw inputs.

Text: the frozen CLIP text tower of an open_clip model and the class prompts fed to it.

`TextTower` reads the pieces of any open_clip CLIP whose text tower is causal and pools at
the EOT token (the OpenAI-style towers: ViT-B/16, RN50, …). `ClassPrompts` tokenises
"X X … X {classname}." once and keeps the SOS and class-suffix embeddings, so a prompt is
[SOS] ctx_1 … ctx_m [suffix] exactly as the official PromptLearner assembles it.

Image: the frozen CLIP image tower of an open_clip model, driven by pixels or by patch tokens.

Pixel prompts (BAR's frame, BlackVIP's additive prompt) only need `encode_pixels`, which is
open_clip's own `model.visual` and works for every open_clip image tower. Visual prompt
tokens (BPT-VLM) need the token sequence between the positional embedding and `ln_pre`:
`embed` builds [CLS] + patches + positions, the caller appends its tokens, and
`encode_tokens` runs ln_pre → transformer → pooling → projection exactly as open_clip's
`VisionTransformer.forward` does after its own embedding step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zipfast.errors import UserError


class UnsupportedModelError(UserError):
    pass


class TextTower(nn.Module):
    """The text side of an open_clip CLIP model, driven by token embeddings.

    encode(x [N, T, D], eot [N]) → text features [N, E] (not normalised), with T ≤ 77:
    positional embedding, causal transformer, final LN at the EOT position, projection.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        text = getattr(model, "text", None)
        src = text if isinstance(text, nn.Module) else model  # CustomTextCLIP keeps it in .text
        missing = [a for a in ("token_embedding", "positional_embedding", "transformer", "ln_final")
                   if getattr(src, a, None) is None]
        if missing:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no open_clip-style text tower (missing {', '.join(missing)})")
        if getattr(src, "attn_mask", None) is None:
            raise UnsupportedModelError(
                "the text tower is not causal (no attention mask); ZIP's prompt semantics need a "
                "causal CLIP text tower pooling at EOT")
        pool = getattr(src, "text_pool_type", getattr(src, "pool_type", "argmax"))
        if pool not in ("argmax", "eos"):
            raise UnsupportedModelError(f"text pooling {pool!r} is not supported (need 'argmax' or 'eos')")
        if getattr(src, "cls_emb", None) is not None:
            raise UnsupportedModelError("text towers with a CLS embedding are not supported")
        self.token_embedding = src.token_embedding
        self.positional_embedding = src.positional_embedding
        self.transformer = src.transformer
        self.ln_final = src.ln_final
        self.text_projection = getattr(src, "text_projection", None)
        self.register_buffer("attn_mask", src.attn_mask, persistent=False)
        self.pool_type = pool
        self.eos_id = getattr(src, "text_eos_id", None) or getattr(src, "eos_id", None)
        self.width = self.positional_embedding.shape[-1]
        self.context_length = self.positional_embedding.shape[0]
        self.logit_scale = model.logit_scale

    @property
    def embed_dim(self) -> int:
        """E, the width of the text features (CLIP's joint space: image features have it too)."""
        p = self.text_projection
        if p is None:
            return self.width
        return p.out_features if isinstance(p, nn.Linear) else p.shape[-1]

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        p = self.text_projection
        if p is None:
            return pooled
        return p(pooled) if isinstance(p, nn.Linear) else pooled @ p

    def encode(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """Reference encoding: x [N, T, D] token embeddings, eot [N] → [N, E]."""
        T = x.shape[1]
        x = x + self.positional_embedding[:T].to(x.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:T, :T])
        x = self.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot]
        return self.project(pooled)


@dataclass
class ClassPrompts:
    """Tokenised class prompts for m context tokens.

    tokens [C, 77] ids of "{prefix} {classname}."; eot [C] EOT positions;
    sos [D] the SOS embedding; suffix [C, 77-1-m, D] embeddings after the context.
    """

    classnames: list
    tokens: torch.Tensor
    eot: torch.Tensor
    sos: torch.Tensor
    suffix: torch.Tensor
    n_ctx: int

    @classmethod
    def build(cls, tower: TextTower, tokenizer, classnames, n_ctx: int, prefix: str | None = None):
        if not classnames:
            raise ValueError("no class names given")
        names = [c.replace("_", " ") for c in classnames]
        limit = tower.positional_embedding.shape[0] - 3  # SOS, at least one class token, EOT
        if n_ctx > limit:  # checked before building a prompt of n_ctx words
            raise UserError(f"{n_ctx} context tokens (TRAINER.ZIP.N_CTX / ctx_init) do not fit the text tower's "
                            f"{limit + 3}-token context with a class name; use at most {limit}")
        prefix = prefix if prefix else " ".join(["X"] * n_ctx)
        tokens = tokenizer([f"{prefix} {n}." for n in names])
        if tower.pool_type == "argmax":
            eot = tokens.argmax(dim=-1)
        else:
            eot = (tokens == tower.eos_id).int().argmax(dim=-1)
        if int(eot.min()) <= n_ctx or int(tokens[:, -1].ne(0).any()):
            bad = [n for n, e, t in zip(names, eot.tolist(), tokens[:, -1].tolist()) if e <= n_ctx or t != 0]
            raise UserError(f"the prompt of {n_ctx} context tokens (TRAINER.ZIP.N_CTX / ctx_init) and class name "
                            f"does not fit the {tokens.shape[1]}-token context for {bad[:3]}: lower "
                            "TRAINER.ZIP.N_CTX or shorten those class names")
        with torch.no_grad():
            emb = tower.token_embedding(tokens.to(tower.positional_embedding.device)).float()
        return cls(list(classnames), tokens, eot, emb[0, 0].clone(), emb[:, 1 + n_ctx:].clone(), n_ctx)

    @property
    def n_cls(self) -> int:
        return self.tokens.shape[0]

    def assemble(self, ctx: torch.Tensor) -> torch.Tensor:
        """ctx [..., m, D] → prompt embeddings [..., C, 77, D]."""
        lead = ctx.shape[:-2]
        C, S, D = self.suffix.shape
        sos = self.sos.to(ctx).expand(*lead, C, 1, D)
        mid = ctx.unsqueeze(-3).expand(*lead, C, self.n_ctx, D)
        suf = self.suffix.to(ctx).expand(*lead, C, S, D)
        return torch.cat([sos, mid, suf], dim=-2)


def init_context_from_text(tower: TextTower, tokenizer, text: str) -> torch.Tensor:
    """Context [m, D] from an init text such as "a photo of a": m = its word count and the
    context is the first m token embeddings after SOS (the official rule; a word that splits
    into several tokens leaves its remaining tokens in the fixed suffix)."""
    text = text.replace("_", " ").strip()
    m = len(text.split())
    if m == 0:
        raise UserError("TRAINER.ZIP.CTX_INIT (ctx_init) is blank; give words such as 'a photo of a' or leave it "
                        "empty to learn TRAINER.ZIP.N_CTX random context tokens")
    tokens = tokenizer([text])
    with torch.no_grad():
        emb = tower.token_embedding(tokens.to(tower.positional_embedding.device)).float()
    return emb[0, 1:1 + m].clone()


class ImageTower(nn.Module):
    """model.visual of an open_clip CLIP model.

    encode_pixels(x [N, 3, H, W]) → features [N, E] (not normalised);
    embed(x [N, 3, H, W]) → tokens [N, 1 + G, W] (CLS + patches + positions, before ln_pre);
    encode_tokens(t [N, T, W]) → features [N, E], T ≥ 1 + G (extra tokens after the patches).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        visual = getattr(model, "visual", None)
        if not isinstance(visual, nn.Module):
            raise UnsupportedModelError(f"{type(model).__name__} has no open_clip image tower (.visual)")
        self.visual = visual
        size = getattr(visual, "image_size", None)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size) if size is not None else None
        self.logit_scale = model.logit_scale
        self.token_prompts_ok, self.token_reason = self._token_support(visual)
        self.width = visual.conv1.out_channels if self.token_prompts_ok else None
        self.output_dim = int(visual.output_dim)

    @staticmethod
    def _token_support(v) -> tuple[bool, str]:
        needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "_pool")
        missing = [a for a in needed if getattr(v, a, None) is None]
        if missing:
            return False, f"{type(v).__name__} is not an open_clip VisionTransformer (missing {', '.join(missing)})"
        if getattr(v, "attn_pool", None) is not None:
            return False, "attentional pooling: appended prompt tokens would change the pooled set"
        if getattr(v, "pool_type", "tok") != "tok":
            return False, f"pooling {v.pool_type!r}: visual prompt tokens need CLS-token pooling ('tok')"
        return True, ""

    def require_tokens(self) -> None:
        if not self.token_prompts_ok:
            raise UnsupportedModelError(f"visual prompt tokens are not supported for this image tower: "
                                        f"{self.token_reason}")

    @property
    def n_tokens(self) -> int:
        """1 + G: CLS plus patch tokens of one image."""
        return self.visual.positional_embedding.shape[0]

    def encode_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)

    def pooled_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3, H, W] → the pooled features before the final projection [N, W]: `encode_pixels`
        is `project(pooled_pixels(x))` bit for bit (a run group batches the body, not the projection)."""
        v = self.visual
        if not self.token_prompts_ok or getattr(v, "output_tokens", False):
            raise UnsupportedModelError(f"{type(v).__name__}: the pooled features are read from an open_clip "
                                        "VisionTransformer only")
        x = v.transformer(v._embeds(x))
        return v._pool(x)[0]

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        proj = self.visual.proj
        return pooled @ proj if proj is not None else pooled

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)

    def encode_tokens(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.ln_pre(x)
        x = v.transformer(x)
        pooled, _ = v._pool(x)
        return pooled @ v.proj if v.proj is not None else pooled


def normalize(features: torch.Tensor) -> torch.Tensor:
    return F.normalize(features.float(), dim=-1)
