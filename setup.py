"""Builds the instancenorm C++/CUDA extension (metadata lives in pyproject.toml).

Environment switches:
  INSTANCENORM_CUDA=0|1      build the CUDA kernels (default: when torch has CUDA and a toolkit is found)
  TORCH_CUDA_ARCH_LIST       CUDA archs (default here: "8.0;9.0+PTX", kept short so a build takes minutes; the PTX
                             lets newer GPUs compile the kernels at load time)
  INSTANCENORM_CPU_FLAGS     compiler flags for every C++ file (default: -O3, portable). The CPU kernels are built
                             once per instruction set (baseline, and on x86-64 AVX2 and AVX-512) and the library
                             picks the best the CPU supports when it loads (INSTANCENORM_CPU_CAPABILITY lowers it).
  INSTANCENORM_CPU_VARIANTS=0  build only the baseline CPU kernels, not the AVX2 / AVX-512 copies (a quicker build,
                             as the packaging test makes; the library then runs the baseline everywhere)
  INSTANCENORM_NATIVE=1      opt-in: add -march=native, for a build that runs only on CPUs like the build machine
  INSTANCENORM_OPENMP=0|1    compile with -fopenmp, which at::parallel_for's inline OpenMP code needs to use threads
                             (default: on, except on macOS, whose Apple clang rejects -fopenmp)
  CUDA_HOME                  toolkit folder; found from `nvcc` on PATH (wrappers followed) when unset
"""

import os
import platform
import re
import shutil
import sys
from pathlib import Path

from setuptools import setup

CSRC = Path("instancenorm") / "csrc"


def find_cuda_home() -> str | None:
    """The toolkit folder, following an `nvcc` on PATH that is a wrapper script (`exec /x/bin/nvcc "$@"`).

    torch guesses CUDA_HOME from nvcc's own folder, which for a wrapper has no lib64/ and linking then
    fails with `cannot find -lcudart`.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    candidates = []
    if nvcc:
        real = Path(nvcc).resolve()
        if real.stat().st_size < 64 * 1024:
            text = real.read_text(errors="ignore")
            candidates += [Path(p) for p in re.findall(r"(/\S+/bin/nvcc)\b", text)]
        candidates.append(real)
    candidates.append(Path("/usr/local/cuda/bin/nvcc"))
    for path in candidates:
        home = path.parent.parent
        if path.exists() and (home / "include" / "cuda_runtime.h").exists():
            return str(home)
    return None


def want_cuda(torch_cuda: str | None, cuda_home: str | None) -> bool:
    flag = os.environ.get("INSTANCENORM_CUDA", "auto").lower()
    if flag in ("0", "false", "no", "off"):
        return False
    available = bool(torch_cuda) and cuda_home is not None
    if flag in ("1", "true", "yes", "on") and not available:
        raise RuntimeError(
            "INSTANCENORM_CUDA=1 but no CUDA build is possible "
            f"(torch CUDA: {torch_cuda}, toolkit: {cuda_home}); set CUDA_HOME or INSTANCENORM_CUDA=0"
        )
    return available


cuda_home = find_cuda_home()
if cuda_home:
    # Must be set before torch.utils.cpp_extension is imported: it reads CUDA_HOME at import time.
    os.environ["CUDA_HOME"] = cuda_home

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def switch(name: str, default: bool) -> bool:
    return os.environ.get(name, "1" if default else "0").lower() in ("1", "true", "yes", "on")


with_cuda = want_cuda(torch.version.cuda, cuda_home)
cpu_flags = os.environ.get("INSTANCENORM_CPU_FLAGS", "-O3").split()
if switch("INSTANCENORM_NATIVE", False):
    cpu_flags.append("-march=native")
openmp = ["-fopenmp"] if switch("INSTANCENORM_OPENMP", sys.platform != "darwin") else []

KERNELS = str(CSRC / "cpu" / "instance_norm_cpu.cpp")
# Extra builds of KERNELS, each in its own namespace (CPU_CAPABILITY), chosen at run time by cpu/dispatch.cpp. The
# macros are the ones at::vec reads for its vector width; the flags let the compiler use those instructions.
CPU_VARIANTS = (
    {
        "AVX2": ["-mavx2", "-mfma", "-mf16c"],
        "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma", "-mf16c"],
    }
    if platform.machine().lower() in ("x86_64", "amd64") and switch("INSTANCENORM_CPU_VARIANTS", True)
    else {}
)
# The baseline variant (CPU_CAPABILITY=DEFAULT) is an ordinary source. It is linked before the variants: inline
# functions from headers (std::vector, c10::Half conversions) that several objects define are taken from the first
# object that has them, and that copy must not contain AVX instructions.
sources = [
    str(CSRC / name)
    for name in ("instance_norm.cpp", "cpu/instance_norm_cpu.cpp", "cpu/dispatch.cpp", "autograd.cpp", "bindings.cpp")
]
# gcc 12 reports false "uninitialized" warnings inside its own AVX-512 intrinsics headers.
extra = {"cxx": cpu_flags + openmp + ["-Wno-unknown-pragmas", "-Wno-uninitialized", "-Wno-maybe-uninitialized"]}
define_macros = [(f"INSTANCENORM_CPU_{name}", None) for name in CPU_VARIANTS]


class BuildWithCpuVariants(BuildExtension):
    """BuildExtension that also compiles KERNELS once per CPU_VARIANTS entry, with that variant's flags, into its own
    folder, and links those objects after the ordinary sources."""

    def build_extension(self, ext) -> None:
        cxx = ext.extra_compile_args["cxx"] if isinstance(ext.extra_compile_args, dict) else ext.extra_compile_args
        for name, flags in CPU_VARIANTS.items():
            macros = ext.define_macros + [("CPU_CAPABILITY", name), (f"CPU_CAPABILITY_{name}", None)]
            objects = self.compiler.compile(
                [KERNELS],
                output_dir=os.path.join(self.build_temp, name.lower()),
                macros=macros,
                include_dirs=ext.include_dirs,
                debug=self.debug,
                extra_postargs={"cxx": cxx + flags, "nvcc": []},
                depends=ext.depends,
            )
            ext.extra_objects = [o for o in ext.extra_objects if o not in objects] + objects
        super().build_extension(ext)


if with_cuda:
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    sources.append(str(CSRC / "cuda" / "instance_norm_cuda.cu"))
    # No --use_fast_math: it flushes subnormals to zero, so with eps = 0 a plane of tiny values (x = ±1e-20, variance
    # 1e-40) would count as constant and normalize to ±inf. The kernels are memory-bound; exact division costs nothing.
    extra["nvcc"] = ["-O3"]
    define_macros.append(("INSTANCENORM_WITH_CUDA", None))
    extension_type = CUDAExtension
else:
    extension_type = CppExtension

print(
    f"instancenorm: building CPU kernels{' + CUDA kernels' if with_cuda else ''} "
    f"(CUDA_HOME={cuda_home}, archs={os.environ.get('TORCH_CUDA_ARCH_LIST', '-')})"
)

setup(
    ext_modules=[
        extension_type(
            "instancenorm._C",
            sources,
            include_dirs=[str(Path(__file__).parent.resolve() / CSRC)],
            extra_compile_args=extra,
            extra_link_args=openmp,
            define_macros=define_macros,
            py_limited_api=True,
        )
    ],
    cmdclass={"build_ext": BuildWithCpuVariants},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
