"""habla: reproducible speech-model fine-tuning as one DVC pipeline."""

import os

# On small shared CPU boxes OpenMP threads busy-wait: a tiny training step went from 0.7 s
# to 14-19 s with two spinning threads (field notes). Must be set before torch is imported;
# a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _cpu_has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:
        return False


# CTranslate2 (Whisper on CPU) picks its int8 GEMM by CPU vendor: Intel MKL on Intel, oneDNN
# elsewhere, and the widest instruction set available. Each gives different transcripts of
# the same audio (measured: an int8 encoder's outputs differed between the two backends on
# one machine), so labels, and every stage after them, changed with the machine DVC ran on.
# Pin one backend and instruction set wherever the CPU allows it; GPUs are unaffected. Must
# be set before ctranslate2 loads; a value the user set wins (e.g. CT2_USE_MKL=1 for speed).
os.environ.setdefault("CT2_USE_MKL", "0")
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
if _cpu_has_avx2():
    os.environ.setdefault("CT2_FORCE_CPU_ISA", "AVX2")

__version__ = "0.1.0"
