"""The losses of several runs' rounds computed together (a run group, zipfast.run.group).

    results = losses_many([Query(evaluator, space, cand, batch_index), ...])   # [(losses, accs) | error]

Each run's losses are bit for bit what its own `evaluator.losses(space, cand, batch_index)` gives
on the CPU (fp32 and bf16; tests/run/test_group.py): work is shared, never approximated.

- Minibatches: runs that read the same source (one per task and data seed: `zipfast.run.task`
  shares them through the runs' common cache) at the same minibatch index share one read, so a
  text-side run on an image folder shares its image-tower pass with every run of its data seed;
  on CUDA the distinct minibatches of a source (other batch sizes, runs at other steps) go through
  the image tower together, in passes no larger than a run alone makes (`ImageSource.encode_many`;
  each feature row within ~1 ulp of its own pass, tested on the CPU with the pass forced there).
- Text: every text-side run's contexts go through one pass of their shared text engine
  (`Engine.text_features_many`); each run's logits and losses are then its own.
- Image prompts (BAR, BlackVIP: pixel prompters on the batched image engine): each run's prompted
  images are built as alone (from the minibatch read once); on CUDA the image tower's body then
  runs once over all runs' images in passes of the engine's memory limit, on the CPU each run's
  images pass as alone (`BATCH_IMAGES_ON`); the final projection runs per slice a run would have
  passed alone, because a GEMM picks its kernel by the number of rows (on the CPU a batched
  projection differed by about 1e-6). The batched pass is tested on the CPU, forced there.
- Anything else (BPT-VLM's per-candidate epochs, the reference engines) is evaluated per run.

An exception raised for one run (a malformed candidate, a non-finite feature) is returned in its
place, so the other runs go on.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from zipfast.data.sources import batch_indices
from zipfast.engine.image import BatchedImageEngine, image_logits, losses_and_accuracy
from zipfast.engine.text import autocast_for, losses_from_logits, resolve_precision
from zipfast.evaluate.image import ImageEvaluator
from zipfast.evaluate.text import TextEvaluator


class Query(NamedTuple):
    """One run's round: its evaluator, prompt space, candidates [K, dim] and minibatch index."""

    evaluator: Any
    space: Any
    cand: torch.Tensor
    batch_index: int


class _Batches:
    """Minibatches read once per (source, index, seed, batch size) within one group round."""

    def __init__(self):
        self.memo: dict = {}

    @staticmethod
    def _key(ev, batch_index: int) -> tuple:
        c = ev.config
        return id(ev.source), batch_index, c.seed, c.batch_size

    def get(self, ev, batch_index: int):
        c, src = ev.config, ev.source
        key = self._key(ev, batch_index)
        if key not in self.memo:
            idx = batch_indices(src.n_train, c.batch_size, batch_index, c.seed)
            self.memo[key] = src.train_batch(idx, batch_index, c.seed)
        return self.memo[key]

    def encode_together(self, reads: list[tuple], devices: tuple[str, ...]) -> None:
        """reads: (evaluator, batch index) of text-side runs. The distinct minibatches of each source
        on one of `devices` that encodes its steps go through the image tower together
        (`ImageSource.encode_many`)."""
        by_source: dict[int, dict[tuple, tuple]] = {}
        for ev, b in reads:
            if getattr(ev.source, "encodes_steps", False) and ev.source.device.type in devices:
                by_source.setdefault(id(ev.source), {}).setdefault(self._key(ev, b), (ev, b))
        for keys in by_source.values():
            if len(keys) < 2:
                continue  # one minibatch: `get` reads it as a run alone does
            src = next(iter(keys.values()))[0].source
            idx = {k: batch_indices(src.n_train, ev.config.batch_size, b, ev.config.seed) for k, (ev, b) in keys.items()}
            images = [src.train_views(idx[k], b, ev.config.seed) for k, (ev, b) in keys.items()]
            for k, f in zip(keys, src.encode_many(images)):
                self.memo[k] = f, src.train_y[idx[k]].to(src.device)


# Where the image tower runs over several runs' images at once (distinct minibatches; BAR/BlackVIP's
# prompted images): on CUDA, where small passes are bound by launches. On the CPU, compute-bound, batching
# gains nothing, and rows at another offset of a pass can differ from the run's own pass by about an ulp
# (measured 6e-8 on unit features), so each run's images go through the tower as alone: bit for bit.
BATCH_IMAGES_ON = ("cuda",)


def losses_many(queries: list[Query], batch_images_on: tuple[str, ...] = BATCH_IMAGES_ON) -> list:
    """[(losses, accuracies) or the exception raised] per query, in order. batch_images_on: the device
    types on which the image tower runs over several runs' images at once."""
    out: list = [None] * len(queries)
    batches = _Batches()
    text = [i for i, q in enumerate(queries) if type(q.evaluator) is TextEvaluator]
    pixels = [i for i, q in enumerate(queries) if _pixel_prompted(q.evaluator) and getattr(q.space, "kind", "") == "pixels"]
    rest = [i for i in range(len(queries)) if i not in set(text) | set(pixels)]
    # a failure here is left to each run's own read below (its error, its run)
    _guarded(lambda: batches.encode_together([(queries[i].evaluator, queries[i].batch_index) for i in text],
                                             batch_images_on))
    _text_losses(queries, text, batches, out)
    _pixel_losses(queries, pixels, batches, out, batch_images_on)
    for i in rest:
        q = queries[i]
        out[i] = _guarded(lambda q=q: q.evaluator.losses(q.space, q.cand, q.batch_index))
    return out


