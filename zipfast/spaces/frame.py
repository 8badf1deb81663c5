"""BAR's reprogramming frame (black-box adversarial reprogramming, as the ZIP paper runs it).

The training image, resized to S × S (INPUT.SIZE, 194 by default) and CLIP-normalised, is
mapped back to [0, 1], placed at the centre of an F × F canvas of zeros (F = FRAME_SIZE,
224), and the frame sigmoid(W) ⊙ M is added, M being 1 outside the centre S × S square;
the result is CLIP-normalised again. The parameters are all of W ∈ R^{3 × F × F}
(d = 3F² = 150,528 for F = 224), as officially: the coordinates under the image never
change the output but are part of the vector the estimator perturbs and of its d/q scaling.
"""

from __future__ import annotations

import torch

from zipfast.errors import UserError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ReprogrammingFrame:
    """w [K, 3·F·F] ↦ framed images [K, B, 3, F, F] around images [B, 3, S, S] (normalised)."""

    kind = "pixels"

    def __init__(self, frame_size: int = 224, image_size: int = 194, mean=CLIP_MEAN, std=CLIP_STD):
        if image_size % 2 or not 0 < image_size < frame_size:
            raise UserError(f"BAR needs an even input size smaller than the frame (INPUT.SIZE {image_size}, "
                             f"TRAINER.BAR.FRAME_SIZE {frame_size}): the official code centres "
                             f"2·(S // 2) pixels inside the frame")
        self.frame_size, self.image_size = frame_size, image_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        c, h = frame_size // 2, image_size // 2
        self.lo, self.hi = c - h, c + h
        self.mask = torch.ones(3, frame_size, frame_size)
        self.mask[:, self.lo:self.hi, self.lo:self.hi] = 0
        self.dim = 3 * frame_size * frame_size

    def init_params(self, generator: torch.Generator) -> torch.Tensor:
        """W ~ N(0, 1) per entry, as the official Parameter(torch.randn(3, F, F))."""
        return torch.randn(self.dim, generator=generator)

    def frame(self, w: torch.Tensor) -> torch.Tensor:
        """w [K, d] → the additive frame sigmoid(W) ⊙ M [K, 3, F, F] (pixel units in [0, 1])."""
        F = self.frame_size
        return torch.sigmoid(w.view(-1, 3, F, F)) * self.mask.to(w.device)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images [B, 3, S, S] → the canvas [B, 3, F, F] in [0, 1] pixel units."""
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, self.image_size, self.image_size):
            raise ValueError(f"BAR expects images [B, 3, {self.image_size}, {self.image_size}] (INPUT.SIZE), "
                             f"got {tuple(images.shape)}")
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        canvas = images.new_zeros(images.shape[0], 3, self.frame_size, self.frame_size)
        canvas[:, :, self.lo:self.hi, self.lo:self.hi] = images.float() * std + mean
        return canvas

    def apply(self, canvas: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """canvas [B, 3, F, F], w [K, d] → CLIP-normalised framed images [K, B, 3, F, F]."""
        mean, std = self.mean.to(canvas.device), self.std.to(canvas.device)
        framed = canvas.unsqueeze(0) + self.frame(w.to(canvas.device, torch.float32)).unsqueeze(1)
        return (framed - mean) / std

    def state_dict(self) -> dict:
        return {"frame_size": self.frame_size, "image_size": self.image_size,
                "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    @classmethod
    def from_state_dict(cls, sd: dict, device="cpu") -> "ReprogrammingFrame":
        return cls(int(sd["frame_size"]), int(sd["image_size"]), sd["mean"], sd["std"])
