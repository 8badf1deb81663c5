"""The batched query engine: all K candidates of a step in ONE text-encoder pass.

An implementation of `engine.ReferenceEngine.text_features`, exact under CLIP's causal
mask and EOT pooling (docs/performance.md):

- batched: the K × C prompts of a step form one batch;
- truncation: positions after the longest EOT of the class prompts are never computed;
- shared prefix: SOS + context (P = 1 + m positions) are the same for every class of one
  candidate, so they run once per candidate and every class suffix attends to their
  keys/values (reused per layer) instead of recomputing them C times;
- last layer: only the EOT rows of the final block are computed (queries, MLP);
- chunking: candidates × classes are split to stay under a memory limit; results do not
  depend on the chunking (up to float rounding).

The residual stream stays fp32; with bf16/fp16 only the matmuls run in low precision,
as under torch.autocast.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zipfast.engine.text import PRECISIONS, Engine, ReferenceEngine, autocast_for
from zipfast.env import log_once
from zipfast import ops
from zipfast.engine.towers import ClassPrompts, TextTower


@dataclass
class _Block:
    ln1: tuple
    wqkv: torch.Tensor
    bqkv: torch.Tensor
    wo: torch.Tensor
    bo: torch.Tensor
    ls1: torch.Tensor | None
    ln2: tuple
    w1: torch.Tensor
    b1: torch.Tensor
    act: nn.Module
    w2: torch.Tensor
    b2: torch.Tensor
    ls2: torch.Tensor | None
    heads: int


def _unsupported(blk) -> str | None:
    """Why the shared-prefix pass cannot run block `blk`, or None if it can."""
    attn = getattr(blk, "attn", None)
    if not isinstance(attn, nn.MultiheadAttention):
        return f"attention is {type(attn).__name__}, not nn.MultiheadAttention"
    if not attn._qkv_same_embed_dim or attn.in_proj_bias is None:
        return "attention without one fused, biased qkv projection"
    if hasattr(blk, "ln_1_kv"):
        return "cross-attention block (ln_1_kv)"
    if not hasattr(blk, "mlp"):
        return "block without an mlp"
    if not isinstance(getattr(blk, "ln_attn", nn.Identity()), nn.Identity):
        return "scaled-cosine / extra LayerNorm in attention (ln_attn)"
    return None


def _blocks(tower: TextTower, dtype) -> tuple[list[_Block] | None, str | None]:
    """(weights of open_clip ResidualAttentionBlocks in `dtype` (LN and layer scale in fp32), None),
    or (None, why) if a block has another type."""
    out = []
    for i, blk in enumerate(tower.transformer.resblocks):
        why = _unsupported(blk)
        if why:
            return None, f"text block {i} ({type(blk).__name__}): {why}"
        attn = blk.attn

        def ls(mod):
            return mod.gamma.detach().float() if hasattr(mod, "gamma") else None

        def ln(mod):
            return (mod.normalized_shape, mod.weight.detach().float(), mod.bias.detach().float(), mod.eps)

        mlp = blk.mlp
        out.append(_Block(
            ln(blk.ln_1), attn.in_proj_weight.detach().to(dtype), attn.in_proj_bias.detach().to(dtype),
            attn.out_proj.weight.detach().to(dtype), attn.out_proj.bias.detach().to(dtype), ls(blk.ls_1),
            ln(blk.ln_2), mlp.c_fc.weight.detach().to(dtype), mlp.c_fc.bias.detach().to(dtype), mlp.gelu,
            mlp.c_proj.weight.detach().to(dtype), mlp.c_proj.bias.detach().to(dtype), ls(blk.ls_2),
            attn.num_heads))
    return out, None


def _ln(x, p, dtype):
    return F.layer_norm(x, p[0], p[1], p[2], p[3]).to(dtype)


def _scaled(y, ls):
    y = y.float()
    return y if ls is None else y * ls


def _mlp_hidden(x, b: _Block, dtype):
    """act(LN₂(x) W₁ᵀ + b₁): the MLP's hidden activations."""
    return b.act(F.linear(_ln(x, b.ln2, dtype), b.w1, b.b1))


