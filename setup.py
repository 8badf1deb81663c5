from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
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
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.3",
        "torchvision",
        "open_clip_torch>=2.24",
        "numpy",
        "pillow",
        "pyyaml",
        "yacs",
        "tqdm",
        "cma",  # pycma: SharpZO's and BPT-VLM's CMA-ES
        "transformers",  # BlackVIP's coordinator encoder (ViT-MAE), as the official code loads it
        "matplotlib",  # zipfast compare's accuracy-vs-queries plot
        "safetensors",  # checkpoints (zipfast.checkpoint)
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-benchmark>=4", "hypothesis", "ray"],
        "ray": ["ray"],
        "kernels": ["triton", "pybind11", "ninja"],
    },
    entry_points={"console_scripts": ["zipfast=zipfast.cli:main"]},
)
