"""BlackVIP's coordinator: a frozen pretrained encoder + a small decoder → an input-dependent prompt.

Official semantics (LOG-postech/ZIP trainers/blackvip.py and visual_prompters.py, after
changdaeoh/BlackVIP), PT_BACKBONE 'vit-mae-base', SRC_DIM 1568, P_EPS 1:

- z = the encoder's CLS feature of the (CLIP-normalised, 224 px) image: for vit-mae-base
  the last encoder layer's CLS row before the final LayerNorm (`hidden_states[-1][:, 0]`
  of a ViT loaded from facebook/vit-mae-base, so no MAE masking), for vit-base the
  LayerNorm'd CLS row (`last_hidden_state[:, 0]`);
- the decoder input is [z ; p_trigger] (p_trigger ∈ R^{SRC_DIM − z_dim}, learned, init
  U(0, 0.1)) reshaped to SRC_DIM/49 channels × 7 × 7, then five ×2 transposed-convolution
  stages (7 → 224 px; grouped 2×2 + pointwise, BatchNorm, GELU) down to 3 channels;
- prompted image = clip(x + P_EPS · prompt) to the normalised [0, 1] pixel range;
- only the decoder is learned (9,920 parameters for SRC_DIM 1568, z_dim 768), in the
  official flat order (p_trigger, then each layer's weight and bias);
- the decoder's BatchNorm layers run in training mode during training (Dassl's
  set_model_mode("train")): each query normalises with its own minibatch statistics and
  updates the running statistics, which the test evaluation (eval mode) uses. Here each
  candidate gets its own batch statistics, and the running statistics are updated once per
  candidate in candidate order, exactly as the official sequence of queries does.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from zipfast.spaces.frame import CLIP_MEAN, CLIP_STD
from zipfast.errors import UserError

log = logging.getLogger("zipfast.blackvip")

BACKBONES = {"vit-mae-base": "facebook/vit-mae-base", "vit-base": "google/vit-base-patch16-224-in21k"}
BN_MOMENTUM, BN_EPS = 0.1, 1e-5


class EncoderLoadError(ValueError):
    pass


# ------------------------------------------------------------------------------ encoder


class CoordinatorEncoder(nn.Module):
    """A frozen transformers ViT: images [B, 3, 224, 224] → z [B, z_dim]."""

    def __init__(self, vit: nn.Module, backbone: str = "vit-mae-base"):
        super().__init__()
        if backbone not in BACKBONES:
            raise EncoderLoadError(f"TRAINER.BLACKVIP.PT_BACKBONE {backbone!r} is not supported; choose one of "
                                   f"{', '.join(BACKBONES)} (the official code's other choices need CLIP-ResNet or "
                                   f"DINO weights and are not part of the ZIP paper's setting)")
        self.vit, self.backbone = vit.eval().requires_grad_(False), backbone
        self.z_dim = int(vit.config.hidden_size)
        self.image_size = int(vit.config.image_size)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backbone == "vit-mae-base":
            return self.vit(pixel_values=x, output_hidden_states=True).hidden_states[-1][:, 0].float()
        return self.vit(pixel_values=x).last_hidden_state[:, 0].float()


def load_coordinator_encoder(backbone: str = "vit-mae-base", source: str | None = None, seed: int = 0,
                             config=None) -> CoordinatorEncoder:
    """The frozen encoder of BlackVIP's coordinator.

    source: None → the official hub checkpoint of `backbone` (facebook/vit-mae-base);
    a local directory saved by transformers (`save_pretrained`); or "none" → random weights
    of the backbone's architecture (or of `config`, a transformers ViTConfig/ViTMAEConfig),
    seeded by `seed` (tests and the synthetic tasks: no weights can be downloaded there).
    """
    try:
        import transformers
        from transformers import ViTConfig, ViTMAEConfig, ViTModel
    except ImportError as e:  # pragma: no cover - transformers is an install requirement
        raise EncoderLoadError("BlackVIP's coordinator needs transformers: pip install transformers") from e
    if backbone not in BACKBONES:
        CoordinatorEncoder(nn.Identity(), backbone)  # raises the error naming the choices
    if source is not None and str(source).lower() in ("none", "random"):
        if config is None:
            config = ViTMAEConfig() if backbone == "vit-mae-base" else ViTConfig()
        log.info("BlackVIP coordinator encoder: random init of %s's architecture (seed %d), no pretrained weights",
                 backbone, seed)
        cfg = ViTConfig(**{k: v for k, v in config.to_dict().items() if k in ViTConfig().to_dict()})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vit = ViTModel(cfg, add_pooling_layer=False)
        return CoordinatorEncoder(vit, backbone)
    name = BACKBONES[backbone] if source is None else str(source)
    if source is not None and not os.path.isdir(name) and (os.sep in name or name.startswith(".")):
        raise EncoderLoadError(f"BlackVIP encoder directory {name!r} does not exist")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the vit_mae → vit config note is expected here
    try:
        vit = ViTModel.from_pretrained(name, add_pooling_layer=False)
    except Exception as e:  # hub/network/file errors come in many types
        raise EncoderLoadError(
            f"could not load BlackVIP's encoder {name!r} ({type(e).__name__}: {str(e)[:200]}). Without internet "
            f"access, download {BACKBONES[backbone]!r} on another machine (huggingface-cli download "
            f"{BACKBONES[backbone]} --local-dir DIR) and pass the directory (blackvip_encoder=DIR, "
            f"--blackvip-encoder DIR), or 'none' for a randomly initialised encoder") from e
    finally:
        transformers.logging.set_verbosity(verbosity)
    return CoordinatorEncoder(vit, backbone)


# ------------------------------------------------------------------------------ decoder


def _conv_transpose_nonoverlap(x, weight, bias, k: int, groups: int):
    """ConvTranspose2d with kernel = stride = k, no padding, per-candidate weights.

    x [B, K, Cin, H, W]; weight [K, Cin, Cout/groups, k, k]; bias [K, Cout] or None
    → [B, K, Cout, H·k, W·k]. Each input pixel writes its own k × k output block.
    """
    B, K, cin, H, W = x.shape
    ci, co = cin // groups, weight.shape[2]
    xg = x.reshape(B, K, groups, ci, H, W)
    wg = weight.reshape(K, groups, ci, co, k, k)
    y = torch.einsum("nkgihw,kgiopq->nkgohpwq", xg, wg).reshape(B, K, groups * co, H * k, W * k)
    return y if bias is None else y + bias[None, :, :, None, None]



def _stages(src_c: int) -> list[tuple]:
    """The decoder's layers for the ViT backbones: ("convT", cin, cout, k, groups, bias) | ("bn", c) | ("gelu",)."""
    g0 = 64 if src_c >= 64 else src_c
    out = [("convT", src_c, 64, 2, g0, True), ("convT", 64, 64, 1, 1, False), ("bn", 64), ("gelu",)]
    for cin, cout in ((64, 32), (32, 32), (32, 16)):
        out += [("convT", cin, cin, 2, cin, True), ("convT", cin, cout, 1, 1, False), ("bn", cout), ("gelu",)]
    return out + [("convT", 16, 3, 2, 1, False)]


