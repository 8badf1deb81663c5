"""Batched random-resized-crop + flip on decoded images, on the run's device (`--augment tensor`).

The PIL path (`transforms.train_view`, `--augment pil`) is the reference of the *protocol*; this is
the fast path of the same augmentation family, defined here exactly so it can be tested:

1. Decoding: every few-shot training image is decoded once into uint8 memory (flat storage,
   one [3, H, W] block per image). Images whose shorter side exceeds `max_side` (default 2·size,
   lowered to fit `max_bytes`) are downscaled once at decode (PIL bicubic, antialiased).
2. Boxes (`sample_boxes`): per image, U ~ rand(B, 23) float64 from a generator seeded by
   (seed, step): columns 0–9 area fractions s = lo + (hi − lo)·u, 10–19 log-ratios
   r = log(3/4) + (log(4/3) − log(3/4))·u; the first try with w = round(√(A·s·eʳ)),
   h = round(√(A·s/eʳ)) inside the image is taken, top = ⌊u₂₀·(H − h + 1)⌋,
   left = ⌊u₂₁·(W − w + 1)⌋; else torchvision's central fallback. flip = u₂₂ < 0.5.
3. Resampling (`crop_resize_flip`): bilinear, align_corners=False, no antialiasing, sampling
   only inside the box (= `F.interpolate` of the cropped image), then flip, /255, normalise.
   On a GPU all views at once by gathers (`crop_resize_flip_batched`); on a CPU one
   `F.interpolate` per view (`crop_resize_flip_reference`), whose kernel is about 10× faster
   there than the gathers (the two agree to fp32 rounding; tested).

How it differs from the PIL reference: the same box distribution, but drawn vectorised (other
draws than torchvision's sequential ones, so other boxes for a seed); bilinear without
antialiasing instead of PIL's antialiased bicubic (a large box shrunk to `size` aliases more);
very large images are pre-shrunk at decode. Test views are unchanged (PIL resize + centre crop).
"""

from __future__ import annotations

import logging
import math

import torch
from PIL import Image

from zipfast.env import log_once, one_thread
from zipfast.data.imagefolder import DatasetError, load_image
from zipfast.data.transforms import CROP_RATIO, CROP_SCALE, DEFAULT_CHOICES

log = logging.getLogger("zipfast.data")
_TRIES = 10
N_UNIFORMS = 2 * _TRIES + 3
TENSOR_TRANSFORMS = DEFAULT_CHOICES  # the INPUT.TRANSFORMS this path implements (the official list)


def pil_fallback(augment: str, transforms) -> str | None:
    """The adjustment note when `augment` "tensor" must run on the PIL path instead (INPUT.TRANSFORMS
    other than TENSOR_TRANSFORMS, in any order); None when the requested path runs as asked."""
    if augment == "tensor" and set(transforms) != set(TENSOR_TRANSFORMS):
        return f"augment tensor -> pil (INPUT.TRANSFORMS {list(transforms)} runs on the PIL path only)"
    return None


class DecodedImages:
    """uint8 images in one flat buffer: image i is data[offset[i]:…].view(3, H[i], W[i])."""

    def __init__(self, data: torch.Tensor, offsets: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor):
        self.data, self.offsets, self.heights, self.widths = data, offsets, heights, widths

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def nbytes(self) -> int:
        return self.data.numel()

    def image(self, i: int) -> torch.Tensor:
        h, w = int(self.heights[i]), int(self.widths[i])
        o = int(self.offsets[i])
        return self.data[o:o + 3 * h * w].view(3, h, w)

    def to(self, device) -> "DecodedImages":
        return DecodedImages(self.data.to(device), self.offsets.to(device), self.heights.to(device),
                             self.widths.to(device))

    @classmethod
    def decode(cls, paths, max_side: int, max_bytes: int = 8 << 30, min_side: int = 1, progress=None):
        """Decode every path once; the shorter side is capped at max_side, lowered (not below
        min_side) so the whole set fits max_bytes."""
        sizes = []
        for p in paths:
            try:
                with Image.open(p) as im:
                    sizes.append(im.size)
            except Exception as e:
                raise DatasetError(f"cannot read image file '{p}': {type(e).__name__}: {e}") from e

        def total(cap):
            return sum(3 * _scaled(w, h, cap)[0] * _scaled(w, h, cap)[1] for w, h in sizes)

        cap = max_side
        while total(cap) > max_bytes and cap > min_side:
            cap = max(min_side, int(cap * 0.9))
        if total(cap) > max_bytes:
            raise DatasetError(f"{len(paths)} training images need {total(cap) / 2**30:.1f} GiB decoded even at a "
                               f"shorter side of {cap}; raise the bound or use --augment pil")
        if cap != max_side:
            log.info("decoded training images capped at a shorter side of %d px (not %d) to fit %.1f GiB",
                     cap, max_side, max_bytes / 2**30)
        data = torch.empty(total(cap), dtype=torch.uint8)
        offsets, heights, widths, o = [], [], [], 0
        for p, (w, h) in zip(paths, sizes):
            img = load_image(p)
            nw, nh = _scaled(w, h, cap)
            if (nw, nh) != img.size:
                img = img.resize((nw, nh), Image.BICUBIC)
            t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(nh, nw, 3).permute(2, 0, 1)
            data[o:o + 3 * nh * nw].view(3, nh, nw).copy_(t)
            offsets.append(o)
            heights.append(nh)
            widths.append(nw)
            o += 3 * nh * nw
            if progress is not None:
                progress(1)
        return cls(data, torch.tensor(offsets), torch.tensor(heights), torch.tensor(widths))