def _mlp(x, b: _Block, dtype):
    return _scaled(F.linear(_mlp_hidden(x, b, dtype), b.w2, b.b2), b.ls2)


def _add_linear(y, x, w, bias, ls):
    """The residual update y + ls·(x @ wᵀ + bias). In fp32 without layer scale it is one GEMM
    accumulating into (y + bias): no separate bias broadcast and residual add over the rows."""
    if ls is None and x.dtype == y.dtype == torch.float32:
        out = (y + bias).view(-1, y.shape[-1])
        return out.addmm_(x.reshape(-1, x.shape[-1]), w.t()).view(y.shape)
    return y + _scaled(F.linear(x, w, bias), ls)


def _add_mlp(y, b: _Block, dtype):
    """y + MLP(LN(y))."""
    return _add_linear(y, _mlp_hidden(y, b, dtype), b.w2, b.b2, b.ls2)


def _qkv(x, b: _Block, dtype):
    """x [..., T, D] → q, k, v [..., H, T, hd]."""
    qkv = F.linear(_ln(x, b.ln1, dtype), b.wqkv, b.bqkv)
    *lead, T, _ = qkv.shape
    qkv = qkv.view(*lead, T, 3, b.heads, -1).movedim(-3, 0).transpose(-2, -3)
    return qkv[0], qkv[1], qkv[2]


def _attn_out(o, b: _Block):
    """o [..., H, T, hd] → [..., T, D] after the output projection and layer scale."""
    o = o.transpose(-2, -3).flatten(-2)
    return _scaled(F.linear(o, b.wo, b.bo), b.ls1)


def _qkv_heads(y, b: _Block, dtype):
    """Class suffixes y [K, n, S, D] → q, k, v [K, H, n, S, hd] (head-major, contiguous)."""
    qkv = F.linear(_ln(y, b.ln1, dtype), b.wqkv, b.bqkv)
    K, n, S, _ = qkv.shape
    qkv = qkv.view(K, n, S, 3, b.heads, -1).permute(3, 0, 4, 1, 2, 5).contiguous()  # one copy: batched matmuls
    return qkv[0], qkv[1], qkv[2]


def _add_attn_out_heads(y, o, b: _Block):
    """y [K, n, T, D] + the output projection (and layer scale) of o [K, H, n, T, hd]."""
    K, H, n, T, hd = o.shape
    return _add_linear(y, o.permute(0, 2, 3, 1, 4).reshape(K, n, T, H * hd), b.wo, b.bo, b.ls1)


# Token rows per chunk. The matmuls reach the machine's sustained rate from ~1k rows, while
# the elementwise work (GELU, LayerNorm, residual adds, attention) slows down once a chunk's
# activations (≈ 28 KiB per row at D = 512, fp32) leave the cache: measured/floor on the
# scaling grid grew with the rows per chunk (docs/performance.md).
CHUNK_TOKENS = 2048


