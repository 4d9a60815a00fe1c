"""Builds genkernels._C (C++/OpenMP, always) and genkernels._cuda (when nvcc is found) via CMake.

Environment:
  GENKERNELS_CUDA=0/1        force the CUDA module off/on (default: on when nvcc is found)
  GENKERNELS_CUDA_ARCHS      CMake CUDA architectures (default "80-real;90", i.e. sm_80, sm_90
                             and PTX for newer GPUs; never "native", so GPU-less machines build)
  GENKERNELS_BUILD_TYPE      CMake build type (default Release)

The CMake build tree is build/cmake<version>-<python>-<build type>/ (delete it to force a clean build).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _find_nvcc():
    nvcc = shutil.which("nvcc")
    if nvcc:
        return nvcc
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").exists():
            return str(Path(home) / "bin" / "nvcc")
    return None


def _want_cuda():
    flag = os.environ.get("GENKERNELS_CUDA", "").strip()
    nvcc = _find_nvcc()
    if flag == "0":
        return None
    if flag == "1" and nvcc is None:
        raise RuntimeError("GENKERNELS_CUDA=1 but nvcc was not found (set CUDA_HOME or PATH)")
    if nvcc is None:
        print("genkernels: nvcc not found, building without the CUDA module", file=sys.stderr)
    return nvcc


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """One CMake configure+build produces every extension; later extensions find theirs built.

    The CMake tree persists in build/cmake<version>-<python>-<build type>/ inside the source tree, so a
    re-install with nothing changed recompiles nothing, also under pip's build isolation (whose
    pybind11, cmake and ninja live in a fresh temporary directory each time): pybind11 is copied to
    a stable place before it reaches any compile command, ninja is named afresh on every configure,
    and the modules are linked inside the tree and then copied to where setuptools wants them.
    """

    def build_extension(self, ext):
        if getattr(self, "_cmake_done", False):
            return
        self._cmake_done = True
        build_type = os.environ.get("GENKERNELS_BUILD_TYPE", "Release")
        # Keyed by the cmake version too: pip's isolated builds bring their own cmake, and a tree
        # configured by one version is rebuilt from scratch by another.
        build_dir = ROOT / "build" / f"cmake{_cmake_version()}-{sys.implementation.cache_tag}-{build_type}"
        lib_dir = build_dir / "lib"
        lib_dir.mkdir(parents=True, exist_ok=True)
        nvcc = _want_cuda()
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={lib_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={_stable_pybind11(ROOT / 'build')}",
            f"-DCMAKE_BUILD_TYPE={build_type}",
            f"-DGENKERNELS_CUDA={'ON' if nvcc else 'OFF'}",
        ]
        if nvcc:
            args += [
                f"-DCMAKE_CUDA_COMPILER={nvcc}",
                f"-DGENKERNELS_CUDA_ARCHS={os.environ.get('GENKERNELS_CUDA_ARCHS', '80-real;90')}",
            ]
        ninja = _ninja()
        if ninja:
            # The generator is fixed when the tree is first configured; its path is renewed each time.
            if not (build_dir / "CMakeCache.txt").exists() or (build_dir / "build.ninja").exists():
                args += ["-GNinja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir), *args], check=True)
        subprocess.run(["cmake", "--build", str(build_dir), "-j", jobs], check=True)
        for each in self.extensions:
            built = lib_dir / Path(self.get_ext_filename(each.name)).name
            if built.exists():
                target = Path(self.get_ext_fullpath(each.name)).resolve()
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(built, target)


def _stable_pybind11(build_root: Path) -> str:
    """pybind11's headers and CMake files copied under build/ (files rewritten only when their
    content changes, so their timestamps and paths stay put): the CMake config of the copy points
    every compile at the copy, not at pip's temporary build environment."""
    import pybind11

    source = Path(pybind11.__file__).resolve().parent
    stable = build_root / f"pybind11-{pybind11.__version__}"
    for sub in ("include", "share"):
        for path in (source / sub).rglob("*"):
            if path.is_file():
                target = stable / path.relative_to(source)
                if not target.exists() or target.read_bytes() != path.read_bytes():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)
    return str(stable / "share" / "cmake" / "pybind11")


def _cmake_version() -> str:
    out = subprocess.run(["cmake", "--version"], capture_output=True, text=True, check=True).stdout
    return out.split()[2]


def _ninja():
    ninja = shutil.which("ninja")
    if ninja:
        return ninja
    try:
        import ninja as ninja_module
    except ImportError:
        return None
    path = Path(ninja_module.BIN_DIR) / "ninja"
    return str(path) if path.exists() else None


ext_modules = [CMakeExtension("genkernels._C")]
if _want_cuda():
    ext_modules.append(CMakeExtension("genkernels._cuda"))

setup(ext_modules=ext_modules, cmdclass={"build_ext": CMakeBuild})
