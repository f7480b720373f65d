"""The report: PNG/SVG writers, the HTML page opened in headless Chromium, `habla report`."""

import json
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from habla.cli import app
from habla.mcd import log_mel
from habla.report.compare import CompareError, compare_markdown, summary_text
from habla.report.html import Sample, training_curves, write_report
from habla.report.png import encode_rgb, spectrogram_png
from habla.report.svg import line_chart

CHROMIUM = Path("/usr/bin/chromium")


def _decode_png(data: bytes) -> np.ndarray:
    """A minimal PNG reader (RGB8, filter 0 only), independent of the writer."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, kind
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 2)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * 3)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(height, width, 3)


def test_png_writer_round_trips_pixels_through_an_independent_reader():
    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_decode_png(encode_rgb(rgb)), rgb)


def test_spectrogram_png_puts_time_across_and_low_bins_at_the_bottom():
    logmel = np.full((12, 80), -10.0)
    logmel[:, 0] = 0.0  # loudest in the lowest bin
    img = _decode_png(spectrogram_png(logmel))
    assert img.shape == (80, 12, 3)
    assert img[-1].sum() > img[0].sum()  # bottom row bright (yellow), top dark


def test_line_chart_is_well_formed_svg_with_one_line_per_series():
    svg = line_chart({"phase1": ([0, 10, 20], [3.0, 2.0, 1.5]), "phase2": ([0, 10], [1.4, 1.2])},
                     title="train/loss & <x>")
    root = ET.fromstring(svg)
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 2
    assert len(lines[0].get("points").split()) == 3


def test_training_curves_read_dvclive_tsv_files_per_metric_and_phase(tmp_path):
    for phase, values in (("phase1", [2.0, 1.0]), ("phase2", [0.9, 0.8])):
        folder = tmp_path / "dvclive" / phase / "plots" / "metrics" / "train"
        folder.mkdir(parents=True)
        rows = "".join(f"{1700000000 + i}\t{i * 10}\t{v}\n" for i, v in enumerate(values))
        (folder / "loss.tsv").write_text("timestamp\tstep\tloss\n" + rows + "1700\t30\t")
    charts = training_curves(tmp_path)
    assert len(charts) == 1 and "train/loss" in charts[0]
    assert charts[0].count("<polyline") == 2


def _tone(seconds: float, f0: float, sr: int = 24000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.2 * np.sin(2 * np.pi * f0 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype("float32")


def _build_report(folder: Path, n: int = 2) -> Path:
    audio = folder / "audio"
    audio.mkdir(parents=True)
    samples = []
    for i in range(n):
        hrefs, mels = {}, {}
        for label, f0 in (("reference", 200), ("base", 120), ("fine-tuned", 210)):
            wave = _tone(0.5 + 0.1 * i, f0 + i)
            sf.write(audio / f"u{i}.{label}.wav", wave, 24000, subtype="PCM_16")
            hrefs[label] = f"audio/u{i}.{label}.wav"
            mels[label] = spectrogram_png(log_mel(wave, 24000))
        samples.append(Sample(f"u{i}", f"frase número {i}", hrefs, mels, {"MCD base": "12.0"}))
    results = {"n_utterances": n, "base": {"mcd": 30.0, "cer": 0.4}, "finetuned": {"mcd": 20.0,
               "cer": 0.3}, "reference": {"cer": 0.2}, "vocoder": {"base": "griffinlim"},
               "delta": {"mcd": {"mean": -10.0, "ci_low": -12.0, "ci_high": -8.0, "better": n,
                                 "n": n}}}
    curve = line_chart({"phase1": ([0, 1], [2.0, 1.0])}, title="train/loss")
    card = {"download_hours": 0.9, "train_hours": 0.5, "transcribe_rejected_too_short": 3}
    return write_report(folder, results, samples[1:], samples[:1], [curve], card)


def _open_in_chromium(page: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """(DOM after load, console lines) of the page in headless Chromium, offline."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (install the Debian package `chromium`)")
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr",
           "--v=0", "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [ln for ln in done.stderr.splitlines() if ":CONSOLE" in ln]


def _body_attrs(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom).group(1)
    return dict(re.findall(r'([\w-]+)="([^"]*)"', body))


