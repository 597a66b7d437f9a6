"""The machine a benchmark ran on, for the header of every table it prints."""

from __future__ import annotations

import os
import platform


def machine_header() -> str:
    """CPU model, cores, memory, GPU and the versions that decide the figures."""
    import psutil
    import ray
    import torch
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, {gpu}; "
            f"torch {torch.__version__}, Ray {ray.__version__}, Python {platform.python_version()}")