class BatchedEngine(Engine):
    """K candidates × C classes in one pass; see the module docstring for what is skipped."""

    name = "torch-batched"

    def __init__(self, tower: TextTower, prompts: ClassPrompts, precision: str = "fp32", truncate: bool = True,
                 shared_prefix: bool = True, memory_limit_mb: float = 1024.0, chunk_tokens: int = CHUNK_TOKENS):
        super().__init__(tower, prompts, precision)
        self.dtype = PRECISIONS[self.precision] or torch.float32  # fp16 on CPU already resolved to bf16
        self.T = int(prompts.eot.max()) + 1 if truncate else tower.context_length
        self.P = 1 + prompts.n_ctx
        self.S = self.T - self.P
        self.memory_limit = memory_limit_mb * 2 ** 20
        self.chunk_tokens = chunk_tokens
        self.blocks, why = _blocks(tower, self.dtype) if shared_prefix else (None, None)
        self.shared_prefix = self.blocks is not None
        if why:
            log_once(("shared_prefix", why), f"shared-prefix pass off, every class recomputes the prefix: {why}",
                     logging.WARNING, area="engine")
            self.fallbacks.append({"what": "shared_prefix", "requested": True, "used": False, "why": why})
        pos = tower.positional_embedding.detach().float()[: self.T]
        with torch.no_grad():
            self.sos_in = (prompts.sos.to(self.device) + pos[0]).view(1, 1, -1)
            self.ctx_pos = pos[1:self.P]
            self.suffix_in = prompts.suffix.to(self.device)[:, : self.S] + pos[self.P:]  # [C, S, D]
        self.eot_s = (prompts.eot.to(self.device) - self.P)  # EOT index inside the suffix
        self.prefix_attention = self.prefix_attention_backend = None
        if self.shared_prefix:  # the registry picks the implementation (cuda > triton > torch)
            self.prefix_attention_backend, self.prefix_attention = ops.resolve("prefix_attention", self.device)
            fb = ops.registry.fallback("prefix_attention", self.device)
            if fb:
                self.fallbacks.append({"what": "op prefix_attention", "requested": "auto", "used": fb["backend"],
                                       "why": "; ".join(f"{b}: {w}" for b, w in fb["skipped"].items())})

    # ------------------------------------------------------------------ chunking

    def _chunks(self, K: int, C: int):
        """(candidate chunk, class chunk) sizes: about `chunk_tokens` token rows per chunk (so its
        activations stay in cache), fewer if one chunk's activations would exceed the memory limit."""
        rows = self._rows()
        seq = self.S if self.shared_prefix else self.T
        c_chunk = max(1, min(C, rows // max(1, K * seq)))
        k_chunk = K if c_chunk > 1 or K * seq <= rows else max(1, rows // seq)
        return k_chunk, c_chunk

    # ------------------------------------------------------------------ passes

    def text_features(self, ctx: torch.Tensor) -> torch.Tensor:
        """ctx [K, m, D] → text features [K, C, E] (float32, not normalised)."""
        return self._pass(ctx, *self._chunks(ctx.shape[0], self.prompts.n_cls))

    def text_features_many(self, ctxs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Several runs' contexts [K_r, m, D] in one pass → their features [K_r, C, E], each bit for bit
        what `text_features(ctx_r)` gives: the runs are batched along the candidates, which every row
        computes on its own (measured exact on CPU), while the class chunk, which the prefix
        attention's reduction depends on, stays the one each run uses alone. Runs whose class chunks
        differ (other K) go in separate passes."""
        C = self.prompts.n_cls
        by_chunk: dict[int, list[int]] = {}
        for i, c in enumerate(ctxs):
            by_chunk.setdefault(self._chunks(c.shape[0], C)[1], []).append(i)
        out: list = [None] * len(ctxs)
        seq = self.S if self.shared_prefix else self.T
        for c_chunk, members in by_chunk.items():
            sizes = [ctxs[i].shape[0] for i in members]
            # on the CPU chunks stay cache-sized (the single pass's rule); on a GPU, where a step is bound by
            # launches, the memory limit alone cuts the group's pass
            rows = self._rows() if self.device.type == "cpu" else self._rows(cache_sized=False)
            k_chunk = max(1, rows // max(1, seq * c_chunk))
            feats = self._pass(torch.cat([ctxs[i] for i in members]), k_chunk, c_chunk)
            for i, f in zip(members, feats.split(sizes)):
                out[i] = f
        return out

    def _rows(self, cache_sized: bool = True) -> int:
        """Token rows per chunk: about `chunk_tokens` (cache_sized), fewer under the memory limit."""
        per_row = 4 * self.tower.width * 16  # fp32 bytes of residual, qkv, attention output and MLP hidden per row
        rows = int(self.memory_limit // per_row)
        return max(1, min(rows, self.chunk_tokens) if cache_sized else rows)

    def _pass(self, ctx: torch.Tensor, k_chunk: int, c_chunk: int) -> torch.Tensor:
        ctx = ctx.to(self.device, torch.float32)
        K, C = ctx.shape[0], self.prompts.n_cls
        out = []
        with torch.no_grad():
            for k0 in range(0, K, k_chunk):
                c = ctx[k0:k0 + k_chunk]
                if self.shared_prefix:
                    kv = self._prefix(c)
                    parts = [self._suffix(kv, c0, c0 + c_chunk) for c0 in range(0, C, c_chunk)]
                else:
                    parts = [self._full(c, c0, c0 + c_chunk) for c0 in range(0, C, c_chunk)]
                out.append(torch.cat(parts, dim=1))
        return torch.cat(out)

    def _full(self, ctx, c0, c1):
        """Truncated/batched pass through open_clip's own transformer (no shared prefix)."""
        K = ctx.shape[0]
        x = self.prompts.assemble(ctx)[:, c0:c1, : self.T]
        n = x.shape[1]
        with autocast_for(self.device, self.precision):
            f = self.tower.encode(x.reshape(K * n, self.T, -1), self.eot[c0:c1].repeat(K))
        return f.float().view(K, n, -1)

    def _prefix(self, ctx):
        """SOS + context [K, P, D] through every block (causal); returns per-block (k, v) [K, H, P, hd]."""
        x = torch.cat([self.sos_in.expand(ctx.shape[0], 1, -1), ctx + self.ctx_pos], dim=1)
        kv = []
        for b in self.blocks[:-1]:
            q, k, v = _qkv(x, b, self.dtype)
            kv.append((k, v))
            x = x + _attn_out(F.scaled_dot_product_attention(q, k, v, is_causal=True), b)
            x = x + _mlp(x, b, self.dtype)
        _, k, v = _qkv(x, self.blocks[-1], self.dtype)  # the final block only needs the prefix keys/values
        kv.append((k, v))
        return [(k.contiguous(), v.contiguous()) for k, v in kv]  # read by every class chunk

    def _suffix(self, kv, c0, c1):
        """Class suffixes [K, n, S, D] attending to the shared prefix through the op
        prefix_attention (the prefix is never copied per class); → features at EOT [K, n, E]."""
        K = kv[0][0].shape[0]
        y = self.suffix_in[c0:c1].unsqueeze(0).expand(K, -1, -1, -1)
        n, D = y.shape[1], y.shape[-1]
        eot = self.eot_s[c0:c1]
        for i, b in enumerate(self.blocks):
            kp, vp = kv[i]  # [K, H, P, hd]
            q, k, v = _qkv_heads(y, b, self.dtype)  # [K, H, n, S, hd]
            if i < len(self.blocks) - 1:
                y = _add_attn_out_heads(y, self.prefix_attention(q, kp, vp, k, v), b)
                y = _add_mlp(y, b, self.dtype)
            else:  # final block: only the EOT row of each class
                H, hd = q.shape[1], q.shape[-1]
                qe = torch.gather(q, 3, eot.view(1, 1, n, 1, 1).expand(K, H, n, 1, hd))
                ye = torch.gather(y, 2, eot.view(1, n, 1, 1).expand(K, n, 1, D))
                ye = _add_attn_out_heads(ye, self.prefix_attention(qe, kp, vp, k, v, eot.view(n, 1)), b)
                y = _add_mlp(ye, b, self.dtype).squeeze(2)
        pooled = self.tower.ln_final(y)
        return self.tower.project(pooled).float()


BACKENDS = ("torch-batched", "torch-reference")


def make_engine(backend: str, tower: TextTower, prompts: ClassPrompts, precision: str = "fp32", **options):
    """The engine named by `backend`; "auto" picks torch-batched (exact, fastest available)."""
    name = "torch-batched" if backend == "auto" else backend
    if name == "torch-reference":
        return ReferenceEngine(tower, prompts, precision)
    if name == "torch-batched":
        return BatchedEngine(tower, prompts, precision, **options)
    raise ValueError(f"unknown backend {backend!r}; choose auto or one of {', '.join(BACKENDS)}")
