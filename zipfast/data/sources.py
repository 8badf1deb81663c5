"""Where a step's image features come from, and which examples form its minibatch.

Sampling and augmentation randomness is derived from (seed, epoch) and (seed, step), not
from a running RNG, so a resumed run draws exactly what an uninterrupted run would.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from zipfast.data.imagefolder import no_val_error
from zipfast.data.transforms import DEFAULT_CHOICES, views
from zipfast.errors import UserError

_EPOCH, _AUGMENT, _BANK = 1, 2, 3


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream named by keys (independent streams per key tuple).

    seed: any integer in [0, 2^63); keys: at most 3 integers in [0, 2^32). Every bit of the
    seed counts: a seed ≥ 2^32 passes its high word as the SeedSequence spawn key, which makes
    the assembled entropy longer than any (seed < 2^32, keys) list, so no two inputs share a
    stream, while every seed < 2^32 keeps the stream it always had.
    """
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2^63), got {seed}")
    if len(keys) > 3 or not all(0 <= k < 2**32 for k in keys):
        raise ValueError(f"derive_seed takes at most 3 keys in [0, 2^32), got {keys}")
    hi = seed >> 32
    seq = np.random.SeedSequence([seed & 0xFFFFFFFF, *keys], spawn_key=(hi,) if hi else ())
    state = seq.generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of step k's minibatch (k ≥ 1): shuffled epochs, incomplete last batch dropped
    when the set has at least one full batch (Dassl's few-shot train loader)."""
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(step - 1, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, _EPOCH, epoch)))
    return perm[pos * batch_size:(pos + 1) * batch_size]


class FeatureSource:
    """Precomputed image features (the planted task, or a cached feature set).

    train_x [N, E], train_y [N], test_x [M, E], test_y [M]; optionally the validation split
    val_x [V, E], val_y [V] (None: the source has none, and `val_set()` says so).
    """

    def __init__(self, train_x, train_y, test_x, test_y, val_x=None, val_y=None):
        self.train_x, self.train_y = train_x.float(), train_y.long()
        self.test_x, self.test_y = test_x.float(), test_y.long()
        if (val_x is None) != (val_y is None):
            raise ValueError("give both val_x and val_y, or neither")
        self.val_x = None if val_x is None else val_x.float()
        self.val_y = None if val_y is None else val_y.long()

    @property
    def n_train(self) -> int:
        return len(self.train_y)

    def train_batch(self, idx: torch.Tensor, step: int, seed: int):
        return self.train_x[idx], self.train_y[idx]

    def test_set(self, progress=None):
        return self.test_x, self.test_y

    def val_set(self, progress=None):
        """Validation features [V, E] and labels [V]; UserError when the source has none."""
        if self.val_y is None or len(self.val_y) == 0:
            raise UserError("the feature source gives no validation split: build the FeatureSource with "
                            "val_x and val_y (the validation features and labels)")
        return self.val_x, self.val_y


