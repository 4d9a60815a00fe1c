"""Builds genkernels._C (C++/OpenMP, always) and genkernels._cuda (when nvcc is found) via CMake.

Environment:
  GENKERNELS_CUDA=0/1        force the CUDA module off/on (default: on when nvcc is found)
  GENKERNELS_CUDA_ARCHS      CMake CUDA architectures (default "80-real;90", i.e. sm_80, sm_90
                             and PTX for newer GPUs; never "native", so GPU-less machines build)
  GENKERNELS_BUILD_TYPE      CMake build type (default Release)
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
    """One CMake configure+build produces every extension; later extensions find theirs built."""

    def build_extension(self, ext):
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        if getattr(self, "_cmake_done", False):
            return
        self._cmake_done = True
        import pybind11

        build_temp = Path(self.build_temp).resolve() / "cmake"
        build_temp.mkdir(parents=True, exist_ok=True)
        nvcc = _want_cuda()
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('GENKERNELS_BUILD_TYPE', 'Release')}",
            f"-DGENKERNELS_CUDA={'ON' if nvcc else 'OFF'}",
        ]
        if nvcc:
            args += [
                f"-DCMAKE_CUDA_COMPILER={nvcc}",
                f"-DGENKERNELS_CUDA_ARCHS={os.environ.get('GENKERNELS_CUDA_ARCHS', '80-real;90')}",
            ]
        if shutil.which("ninja") or _has_ninja_module():
            args.append("-GNinja")
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.run(["cmake", str(ROOT), *args], cwd=build_temp, check=True)
        subprocess.run(["cmake", "--build", ".", "-j", jobs], cwd=build_temp, check=True)


def _has_ninja_module():
    try:
        import ninja  # noqa: F401
    except ImportError:
        return False
    return True


ext_modules = [CMakeExtension("genkernels._C")]
if _want_cuda():
    ext_modules.append(CMakeExtension("genkernels._cuda"))

setup(ext_modules=ext_modules, cmdclass={"build_ext": CMakeBuild})