def test_report_opens_offline_in_chromium_with_working_players_and_images(tmp_path):
    page = _build_report(tmp_path / "reports")
    html = page.read_text("utf-8")
    assert not re.search(r"(src|href)=\"https?:", html)  # nothing fetched from the network
    dom, console = _open_in_chromium(page, tmp_path)
    attrs = _body_attrs(dom)
    assert dom.count("<audio") == 6 and dom.count("<img") == 6
    assert attrs["data-audio-ok"] == "6" and attrs["data-audio-failed"] == "0"
    assert attrs["data-images-ok"] == "6"
    assert console == []
    assert "<svg" in dom and "download_hours" in dom and "got worse" in dom


def test_report_check_flags_a_recording_that_cannot_be_loaded(tmp_path):
    page = _build_report(tmp_path / "reports")
    (tmp_path / "reports" / "audio" / "u1.base.wav").write_bytes(b"not a wav file")
    dom, console = _open_in_chromium(page, tmp_path)
    assert _body_attrs(dom)["data-audio-failed"] == "1"
    assert any("u1.base.wav" in line for line in console)


def test_write_report_refuses_a_sample_whose_audio_is_missing(tmp_path):
    s = Sample("u0", "hola", {"reference": "audio/nope.wav"})
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        write_report(tmp_path, {}, [s])


# ------------------------------------------------------------------ habla report
def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                   check=True, capture_output=True)


def _commit_run(repo: Path, mcds: dict[str, float], lr: float, mcd_mean: float) -> None:
    (repo / "metrics").mkdir(exist_ok=True)
    details = {
        "n_utterances": len(mcds), "base": {"mcd": 70.0, "cer": 0.3},
        "finetuned": {"mcd": mcd_mean, "cer": 0.2}, "reference": {"cer": 0.2},
        "delta": {"mcd": {"mean": mcd_mean - 70, "ci_low": mcd_mean - 72,
                          "ci_high": mcd_mean - 68, "better": 6, "n": 6}},
        "method": {"mcd": {"name": "x"}}}
    (repo / "metrics" / "eval_details.json").write_text(json.dumps(details))
    (repo / "metrics" / "eval.json").write_text(json.dumps({
        k: details[k] for k in ("base", "finetuned", "reference")}))
    rows = "".join(f"{k},texto {k},{v}\n" for k, v in mcds.items())
    (repo / "metrics" / "eval_utterances.csv").write_text("id,text,mcd_finetuned\n" + rows)
    (repo / "params.yaml").write_text(f"seed: 1\nlr: {lr}\nphase1:\n  max_steps: 150\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "run")


@pytest.fixture
def two_runs(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _commit_run(repo, {f"u{i}": 20.0 for i in range(7)}, lr=0.001, mcd_mean=20.0)
    _commit_run(repo, {"u0": 26.0, "u1": 21.0, "u2": 19.0, "u3": 23.0, "u4": 20.5, "u5": 22.0,
                       "u6": 24.0}, lr=0.002, mcd_mean=22.2)
    return repo


def test_compare_lists_changed_metrics_params_and_the_five_worst_utterances(two_runs):
    md = compare_markdown("HEAD~1", two_runs)
    assert "| metrics/eval.json | finetuned.mcd | 20 | 22.2 | +2.2 |" in md
    assert "base.mcd" not in md  # unchanged metrics are not listed
    assert "| lr | 0.001 | 0.002 |" in md
    worst = re.findall(r"^\| (u\d) \| texto", md, flags=re.M)
    assert worst == ["u0", "u6", "u3", "u5", "u1"]  # largest rise first; u2 improved


def test_compare_against_an_unknown_revision_is_a_clear_error(two_runs):
    with pytest.raises(CompareError, match="'nope' is not a commit"):
        compare_markdown("nope", two_runs)


def test_report_command_prints_compare_and_summary(two_runs, monkeypatch):
    monkeypatch.chdir(two_runs)
    runner = CliRunner()
    out = runner.invoke(app, ["report", "--compare", "HEAD~1", "-o", "pr.md"])
    assert out.exit_code == 0, out.output
    assert "### Params" in out.output and (two_runs / "pr.md").read_text() == out.output
    out = runner.invoke(app, ["report", "--summary"])
    assert out.exit_code == 0, out.output
    assert "reports/index.html" in out.output
    assert "MCD (habla scale): base 70.000 -> fine-tuned 22.200" in out.output
    assert runner.invoke(app, ["report"]).exit_code == 2


def test_summary_without_results_says_what_to_run(tmp_path):
    with pytest.raises(CompareError, match="dvc repro evaluate"):
        summary_text(tmp_path)
