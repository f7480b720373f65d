"""DNSMOS quality estimates (P.835 SIG/BAK/OVRL and P.808 MOS) on onnxruntime.

In: mono waveforms at any sample rate. Out: per clip {sig, bak, ovrl, p808} on the 1-5 MOS
scale (`Dnsmos.score_batch`), and a data gate on OVRL (`passes_gate`, e.g. Emilia-Pipe's
OVRL >= 3.0). The ONNX models come from the `speechmos` 0.0.1.1 wheel; the feature code and
the segment/polynomial logic reproduce its `dnsmos.py` (Microsoft's DNSMOS local script), so
librosa and requests are never imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from habla.melspec import melspectrogram, power_to_db
from habla.wheel_data import package_file

SAMPLE_RATE = 16000
INPUT_LENGTH = 9.01  # seconds the models see at once
SEGMENT_SAMPLES = int(INPUT_LENGTH * SAMPLE_RATE)
P808_N_FFT = 321
P808_HOP = 160
P808_MELS = 120
_PACKAGE = "speechmos"
_MODELS = {
    "p835": ("dnsmos_models/sig_bak_ovr.onnx",
             "269fbebdb513aa23cddfbb593542ecc540284a91849ac50516870e1ac78f6edd"),
    "p835_personalized": ("pdnsmos_models/sig_bak_ovr.onnx",
                          "9e3a197449ca2177f0997afec3bd6b890117ce2f17b89d6eea7fa0d47272c81c"),
    "p808": ("dnsmos_models/model_v8.onnx",
             "9246480c58567bc6affd4200938e77eef49468c8bc7ed3776d109c07456f6e91"),
}
# Calibration of the P.835 network's raw outputs to MOS (highest power first, np.polyval).
_POLY = {
    False: {"sig": (-0.08397278, 1.22083953, 0.0052439),
            "bak": (-0.13166888, 1.60915514, -0.39604546),
            "ovrl": (-0.06766283, 1.11546468, 0.04602535)},
    True: {"sig": (-0.01019296, 0.02751166, 1.19576786, -0.24348726),
           "bak": (-0.04976499, 0.44276479, -0.1644611, 0.96883132),
           "ovrl": (-0.00533021, 0.005101, 1.18058466, -0.11236046)},
}
KEYS = ("sig", "bak", "ovrl", "p808")


def method(personalized: bool = False) -> dict:
    """What the numbers are and are not, written next to them."""
    p835 = "p835_personalized" if personalized else "p835"
    return {
        "name": "DNSMOS P.835 (personalized)" if personalized else "DNSMOS P.835",
        "models": f"speechmos 0.0.1.1 ONNX: {_MODELS[p835][0]} and {_MODELS['p808'][0]}",
        "input": f"{SAMPLE_RATE} Hz (other rates: torchaudio Kaiser-windowed sinc, width 64); "
                 f"{INPUT_LENGTH} s windows every 1 s, averaged; a clip shorter than a window "
                 "is repeated (doubled) until it fills one; as in the original, windows from "
                 "7 s on are 1 sample short and skipped, so only the first ~16 s count",
        "outputs": "sig: speech signal quality, bak: background noise, ovrl: overall (P.835, "
                   "1-5, polynomial-calibrated); p808: overall MOS (P.808, 1-5)",
        "measures": "a non-intrusive predictor of how listeners rate noise, noise-suppression "
                    "artefacts and distortion, trained on real recordings (DNS Challenge)",
        "does_not_measure": "naturalness or prosody of synthetic speech, intelligibility, "
                            "pronunciation, speaker identity; TTS and vocoder artefacts lie "
                            "outside its training data, so compare systems only with care",
        "stability": "per clip, eSpeak speech with digital silence moved by up to 0.4 (BAK) "
                     "and 0.25 (OVRL) under inaudible changes (-90 dBFS noise, a 10 ms shift): "
                     "read means over many clips with their confidence intervals",
    }


def model_paths(personalized: bool = False) -> tuple[str, str]:
    """(P.835 model, P.808 model) inside the installed speechmos wheel, sha256-checked."""
    names = ("p835_personalized" if personalized else "p835", "p808")
    return tuple(str(package_file(_PACKAGE, _MODELS[n][0], _MODELS[n][1], "DNSMOS"))
                 for n in names)  # type: ignore[return-value]


def to_16k(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz. On 12 eSpeak clips from 22.05 kHz, OVRL differed from soxr-HQ
    resampling (librosa's) by 0.047 on average with torchaudio's default filter and by 0.020
    with this steep Kaiser sinc ("kaiser_best")."""
    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    if sample_rate == SAMPLE_RATE:
        return x
    import torch
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(x)), sample_rate, SAMPLE_RATE,
                       lowpass_filter_width=64, rolloff=0.9475,
                       resampling_method="sinc_interp_kaiser", beta=14.769656459379492).numpy()