class ImageSource:
    """A few-shot image folder encoded by the model's image tower.

    Train views: random resized crop + flip (seeded per step); test views: resize + centre crop.
    Features are L2-normalised [B, E] float32.
    """

    def __init__(self, dataset, model, size: int, mean, std, interpolation: str = "bicubic",
                 device="cpu", test_batch_size: int = 128, autocast=None, bank_views: int = 0, seed: int = 0,
                 progress=None, transforms=DEFAULT_CHOICES, workers: int = 0):
        self.dataset, self.model = dataset, model
        self.choices, self.workers = tuple(transforms), workers
        self.size, self.mean, self.std, self.interpolation = size, mean, std, interpolation
        self.device, self.test_batch_size = torch.device(device), test_batch_size
        self.autocast = autocast or contextlib.nullcontext
        self.train_y = torch.tensor([y for _, y in dataset.train])
        self._test = self._val = None
        self.show_progress = False  # a tqdm bar while the test split is encoded (set by the trainer)
        self.bank = self._build_bank(bank_views, seed, progress) if bank_views > 0 else None

    @property
    def n_train(self) -> int:
        return len(self.dataset.train)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), self.autocast():
            feats = self.model.encode_image(images.to(self.device))
        return F.normalize(feats.float(), dim=-1)

    def _build_bank(self, views_per_image: int, seed: int, progress=None) -> torch.Tensor:
        """Features [N, V, E] of V augmented views of every training image, encoded once."""
        bank = []
        for i, (path, _) in enumerate(self.dataset.train):
            g = torch.Generator().manual_seed(derive_seed(seed, _BANK, i))
            x = views([path] * views_per_image, True, self.size, self.mean, self.std, generator=g,
                      interpolation=self.interpolation, choices=self.choices)
            bank.append(self.encode(x))
            if progress is not None:
                progress(1)
        return torch.stack(bank)

    def train_batch(self, idx: torch.Tensor, step: int, seed: int):
        """(features [B, E], labels [B]) of minibatch `step` (the images at idx)."""
        if self.bank is not None:  # one of the V precomputed views per image, drawn per step
            g = torch.Generator().manual_seed(derive_seed(seed, _AUGMENT, step))
            v = torch.randint(self.bank.shape[1], (len(idx),), generator=g)
            return self.bank[idx, v], self.train_y[idx].to(self.device)
        return self.encode(self.train_views(idx, step, seed)), self.train_y[idx].to(self.device)

    @property
    def encodes_steps(self) -> bool:
        """True when each minibatch goes through the image tower (no feature bank): what a run group
        can batch over several minibatches (zipfast.evaluate.group)."""
        return self.bank is None

    def train_views(self, idx: torch.Tensor, step: int, seed: int) -> torch.Tensor:
        """Minibatch `step`'s augmented views [B, 3, size, size] float32, normalised."""
        g = torch.Generator().manual_seed(derive_seed(seed, _AUGMENT, step))
        paths = [self.dataset.train[i][0] for i in idx.tolist()]
        return views(paths, True, self.size, self.mean, self.std, generator=g, interpolation=self.interpolation,
                     choices=self.choices, workers=self.workers)

    def encode_many(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Features [B_i, E] of several image batches [B_i, 3, H, W]: an open_clip ViT's body runs over
        the batches together, in passes of at most max(largest B_i, test_batch_size) images (never
        more rows than a run alone encodes: its minibatch, or a chunk of its test split), and the
        final projection per batch, because the CPU's GEMM picks its kernel by the number of rows (a
        batched projection of a few images differed by ~5e-7). A batch's rows at another offset of a
        pass may still differ from its own pass by about an ulp. Any other tower: each batch alone."""
        body = self._vit_body()
        if body is None:
            return [self.encode(x) for x in images]
        cap = max(max(x.shape[0] for x in images), self.test_batch_size)
        out, n = [], 0
        while n < len(images):
            take = [images[n]]
            n += 1
            while n < len(images) and sum(x.shape[0] for x in take) + images[n].shape[0] <= cap:
                take.append(images[n])
                n += 1
            with torch.no_grad(), self.autocast():
                pooled = body.pooled_pixels(torch.cat([x.to(self.device) for x in take]))
                out += [F.normalize(body.project(p).float(), dim=-1) for p in pooled.split([x.shape[0] for x in take])]
        return out

    def _vit_body(self):
        """The model's image tower split as body + projection (engine.towers.ImageTower) where it is an
        open_clip ViT without token outputs, else None."""
        if getattr(self, "_body", False) is False:
            from zipfast.engine.towers import ImageTower

            tower = ImageTower(self.model) if hasattr(self.model, "visual") else None
            ok = tower is not None and tower.token_prompts_ok and not getattr(tower.visual, "output_tokens", False)
            self._body = tower if ok else None
        return self._body

    def test_set(self, progress=None):
        """Test features [M, E] and labels [M], encoded once and cached."""
        if self._test is None:
            self._test = self._encode_views(self.dataset.test, "test features", progress)
        return self._test

    def val_set(self, progress=None):
        """Validation features [V, E] and labels [V], encoded as the test split (resize + centre crop),
        once and cached; DatasetError (a UserError) when the dataset gives no validation images."""
        if self._val is None:
            if not getattr(self.dataset, "val", None):
                raise no_val_error()
            self._val = self._encode_views(self.dataset.val, "val features", progress)
        return self._val

    def _encode_views(self, items, desc: str, progress=None):
        """(features [M, E], labels [M]) of the (path, label) items' test views, in test batches."""
        bar = None
        if progress is None and self.show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), desc=desc, unit="image")
            progress = bar.update
        feats = []
        for i in range(0, len(items), self.test_batch_size):
            chunk = items[i:i + self.test_batch_size]
            x = views([p for p, _ in chunk], False, self.size, self.mean, self.std,
                      interpolation=self.interpolation, choices=self.choices, workers=self.workers)
            feats.append(self.encode(x))
            if progress is not None:
                progress(len(chunk))
        if bar is not None:
            bar.close()
        labels = torch.tensor([y for _, y in items], device=self.device)
        return torch.cat(feats), labels


