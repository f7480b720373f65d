"""Agreement of habla's evaluation measures with the original implementations they reproduce.

Renders Spanish eSpeak NG clips, then prints, for each measure, the differences against:
  speaker similarity: resemblyzer 0.1.4 `VoiceEncoder.embed_utterance` (+ `preprocess_wav`),
  DNSMOS:             speechmos 0.0.1.1 `dnsmos.run`,
  SPTK MCD:           pysptk 1.0.1 `mcep` per frame, as ESPnet's evaluate_mcd.py runs it
                      (pysptk Hamming window, int16 samples, fastdtw), and a WORLD
                      (pyworld harvest + cheaptrick) + `pysptk.sp2mc` MCD on voiced frames.
The originals are not habla dependencies: each part is skipped (exit 0) when its packages do
not import. To run every part, a scratch venv with habla's lock plus
`pip install resemblyzer speechmos pysptk pyworld fastdtw` (pysptk/pyworld build with gcc and
need setuptools<81 at build time).
Usage: python benchmarks/eval_measures_agreement.py [--pairs 10]
"""

from __future__ import annotations

import argparse
import importlib.util
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from habla.sources.sentences import sentence  # noqa: E402

TARGET = ("es-419+f2", 140, 75)  # the synthetic target voice of the default pipeline


def _have(*modules: str) -> bool:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        print(f"  skipped: {', '.join(missing)} not importable")
    return not missing


def _render(tts, i: int, voice: str, rate: int = 175, pitch: int = 50) -> np.ndarray:
    return tts.synthesize(sentence(i), voice, rate=rate, pitch=pitch)[0]


def speaker_similarity_part(tts) -> None:
    print("== speaker similarity vs resemblyzer 0.1.4")
    if not _have("resemblyzer", "librosa", "webrtcvad"):
        return
    from resemblyzer import VoiceEncoder, preprocess_wav

    from habla import speaker_similarity as ss

    theirs = VoiceEncoder(device="cpu", verbose=False)
    ours = ss.load_encoder()
    sr = tts.sample_rate
    voices = [TARGET[0], "es+m3", "es+klatt", "es-419+m2", "es+f4", TARGET[0]]
    clips = [_render(tts, i, v) for i, v in enumerate(voices)]
    pre = [preprocess_wav(c, sr) for c in clips]
    ref = np.stack([theirs.embed_utterance(p) for p in pre])
    core = ss.embed(ours, pre, 16000)  # the same preprocessed 16 kHz input
    e2e = ss.embed(ours, clips, sr)  # ours end to end from 22.05 kHz (no VAD trimming)
    print("  clip voice        seconds  cos(core)  cos(end-to-end)")
    for i, v in enumerate(voices):
        print(f"  {i:4d} {v:12s} {len(clips[i]) / sr:7.2f}  {ref[i] @ core[i]:.6f}   "
              f"{ref[i] @ e2e[i]:.6f}")
    sim_ref, sim_e2e = ref @ ref.T, e2e @ e2e.T
    off = ~np.eye(len(clips), dtype=bool)
    print(f"  pairwise similarities, ours end-to-end minus resemblyzer's: max |diff| "
          f"{np.abs(sim_e2e - sim_ref)[off].max():.4f}")


