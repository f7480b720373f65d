"""Writes the evaluation report `reports/index.html`: one offline page, no CDN, no fetches.

In: eval results (the `metrics/eval.json` dict), per-utterance samples (relative audio files
under `reports/audio/`, mel PNG bytes, figures), dvclive training curves and the data card.
Out: the page; mel images are inline data URIs, charts inline SVG, audio relative `<audio>`.
"""

from __future__ import annotations

import base64
import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from habla import atomic
from habla.report.svg import line_chart


@dataclass
class Sample:
    """One test utterance as the report shows it."""

    id: str
    text: str
    audio: dict[str, str]  # label ("reference", "base", "fine-tuned") -> href relative to page
    mels: dict[str, bytes] = field(default_factory=dict)  # label -> PNG bytes
    figures: dict[str, str] = field(default_factory=dict)  # name -> formatted value
    note: str = ""


# Runs in the page: counts players that loaded, shows a warning (and logs a console error)
# for any recording or image that cannot be opened, e.g. a page copied without audio/.
_CHECK_SCRIPT = """
(function () {
  var body = document.body, status = document.getElementById('load-status');
  var audios = Array.prototype.slice.call(document.querySelectorAll('audio'));
  var ok = 0, failed = [];
  function show() {
    body.setAttribute('data-audio-ok', ok);
    body.setAttribute('data-audio-failed', failed.length);
    status.textContent = failed.length ? failed.length + ' recording(s) could not be loaded: '
      + failed.join(', ') : ok + ' of ' + audios.length + ' recordings loaded';
    status.className = failed.length ? 'bad' : 'good';
  }
  audios.forEach(function (a) {
    if (a.readyState >= 1) { ok++; return; }
    a.addEventListener('loadedmetadata', function () { ok++; show(); });
    a.addEventListener('error', function () {
      failed.push(a.getAttribute('src')); console.error('audio failed to load: ' + a.src); show();
    });
  });
  show();
  window.addEventListener('load', function () {
    var bad = 0;
    Array.prototype.forEach.call(document.images, function (im) {
      if (!im.complete || im.naturalWidth === 0) {
        bad++; console.error('image broken: ' + im.alt);
      }
    });
    body.setAttribute('data-images-ok', document.images.length - bad);
  });
})();
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.utt { border-top: 1px solid #ccc; padding: 0.8em 0; }
.clips { display: flex; gap: 1em; flex-wrap: wrap; }
.clip { flex: 1 1 300px; }
.clip img { width: 100%; height: 100px; image-rendering: pixelated; display: block; }
audio { width: 100%; }
.charts svg { margin: 0 1em 1em 0; }
.good { color: #2a7a2a; } .bad { color: #b00; font-weight: bold; }
.note { color: #b05000; } code { background: #f3f3f3; padding: 0 3px; }
"""


def _num(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.{digits}f}"
    return escape(str(v))


HEADLINE_ROWS = (  # key, label, higher is better
    ("cer", "CER (Whisper)", False), ("wer", "WER (Whisper)", False),
    ("mcd", "MCD, habla log-mel scale", False), ("mcd_sptk", "MCD, SPTK mel-cepstrum (dB)", False),
    ("spk_sim", "speaker similarity to the target voice", True),
    ("spk_utt", "speaker similarity to the same sentence's recording", True),
    ("dnsmos_ovrl", "DNSMOS OVRL", True), ("dnsmos_sig", "DNSMOS SIG", True),
    ("dnsmos_bak", "DNSMOS BAK", True), ("dnsmos_p808", "DNSMOS P.808", True),
    ("duration_ratio", "duration synth/ref", None),
)


def _with_ci(results: Mapping[str, Any], system: str, key: str) -> str:
    value = results.get(system, {}).get(key, "")
    ci = results.get("ci", {}).get(system, {}).get(key)
    if ci and isinstance(value, float):
        return f"{_num(value)} <small>[{_num(ci['ci_low'])}, {_num(ci['ci_high'])}]</small>"
    return _num(value) if value != "" else ""


