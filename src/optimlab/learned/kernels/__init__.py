"""Native kernels of the deployed learned-optimizer steps, compiled on first use.

`rnnprop_step.c` is RNNProp's whole deployed step (features, LSTM layers, output) in one pass over the
coordinates. It is plain C with AVX-512 intrinsics, compiled by the system C compiler (`$CC`, else `cc`)
with `-O3 -march=native` into a shared library cached per machine under `$OPTIMLAB_KERNEL_DIR`
(default `~/.cache/optimlab/kernels`), keyed by the source, the compiler's identity and flags and the CPU's
feature flags; it is loaded with ctypes, whose calls release the GIL. Nothing compiles at import: the first
call of `rnnprop_kernel()` in a process compiles (under a second) or finds the cached build.

Where it cannot be used (no compiler, a compile error, a CPU without AVX-512F/DQ, `OPTIMLAB_FUSED=0`),
`rnnprop_kernel()` returns None, with the reason in one warning per process, and callers take the eager
step (the environment is read once per process, at the first call). The kernel is single-threaded; the
caller splits large tensors across a thread pool rather than linking OpenMP, which would put a second
OpenMP runtime beside torch's in the process. Why no `-ffast-math`: GCC before 13 links `crtfastmath.o` into shared libraries built with it, which
sets the flush-to-zero and denormals-are-zero modes for the whole process on load; and the kernel relies on
IEEE NaN propagation (a NaN gradient gives a NaN update, as in the eager step).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
import warnings
from pathlib import Path

SOURCE = Path(__file__).with_name("rnnprop_step.c")
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=gnu11")
REQUIRED_CPU_FLAGS = ("avx512f", "avx512dq")


def enabled() -> bool:
    """False when `OPTIMLAB_FUSED=0` (or `false`, `no`, `off`) asks for the eager steps."""
    return os.environ.get("OPTIMLAB_FUSED", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    return Path(os.environ.get("OPTIMLAB_KERNEL_DIR") or "~/.cache/optimlab/kernels").expanduser()


def compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or "cc")


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo is missing)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


class KernelUnavailable(RuntimeError):
    """Why a kernel cannot be built or loaded here."""


def build(source: Path = SOURCE) -> Path:
    """The shared library of `source` for this machine: from the cache, else compiled into it."""
    flags = cpu_flags()
    missing = [f for f in REQUIRED_CPU_FLAGS if f not in flags]
    if platform.machine() not in ("x86_64", "AMD64") or missing:
        raise KernelUnavailable(f"needs an x86-64 CPU with {', '.join(REQUIRED_CPU_FLAGS)}")
    cc = compiler()
    try:
        version = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        raise KernelUnavailable(f"no C compiler {shlex.join(cc)!r} ({error})") from None
    text = source.read_bytes()
    key = hashlib.sha256(
        b"\0".join([text, shlex.join(cc).encode(), version.stdout.encode(), " ".join(FLAGS).encode(),
                    " ".join(sorted(flags)).encode()])
    ).hexdigest()[:24]  # fmt: skip
    target = cache_dir() / f"{source.stem}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Compile to a private name and rename: processes building at once each install a complete file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        try:
            command = [*cc, *FLAGS, "-o", tmp, str(source)]
            result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as error:
            raise KernelUnavailable(f"{shlex.join(cc)} failed: {error}") from None
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise KernelUnavailable(f"{shlex.join(cc)} failed: {lines[0] if lines else result.returncode}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@functools.cache
def rnnprop_kernel():
    """The ctypes function `optimlab_rnnprop_step`, or None (with one warning saying why) where unavailable."""
    if not enabled():
        return None
    try:
        library = ctypes.CDLL(str(build()))
    except (KernelUnavailable, OSError) as error:
        warnings.warn(f"optimlab: the fused RNNProp step is unavailable ({error}); using the eager step", stacklevel=3)
        return None
    fn = library.optimlab_rnnprop_step
    p = ctypes.c_void_p
    fn.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_int, p, p, p, p, p, p, p, p, p]
    fn.restype = ctypes.c_int
    return fn
