"""librosa-style mel spectrograms, checked against torch.stft and torchaudio's Slaney mel bank
(independent implementations; librosa itself is not a habla dependency)."""

import numpy as np
import pytest
import torch
import torchaudio

from habla import melspec


@pytest.mark.parametrize("n_fft,n_mels", [(400, 40), (512, 80)])
def test_slaney_filterbank_matches_torchaudio_for_even_fft_sizes(n_fft, n_mels):
    theirs = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, 0.0, 8000.0, n_mels, 16000,
                                                   norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(melspec.mel_filterbank(16000, n_fft, n_mels), theirs.numpy(),
                               atol=1e-6)


def test_odd_fft_size_puts_bins_at_k_sr_over_n_like_librosa():
    bank = melspec.mel_filterbank(16000, 321, 120)
    assert bank.shape == (161, 120)
    # the last bin sits at 160 * 16000 / 321 = 7975 Hz, inside the top triangle's falling edge
    top_centre = melspec.mel_to_hz(np.linspace(0, melspec.hz_to_mel(8000.0), 122))[-2]
    assert 160 * 16000 / 321 > top_centre and bank[-1, -1] > 0


@pytest.mark.parametrize("n_fft,hop", [(400, 160), (321, 160)])
def test_power_spectrogram_matches_torch_stft_centred_with_zero_padding(n_fft, hop):
    x = np.random.default_rng(0).standard_normal(4000).astype(np.float32)
    ref = torch.stft(torch.from_numpy(x).double(), n_fft, hop, window=torch.hann_window(
        n_fft, periodic=True, dtype=torch.float64), center=True, pad_mode="constant",
        return_complex=True).abs().pow(2).numpy().T
    ours = melspec.power_spectrogram(x, n_fft, hop)
    assert ours.shape == ref.shape == (1 + (4000 + 2 * (n_fft // 2) - n_fft) // hop, n_fft // 2 + 1)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-3)


def test_power_to_db_is_relative_to_the_peak_and_floored_80_db_below():
    spec = np.array([[1e-12, 1e-6], [0.5, 2.0]])
    db = melspec.power_to_db(spec)
    assert db.max() == 0.0
    assert db[0, 0] == pytest.approx(-80.0)  # floored (it would be -123 dB)
    assert db[1, 0] == pytest.approx(10 * np.log10(0.25))
