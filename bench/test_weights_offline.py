"""The offline error of a pretrained tag not in the cache (group `weights_offline`).

Outside `make` (HF_HUB_OFFLINE unset) with no network: `load_clip` asks the hub once (a HEAD through
the proxy, which refuses) and fails; the hub client alone spent about 60 s in retries here.
Target: under 5 s per call (it is milliseconds: the refused connection answers at once; a silent
network costs the check's HUB_TIMEOUT_S, 2 s).

    .venv/bin/python -m pytest bench/test_weights_offline.py --benchmark-json=bench/results/weights_offline.json
"""

from __future__ import annotations

import pytest

from zipfast import weights
from zipfast.models import ModelLoadError, load_clip

NO_NETWORK = "http://127.0.0.1:9"  # nothing listens: every connection through this proxy is refused


@pytest.fixture
def no_network(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, NO_NETWORK)
    for var in ("NO_PROXY", "no_proxy", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


def test_uncached_tag_offline_error(benchmark, no_network):
    def attempt():
        with pytest.raises(ModelLoadError, match="not in the local cache") as e:
            load_clip("ViT-B-32", "laion2b_s34b_b79k")
        return str(e.value)

    benchmark.group = "weights_offline"
    benchmark.extra_info["timeout_s"] = weights.HUB_TIMEOUT_S
    message = benchmark.pedantic(attempt, rounds=5, iterations=1, warmup_rounds=1)
    assert "--pretrained" in message and "weights_only" not in message
    assert benchmark.stats.stats.max < 5.0
