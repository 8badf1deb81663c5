"""The csrc/ build: nvcc compiles every CUDA kernel for sm_80 and sm_90; the cache makes reruns instant."""

import subprocess

import pytest

from zipfast.ops import build


def test_arch_list_parsing(monkeypatch):
    assert build.cuda_archs("8.0;9.0") == ["80", "90"]
    assert build.cuda_archs("8.6 9.0+PTX") == ["86", "90"]
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    assert build.cuda_archs() == ["80", "90"]
    with pytest.raises(ValueError, match="'sm80'"):
        build.cuda_archs("sm80")
    monkeypatch.setenv("ZIPFAST_BUILD_CUDA", "maybe")
    with pytest.raises(ValueError, match="'maybe'"):
        build.cuda_requested()


def test_host_module_builds(csrc_build):
    assert "_zipfast_host" in csrc_build.modules


def test_nvcc_compiles_cuda_kernels(csrc_build):
    if build.find_nvcc() is None:
        pytest.skip("nvcc not found (CUDA_HOME unset and no nvcc on PATH): the CUDA compile cannot run here")
    if not csrc_build.cuda:
        pytest.skip("ZIPFAST_BUILD_CUDA=0: the CUDA build was switched off")
    assert csrc_build.archs == build.cuda_archs()
    assert "_zipfast_cuda" in csrc_build.modules
    assert next(csrc_build.directory.glob("libzipfast_kernels.a")).stat().st_size > 0
    # Every kernel was compiled to SASS for every requested architecture.
    cmds = subprocess.run([build._tool("ninja", "ninja"), "-C", str(csrc_build.directory), "-t", "commands"],
                          capture_output=True, text=True, check=True).stdout
    for kernel in build.KERNEL_SOURCES:
        line = next(ln for ln in cmds.splitlines() if kernel in ln and "nvcc" in ln)
        for arch in csrc_build.archs:
            assert f"sm_{arch}" in line, line


def test_cuda_module_embeds_the_documented_sass_and_ptx(csrc_build):
    # README/docs, "Running on a GPU": SASS sm_80 and sm_90, PTX for both (newer GPUs JIT the PTX)
    if not csrc_build.cuda or "_zipfast_cuda" not in csrc_build.modules:
        pytest.skip("no CUDA module was built here (nvcc not found or ZIPFAST_BUILD_CUDA=0)")
    if build.find_cuobjdump() is None:
        pytest.skip("cuobjdump not found (pip install nvidia-cuda-cuobjdump)")
    got = build.embedded_images(csrc_build.modules["_zipfast_cuda"])
    assert got == build.documented_images(csrc_build.archs)
    assert build.documented_images(["80", "90"])["sass"].count("sm_80") == len(build.KERNEL_SOURCES)


def test_rebuild_is_cached(csrc_build):
    again = build.build()
    assert again.cached and again.directory == csrc_build.directory and again.seconds == 0.0