def dnsmos_part(tts) -> None:
    print("== DNSMOS vs speechmos 0.0.1.1")
    if not _have("speechmos", "librosa", "requests"):
        return
    import librosa
    from speechmos import dnsmos as theirs

    from habla import dnsmos

    sr = tts.sample_rate
    rng = np.random.default_rng(0)
    ours = {False: dnsmos.Dnsmos(personalized=False), True: dnsmos.Dnsmos(personalized=True)}
    cases = []
    for n_sentences, voice in [(1, TARGET[0]), (2, "es+m3"), (4, "es+klatt")]:
        w = np.concatenate([_render(tts, k, voice) for k in range(n_sentences)])
        noisy = w + 0.05 * rng.standard_normal(len(w)).astype(np.float32)
        cases += [(f"{voice} {len(w) / sr:.1f}s clean", w), (f"{voice} {len(w) / sr:.1f}s noisy",
                                                               noisy / np.abs(noisy).max())]
    keys = [("sig", "sig_mos"), ("bak", "bak_mos"), ("ovrl", "ovrl_mos"), ("p808", "p808_mos")]
    worst = {True: 0.0, False: 0.0}
    print("  (a) the same 16 kHz input; (b) from 22.05 kHz: theirs resampled by librosa (soxr), "
          "ours by torchaudio (Kaiser)")
    for name, w in cases:
        x16 = np.clip(librosa.resample(w, orig_sr=sr, target_sr=16000), -1, 1)
        for personalized in (False, True):
            model = "dnsmos_personalized" if personalized else "dnsmos"
            t = theirs.run(x16, 16000, model_type=model)
            a = ours[personalized].score(x16, 16000)
            b = ours[personalized].score(w, sr)
            da = max(abs(a[k] - float(t[tk])) for k, tk in keys)
            db = max(abs(b[k] - float(t[tk])) for k, tk in keys)
            worst[personalized] = max(worst[personalized], da)
            tag = "pers." if personalized else "      "
            print(f"  {name:28s} {tag} ovrl {a['ovrl']:.3f} sig {a['sig']:.3f} bak "
                  f"{a['bak']:.3f} p808 {a['p808']:.3f}  max|diff| (a) {da:.2e}  (b) {db:.3f}")
    print(f"  worst |diff| on the same input: {worst[False]:.2e} (P.835), "
          f"{worst[True]:.2e} (personalized)")


def _fastdtw_mcd(x: np.ndarray, y: np.ndarray) -> float:
    """MCD along a fastdtw path (radius 1), as ESPnet's recipe aligns."""
    from fastdtw import fastdtw
    from scipy.spatial.distance import euclidean

    _, path = fastdtw(x, y, dist=euclidean)
    i, j = np.array(path).T
    return float(np.mean(10.0 / np.log(10.0) * np.sqrt(2.0 * ((x[i] - y[j]) ** 2).sum(1))))


def _pysptk_mceps(x16: np.ndarray, order: int) -> np.ndarray:
    """pysptk.mcep per frame on int16 samples, ESPnet's frame settings at 24 kHz."""
    import pysptk

    win = pysptk.sptk.hamming(1024)
    n = (len(x16) - 1024) // 256 + 1
    return np.stack([pysptk.mcep(x16[256 * k: 256 * k + 1024] * win, order, 0.46, eps=1e-6,
                                 etype=1) for k in range(n)])


def _world_mceps(x16: np.ndarray, order: int) -> np.ndarray:
    """WORLD envelope (harvest, cheaptrick) -> pysptk.sp2mc, voiced frames only."""
    import pysptk
    import pyworld

    x = x16.astype(np.float64)
    f0, times = pyworld.harvest(x, 24000, f0_floor=60, f0_ceil=500, frame_period=5.0)
    sp = pyworld.cheaptrick(x, f0, times, 24000, fft_size=1024)
    return pysptk.sp2mc(sp, order, 0.46)[f0 > 0]