def _headline(results: Mapping[str, Any]) -> str:
    rows = ["<table><tr><th>measure</th><th>reference</th><th>base</th><th>fine-tuned</th>"
            "<th>fine-tuned − base [95% CI]</th><th>better / n</th></tr>"]
    for key, label, higher in HEADLINE_ROWS:
        if key not in results.get("finetuned", {}):
            continue
        d = results.get("delta", {}).get(key)
        delta = (f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if d else "")
        better = f"{d['better']} / {d['n']}" if d else ""
        arrow = "" if higher is None else (" ↑" if higher else " ↓")
        rows.append(f"<tr><td>{escape(label)}{arrow}</td>"
                    f"<td>{_with_ci(results, 'reference', key)}</td>"
                    f"<td>{_with_ci(results, 'base', key)}</td>"
                    f"<td>{_with_ci(results, 'finetuned', key)}</td>"
                    f"<td>{delta}</td><td>{better}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _sample(s: Sample) -> str:
    figs = " · ".join(f"{escape(k)} {escape(v)}" for k, v in s.figures.items())
    note = f'<div class="note">{escape(s.note)}</div>' if s.note else ""
    clips = []
    for label, href in s.audio.items():
        img = ""
        if label in s.mels:
            data = base64.b64encode(s.mels[label]).decode("ascii")
            img = (f'<img src="data:image/png;base64,{data}" '
                   f'alt="mel spectrogram, {escape(s.id)}, {escape(label)}">')
        clips.append(f'<div class="clip"><b>{escape(label)}</b>'
                     f'<audio controls preload="metadata" src="{escape(href)}"></audio>'
                     f'{img}</div>')
    return (f'<div class="utt" id="utt-{escape(s.id)}"><div><code>{escape(s.id)}</code> '
            f'{escape(s.text)}</div><div>{figs}</div>{note}'
            f'<div class="clips">{"".join(clips)}</div></div>')


def _cell(v: Any) -> str:
    if isinstance(v, dict | list):
        return escape(json.dumps(v, ensure_ascii=False))
    return _num(v, 4)


def _data_card(card: Mapping[str, Any]) -> str:
    hours = {k: v for k, v in card.items() if "hours" in k}
    rejects = {k: v for k, v in card.items() if "reject" in k}
    rest = {k: v for k, v in card.items() if k not in hours and k not in rejects}
    parts = []
    for title, group in (("Hours", hours), ("Rejects by stage and reason", rejects),
                         ("Other figures", rest)):
        if not group:
            continue
        rows = "".join(f"<tr><td>{escape(str(k))}</td><td>{_cell(v)}</td></tr>"
                       for k, v in sorted(group.items()))
        parts.append(f"<h3>{title}</h3><table>{rows}</table>")
    return "".join(parts)


def training_curves(root: Path = Path("."), phases: Sequence[str] = ("phase1", "phase2")
                    ) -> list[str]:
    """One SVG per metric found in `dvclive/<phase>/plots/metrics/**.tsv`, a line per phase."""
    by_metric: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for phase in phases:
        folder = root / "dvclive" / phase / "plots" / "metrics"
        for tsv in sorted(folder.rglob("*.tsv")):
            name = tsv.relative_to(folder).with_suffix("").as_posix()
            xs: list[float] = []
            ys: list[float] = []
            with open(tsv, encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f, delimiter="\t")
                value_col = next((c for c in reader.fieldnames or []
                                  if c not in ("timestamp", "step")), None)
                for row in reader:
                    try:
                        x, y = float(row["step"]), float(row[value_col])  # type: ignore[index]
                    except (KeyError, TypeError, ValueError):
                        continue  # a half-written last line of a running phase
                    xs.append(x)
                    ys.append(y)
            if xs:
                by_metric.setdefault(name, {})[phase] = (xs, ys)
    return [line_chart(series, title=name, y_label=name.rsplit("/", 1)[-1])
            for name, series in sorted(by_metric.items())]


def render(results: Mapping[str, Any], samples: Sequence[Sample], worse: Sequence[Sample],
           curves: Sequence[str], data_card: Mapping[str, Any] | None) -> str:
    """The whole page as one string."""
    method = results.get("method", {})
    n = results.get("n_utterances", len(samples))
    vocoders = results.get("vocoder", {})
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>habla evaluation</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>habla evaluation report</h1>",
        f"<p>{n} test utterances; vocoder base <code>{escape(str(vocoders.get('base', '?')))}"
        f"</code>, fine-tuned <code>{escape(str(vocoders.get('finetuned', '?')))}</code>. "
        f"<span id=\"load-status\"></span></p>",
        "<h2>Headline</h2>", _headline(results),
        "<p>↓ lower is better, ↑ higher is better. Brackets after a mean are its bootstrap "
        "95% interval; differences are fine-tuned − base with a paired bootstrap 95% interval "
        "over utterances. DNSMOS predicts noise and overall quality as listeners of noisy "
        "recordings rate them; it does not measure naturalness, prosody or whether the words "
        "are right.</p>",
        "<details><summary>Method</summary><pre>"
        f"{escape(json.dumps(method, indent=2, ensure_ascii=False))}</pre></details>",
    ]
    if worse:
        parts += ["<h2>Utterances that got worse (fine-tuned MCD − base MCD)</h2>",
                  *(_sample(s) for s in worse)]
    parts += ["<h2>Samples</h2>", *(_sample(s) for s in samples)]
    parts.append("<h2>Training curves</h2>")
    parts.append(f'<div class="charts">{"".join(curves)}</div>' if curves
                 else "<p>No dvclive curves found.</p>")
    parts.append("<h2>Data card</h2>")
    parts.append(_data_card(data_card) if data_card else "<p>No data card found.</p>")
    parts += [f"<script>{_CHECK_SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts)


def write_report(out_dir: Path, results: Mapping[str, Any], samples: Sequence[Sample],
                 worse: Sequence[Sample] = (), curves: Sequence[str] = (),
                 data_card: Mapping[str, Any] | None = None) -> Path:
    """Write `<out_dir>/index.html` atomically; every audio href must exist under out_dir."""
    for s in (*samples, *worse):
        for href in s.audio.values():
            if not (out_dir / href).is_file():
                raise FileNotFoundError(f"report: audio file {out_dir / href} is missing")
    page = out_dir / "index.html"
    atomic.write_text(page, render(results, samples, worse, curves, data_card))
    return page
