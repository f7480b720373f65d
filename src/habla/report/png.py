"""PNG images from numpy arrays with only zlib and struct (matplotlib is not a dependency).

In: a 2-D array (a log-mel spectrogram). Out: PNG bytes, coloured with a viridis-like map,
low frequencies at the bottom.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

# Anchor colours of matplotlib's viridis at 0, 0.25, 0.5, 0.75, 1; interpolated between.
_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
                    dtype=np.float64)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def encode_rgb(rgb: np.ndarray) -> bytes:
    """(height, width, 3) uint8 array to PNG bytes (8-bit RGB, no interlace)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"encode_rgb: need (h, w, 3) uint8, got {rgb.shape} {rgb.dtype}")
    h, w, _ = rgb.shape
    if h == 0 or w == 0:
        raise ValueError("encode_rgb: empty image")
    # Each scanline starts with filter byte 0 (None).
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 9)) + _chunk(b"IEND", b""))


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] to uint8 RGB with the viridis-like map."""
    v = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0) * (len(_ANCHORS) - 1)
    lo = np.minimum(v.astype(int), len(_ANCHORS) - 2)
    frac = (v - lo)[..., None]
    return np.round(_ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac).astype(np.uint8)


def spectrogram_png(logmel: np.ndarray, dynamic_range: float = 10.0) -> bytes:
    """(frames, bins) natural-log mel to a PNG: time left to right, low bins at the bottom.

    The top `dynamic_range` nepers (10 ≈ 87 dB) are shown; quieter cells are dark.
    """
    if logmel.ndim != 2 or logmel.size == 0:
        raise ValueError(f"spectrogram_png: need a non-empty (frames, bins) array, "
                         f"got {logmel.shape}")
    top = float(np.max(logmel))
    scaled = (logmel - (top - dynamic_range)) / dynamic_range
    return encode_rgb(colormap(scaled.T[::-1]))