def mcd_part(tts, n_pairs: int) -> None:
    print("== SPTK MCD vs pysptk (ESPnet evaluate_mcd.py settings) and WORLD + sp2mc")
    if not _have("pysptk", "pyworld", "fastdtw", "scipy"):
        return
    from habla import mcd, mcd_sptk
    from habla.audio import resample

    def at24k(w: np.ndarray) -> np.ndarray:  # int16 samples, as ESPnet reads wav files
        x = resample(w, tts.sample_rate, 24000)
        return np.round(np.clip(x, -1.0, 32767 / 32768) * 32768).astype(np.int16)

    rng = np.random.default_rng(1)
    systems = [("es+m3", {}), ("es+klatt", {}), ("es-419+f2 pitch 40", {"pitch": 40}),
               ("es-419+f2 rate 180", {"rate": 180}), ("es-419+f2 +20 dB noise", "noise"),
               ("es-419+m1", {}), ("es-419+f2 same", {})]
    rows = []
    for i in range(n_pairs):
        name, change = systems[i % len(systems)]
        ref = _render(tts, i, *TARGET)
        if change == "noise":
            syn = ref + 0.1 * np.sqrt(np.mean(ref ** 2)) * rng.standard_normal(len(ref))
            syn = syn.astype(np.float32)
        elif name.startswith("es-419+f2"):
            kw = {"rate": TARGET[1], "pitch": TARGET[2], **change}
            syn = _render(tts, i, TARGET[0], **kw)
        else:
            syn = _render(tts, i, name)
        a16, b16 = at24k(syn), at24k(ref)
        a, b = a16 / 32768.0, b16 / 32768.0
        ours34 = mcd_sptk.mcd(a, 24000, b, 24000, order=34, include_c0=True)
        ours24 = mcd_sptk.mcd(a, 24000, b, 24000, order=24)
        pa34, pb34 = _pysptk_mceps(a16, 34), _pysptk_mceps(b16, 34)
        pa24, pb24 = _pysptk_mceps(a16, 24)[:, 1:], _pysptk_mceps(b16, 24)[:, 1:]
        cep_diff = np.abs(mcd_sptk.mel_cepstrum(a, 24000, 34) - pa34).max()
        rows.append((name,
                     ours34, mcd.mcd_cepstra(pa34, pb34), _fastdtw_mcd(pa34, pb34),
                     ours24, mcd.mcd_cepstra(pa24, pb24), _fastdtw_mcd(pa24, pb24),
                     _fastdtw_mcd(_world_mceps(a16, 24)[:, 1:], _world_mceps(b16, 24)[:, 1:]),
                     mcd.mcd(a, 24000, b, 24000), cep_diff))
    print("  MCD in dB; 34c0 = order 34 with c0 (ESPnet's setting at 24 kHz), 24 = c1..c24;")
    print("  dtw = exact DTW (habla), fast = fastdtw (ESPnet)")
    print("  pair system                  ours34c0 pysptk:dtw  fast |  ours24 pysptk:dtw  fast "
          "| world24 | habla-logmel | max|mcep diff|")
    for k, r in enumerate(rows):
        print(f"  {k:4d} {r[0]:24s} {r[1]:7.3f} {r[2]:10.3f} {r[3]:5.3f} | {r[4]:7.3f} "
              f"{r[5]:10.3f} {r[6]:5.3f} | {r[7]:7.3f} | {r[8]:12.3f} | {r[9]:.1e}")
    arr = np.array([r[1:9] for r in rows])

    def agree(x: np.ndarray, y: np.ndarray) -> str:
        d = np.abs(x - y)
        return (f"Pearson r {np.corrcoef(x, y)[0, 1]:.4f}, |diff| mean {d.mean():.3f} "
                f"max {d.max():.3f} dB")

    same = max(np.abs(arr[:, 0] - arr[:, 1]).max(), np.abs(arr[:, 3] - arr[:, 4]).max())
    print(f"  ours vs pysptk features, same exact DTW: max |diff| {same:.1e} dB")
    for label, x, y in [("ours (34, c0) vs ESPnet recipe (pysptk 34, c0, fastdtw)", 0, 2),
                        ("ours (24) vs pysptk (24) + fastdtw", 3, 5),
                        ("ours (24) vs WORLD + sp2mc (24, voiced frames, fastdtw)", 3, 6)]:
        print(f"  {label:56s} {agree(arr[:, x], arr[:, y])}")
    print(f"  ours (24) vs habla's log-mel MCD (another scale):        "
          f"Pearson r {np.corrcoef(arr[:, 3], arr[:, 7])[0, 1]:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=10, help="MCD pairs")
    args = ap.parse_args()
    import torch

    from habla.sources.espeak import Espeak

    torch.set_num_threads(1)
    tts = Espeak(seed=0)
    speaker_similarity_part(tts)
    dnsmos_part(tts)
    mcd_part(tts, args.pairs)


if __name__ == "__main__":
    main()
