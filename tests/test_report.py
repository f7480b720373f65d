"""The report: PNG/SVG writers, the HTML page opened in headless Chromium, `habla report`."""

import html
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from habla.cli import app
from habla.mcd import log_mel
from habla.report.compare import (
    CompareError,
    compare_markdown,
    paired_change,
    summary_text,
    verdict,
)
from habla.report.html import Sample, Spectrogram, strip_volatile, training_curves, write_report
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
    assert len(charts) == 1 and "Training loss" in charts[0]
    assert charts[0].count("<polyline") == 2


def _write_tsv(path: Path, column: str, values: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"step\t{column}\n" + "".join(f"{i + 1}\t{v}\n" for i, v in
                                                   enumerate(values)))


def test_training_curves_lead_with_the_losses_and_label_their_axes(tmp_path):
    metrics = tmp_path / "dvclive" / "phase1" / "plots" / "metrics"
    for name in ("a_custom.tsv", "grad_norm.tsv", "lr.tsv", "val/loss.tsv", "train/loss.tsv"):
        _write_tsv(metrics / name, Path(name).stem, [3.0, 2.0, 1.5])
    charts = training_curves(tmp_path)
    titles = [ET.fromstring(c).get("aria-label") for c in charts]
    assert titles == ["Training loss", "Validation loss", "Learning rate", "Gradient norm",
                      "a_custom"]
    texts = [t.text for t in ET.fromstring(charts[0]).iter("{http://www.w3.org/2000/svg}text")]
    assert "loss (training objective)" in texts
    assert any(t and t.startswith("optimizer step") for t in texts)


