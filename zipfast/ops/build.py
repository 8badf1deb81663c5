"""Build csrc/ with CMake (the single build definition), cached by a hash of the sources.

Used by setup.py (at install) and by the tests (tests/ops/test_build.py). Standard library
only, so setup.py can load this file without importing torch or the package.

    ZIPFAST_BUILD_CUDA   auto (default: build the CUDA module when nvcc is found) | 1 | 0
    TORCH_CUDA_ARCH_LIST target architectures, e.g. "8.0;9.0" (the default) or "9.0+PTX"
    CUDA_HOME            where nvcc lives (default /usr/local/cuda)

The build directory is build/csrc-<hash of sources and options>; a finished build leaves
a stamp there, so a rerun with unchanged sources returns at once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ARCHS = "8.0;9.0"
MODULES = ("_zipfast_host", "_zipfast_cuda")


class BuildError(RuntimeError):
    """The CMake configure or build failed; the message carries the log's tail."""


@dataclass
class BuildResult:
    directory: Path
    cuda: bool
    archs: list[str]
    cached: bool
    seconds: float
    modules: dict[str, Path] = field(default_factory=dict)


def find_nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    cand = Path(home) / "bin" / "nvcc"
    if cand.is_file() and os.access(cand, os.X_OK):
        return str(cand)
    return shutil.which("nvcc")


def cuda_requested() -> bool | None:
    """ZIPFAST_BUILD_CUDA as True / False / None (auto)."""
    v = os.environ.get("ZIPFAST_BUILD_CUDA", "auto").strip().lower()
    if v in ("auto", ""):
        return None
    if v in ("1", "on", "true", "yes"):
        return True
    if v in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"ZIPFAST_BUILD_CUDA={v!r}: use auto, 1 or 0")


