"""The per-clip tensor cache: computed once per audio and settings, never half-written."""

from __future__ import annotations

import pytest
import torch

from habla import atomic
from habla.clip_cache import ClipCache


def test_computes_once_per_clip_and_settings(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"codes": torch.arange(5), "emb": torch.ones(3)}

    cache = ClipCache({"encoder": "s3", "sr": 16000}, tmp_path)
    first = cache.get_or_compute("ab" * 32, compute)
    again = ClipCache({"sr": 16000, "encoder": "s3"}, tmp_path).get_or_compute("ab" * 32, compute)
    assert len(calls) == 1 and torch.equal(first["codes"], again["codes"])
    other = ClipCache({"encoder": "s3", "sr": 24000}, tmp_path)
    other.get_or_compute("ab" * 32, compute)
    assert len(calls) == 2 and other.folder != cache.folder


def test_a_kill_during_a_write_leaves_no_entry_and_no_temp_file(tmp_path, monkeypatch):
    cache = ClipCache({"encoder": "dvae"}, tmp_path)
    cache.put("cd" + "0" * 62, {"codes": torch.ones(4)})

    def killed(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.put("cd" * 32, {"codes": torch.zeros(4)})
    monkeypatch.undo()
    assert cache.get("cd" * 32) is None
    assert [p.name for p in (cache.folder / "cd").iterdir()] == ["cd" + "0" * 62 + ".safetensors"]
    cache.path("ef" * 32).parent.mkdir(parents=True)
    cache.path("ef" * 32).write_bytes(b"not a safetensors file")
    assert cache.get("ef" * 32) is None  # damaged: computed again, never trusted