def _scaled(w: int, h: int, cap: int) -> tuple[int, int]:
    short = min(w, h)
    if short <= cap:
        return w, h
    return (cap, max(1, round(h * cap / w))) if w <= h else (max(1, round(w * cap / h)), cap)


def sample_boxes(heights: torch.Tensor, widths: torch.Tensor, u: torch.Tensor,
                 scale=CROP_SCALE, ratio=CROP_RATIO):
    """Boxes (top, left, h, w) [B] long and flips [B] bool for images of size (heights, widths) [B]
    from uniforms u [B, 23] float64 (the definition in the module docstring)."""
    H, W = heights.double(), widths.double()
    area = (H * W)[:, None]
    lr = (math.log(ratio[0]), math.log(ratio[1]))
    s = scale[0] + (scale[1] - scale[0]) * u[:, :_TRIES]
    r = torch.exp(lr[0] + (lr[1] - lr[0]) * u[:, _TRIES:2 * _TRIES])
    w = torch.round(torch.sqrt(area * s * r))
    h = torch.round(torch.sqrt(area * s / r))
    ok = (w > 0) & (w <= W[:, None]) & (h > 0) & (h <= H[:, None])
    first = torch.where(ok.any(1), ok.double().argmax(1), torch.full_like(H, -1, dtype=torch.long))
    found = first >= 0
    pick = first.clamp(min=0)[:, None]
    bw, bh = w.gather(1, pick)[:, 0], h.gather(1, pick)[:, 0]
    # torchvision's fallback: the largest central crop with an aspect ratio inside `ratio`
    in_ratio = W / H
    fw = torch.where(in_ratio < min(ratio), W, torch.where(in_ratio > max(ratio), torch.round(H * max(ratio)), W))
    fh = torch.where(in_ratio < min(ratio), torch.round(W / min(ratio)), H)
    bw, bh = torch.where(found, bw, fw), torch.where(found, bh, fh)
    top = torch.where(found, torch.floor(u[:, 2 * _TRIES] * (H - bh + 1)), torch.div(H - bh, 2, rounding_mode="floor"))
    left = torch.where(found, torch.floor(u[:, 2 * _TRIES + 1] * (W - bw + 1)),
                       torch.div(W - bw, 2, rounding_mode="floor"))
    return top.long(), left.long(), bh.long(), bw.long(), u[:, 2 * _TRIES + 2] < 0.5


def _axis(start: torch.Tensor, length: torch.Tensor, size: int, device):
    """Source index pairs (i0, i1) [B, S] and weights [B, S] of bilinear resampling of
    [start, start + length) to size points (align_corners=False, clamped inside the box)."""
    dst = torch.arange(size, device=device, dtype=torch.float64)
    src = ((dst[None] + 0.5) * (length.double()[:, None] / size) - 0.5).clamp(min=0)
    i0 = src.floor()
    i1 = torch.minimum(i0 + 1, (length - 1).double()[:, None])
    return (start[:, None] + i0.long()), (start[:, None] + i1.long()), (src - i0).float()