_AUGMENT_TENSOR = 4


class DecodedImageSource(ImageSource):
    """ImageSource whose training views come from `gpu_augment`: images decoded once into uint8
    memory on the run's device, random-resized-crop + flip as batched tensor ops seeded by
    (seed, step). Test views and the feature bank are ImageSource's (PIL)."""

    def __init__(self, dataset, model, size, mean, std, interpolation="bicubic", device="cpu",
                 test_batch_size=128, autocast=None, bank_views=0, seed=0, progress=None, max_side=None,
                 max_bytes: int = 8 << 30, decode_progress=None, transforms=DEFAULT_CHOICES, workers: int = 0):
        from zipfast.data.gpu_augment import TENSOR_TRANSFORMS, DecodedImages, pil_fallback

        if pil_fallback("tensor", transforms):
            raise ValueError(f"the tensor augmentation path implements INPUT.TRANSFORMS {list(TENSOR_TRANSFORMS)}, "
                             f"not {list(transforms)}; use ImageSource (augment pil)")
        super().__init__(dataset, model, size, mean, std, interpolation, device, test_batch_size, autocast,
                         bank_views, seed, progress, transforms, workers)
        self.images = DecodedImages.decode([p for p, _ in dataset.train], max_side or 2 * size, max_bytes,
                                           min_side=size, progress=decode_progress).to(self.device)

    def train_views(self, idx: torch.Tensor, step: int, seed: int) -> torch.Tensor:
        return step_views(self.images, idx, step, seed, self.size, self.mean, self.std)


def step_boxes(images, idx: torch.Tensor, step: int, seed: int):
    """Crop boxes and flips of images[idx] (a gpu_augment.DecodedImages) for minibatch `step`:
    gpu_augment.sample_boxes of uniforms [B, 23] drawn from a generator seeded by (seed, step)."""
    from zipfast.data.gpu_augment import N_UNIFORMS, sample_boxes

    g = torch.Generator().manual_seed(derive_seed(seed, _AUGMENT_TENSOR, step))
    u = torch.rand(len(idx), N_UNIFORMS, generator=g, dtype=torch.float64)
    return sample_boxes(images.heights[idx].cpu(), images.widths[idx].cpu(), u)


def step_views(images, idx: torch.Tensor, step: int, seed: int, size: int, mean, std) -> torch.Tensor:
    """Minibatch `step`'s training views float32 [B, 3, size, size], normalised, on the images'
    device: batched random-resized-crop + flip (step_boxes, gpu_augment.crop_resize_flip)."""
    from zipfast.data.gpu_augment import crop_resize_flip

    return crop_resize_flip(images, idx, step_boxes(images, idx, step, seed), size, mean, std)
