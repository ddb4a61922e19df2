"""What this CPU computes fast (from /proc/cpuinfo): which precision each backend runs by
default. No torch import here: the CLI reads backend choices before any model loads."""

import functools
from pathlib import Path


@functools.cache
def cpu_flags() -> frozenset[str]:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in info.splitlines() if line.startswith("flags")), "")
    return frozenset(line.split(":", 1)[-1].split())


def cpu_has_fast_bf16() -> bool:
    """True where bf16 matrix products run in hardware (AMX or AVX512-BF16)."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def cpu_has_amx() -> bool:
    """True where the CPU has AMX bf16 tiles (several times AVX512-BF16's matmul rate)."""
    return "amx_bf16" in cpu_flags()


def cpu_has_int8_dot() -> bool:
    """True where int8 dot products run without overflow tricks (VNNI or AMX int8): u8 x s8
    products may then use all 8 weight bits."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def auto_dtype() -> str:
    """`auto` for torch: bf16 where the hardware does it fast (a GPU, AMX, AVX512-BF16), else
    fp32."""
    import torch

    return "bf16" if torch.cuda.is_available() or cpu_has_fast_bf16() else "fp32"


def pick_dtype(name: str):
    """The torch dtype for `name` (auto, fp32, bf16)."""
    import torch

    resolved = auto_dtype() if name == "auto" else name
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[resolved]
