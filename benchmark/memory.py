"""Peak memory of a code region, measured correctly per region (a search, a final training, one step).

:class:`MemoryProbe` ``start()`` / ``stop() -> (start_bytes, peak_bytes)``. On CUDA: ``memory_allocated`` /
``max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only, no allocator cache). On CPU: the
process's resident set, whose peak is ``VmHWM`` after resetting it through ``/proc/self/clear_refs``
(Linux >= 4.0), else (Windows, macOS, no permission) the maximum of ``psutil`` RSS samples taken every
millisecond (``how`` says which). On CPU the start includes the interpreter and torch (hundreds of MB):
compare increments.

The runner records each phase's peak (``search.peak_memory_mb``, ``evaluate.peak_memory_mb``) with this
probe; ``bench_memory`` measures single search steps with it, each method in a fresh process.
"""

from __future__ import annotations

import ctypes
import threading
import time
from pathlib import Path

import psutil
import torch

__all__ = ["MB", "MemoryProbe"]

MB = 2**20


def _proc_status(key: str) -> int:
    """A ``/proc/self/status`` field in bytes (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise KeyError(key)


def _can_reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set size (VmHWM)
        _proc_status("VmHWM")
        return True
    except (OSError, KeyError):  # not Linux, an old kernel, or no permission
        return False


def _malloc_trim() -> None:
    """Hand freed heap memory back to the OS (glibc only; a no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class MemoryProbe:
    """Peak memory of a code region: ``start()``, run it, ``stop() -> (start_bytes, peak_bytes)``.

    Args:
        device: on CUDA the caching allocator's counters; elsewhere the resident set (see the module docstring).
    """

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            self.how = "cuda max_memory_allocated"
        elif _can_reset_hwm():
            self.how = "VmHWM after clear_refs"
        else:
            self.how = "psutil RSS sampled every 1 ms"
            self._process = psutil.Process()
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        elif self.how.startswith("VmHWM"):
            _malloc_trim()
            Path("/proc/self/clear_refs").write_text("5")
            self._start = _proc_status("VmRSS")
        else:
            _malloc_trim()
            self._start = self._peak = self._process.memory_info().rss
            self._running = True
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self._start

    def _sample(self) -> None:
        while self._running:
            self._peak = max(self._peak, self._process.memory_info().rss)
            time.sleep(0.001)

    def stop(self) -> tuple[int, int]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.how.startswith("VmHWM"):
            peak = _proc_status("VmHWM")
        else:
            self._running = False
            self._thread.join()
            peak = max(self._peak, self._process.memory_info().rss)
        return self._start, max(peak, self._start)