def _tone(seconds: float, f0: float, sr: int = 24000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.2 * np.sin(2 * np.pi * f0 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype("float32")


SENTENCES = {  # id: (text, heard from the recording, from the base, from the fine-tuned model)
    "u0": ("uno dos tres cuatro", "uno dos tres cuatro", "uno tres cuatro", "uno dos tres"),
    "u1": ("cinco seis siete", "cinco seis siete", "cinco seis siete ocho", "cinco seis siete"),
    "u2": ("ocho nueve diez", "ocho nueve diez", "ocho mueve diez", "noche nueve diez"),
}


def _rows() -> list[dict]:
    from habla.text import cer, wer

    rows = []
    for k, (uid, (ref, *heard)) in enumerate(SENTENCES.items()):
        row = {"id": uid, "text": ref, "mcd_base": 40.0 + k, "mcd_finetuned": 20.0 + 2 * k,
               "spk_sim_finetuned": 0.8, "dnsmos_ovrl_finetuned": 3.1}
        for system, hyp in zip(("reference", "base", "finetuned"), heard, strict=True):
            row[f"asr_{system}"] = hyp
            row[f"cer_{system}"] = cer(ref, hyp)
            row[f"wer_{system}"] = wer(ref, hyp)
        rows.append(row)
    return rows


PROVENANCE = {
    "commit": "0123456789abcdef0123456789abcdef01234567", "date": "2026-11-30 10:00 UTC",
    "params_diff": [("lr", 0.001, 0.002)],
    "packages": {"python": "3.11.9", "torch": "2.11.0"},
    "machine": {"cpu": "Test CPU", "cores": "2", "gpu": "none", "system": "Linux"},
    "stages": [{"stage": "phase2", "seconds": 832.0, "steps": 400, "s_per_step": 2.08},
               {"stage": "evaluate", "seconds": 95.5}],
}
DATA_CARD = {"download_hours": 0.9, "download_recordings": 20, "segment_hours_in": 0.9,
             "segment_hours_kept": 0.8, "segment_recordings_in": 20, "segment_clips_out": 250,
             "transcribe_clips_in": 250, "transcribe_clips_kept": 210,
             "transcribe_hours_in": 0.8, "transcribe_hours_kept": 0.7,
             "transcribe_rejects_high_wer": 38, "transcribe_rejects_repetition_loop": 2,
             "timestamps_clips_in": 210, "timestamps_clips_kept": 210,
             "timestamps_hours_kept": 0.7, "train_clips": 150, "train_hours": 0.5,
             "val_clips": 30, "val_hours": 0.1, "test_clips": 30, "test_hours": 0.1}


def _build_report(folder: Path, n: int = 2, provenance: dict | None = PROVENANCE) -> Path:
    audio = folder / "audio"
    audio.mkdir(parents=True)
    samples = []
    for i in range(n):
        hrefs, mels = {}, {}
        for label, f0 in (("reference", 200), ("base", 120), ("fine-tuned", 210)):
            wave = _tone(0.5 + 0.1 * i, f0 + i)
            sf.write(audio / f"u{i}.{label}.wav", wave, 24000, subtype="PCM_16")
            hrefs[label] = f"audio/u{i}.{label}.wav"
            mels[label] = Spectrogram.of_logmel(log_mel(wave, 24000), 256 / 24000, 12000.0)
        samples.append(Sample(f"u{i}", SENTENCES[f"u{i}"][0], hrefs, mels,
                              {"MCD base": "12.0"}))
    results = {"n_utterances": n, "base": {"mcd": 30.0, "cer": 0.4}, "finetuned": {"mcd": 20.0,
               "cer": 0.3}, "reference": {"cer": 0.2}, "vocoder": {"base": "griffinlim"},
               "delta": {"mcd": {"mean": -10.0, "ci_low": -12.0, "ci_high": -8.0, "better": n,
                                 "n": n}}}
    curve = line_chart({"phase1": ([0, 1], [2.0, 1.0])}, title="Training loss")
    return write_report(folder, results, samples[1:], samples[:1], [curve], DATA_CARD,
                        _rows(), provenance)


def _open_in_chromium(page: Path, tmp_path: Path, *extra: str) -> tuple[str, list[str]]:
    """(DOM after load, console lines) of the page in headless Chromium, offline."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (install the Debian package `chromium`)")
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr",
           "--v=0", "--virtual-time-budget=5000", *extra,
           *(() if extra else ("--dump-dom",)), page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [ln for ln in done.stderr.splitlines() if ":CONSOLE" in ln]


def _body_attrs(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom).group(1)
    return {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', body)}


def test_report_opens_offline_in_chromium_with_working_players_and_images(tmp_path):
    page = _build_report(tmp_path / "reports")
    text = page.read_text("utf-8")
    assert not re.search(r"(src|href)=\"https?:", text)  # nothing fetched from the network
    dom, console = _open_in_chromium(page, tmp_path)
    attrs = _body_attrs(dom)
    assert dom.count("<audio") == 6 and dom.count("<img") == 6
    assert attrs["data-audio-ok"] == "6" and attrs["data-audio-failed"] == "0"
    assert attrs["data-images-ok"] == "6"
    assert console == []
    assert "<svg" in dom and "download_hours" in dom and "got worse" in dom


# Appended to a copy of the page by the tests below (not part of the report): which main
# sections have a visible box, counts of the elements each must contain, and what sorting
# by a column does; written into <body data-test="...">.
_SECTIONS_PROBE = """<script>
window.addEventListener('load', function () {
  function shown(el) {
    if (!el) return false;
    var r = el.getBoundingClientRect(), st = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && st.display !== 'none' && st.visibility !== 'hidden';
  }
  var ids = ['provenance', 'headline', 'sentences', 'samples', 'training', 'data'];
  var out = {visible: ids.filter(function (i) { return shown(document.getElementById(i)); })};
  function count(sel) {
    return Array.prototype.filter.call(document.querySelectorAll(sel), shown).length;
  }
  out.counts = {rows: count('#sentences tbody tr'), marks: count('tbody .w-sub, tbody .w-ins, '
    + 'tbody .w-del'), asr: count('#sentences .asr'),
    axes: count('.spec-x span, .spec-y span'), charts: count('#training svg'),
    funnel: count('#data table.funnel tr'), headline: count('#headline-table tr'),
    params: count('#provenance .params-diff tr'), stages: count('#provenance .stage-times tr')};
  var table = document.querySelector('table.sortable');
  function ids_now() {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.id; });
  }
  out.initial = ids_now();
  var th = Array.prototype.filter.call(table.tHead.rows[0].cells, function (c) {
    return c.textContent.indexOf('MCD fine-tuned') === 0; })[0];
  th.click(); out.mcd_desc = ids_now();
  th.click(); out.mcd_asc = ids_now();
  document.body.setAttribute('data-test', JSON.stringify(out));
});
</script>"""


def _probe(page: Path, tmp_path: Path, css: str = "") -> dict:
    probed = page.with_name("probe.html")  # beside the page: same relative audio paths
    text = page.read_text("utf-8").replace("</body>", f"<style>{css}</style>"
                                           f"{_SECTIONS_PROBE}</body>")
    probed.write_text(text, "utf-8")
    dom, console = _open_in_chromium(probed, tmp_path)
    assert console == []
    return json.loads(_body_attrs(dom)["data-test"])


def test_report_main_sections_render_visibly_in_chromium_and_the_table_sorts(tmp_path):
    page = _build_report(tmp_path / "reports")
    got = _probe(page, tmp_path)
    assert got["visible"] == ["provenance", "headline", "sentences", "samples", "training",
                              "data"]
    c = got["counts"]
    assert c["rows"] == 3 and c["asr"] == 9  # every sentence, every system's transcript
    assert c["marks"] == 5  # base: dos missed, ocho added, mueve; fine-tuned: cuatro, noche
    assert c["axes"] >= 6 * 4 and c["charts"] == 1
    assert c["params"] == 1 + 1 and c["stages"] == 1 + 2
    assert c["funnel"] == 1 + 5 and c["headline"] >= 3
    # worst fine-tuned CER first: u0 (a word missed), u2 ("noche"), u1 (heard right)
    assert got["initial"] == ["row-u0", "row-u2", "row-u1"]
    assert got["mcd_desc"] == ["row-u2", "row-u1", "row-u0"]
    assert got["mcd_asc"] == ["row-u0", "row-u1", "row-u2"]


def test_the_visibility_probe_notices_a_hidden_section(tmp_path):
    page = _build_report(tmp_path / "reports")
    got = _probe(page, tmp_path, css="#training { display: none; }")
    assert "training" not in got["visible"] and got["counts"]["charts"] == 0


def test_report_screenshot_in_headless_chromium(tmp_path):
    """A PNG of the whole page (the lead attaches one of the real report to the notes)."""
    page = _build_report(tmp_path / "reports")
    shot = tmp_path / "reports" / "screenshot.png"
    _open_in_chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2600",
                      "--hide-scrollbars")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 2600) and len(data) > 50_000  # not a blank page


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


def test_only_the_volatile_header_differs_between_two_runs(tmp_path):
    a = _build_report(tmp_path / "a").read_text("utf-8")
    later = {**PROVENANCE, "date": "2026-12-01 09:00 UTC", "commit": "fedcba",
             "stages": [{"stage": "evaluate", "seconds": 101.0}]}
    b = _build_report(tmp_path / "b", provenance=later).read_text("utf-8")
    assert a != b and "2026-11-30" in a and "fedcba" in b
    assert strip_volatile(a) == strip_volatile(b)
    assert "2026-11-30" not in strip_volatile(a) and "Test CPU" not in strip_volatile(a)
    assert 'id="sentences"' in strip_volatile(a)  # only the volatile parts go


def test_strip_volatile_empties_nested_elements_and_keeps_the_rest():
    page = ('<p>a</p><div data-volatile class="x"><div>1<div>2</div></div>3</div><p>b</p>'
            '<span id="t" data-volatile>now</span><i>c</i>')
    assert strip_volatile(page) == ('<p>a</p><div data-volatile class="x"></div><p>b</p>'
                                    '<span id="t" data-volatile></span><i>c</i>')


def test_provenance_reads_stage_logs_and_the_params_change_against_head(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    from habla.report import provenance

    _git(tmp_path, "init", "-q")
    (tmp_path / "params.yaml").write_text("seed: 1\nphase1: {max_steps: 30}\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "defaults")
    (tmp_path / "params.yaml").write_text("seed: 1\nphase1: {max_steps: 60}\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "segment.json").write_text('{"stage": "segment", "seconds": 12.5}')
    (tmp_path / "logs" / "phase1.steps.json").write_text(json.dumps(
        {"train_seconds": 3.0, "resumed_from_step": None,
         "steps": [{"step": 1, "s_per_step": 1.0}, {"step": 2, "s_per_step": 2.0}]}))
    got = provenance.collect(tmp_path, {"evaluate": 4.0})
    assert got["params_diff"] == [("phase1.max_steps", 30, 60)]
    assert got["commit"].endswith("(with uncommitted changes)")
    assert got["stages"] == [{"stage": "segment", "seconds": 12.5},
                             {"stage": "phase1", "steps": 2, "s_per_step": 1.5},
                             {"stage": "evaluate", "seconds": 4.0,
                              "note": "this run, up to the report"}]
    assert got["packages"]["habla"] and got["machine"]["cores"]


# ------------------------------------------------------------------ habla report
def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                   check=True, capture_output=True)


def new_repo(tmp_path: Path) -> Path:
    """An empty git repository (the test is skipped where git is not installed)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    return repo


