"""Speaker similarity: cosine between GE2E voice embeddings (resemblyzer's pretrained encoder).

In: mono waveforms at any sample rate. Out: L2-normalised 256-d embeddings (`embed`), a
speaker's mean embedding, and row-wise cosines. The network and its weights are resemblyzer
0.1.4's `VoiceEncoder` (3-layer LSTM over 40-band power mels of 16 kHz audio, 1.6 s partial
windows averaged); the code here is ours, so librosa and webrtcvad are never imported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from habla.audio import resample
from habla.melspec import melspectrogram
from habla.wheel_data import package_file

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s per partial utterance
PARTIAL_RATE = 1.3  # partials per second
MIN_COVERAGE = 0.75  # a last partial less covered than this is dropped
TARGET_DBFS = -30.0  # quieter clips are raised to this level, louder ones left alone
WEIGHTS = ("resemblyzer", "pretrained.pt",
           "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e")


def method() -> dict:
    """What the similarity numbers are, written next to them."""
    return {
        "name": "speaker similarity (cosine of GE2E embeddings)",
        "encoder": "resemblyzer 0.1.4 pretrained VoiceEncoder (GE2E; LSTM 3x256, linear 256, "
                   "ReLU, L2 norm)",
        "features": f"{SAMPLE_RATE} Hz, power mel {N_MELS} bands (Slaney), {N_FFT}-sample "
                    f"Hann window, hop {HOP_LENGTH}",
        "windowing": f"partials of {PARTIAL_FRAMES} frames at {PARTIAL_RATE}/s, last kept if "
                     f">= {MIN_COVERAGE:.0%} covered; mean of partials, L2-normalised",
        "preprocessing": f"resample to {SAMPLE_RATE} Hz (torchaudio), raise to {TARGET_DBFS} "
                         "dBFS if quieter; resemblyzer's webrtcvad silence trimming is not "
                         "applied",
        "range": "cosine in [0, 1] (embeddings are non-negative); 1 = same direction",
    }


class VoiceEncoder(nn.Module):
    """resemblyzer's network: the state dict of its `pretrained.pt` loads into this."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """(batch, frames, 40) power mels -> (batch, 256) L2-normalised embeddings."""
        _, (hidden, _) = self.lstm(mels)
        raw = torch.relu(self.linear(hidden[-1]))
        return raw / torch.linalg.vector_norm(raw, dim=1, keepdim=True)


def weights_path() -> Path:
    """resemblyzer's `pretrained.pt` inside its installed wheel (sha256-checked)."""
    return package_file(*WEIGHTS[:2], sha256=WEIGHTS[2], purpose="speaker similarity")


def load_encoder(path: str | Path | None = None) -> VoiceEncoder:
    """The voice encoder in eval mode on the CPU, from `path` or resemblyzer's weights."""
    return _load(str(path or weights_path()))


@lru_cache(maxsize=2)
def _load(path: str) -> VoiceEncoder:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("model_state", checkpoint)
    encoder = VoiceEncoder()
    # the checkpoint also holds GE2E's training-only similarity scale and bias
    encoder.load_state_dict({k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))})
    return encoder.eval()


def preprocess(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz, raised to -30 dBFS when quieter (resemblyzer's normalisation)."""
    x = resample(np.asarray(wave, dtype=np.float32).reshape(-1), sample_rate, SAMPLE_RATE)
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    if rms <= 0.0:
        raise ValueError("speaker similarity: the clip is empty or digitally silent")
    gain_db = TARGET_DBFS - 20.0 * math.log10(rms)
    return x * np.float32(10.0 ** (gain_db / 20.0)) if gain_db > 0 else x


def partial_starts(n_samples: int) -> list[int]:
    """First mel frame of each 160-frame partial, as resemblyzer's `compute_partial_slices`."""
    n_frames = math.ceil((n_samples + 1) / HOP_LENGTH)
    step = round(SAMPLE_RATE / PARTIAL_RATE / HOP_LENGTH)
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    coverage = (n_samples - starts[-1] * HOP_LENGTH) / (PARTIAL_FRAMES * HOP_LENGTH)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts.pop()
    return starts


def partial_mels(wave16k: np.ndarray) -> np.ndarray:
    """(partials, 160, 40) mel windows of a preprocessed 16 kHz clip, zero-padded at the end."""
    starts = partial_starts(len(wave16k))
    end = (starts[-1] + PARTIAL_FRAMES) * HOP_LENGTH
    x = np.pad(wave16k, (0, max(0, end - len(wave16k))))
    mel = melspectrogram(x, SAMPLE_RATE, N_FFT, HOP_LENGTH, N_MELS)
    return np.stack([mel[s:s + PARTIAL_FRAMES] for s in starts])


def embed(encoder: VoiceEncoder, waves: Sequence[np.ndarray], sample_rate: int,
          batch_size: int = 64) -> np.ndarray:
    """(clips, 256) utterance embeddings: partial windows of all clips go through the LSTM in
    batches of `batch_size`; each clip's partial embeddings are averaged and re-normalised."""
    windows = [partial_mels(preprocess(w, sample_rate)) for w in waves]
    if not windows:
        return np.zeros((0, 256), np.float32)
    stacked = np.concatenate(windows)
    out = np.empty((len(stacked), 256), np.float32)
    with torch.inference_mode():
        for i in range(0, len(stacked), batch_size):
            out[i:i + batch_size] = encoder(torch.from_numpy(stacked[i:i + batch_size])).numpy()
    bounds = np.cumsum([0] + [len(w) for w in windows])
    means = np.stack([out[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:],
                                                              strict=True)])
    return means / np.linalg.norm(means, axis=1, keepdims=True)


def mean_embedding(embeddings: np.ndarray) -> np.ndarray:
    """A speaker's embedding: the L2-normalised mean of utterance embeddings (resemblyzer's
    `embed_speaker`)."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or len(e) == 0:
        raise ValueError(f"mean_embedding: need a non-empty (clips, dim) array, got {e.shape}")
    m = e.mean(axis=0)
    return m / np.linalg.norm(m)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of (n, d) and (n, d) arrays; a single (d,) row broadcasts."""
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    num = (a * b).sum(axis=1)
    return num / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def similarities(encoder: VoiceEncoder, synth: Sequence[np.ndarray], synth_sr: int,
                 refs: Sequence[np.ndarray], ref_sr: int,
                 speaker: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-utterance cosines of synthesised clips: "utterance" to the reference recording of
    the same sentence, "speaker" to the target speaker's mean embedding (`speaker`, else the
    mean of `refs`). Higher is more similar."""
    if len(synth) != len(refs):
        raise ValueError(f"similarities: {len(synth)} synthesised clips but {len(refs)} "
                         "references")
    s, r = embed(encoder, synth, synth_sr), embed(encoder, refs, ref_sr)
    centre = mean_embedding(r) if speaker is None else np.asarray(speaker)
    return {"utterance": cosine(s, r), "speaker": cosine(s, centre)}