class Decoder(nn.Module):
    """The coordinator's decoder as an nn.Module: used for its shapes, its initialisation and
    readability; the engine runs `decode` (all candidates at once) on flat vectors."""

    def __init__(self, z_dim: int, src_dim: int):
        super().__init__()
        if src_dim % 49 or src_dim <= z_dim:
            raise UserError(f"TRAINER.BLACKVIP.SRC_DIM {src_dim} must be a multiple of 7·7 = 49 and larger than "
                             f"the encoder's feature size {z_dim}")
        self.z_dim, self.src_dim, self.src_c = z_dim, src_dim, src_dim // 49
        self.p_trigger = nn.Parameter(torch.empty(1, src_dim - z_dim).uniform_(0.0, 0.1))
        layers = []
        for s in _stages(self.src_c):
            if s[0] == "convT":
                _, cin, cout, k, g, bias = s
                layers.append(nn.ConvTranspose2d(cin, cout, k, k, 0, groups=g, bias=bias))
            elif s[0] == "bn":
                layers.append(nn.BatchNorm2d(s[1], eps=BN_EPS, momentum=BN_MOMENTUM))
            else:
                layers.append(nn.GELU())
        self.body = nn.Sequential(*layers)

    def forward(self, z):  # the one-candidate reference (nn.Module semantics, train or eval mode)
        n = z.shape[0]
        x = torch.cat([z, self.p_trigger.expand(n, -1)], 1).view(n, self.src_c, 7, 7)
        return self.body(x)