def crop_resize_flip(images: DecodedImages, idx: torch.Tensor, boxes, size: int, mean, std) -> torch.Tensor:
    """Augmented views float32 [B, 3, size, size] of images[idx] for boxes = sample_boxes(…), on the
    images' device: batched gathers on a GPU, one F.interpolate per view on a CPU (faster there)."""
    dev = images.data.device
    if dev.type != "cpu":
        return crop_resize_flip_batched(images, idx, boxes, size, mean, std)
    log_once("augment-per-view", "augment tensor on cpu: one F.interpolate per view (faster than the batched "
             "gathers on a CPU)", area="data")
    top, left, h, w, flip = (b.tolist() for b in boxes)
    out = torch.empty(len(idx), 3, size, size)
    with one_thread():  # F.interpolate's rounding depends on the thread split: a view must not depend on --threads
        for b, i in enumerate(idx.tolist()):
            out[b] = crop_resize_flip_reference(images.image(i), (top[b], left[b], h[b], w[b]), flip[b], size, mean,
                                                std)
    return out


def crop_resize_flip_batched(images: DecodedImages, idx: torch.Tensor, boxes, size: int, mean, std,
                             chunk: int = 32) -> torch.Tensor:
    """crop_resize_flip of all views at once by gathers from the flat uint8 storage (the GPU path)."""
    top, left, h, w, flip = (b.to(images.data.device) for b in boxes)
    idx = idx.to(images.data.device)
    dev = images.data.device
    out = torch.empty(len(idx), 3, size, size, device=dev)
    mean_t = torch.tensor(mean, device=dev).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=dev).view(1, 3, 1, 1)
    for a in range(0, len(idx), chunk):
        sl = slice(a, a + chunk)
        i = idx[sl]
        Hs, Ws, offs = images.heights[i], images.widths[i], images.offsets[i]
        y0, y1, wy = _axis(top[sl], h[sl], size, dev)
        x0, x1, wx = _axis(left[sl], w[sl], size, dev)
        f = flip[sl][:, None]
        x0, x1, wx = (torch.where(f, t.flip(-1), t) for t in (x0, x1, wx))
        plane = (Hs * Ws)[:, None, None]
        chan = torch.arange(3, device=dev)[None, :, None]
        base = offs[:, None, None] + chan * plane  # [b, 3, 1]

        def rows(y):  # [b, 3, S, 1] start of each source row
            return (base + y[:, None, :] * Ws[:, None, None])[..., None]

        def take(r, x):
            return images.data[(r + x[:, None, None, :]).reshape(-1)].view(r.shape[0], 3, size, size).float()

        r0, r1 = rows(y0), rows(y1)
        wx_, wy_ = wx[:, None, None, :], wy[:, None, :, None]
        top_row = take(r0, x0) * (1 - wx_) + take(r0, x1) * wx_
        bottom_row = take(r1, x0) * (1 - wx_) + take(r1, x1) * wx_
        v = top_row * (1 - wy_) + bottom_row * wy_
        out[sl] = (v / 255.0 - mean_t) / std_t
    return out


def crop_resize_flip_reference(image: torch.Tensor, box, flip: bool, size: int, mean, std) -> torch.Tensor:
    """One view [3, size, size] of a uint8 image [3, H, W]: crop, F.interpolate (bilinear,
    align_corners=False), flip, normalise — the per-image definition of crop_resize_flip."""
    top, left, h, w = box
    x = image[:, top:top + h, left:left + w].float() / 255.0
    x = torch.nn.functional.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    if flip:
        x = x.flip(-1)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def reference_boxes(heights, widths, u, scale=CROP_SCALE, ratio=CROP_RATIO):
    """sample_boxes written as a per-image loop over the same uniforms (its test reference)."""
    out = []
    for H, W, row in zip(heights.tolist(), widths.tolist(), u.tolist()):
        area, box = H * W, None
        for t in range(_TRIES):
            s = scale[0] + (scale[1] - scale[0]) * row[t]
            r = math.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * row[_TRIES + t])
            w, h = round(math.sqrt(area * s * r)), round(math.sqrt(area * s / r))
            if 0 < w <= W and 0 < h <= H:
                box = (math.floor(row[2 * _TRIES] * (H - h + 1)), math.floor(row[2 * _TRIES + 1] * (W - w + 1)), h, w)
                break
        if box is None:
            ar = W / H
            w, h = (W, round(W / min(ratio))) if ar < min(ratio) else ((round(H * max(ratio)), H) if ar > max(ratio) else (W, H))
            box = ((H - h) // 2, (W - w) // 2, h, w)
        out.append((*box, row[2 * _TRIES + 2] < 0.5))
    return out
