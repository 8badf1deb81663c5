"""Run-group workloads (bench/test_group.py on the CPU, bench/test_gpu_group.py on CUDA).

Every group is R ZIP runs built as `zipfast train` builds them (zipfast.run.task.fit through
`Trainer`), on one model, with ONE shared `cache` dict so that runs of one data seed share their
data source; the runs differ only in the SPSA step size a (spsa_params[2] = A0·(1 + i/4)), so
they share the seed, the minibatch indices and thus every minibatch read (the image pass).

Timed units (each a pedantic round of pytest-benchmark):
  group round   `RunGroup._round` over all R runs: every run's ask, `losses_many`, every run's tell
                and session bookkeeping, i.e. what one iteration of `RunGroup.fit` does.
  alone round   `Trainer._round` of one run (the plain ask → evaluator.losses → tell), the
                round a run does by itself with the CUDA-graph fused step disabled.
  fused=True    both with the fused step where it applies (CUDA): the group's one captured
                group step, or each run's own captured step alone.
"""

from __future__ import annotations

import os
import tempfile

import torch
from tqdm.auto import tqdm

from zipfast.config import TrainConfig
from zipfast.data.classnames import EUROSAT
from zipfast.data.sources import FeatureSource
from zipfast.run.group import RunGroup
from zipfast.run.loop import Session
from zipfast.run.trainer import Trainer

A0 = 0.01  # the default SPSA step size a (TrainConfig.spsa_params[2])
BUDGET = 10 ** 9  # never reached: the benchmarks call rounds themselves
FULL = os.environ.get("ZIPFAST_BENCH_FULL", "") not in ("", "0")
N_CLASSES = 10
SHOTS = 13  # 10 × 13 = 130 training images (≥ 128: a full minibatch), plus 1 test image per class
IMAGE_BATCH = 128 if FULL else 16  # images per minibatch (the image pass a group shares)


def config(i: int, device: str, **kw) -> TrainConfig:
    """Run i of a group: ZIP defaults (m = 8, d = 500, r = 5, q = 5 → K = 10), seed 1, fp32."""
    base = dict(budget=BUDGET, seed=1, device=device, precision="fp32", checkpoint_every=0,
                spsa_params=(1.0, 0.01, A0 * (1 + i / 4), 0.4, 0.1))
    return TrainConfig(**{**base, **kw})


def image_folder(n_classes: int = N_CLASSES, shots: int = SHOTS, size: int = 224) -> str:
    """A generated image folder (pixels.write_synthetic_image_folder) of `shots` + 1 images per class."""
    from zipfast.data.pixels import write_synthetic_image_folder

    root = os.path.join(tempfile.mkdtemp(prefix="zipfast-bench-group-"), "images")
    write_synthetic_image_folder(root, n_classes=n_classes, per_class=shots + 1, size=size, seed=0)
    return root


def image_trainers(R: int, model, tokenizer, root: str, device: str = "cpu", batch: int = IMAGE_BATCH,
                   cache: dict | None = None) -> list[Trainer]:
    """R ZIP runs on the image folder at `root` (feature_bank = 0: every round encodes its minibatch
    with the image tower, the pass the group shares), one shared cache."""
    from zipfast.data.imagefolder import FewShotImageFolder

    cache = {} if cache is None else cache
    data = FewShotImageFolder.from_root(root, SHOTS, 1, 1)
    out = []
    for i in range(R):
        cfg = config(i, device, model="ViT-B-16", pretrained="none", dataset=root, shots=SHOTS, test_per_class=1,
                     batch_size=batch, feature_bank=0)
        out.append(Trainer(model, data.classnames, cfg, data, tokenizer, progress=False, cache=cache))
    return out


def planted_trainers(R: int, cache: dict | None = None, device: str = "cpu") -> list[Trainer]:
    """R ZIP runs on the planted task (its 4-layer, 256-wide text tower; 128 cached features)."""
    from zipfast.data.planted import make_planted_task, planted_model
    from zipfast.engine.towers import TextTower

    cache = {} if cache is None else cache
    torch.manual_seed(0)
    model, tok = planted_model(0)
    task = make_planted_task(TextTower(model), tok, n_ctx=8, shots=16, test_per_class=2, seed=0)
    return [Trainer(model, task.classnames, config(i, device, model="zipfast-planted", pretrained="none",
                                                    dataset="planted"), task, tokenizer=tok, progress=False,
                    cache=cache) for i in range(R)]


def feature_data(n: int = 128, dim: int = 512, n_classes: int = N_CLASSES) -> FeatureSource:
    """Cached image features: n random unit vectors [n, dim] with labels, seeded."""
    g = torch.Generator().manual_seed(3)
    x = torch.nn.functional.normalize(torch.randn(n + n_classes, dim, generator=g), dim=-1)
    y = torch.arange(n + n_classes) % n_classes
    return FeatureSource(x[:n], y[:n], x[n:], y[n:])


def feature_trainers(R: int, model, tokenizer, data: FeatureSource, device: str = "cpu",
                     cache: dict | None = None) -> list[Trainer]:
    """R ZIP runs on the ViT-B/16 text tower with cached image features (EuroSAT's 10 names)."""
    cache = {} if cache is None else cache
    names = list(EUROSAT)[:N_CLASSES]
    return [Trainer(model, names, config(i, device, model="ViT-B-16", pretrained="none", dataset="features",
                                         batch_size=data.n_train), data, tokenizer, progress=False, cache=cache)
            for i in range(R)]


def started(trainers, fused: bool = False) -> list[Session]:
    """Each trainer's session started as `fit` starts it; fused False: the plain rounds (the fused
    step, which applies on CUDA, switched off)."""
    sessions = [Session(t, progress=False) for t in trainers]
    for s, t in zip(sessions, trainers):
        s.start()
        if not fused:
            t._fused = None
    return sessions


class GroupRound:
    """Callable: one `RunGroup` round of the trainers (all stay live: the budget is never reached)."""

    def __init__(self, trainers, fused: bool = False):
        self.trainers = list(trainers)
        self.group = RunGroup(self.trainers, progress=False)
        self.sessions = started(self.trainers, fused)
        self.live = list(range(len(self.trainers)))
        self.bar = tqdm(disable=True)

    def __call__(self):
        live = self.group._round(self.live, self.sessions, self.bar)
        failed = [r for r in self.group.results if isinstance(r, Exception)]
        if failed:
            raise failed[0]
        assert live == self.live, "a run left the group"
        if self.trainers[0].device.type == "cuda":
            torch.cuda.synchronize()

    @property
    def text_engines(self) -> int:
        """Distinct text engines among the runs (`losses_many` makes one text pass per engine)."""
        return len({id(t.evaluator.engine) for t in self.trainers})

    @property
    def sources(self) -> int:
        """Distinct data sources among the runs (one minibatch read per source and index)."""
        return len({id(t.evaluator.source) for t in self.trainers})


class AloneRounds:
    """Callable: one plain round of each trainer in turn, as each run would do it by itself."""

    def __init__(self, trainers, fused: bool = False):
        self.trainers = list(trainers)
        started(self.trainers, fused)

    def __call__(self):
        for t in self.trainers:
            spent, _ = t._round(BUDGET)
            assert spent == 10
        if self.trainers[0].device.type == "cuda":
            torch.cuda.synchronize()
