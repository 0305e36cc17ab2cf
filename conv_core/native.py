"""Small C kernels for the few loops that tensor operations serve badly.

Each kernel is one C file in conv_core/kernels, compiled with the machine's C
compiler on first use (well under a second), cached by source, flags and CPU,
and loaded with ctypes: no torch headers, no build step at install. Every
caller keeps a pure-torch path that gives the same bytes, used when no
compiler is found or compiling fails (with a warning).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

KERNELS = Path(__file__).parent / "kernels"
# This CPU's own vector instructions first; plain -O3 for a compiler that knows no -march=native.
FLAG_SETS = (("-O3", "-march=native", "-fPIC", "-shared", "-std=c11"), ("-O3", "-fPIC", "-shared", "-std=c11"))

logger = logging.getLogger("conv_core.native")


def cache_dirs() -> list[Path]:
    """Where built kernels go: $CONVLAB_KERNEL_CACHE if set; else $XDG_CACHE_HOME/convlab/kernels
    (~/.cache/convlab/kernels), then a folder in the temporary directory for a home that is not writable."""
    if os.environ.get("CONVLAB_KERNEL_CACHE"):
        return [Path(os.environ["CONVLAB_KERNEL_CACHE"])]
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "convlab" / "kernels"
    return [user, Path(tempfile.gettempdir()) / f"convlab-kernels-{os.getuid()}"]


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine() + platform.processor()
    keep = [line for line in lines if line.startswith(("model name", "flags", "Features"))]
    return platform.machine() + "".join(dict.fromkeys(keep))


def _compile(compiler: str, flags: tuple[str, ...], source: Path, library: Path) -> str | None:
    """Build `library` from `source`; None on success, else what went wrong.

    Compiled to a temporary name and renamed, so a concurrent first use never
    loads half a file.
    """
    try:
        library.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=library.parent, prefix=f".{library.stem}-", suffix=".so")
        os.close(fd)
        try:
            subprocess.run([compiler, *flags, "-o", partial, str(source)], check=True,
                           capture_output=True, text=True, timeout=120)
            os.replace(partial, library)
        finally:
            Path(partial).unlink(missing_ok=True)
    except (OSError, subprocess.SubprocessError) as error:
        return (getattr(error, "stderr", "") or str(error)).strip()[:500]
    return None


@functools.cache
def load(name: str) -> ctypes.CDLL | None:
    """The compiled kernels/<name>.c as a ctypes library, or None if it cannot be built here."""
    source = KERNELS / f"{name}.c"
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        logger.warning(f"no C compiler found (set CC): kernel {name!r} unavailable, using tensor operations")
        return None
    problems = []
    for folder in cache_dirs():
        for flags in FLAG_SETS:
            key = hashlib.sha256("\0".join([source.read_text(), compiler, *flags, _cpu_signature()]).encode())
            library = folder / f"{name}-{key.hexdigest()[:16]}.so"
            problem = None if library.exists() else _compile(compiler, flags, source, library)
            if problem is None:
                try:
                    return ctypes.CDLL(str(library))
                except OSError as error:
                    problem = str(error)
            problems.append(f"{library.parent}, {' '.join(flags)}: {problem}")
    logger.warning(f"could not compile kernel {name!r} with {compiler} ({'; '.join(problems)}); "
                   "using tensor operations")
    return None


@functools.cache
def sources_digest() -> str:
    """A short digest of every kernel's source: what a measurement of training speed depends on besides
    the machine and torch (conv_core.train keys its cached layout choice by it)."""
    digest = hashlib.sha256()
    for source in sorted(KERNELS.glob("*.c")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:12]


def switched_on(variable: str) -> bool:
    """Whether the switch `variable` is on: unset or anything but 0, false, no or off."""
    return os.environ.get(variable, "1").strip().lower() not in ("0", "false", "no", "off")


@functools.cache  # asked at every forward call of a layer; the answer is fixed for the process
def load_available(name: str) -> ctypes.CDLL | None:
    """kernels/<name>.c as `load` gives it, or None unless its `<name>_available()` says this CPU runs it
    (files whose vector paths need instructions the CPU lacks compile to a stub that says no)."""
    library = load(name)
    return library if library is not None and getattr(library, f"{name}_available")() else None


def pointer(tensor: torch.Tensor, dtype: torch.dtype) -> ctypes.c_void_p:
    """The address of a contiguous CPU tensor's first element, for a kernel argument.

    The dtype is checked because C cannot: a wrong one reads the wrong bytes.
    """
    if tensor.device.type != "cpu" or not tensor.is_contiguous() or tensor.dtype != dtype:
        raise ValueError(f"this kernel argument must be a contiguous CPU {dtype} tensor, "
                         f"got {tensor.dtype} on {tensor.device} (contiguous: {tensor.is_contiguous()})")
    return ctypes.c_void_p(tensor.data_ptr())


_pool_lock = threading.Lock()
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (process id, workers, pool)


def _workers(count: int) -> ThreadPoolExecutor:
    """A pool of `count` threads, made anew after a fork (a child inherits no threads)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1] != count:
            if _pool is not None and _pool[0] == os.getpid():
                _pool[2].shutdown(wait=False)
            _pool = (os.getpid(), count, ThreadPoolExecutor(count, thread_name_prefix="convlab-kernel"))
        return _pool[2]


def split(items: int, threads: int | None = None, grain: int = 256) -> list[tuple[int, int]]:
    """[0, items) in contiguous (start, stop) parts, one per thread: `threads` defaults to torch's
    intra-op thread count, cut to one part per `grain` items where there are few."""
    threads = max(1, min(threads or torch.get_num_threads(), -(-items // grain)))
    bounds = [items * part // threads for part in range(threads + 1)]
    return list(zip(bounds, bounds[1:]))


def run_parts(calls: list[tuple]) -> None:
    """Call function(*arguments) for each (function, *arguments) of `calls` at once, the first on the
    calling thread (ctypes lets go of the GIL during a call, so they run in parallel)."""
    others = [_workers(len(calls) - 1).submit(*call) for call in calls[1:]] if len(calls) > 1 else []
    calls[0][0](*calls[0][1:])
    for other in others:
        other.result()


def run_split(function, items: int, *arguments, threads: int | None = None, grain: int = 256) -> None:
    """Call function(*arguments, start, stop) over [0, items) in contiguous parts (`split`), one per thread."""
    run_parts([(function, *arguments, ctypes.c_int64(start), ctypes.c_int64(stop))
               for start, stop in split(items, threads, grain)])
