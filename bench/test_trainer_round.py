"""One whole training round of the trainer (group `trainer_round`): ZIP on the built-in planted task,
as `zipfast demo` runs it (K = 10 candidates, the batched text engine, one minibatch of cached
features), through `trainer._round`: the optimiser's ask and tell, the minibatch, the space, the
evaluator and the bookkeeping, i.e. what the engine benchmarks (test_throughput.py) leave out.

Self-contained (run it with `--noconftest`) and written against the public names every zipfast
version has, so the same file times another checkout in the same session:

    PYTHONPATH=/path/to/other/checkout .venv/bin/python -m pytest bench/test_trainer_round.py \\
        --noconftest -p no:cacheprovider --benchmark-json=other.json
"""

from __future__ import annotations

import pytest
import torch

from zipfast import ZIPTrainer
from zipfast.config import TrainConfig
from zipfast.data.planted import make_planted_task, planted_model

try:
    from zipfast.engine.towers import TextTower
except ImportError:  # a checkout from before the one-pipeline layout
    from zipfast.text import TextTower


@pytest.fixture(scope="module")
def trainer():
    torch.manual_seed(0)
    model, tokenizer = planted_model(0)
    task = make_planted_task(TextTower(model), tokenizer, n_ctx=8, shots=16, test_per_class=10, seed=0)
    cfg = TrainConfig(model="zipfast-planted", pretrained="none", dataset="planted", budget=10 ** 9, seed=1,
                      device="cpu", precision="fp32", checkpoint_every=0).validate()
    tr = ZIPTrainer(model, task.classnames, cfg, task, tokenizer=tokenizer, progress=False)
    tr._start, tr._fused = 0.0, None  # what fit() sets before its first round
    return tr


def test_zip_round(benchmark, trainer):
    benchmark.group = "trainer_round"
    spent = benchmark.pedantic(lambda: trainer._round(10 ** 9)[0], rounds=30, iterations=1, warmup_rounds=3)
    assert spent == 10
    benchmark.extra_info.update(K=10, queries_per_s=10 / benchmark.stats.stats.median,
                                zipfast_file=__import__("zipfast").__file__)