class CoordinatorPrompter:
    """w [K, dim] (flat decoder parameters) ↦ prompted images [K, B, 3, 224, 224]."""

    kind = "pixels"

    def __init__(self, encoder: nn.Module, z_dim: int, src_dim: int = 1568, p_eps: float = 1.0,
                 mean=CLIP_MEAN, std=CLIP_STD, image_size: int = 224):
        self.encoder, self.p_eps = encoder, float(p_eps)
        self.template = Decoder(z_dim, src_dim)
        self.stages = _stages(self.template.src_c)
        self.shapes = [(n, tuple(p.shape)) for n, p in self.template.named_parameters()]
        self.dim = sum(p.numel() for p in self.template.parameters())
        if image_size != 7 * 32:
            raise UserError(f"BlackVIP's decoder produces 224 px prompts; the image size is {image_size} (the model's "
                            "input size): use a model whose image size is 224 (--model / TrainConfig.model), e.g. "
                            "ViT-B-16-quickgelu, or zipfast-tiny224 in place of the tiny demo model zipfast-tiny")
        self.image_size = image_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.lo, self.hi = (0 - self.mean) / self.std, (1 - self.mean) / self.std  # clip_clipping's range
        self.running = [(torch.zeros(s[1]), torch.ones(s[1])) for s in self.stages if s[0] == "bn"]
        self.training = True

    def train(self, mode: bool = True) -> "CoordinatorPrompter":
        self.training = mode
        return self

    def eval(self) -> "CoordinatorPrompter":
        return self.train(False)

    def init_params(self, generator: torch.Generator) -> torch.Tensor:
        """The official initialisation (p_trigger U(0, 0.1), PyTorch's default conv init, BN 1/0),
        drawn from `generator`'s seed; flattened in the official parameter order."""
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            dec = Decoder(self.template.z_dim, self.template.src_dim)
        return torch.nn.utils.parameters_to_vector(dec.parameters()).detach()

    def unflatten(self, w: torch.Tensor) -> list[torch.Tensor]:
        """w [K, dim] → per parameter [K, *shape], in the official order."""
        out, i = [], 0
        for _, shape in self.shapes:
            n = int(torch.Size(shape).numel())
            out.append(w[:, i:i + n].reshape(w.shape[0], *shape))
            i += n
        return out

    # --------------------------------------------------------------- the engine's interface

    def prepare(self, images: torch.Tensor):
        """Images [B, 3, 224, 224] (normalised) → (images, z [B, z_dim]): the encoder runs once per minibatch."""
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, self.image_size, self.image_size):
            raise ValueError(f"BlackVIP expects images [B, 3, {self.image_size}, {self.image_size}], "
                             f"got {tuple(images.shape)}")
        return images, self.encoder(images)

    def apply(self, prepared, w: torch.Tensor) -> torch.Tensor:
        """→ clip(x + P_EPS · prompt_k(x)) [K, B, 3, 224, 224]; in training mode the BN running
        statistics are updated once per candidate, in order."""
        images, z = prepared
        prompt = self.decode(z, w.to(z.device, torch.float32))
        lo, hi = self.lo.to(images.device), self.hi.to(images.device)
        return torch.maximum(torch.minimum(images.unsqueeze(0) + self.p_eps * prompt, hi), lo)

    def decode(self, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """z [B, z_dim], w [K, dim] → prompts [K, B, 3, 224, 224]. The K decoders run together on
        activations [B, K, C, H, W]: every transposed convolution has stride = kernel (no overlap),
        so it is one batched matmul per layer (grouped convolutions are slow on CPU)."""
        K, B = w.shape[0], z.shape[0]
        params = self.unflatten(w)
        trig = params[0].view(1, K, -1).expand(B, K, -1)
        x = torch.cat([z.unsqueeze(1).expand(B, K, -1), trig], -1).reshape(B, K, self.template.src_c, 7, 7)
        p, bn = 1, 0
        for s in self.stages:
            if s[0] == "convT":
                _, cin, cout, k, g, has_bias = s
                bias = params[p + 1] if has_bias else None
                x = _conv_transpose_nonoverlap(x, params[p], bias, k, g)
                p += 2 if has_bias else 1
            elif s[0] == "bn":
                x = self._batch_norm(x, params[p], params[p + 1], bn)
                p += 2
                bn += 1
            else:
                x = F.gelu(x)
        return x.transpose(0, 1)

    def _batch_norm(self, x, gamma, beta, i):
        """x [B, K, C, H, W]; gamma, beta [K, C]. Training: per-candidate batch statistics and one
        running-statistics update per candidate in order; eval: the running statistics."""
        rm, rv = self.running[i]
        if self.training:
            var, mean = torch.var_mean(x, dim=(0, 3, 4), unbiased=False)  # [K, C]
            n = x.shape[0] * x.shape[3] * x.shape[4]
            unbiased = (var * (n / (n - 1)) if n > 1 else var).cpu()
            for k in range(x.shape[1]):  # the official queries run one after another: one EMA update each
                rm = (1 - BN_MOMENTUM) * rm + BN_MOMENTUM * mean[k].cpu()
                rv = (1 - BN_MOMENTUM) * rv + BN_MOMENTUM * unbiased[k]
            self.running[i] = (rm, rv)
        else:
            mean, var = (t.to(x.device).expand(x.shape[1], -1) for t in (rm, rv))
        scale = gamma * torch.rsqrt(var + BN_EPS)
        shift = beta - mean * scale
        return x * scale[None, :, :, None, None] + shift[None, :, :, None, None]

    def state_dict(self) -> dict:
        return {"z_dim": self.template.z_dim, "src_dim": self.template.src_dim, "p_eps": self.p_eps,
                "running": {f"bn{i}": {"mean": m.clone(), "var": v.clone()} for i, (m, v) in enumerate(self.running)}}

    def load_state_dict(self, sd: dict) -> None:
        for key, mine in (("z_dim", self.template.z_dim), ("src_dim", self.template.src_dim), ("p_eps", self.p_eps)):
            if sd[key] != mine:
                raise ValueError(f"BlackVIP state is for {key}={sd[key]!r}, this run has {mine!r}")
        run = sd["running"]
        if len(run) != len(self.running):
            raise ValueError(f"BlackVIP state has {len(run)} BatchNorm layers, this decoder {len(self.running)}")
        self.running = [(run[f"bn{i}"]["mean"].clone().float(), run[f"bn{i}"]["var"].clone().float())
                        for i in range(len(self.running))]