def cuda_archs(spec: str | None = None) -> list[str]:
    """TORCH_CUDA_ARCH_LIST ("8.0;9.0", "8.0 9.0+PTX") → CMake architectures ["80", "90"]."""
    spec = spec if spec is not None else os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCHS
    out = []
    for item in spec.replace(",", ";").replace(" ", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        num = item.removesuffix("+PTX")  # CMake builds SASS and PTX for every listed arch
        try:
            major, minor = num.split(".") if "." in num else (num[:-1], num[-1])
            arch = f"{int(major)}{minor}"
        except ValueError:
            raise ValueError(f"TORCH_CUDA_ARCH_LIST entry {item!r} is not like 8.0, 9.0 or 9.0+PTX") from None
        out.append(arch)
    if not out:
        raise ValueError(f"TORCH_CUDA_ARCH_LIST={spec!r} names no architecture")
    return out


def _tool(module: str, name: str) -> str:
    """cmake/ninja from their PyPI packages when installed, else from PATH."""
    try:
        mod = __import__(module)
        d = getattr(mod, "BIN_DIR", None) or getattr(mod, "CMAKE_BIN_DIR", None)
        if d and (Path(d) / name).is_file():
            return str(Path(d) / name)
    except ImportError:
        pass
    found = shutil.which(name)
    if not found:
        raise BuildError(f"{name} not found: pip install {module}")
    return found


def source_hash(cuda: bool, archs: list[str]) -> str:
    h = hashlib.sha256()
    files = [ROOT / "CMakeLists.txt"] + sorted(p for p in (ROOT / "csrc").rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    h.update(f"cuda={cuda};archs={';'.join(archs)};py={sys.version_info[:2]}".encode())
    return h.hexdigest()[:16]


def build(cuda: bool | None = None, archs: list[str] | None = None, build_root: Path | None = None,
          jobs: int = 2, log=print) -> BuildResult:
    """Configure and build csrc/ (cached). cuda None = auto (nvcc found). Raises BuildError."""
    nvcc = find_nvcc()
    want = cuda_requested() if cuda is None else cuda
    if want is None:
        want = nvcc is not None
    if want and nvcc is None:
        raise BuildError("ZIPFAST_BUILD_CUDA=1 but nvcc was not found (set CUDA_HOME)")
    archs = archs or cuda_archs()
    digest = source_hash(want, archs)
    bdir = (build_root or ROOT / "build") / f"csrc-{digest}"
    stamp = bdir / "zipfast-build.ok"
    start = time.perf_counter()
    if stamp.is_file():
        return BuildResult(bdir, want, archs, True, 0.0, _modules(bdir))
    bdir.mkdir(parents=True, exist_ok=True)
    import pybind11  # a build requirement (setup.py / pyproject.toml)

    cfg = [_tool("cmake", "cmake"), "-G", "Ninja", "-S", str(ROOT), "-B", str(bdir),
           f"-DCMAKE_MAKE_PROGRAM={_tool('ninja', 'ninja')}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
           f"-DPython_EXECUTABLE={sys.executable}", f"-DZIPFAST_BUILD_CUDA={'ON' if want else 'OFF'}"]
    if want:
        cfg += [f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(archs)}"]
    log(f"zipfast: building csrc/ in {bdir} (CUDA {'on, archs ' + ','.join(archs) if want else 'off'})")
    for cmd in (cfg, [_tool("cmake", "cmake"), "--build", str(bdir), "-j", str(jobs)]):
        res = subprocess.run(cmd, capture_output=True, text=True)
        (bdir / "build.log").open("a").write(" ".join(cmd) + "\n" + res.stdout + res.stderr)
        if res.returncode != 0:
            tail = (res.stdout + res.stderr)[-4000:]
            raise BuildError(f"{' '.join(cmd[:2])} failed (exit {res.returncode}); log {bdir / 'build.log'}:\n{tail}")
    stamp.write_text(digest)
    return BuildResult(bdir, want, archs, False, time.perf_counter() - start, _modules(bdir))


KERNEL_SOURCES = ("perturb.cu", "candidates.cu", "spsa_update.cu")


def documented_images(archs: list[str]) -> dict[str, list[str]]:
    """The machine code the CUDA module embeds for `archs` (what the docs state): for every
    kernel source, SASS and PTX of each arch (CMake's default for a plain arch number), so
    sm_80 SASS also runs on sm_86/sm_89 and the newest PTX is compiled by the driver for newer
    GPUs. cuobjdump names both kinds sm_XX."""
    per = sorted(f"sm_{a}" for a in archs for _ in KERNEL_SOURCES)
    return {"sass": per, "ptx": per}


def find_cuobjdump() -> str | None:
    """cuobjdump from CUDA_HOME, PATH, or the nvidia-cuda-cuobjdump wheel (a test dependency)."""
    nvcc = find_nvcc()
    candidates = [Path(nvcc).parent / "cuobjdump"] if nvcc else []
    found = shutil.which("cuobjdump")
    candidates += [Path(found)] if found else []
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidates += sorted(Path(root).glob("cu*/bin/cuobjdump"))
    for c in candidates:
        if c.is_file():
            if not os.access(c, os.X_OK):  # wheels may drop the executable bit
                try:
                    c.chmod(c.stat().st_mode | 0o111)
                except OSError:
                    continue
            return str(c)
    return None


def embedded_images(module: Path, cuobjdump: str | None = None) -> dict[str, list[str]]:
    """{"sass": [...], "ptx": [...]}: the architectures of every cubin and PTX in a built module."""
    import re

    tool = cuobjdump or find_cuobjdump()
    if tool is None:
        raise BuildError("cuobjdump not found (pip install nvidia-cuda-cuobjdump, or set CUDA_HOME)")
    out = {}
    for kind, flag, ext in (("sass", "--list-elf", "cubin"), ("ptx", "--list-ptx", "ptx")):
        res = subprocess.run([tool, flag, str(module)], capture_output=True, text=True)
        if res.returncode != 0:
            raise BuildError(f"{tool} {flag} {module} failed: {res.stderr.strip()[:500]}")
        out[kind] = sorted(re.findall(rf"\.(sm_\d+[a-z]?)\.{ext}\b", res.stdout))
    return out


def _modules(bdir: Path) -> dict[str, Path]:
    out = {}
    for name in MODULES:
        hits = sorted(bdir.glob(f"{name}*.so")) + sorted(bdir.glob(f"{name}*.pyd"))
        if hits:
            out[name] = hits[0]
    return out


def load_module(path: Path):
    """Import a built extension module from its file."""
    import importlib.util

    name = path.name.split(".")[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


if __name__ == "__main__":
    r = build()
    print(f"built {', '.join(r.modules)} in {r.directory} ({'cached' if r.cached else f'{r.seconds:.1f} s'})")
