"""GPU timing of the prefix_attention implementations (`make bench-gpu`): the engine's shapes
(ViT-B/16 text tower: H = 8, hd = 64, P = 9, S = 6) for n_cls ∈ {100, 1000}, K = 10.

Skipped without a CUDA device: nothing here has run on a GPU on the project's machines.
Each result records pytest-benchmark's host-timed median (with a device synchronisation per
call) and `triton.testing.do_bench`'s CUDA-event median.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device: GPU kernel timings need a GPU (run `make bench-gpu` on one)")

CASES = [(n, 10, backend) for n in (100, 1000) for backend in ("reference", "torch", "triton")]


@pytest.mark.benchmark(group="gpu prefix_attention")
@pytest.mark.parametrize("n_cls,K,backend", CASES, ids=[f"n{n}-K{K}-{b}" for n, K, b in CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_gpu_prefix_attention(benchmark, n_cls, K, backend, dtype):
    import triton.testing

    from zipfast.ops.prefix_attention import reference, torch_lse, triton_kernel

    fn = {"reference": reference.prefix_attention, "torch": torch_lse.prefix_attention,
          "triton": triton_kernel.prefix_attention}[backend]
    H, hd, P, S = 8, 64, 9, 6
    g = torch.Generator(device="cuda").manual_seed(0)
    q, ks, vs = (torch.randn(K, H, n_cls, S, hd, device="cuda", dtype=dtype, generator=g) for _ in range(3))
    kp, vp = (torch.randn(K, H, P, hd, device="cuda", dtype=dtype, generator=g) for _ in range(2))

    def call():
        fn(q, kp, vp, ks, vs)
        torch.cuda.synchronize()

    benchmark.extra_info.update(n_cls=n_cls, K=K, backend=backend, dtype=str(dtype), device=torch.cuda.get_device_name(),
                                do_bench_ms=triton.testing.do_bench(lambda: fn(q, kp, vp, ks, vs)))
    benchmark.pedantic(call, rounds=20, iterations=1, warmup_rounds=3)
