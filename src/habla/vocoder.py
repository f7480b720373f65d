"""Log-mel frames to a waveform with pure-torch Griffin-Lim (no trained vocoder needed).

In: a (frames, n_mels) natural-log mel made with `habla.features.log_mel` and its FeatureSpec.
Out: a float32 mono waveform at the spec's sample rate. Mel to linear magnitude goes through
the pseudo-inverse of the same mel filterbank; very short inputs are padded with silence.
"""

from __future__ import annotations

import numpy as np
import torch
import torchaudio
import torchaudio.functional as AF

from habla.features import FeatureSpec

MIN_FRAMES = 16  # a barely trained model can emit 1-2 frames; GriffinLim needs a few
SILENCE_LOG = float(np.log(1e-5))

_cache: dict[tuple[FeatureSpec, int], tuple[torch.Tensor, torchaudio.transforms.GriffinLim]] = {}


def _parts(spec: FeatureSpec, n_iter: int) -> tuple[torch.Tensor, torchaudio.transforms.GriffinLim]:
    key = (spec, n_iter)
    if key not in _cache:
        f_max = spec.f_max if spec.f_max is not None else spec.sample_rate / 2
        fb = AF.melscale_fbanks(n_freqs=spec.n_fft // 2 + 1, f_min=spec.f_min, f_max=f_max,
                                n_mels=spec.n_mels, sample_rate=spec.sample_rate, norm=None,
                                mel_scale="htk")  # (n_freqs, n_mels), as MelSpectrogram builds it
        inverse = torch.linalg.pinv(fb.T)  # (n_freqs, n_mels)
        gl = torchaudio.transforms.GriffinLim(n_fft=spec.n_fft, n_iter=n_iter,
                                              win_length=spec.win_length,
                                              hop_length=spec.hop_length, power=1.0)
        _cache[key] = (inverse, gl)
    return _cache[key]


def griffin_lim(log_mel: torch.Tensor | np.ndarray, spec: FeatureSpec, n_iter: int = 32,
                seed: int = 0) -> np.ndarray:
    """Waveform (float32, spec.sample_rate) from a (frames, n_mels) natural-log mel."""
    mel = torch.as_tensor(np.asarray(log_mel) if isinstance(log_mel, np.ndarray) else log_mel)
    mel = mel.detach().float().cpu()
    if mel.ndim != 2 or mel.shape[1] != spec.n_mels:
        raise ValueError(f"griffin_lim: expected (frames, {spec.n_mels}) log-mel, "
                         f"got shape {tuple(mel.shape)}")
    frames = mel.shape[0]
    if frames < MIN_FRAMES:
        pad = torch.full((MIN_FRAMES - frames, spec.n_mels), SILENCE_LOG)
        mel = torch.cat([mel, pad])
    inverse, gl = _parts(spec, n_iter)
    linear = torch.clamp(inverse @ torch.exp(mel).T, min=0.0)  # (n_freqs, frames)
    # GriffinLim starts from random phases: seed so the same mel gives the same audio
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            wave = gl(linear)
    finally:
        torch.random.set_rng_state(gen_state)
    wave = wave.numpy().astype(np.float32)
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak > 0.99:  # keep within 16-bit range without changing quieter outputs
        wave *= 0.99 / peak
    return wave[: frames * spec.hop_length] if frames >= MIN_FRAMES else wave


def is_griffinlim(name: str) -> bool:
    return name.strip().lower() in ("griffinlim", "griffin-lim", "griffin_lim")