def segments(wave16k: np.ndarray) -> np.ndarray:
    """(windows, 144160) model inputs of one 16 kHz clip, cut as speechmos cuts them."""
    audio = np.clip(np.asarray(wave16k, dtype=np.float32).reshape(-1), -1.0, 1.0)
    if audio.size == 0:
        raise ValueError("DNSMOS: empty clip")
    while len(audio) < SEGMENT_SAMPLES:
        audio = np.concatenate([audio, audio])
    hops = int(np.floor(len(audio) / SAMPLE_RATE) - INPUT_LENGTH) + 1
    # the same float expression as the original, so its rare too-short window is skipped alike
    cuts = [audio[int(i * SAMPLE_RATE): int((i + INPUT_LENGTH) * SAMPLE_RATE)]
            for i in range(hops)]
    return np.stack([c for c in cuts if len(c) >= SEGMENT_SAMPLES])


def p808_features(segment: np.ndarray) -> np.ndarray:
    """(900, 120) input of the P.808 model: dB mel of the window less its last 10 ms."""
    mel = melspectrogram(segment[:-P808_HOP], SAMPLE_RATE, P808_N_FFT, P808_HOP, P808_MELS)
    return ((power_to_db(mel) + 40.0) / 40.0).astype(np.float32)


def calibrate(raw: np.ndarray, personalized: bool) -> dict[str, np.ndarray]:
    """MOS from the P.835 network's raw (windows, 3) outputs (sig, bak, ovrl)."""
    poly = _POLY[personalized]
    return {k: np.polyval(poly[k], raw[:, i].astype(np.float64))
            for i, k in enumerate(("sig", "bak", "ovrl"))}


@lru_cache(maxsize=4)
def _session(path: str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


class Dnsmos:
    """The two DNSMOS networks, loaded once; `threads` is onnxruntime's intra-op count."""

    def __init__(self, personalized: bool = False, threads: int = 1) -> None:
        self.personalized = personalized
        p835, p808 = model_paths(personalized)
        self._p835 = _session(p835, threads)
        self._p808 = _session(p808, threads)

    def score(self, wave: np.ndarray, sample_rate: int) -> dict[str, float]:
        return self.score_batch([wave], sample_rate)[0]

    def score_batch(self, waves: Sequence[np.ndarray], sample_rate: int, batch_size: int = 1,
                    max_windows: int | None = None) -> list[dict[str, float]]:
        """Scores of each clip. `max_windows` caps the 9 s windows per clip (a cheap gate; None
        averages all of them, as the original does). Windows of all clips run through the
        networks `batch_size` at a time: on one CPU thread batches were slower (P.835 0.22 s
        a window one at a time, 0.34 s in fours), on a GPU provider they may pay."""
        windows = [segments(to_16k(w, sample_rate))[:max_windows] for w in waves]
        if not windows:
            return []
        stacked = np.concatenate(windows)
        raw = np.empty((len(stacked), 3), np.float32)
        p808 = np.empty(len(stacked), np.float32)
        for i in range(0, len(stacked), batch_size):
            chunk = stacked[i:i + batch_size]
            raw[i:i + batch_size] = self._p835.run(None, {"input_1": chunk})[0]
            feats = np.stack([p808_features(s) for s in chunk])
            p808[i:i + batch_size] = self._p808.run(None, {"input_1": feats})[0][:, 0]
        mos = calibrate(raw, self.personalized)
        bounds = np.cumsum([0] + [len(w) for w in windows])
        return [{"sig": float(mos["sig"][a:b].mean()), "bak": float(mos["bak"][a:b].mean()),
                 "ovrl": float(mos["ovrl"][a:b].mean()), "p808": float(p808[a:b].mean())}
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def passes_gate(scores: Sequence[dict[str, float]], ovrl_min: float | None = 3.0
                ) -> list[bool]:
    """Which clips keep their place in the data: OVRL >= `ovrl_min` (None lets all pass)."""
    if ovrl_min is None:
        return [True] * len(scores)
    return [s["ovrl"] >= ovrl_min for s in scores]
