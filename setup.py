import importlib.util
import os
import shutil
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

here = Path(__file__).parent


class CMakeBuild(build_ext):
    """Builds csrc/ through CMakeLists.txt (zipfast/ops/build.py: cached by a hash of the sources).

    ZIPFAST_BUILD_CUDA=auto (default: CUDA when nvcc is found) | 1 (CUDA required) | 0;
    TORCH_CUDA_ARCH_LIST picks the architectures (default 8.0;9.0). Unless CUDA was required,
    a failed build leaves a package that runs on its PyTorch and Triton paths.
    """

    def run(self):
        spec = importlib.util.spec_from_file_location("_zipfast_build", here / "zipfast" / "ops" / "build.py")
        builder = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = builder  # dataclasses look their module up
        spec.loader.exec_module(builder)
        try:
            result = builder.build()
        except Exception as e:
            if os.environ.get("ZIPFAST_BUILD_CUDA", "auto").strip().lower() in ("1", "on", "true", "yes"):
                raise
            print(f"zipfast: WARNING: the csrc/ build failed; installing without compiled kernels:\n{e}")
            return
        for ext in self.extensions:
            src = result.modules.get(ext.name.rsplit(".", 1)[-1])
            if src is None:  # e.g. the CUDA module when nvcc is absent
                continue
            dsts = {Path(self.get_ext_fullpath(ext.name))}
            if self.inplace or getattr(self, "editable_mode", False):  # editable: the package is the source tree
                dsts.add(here / "zipfast" / Path(self.get_ext_filename(ext.name)).name)
            for dst in dsts:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)

version = next(line.split('"')[1] for line in (here / "zipfast" / "__init__.py").read_text().splitlines()
               if line.startswith("__version__"))

setup(
    name="zipfast",
    version=version,
    description="Fast ZIP (zeroth-order intrinsic-dimensional prompt tuning) for CLIP models",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["zipfast", "zipfast.*"]),
    package_data={"zipfast": ["model_configs/*.json"]},
    ext_modules=[Extension("zipfast._zipfast_host", sources=[]), Extension("zipfast._zipfast_cuda", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.3",
        "torchvision",
        # the tested range (docs/official-drop-in.md, "The official backbone: QuickGELU"): tests/test_models.py passes on
        # 3.0.0 and 3.3.0; 2.x lists no "openai" tag for the -quickgelu configs the official backbones map to
        "open_clip_torch>=3.0,<3.4",
        "numpy",
        "pillow",
        "pyyaml",
        "yacs",
        "tqdm",
        "cma",  # pycma: SharpZO's and BPT-VLM's CMA-ES
        "threadpoolctl",  # one BLAS thread around pycma's small matrix algebra
        "transformers",  # BlackVIP's coordinator encoder (ViT-MAE), as the official code loads it
        "matplotlib",  # zipfast compare's accuracy-vs-queries plot
        "safetensors",  # checkpoints (zipfast.run.checkpoint)
    ],
    extras_require={
        # pybind11/cmake/ninja: the tests (re)build csrc/ (cached) to check the kernels' math and the nvcc compile.
        # nvidia-cuda-cuobjdump: the compile test lists the SASS/PTX the CUDA module embeds.
        "test": ["pytest>=7", "pytest-benchmark>=4", "hypothesis", "ray", "pybind11>=2.10", "cmake>=3.18", "ninja",
                 "nvidia-cuda-cuobjdump>=13.2"],
        "ray": ["ray"],
        "kernels": ["triton"],
        # `make docs` / `make test`: the site (mkdocs.yml) and its API reference; the versions it was built with
        "docs": ["mkdocs>=1.6.1", "mkdocs-material>=9.8.2", "mkdocstrings[python]>=1.0.8", "mkdocstrings-python>=2.0.11"],
    },
    entry_points={"console_scripts": ["zipfast=zipfast.cli:main"]},
)