def _guarded(fn):
    try:
        return fn()
    except Exception as e:  # one run's failure is that run's (the group goes on)
        return e


def _text_losses(queries, members, batches, out) -> None:
    by_engine: dict[int, list[int]] = {}
    ctx: dict[int, torch.Tensor] = {}
    for i in members:
        q = queries[i]
        got = _guarded(lambda q=q: q.space.contexts(q.cand))
        if isinstance(got, Exception):
            out[i] = got
            continue
        ctx[i] = got
        by_engine.setdefault(id(q.evaluator.engine), []).append(i)
    for ids in by_engine.values():
        engine = queries[ids[0]].evaluator.engine
        feats = _guarded(lambda: engine.text_features_many([ctx[i] for i in ids]))
        for n, i in enumerate(ids):
            if isinstance(feats, Exception):
                out[i] = feats
                continue
            q = queries[i]

            def one(q=q, text=feats[n]):
                x, y = batches.get(q.evaluator, q.batch_index)
                return losses_from_logits(engine.logits_from_text(x, text), y.to(q.evaluator.device))
            out[i] = _guarded(one)


def _pixel_prompted(ev) -> bool:
    return (type(ev) is ImageEvaluator and not ev.epochs and type(ev.engine) is BatchedImageEngine
            and ev.text_engine is None and ev.tower.token_prompts_ok
            and not getattr(ev.tower.visual, "output_tokens", False))


class _Slice(NamedTuple):
    owner: int
    images: torch.Tensor  # [n, 3, H, W] prompted
    rows: slice           # where its features go in the owner's [K·B, E]


def _pixel_losses(queries, members, batches, out, batch_images_on: tuple[str, ...]) -> None:
    """Pixel prompters: each run's prompted images as alone (from the minibatch read once); on the
    devices of batch_images_on the tower's body batched over runs that share the tower and query
    precision, elsewhere each run's passes its own; the projection per slice."""
    by_tower: dict[tuple, list[int]] = {}
    for i in members:
        ev = queries[i].evaluator
        alone = None if ev.engine.device.type in batch_images_on else i
        by_tower.setdefault((id(ev.tower.visual), ev.query_precision, alone), []).append(i)
    for ids in by_tower.values():
        engine = queries[ids[0]].evaluator.engine
        precision = resolve_precision(queries[ids[0]].evaluator.query_precision, engine.device)
        slices, feats, labels = [], {}, {}
        for i in ids:
            got = _guarded(lambda i=i: _prompted(queries[i], batches, precision))
            if isinstance(got, Exception):
                out[i] = got
                continue
            parts, K, B, labels[i] = got
            feats[i] = torch.empty(K * B, engine.tower.output_dim, device=engine.device)
            slices += [_Slice(i, x, r) for x, r in parts]
        done = _guarded(lambda: _tower_passes(engine, slices, feats, precision))
        for i in feats:
            if isinstance(done, Exception):
                out[i] = done
                continue
            q = queries[i]
            ev = q.evaluator
            f = feats[i].view(q.cand.shape[0], -1, feats[i].shape[-1])
            out[i] = _guarded(lambda ev=ev, f=f, i=i: losses_and_accuracy(
                image_logits(f, ev.text_features, ev.tower.logit_scale.detach()), labels[i], ev.focal_gamma))


def _prompted(q: Query, batches, precision):
    """([(prompted images [n, 3, H, W], their rows)], K, B, labels): the slices `BatchedImageEngine`
    passes through the tower for this run alone."""
    ev, engine = q.evaluator, q.evaluator.engine
    x, y = batches.get(ev, q.batch_index)
    x = x.to(engine.device)
    K, B = q.cand.shape[0], x.shape[0]
    rows = engine.rows_per_pass(*engine._geometry())
    parts = []
    with torch.no_grad(), autocast_for(engine.device, precision):
        prepared = q.space.prepare(x)
        k_chunk = max(1, rows // B)
        for k0 in range(0, K, k_chunk):
            flat = q.space.apply(prepared, q.cand[k0:k0 + k_chunk]).flatten(0, 1)
            base = k0 * B
            parts += [(flat[j:j + rows], slice(base + j, base + min(j + rows, flat.shape[0])))
                      for j in range(0, flat.shape[0], rows)]
    return parts, K, B, y


def _tower_passes(engine, slices: list[_Slice], feats: dict, precision) -> None:
    """The body of the image tower over the slices in passes of at most the engine's rows; each
    slice's projection (and normalisation) on its own."""
    rows = engine.rows_per_pass(*engine._geometry())
    tower = engine.tower
    with torch.no_grad(), autocast_for(engine.device, precision):
        n = 0
        while n < len(slices):
            take, total = [], 0
            while n < len(slices) and (not take or total + slices[n].images.shape[0] <= rows):
                take.append(slices[n])
                total += slices[n].images.shape[0]
                n += 1
            pooled = tower.pooled_pixels(torch.cat([s.images for s in take]))
            for s, p in zip(take, pooled.split([s.images.shape[0] for s in take])):
                feats[s.owner][s.rows] = engine._tower(tower.project, p)