def _commit_run(repo: Path, mcds: dict[str, float], lr: float, cers: dict[str, float],
                sims: dict[str, float]) -> None:
    (repo / "metrics").mkdir(exist_ok=True)
    mean = {name: sum(v.values()) / len(v) for name, v in (("mcd", mcds), ("cer", cers),
                                                            ("spk_sim", sims))}
    details = {
        "n_utterances": len(mcds), "base": {"mcd": 70.0, "cer": 0.3},
        "finetuned": dict(mean), "reference": {"cer": 0.2},
        "ci": {"finetuned": {k: {"mean": v, "ci_low": v - 0.5, "ci_high": v + 0.5}
                             for k, v in mean.items()}},
        "delta": {"mcd": {"mean": mean["mcd"] - 70, "ci_low": mean["mcd"] - 72,
                          "ci_high": mean["mcd"] - 68, "better": 6, "n": 6}},
        "method": {"mcd": {"name": "x"}}}
    (repo / "metrics" / "eval_details.json").write_text(json.dumps(details))
    (repo / "metrics" / "eval.json").write_text(json.dumps({
        k: details[k] for k in ("base", "finetuned", "reference")}))
    rows = "".join(f"{k},texto {k},{v},{cers[k]},{sims[k]},oído {k}\n" for k, v in mcds.items())
    (repo / "metrics" / "eval_utterances.csv").write_text(
        "id,text,mcd_finetuned,cer_finetuned,spk_sim_finetuned,asr_finetuned\n" + rows)
    (repo / "params.yaml").write_text(f"seed: 1\nlr: {lr}\nphase1:\n  max_steps: 150\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "run")


IDS = [f"u{i}" for i in range(7)]


@pytest.fixture
def two_runs(tmp_path):
    repo = new_repo(tmp_path)
    _commit_run(repo, {u: 20.0 for u in IDS}, lr=0.001,
                cers={u: 0.2 for u in IDS}, sims={u: 0.7 for u in IDS})
    # MCD rose on every sentence (worse); CER moved both ways (unresolved); similarity rose
    # on every sentence (better)
    _commit_run(repo, {"u0": 26.0, "u1": 21.0, "u2": 19.5, "u3": 23.0, "u4": 20.5, "u5": 22.0,
                       "u6": 24.0}, lr=0.002,
                cers=dict(zip(IDS, (0.3, 0.1, 0.25, 0.15, 0.2, 0.22, 0.18), strict=True)),
                sims={u: 0.8 + 0.01 * k for k, u in enumerate(IDS)})
    return repo


def _section(md: str, title: str) -> str:
    return md.split(f"### {title}", 1)[1].split("\n### ", 1)[0].split("<details>", 1)[0]


def test_compare_leads_with_headline_verdicts_then_params_then_worst_sentences(two_runs):
    md = compare_markdown("HEAD~1", two_runs)
    order = [md.index(t) for t in ("### Headline", "### Params", "fine-tuned CER",
                                   "fine-tuned MCD", "<details><summary>All changed metrics")]
    assert order == sorted(order)
    head = {line.split(" | ")[0].strip("| "): line for line in
            _section(md, "Headline").splitlines() if line.startswith("| ")}
    assert head["MCD (habla log-mel scale) ↓"].endswith("**worse** |")
    assert head["CER ↓"].endswith("**unresolved** |")
    assert head["speaker similarity ↑"].endswith("**better** |")
    assert "paired bootstrap over those sentences" in md and "same 7 test sentences" in md
    assert "| lr | 0.001 | 0.002 |" in _section(md, "Params")
    worst_mcd = re.findall(r"^\| (u\d) \| texto",
                           _section(md, "Sentences that got worse: fine-tuned MCD"), flags=re.M)
    assert worst_mcd == ["u0", "u6", "u3", "u5", "u1"]  # largest rise first; u2 improved
    worst_cer = re.findall(r"^\| (u\d) \| texto",
                           _section(md, "Sentences that got worse: fine-tuned CER"), flags=re.M)
    assert worst_cer == ["u0", "u2", "u5"] and "oído u0" in md
    full = md.split("<details><summary>All changed metrics", 1)[1]
    assert "| metrics/eval.json | finetuned.mcd | 20 | 22.29 | +2.286 |" in full
    assert "base.mcd" not in full  # unchanged metrics are not listed


def test_compare_without_shared_sentences_needs_the_intervals_apart(two_runs):
    (two_runs / "metrics" / "eval_utterances.csv").write_text("id,text,mcd_finetuned\n")
    md = compare_markdown("HEAD~1", two_runs)
    head = {line.split(" | ")[0].strip("| "): line for line in
            _section(md, "Headline").splitlines() if line.startswith("| ")}
    # MCD 20 [19.5, 20.5] -> 22.29 [21.79, 22.79]: apart, worse; CER 0.2 -> 0.2: unresolved
    assert head["MCD (habla log-mel scale) ↓"].endswith("**worse** |")
    assert head["CER ↓"].endswith("**unresolved** |")
    assert "do not overlap" in md


def test_paired_change_is_seeded_and_brackets_its_mean():
    before = [0.2, 0.3, 0.25, 0.4, 0.1, 0.35]
    after = [0.25, 0.2, 0.3, 0.3, 0.15, 0.3]
    a, b = paired_change(before, after), paired_change(before, after)
    assert a == b and a["ci_low"] <= a["mean"] <= a["ci_high"] and a["n"] == 6
    assert paired_change([1.0, 2.0], [1.5, 2.5]) == {"mean": 0.5, "ci_low": 0.5,
                                                      "ci_high": 0.5, "n": 2}
    assert verdict(-0.3, -0.1, higher_is_better=False) == "better"
    assert verdict(-0.3, -0.1, higher_is_better=True) == "worse"
    assert verdict(-0.1, 0.2, higher_is_better=True) == "unresolved"


def test_compare_imports_neither_torch_nor_numpy(two_runs):
    """The pull-request workflow installs habla without torch or numpy."""
    code = ("import sys; from habla.cli import app; from habla.report.compare import "
            "compare_markdown; md = compare_markdown('HEAD~1'); "
            "assert '### Headline' in md; "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    import habla

    env = {**os.environ, "PYTHONPATH": str(Path(habla.__file__).parents[1])}  # this habla
    done = subprocess.run([sys.executable, "-c", code], cwd=two_runs, capture_output=True,
                          text=True, timeout=60, check=False, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


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
    assert "MCD (habla scale): base 70.000 -> fine-tuned 22.286" in out.output
    assert runner.invoke(app, ["report"]).exit_code == 2


def test_summary_without_results_says_what_to_run(tmp_path):
    with pytest.raises(CompareError, match="dvc repro evaluate"):
        summary_text(tmp_path)
