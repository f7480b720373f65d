"""habla: reproducible speech-model fine-tuning as one DVC pipeline.

Importing habla first pins how the numeric libraries compute on CPUs (below), so that the
same inputs give the same outputs on any x86 machine with AVX2. Each pin is an environment
variable read when the library loads: habla sets it only if the user has not.
"""

import os

# On small shared CPU boxes OpenMP threads busy-wait: a tiny training step went from 0.7 s
# to 14-19 s with two spinning threads (field notes). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _numpy_avx512_targets() -> str:
    """numpy's dispatch targets above AVX2 (numpy warns about names it does not dispatch)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(x) for x in version("numpy").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return ""
    if (major, minor) >= (2, 4):
        return "X86_V4 AVX512_ICL AVX512_SPR"
    return "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL " \
        "AVX512_ICL AVX512_SPR"


# Numeric libraries pick their kernels by CPU at run time: Intel MKL vs oneDNN, AVX2 vs
# AVX-512. Each choice rounds differently, and Whisper's decoding turns a last-bit difference
# into another transcript: on an AVX-512 box, numpy's and OpenBLAS's AVX-512 kernels changed
# 73 of 120 transcripts and the transcribe stage kept 211 clips instead of the 215 an AVX2
# box keeps (every stage after it changed too). With these pins the AVX-512 box reproduced
# the AVX2 box's labels byte for byte. GPUs are unaffected. Set CT2_USE_MKL=1, or unset a
# pin, for speed on a big machine: results then depend on that machine's CPU.
os.environ.setdefault("CT2_USE_MKL", "0")  # CTranslate2 (Whisper): oneDNN on every vendor
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN in CTranslate2 and torch
_FLAGS = _cpu_flags()
if {"avx2", "fma"} <= _FLAGS:
    os.environ.setdefault("CT2_FORCE_CPU_ISA", "AVX2")
    os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")  # torch's vectorised kernels
    os.environ.setdefault("MKL_ENABLE_INSTRUCTIONS", "AVX2")  # torch's BLAS (MKL)
    os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")  # numpy's BLAS (OpenBLAS)
    # numpy's AVX-512 ufunc loops (log, exp, ...), named as this numpy version names them
    os.environ.setdefault("NPY_DISABLE_CPU_FEATURES", _numpy_avx512_targets())



def torch_pair_problem(torch_version: str | None, torchaudio_version: str | None) -> str | None:
    """Why this torch and torchaudio cannot load together, with the fix; None when they can.

    torchaudio's wheels are built against one torch release (torchaudio 2.11.1 declares only
    torch>=2.11, but its library fails to load with torch 2.11.0: undefined symbol), and
    transformers imports torchaudio whenever it is installed, so a mismatch breaks every
    audio stage and even Whisper. Local build tags (+cpu, +cu130) are ignored.
    """
    if torch_version is None or torchaudio_version is None:
        return None
    t, a = (v.split("+")[0] for v in (torch_version, torchaudio_version))
    if t == a:
        return None
    return (f"torch {torch_version} and torchaudio {torchaudio_version} are installed "
            f"together, but torchaudio only loads with the torch release it was built for. "
            f'Fix: pip install "torchaudio=={t}" (or reinstall habla: pip install -e ".[dev]", '
            "which pins both)")


def _check_torch_pair() -> None:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("torch", "torchaudio"):
        try:
            found.append(version(name))
        except PackageNotFoundError:
            found.append(None)
    problem = torch_pair_problem(*found)
    if problem:
        raise ImportError(f"habla: {problem}")


_check_torch_pair()

__version__ = "0.1.0"
