"""Writes the evaluation report `reports/index.html`: one offline page, no CDN, no fetches.

In: eval results (the `metrics/eval_details.json` dict), the per-sentence rows, samples
(relative audio files under `reports/audio/`, mel spectrograms, figures), dvclive training
curves, the data card and the run's provenance. Out: the page. Mel images are inline data URIs
with time and frequency axes, charts inline SVG, audio relative `<audio>`. Everything that
changes between reruns of the same pipeline (date, commit, durations, versions, machine) sits
inside `data-volatile` elements, and `strip_volatile` removes it: the rest is deterministic.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from habla import atomic
from habla.progress import duration_text
from habla.report.compare import verdict
from habla.report.png import spectrogram_png
from habla.report.svg import line_chart
from habla.report.worddiff import DIFF_CSS, diff_html


@dataclass
class Spectrogram:
    """A mel spectrogram image and what its axes span: time left to right over `seconds`,
    HTK-mel-spaced frequency bottom to top from 0 Hz to `max_hz`."""

    png: bytes
    seconds: float
    max_hz: float

    @classmethod
    def of_logmel(cls, logmel: np.ndarray, hop_seconds: float, max_hz: float) -> Spectrogram:
        """From a (frames, bins) log-mel array whose frames are `hop_seconds` apart."""
        return cls(spectrogram_png(logmel), logmel.shape[0] * hop_seconds, max_hz)


@dataclass
class Sample:
    """One test utterance as the report shows it."""

    id: str
    text: str
    audio: dict[str, str]  # label ("reference", "base", "fine-tuned") -> href relative to page
    # label -> spectrogram (bare PNG bytes are shown without axes)
    mels: dict[str, Spectrogram | bytes] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)  # name -> formatted value
    note: str = ""


@dataclass(frozen=True)
class Column:
    """A numeric column of the sentence table: row key, header, digits, direction."""

    key: str
    label: str
    digits: int = 3
    higher_is_better: bool | None = None


# The TTS report's sentence table; the ASR report passes its own columns and systems.
TTS_COLUMNS = (
    Column("cer_reference", "CER target rec.", 3, False),
    Column("cer_base", "CER base", 3, False),
    Column("cer_finetuned", "CER fine-tuned", 3, False),
    Column("wer_finetuned", "WER fine-tuned", 2, False),
    Column("mcd_base", "MCD base", 1, False),
    Column("mcd_finetuned", "MCD fine-tuned", 1, False),
    Column("spk_sim_finetuned", "speaker sim. fine-tuned", 2, True),
    Column("dnsmos_ovrl_finetuned", "DNSMOS fine-tuned", 2, True),
)
TTS_ASR = (("asr_reference", "target recording"), ("asr_base", "base"),
           ("asr_finetuned", "fine-tuned"))

# Runs in the page: counts players that loaded, shows a warning (and logs a console error)
# for any recording or image that cannot be opened, e.g. a page copied without audio/.
LOAD_CHECK_SCRIPT = """
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

# Click a header of a `table.sortable` to sort by it (again: the other way). Cells carry their
# sort value in data-v; missing values sort last either way.
_SORT_SCRIPT = """
(function () {
  function key(cell, numeric) {
    var v = cell.getAttribute('data-v');
    if (!numeric) return v || '';
    var x = parseFloat(v);
    return isNaN(x) ? null : x;
  }
  function sortBy(table, col, th) {
    var numeric = th.getAttribute('data-type') === 'num';
    var desc = th.getAttribute('aria-sort') !== 'descending';
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col], numeric), y = key(b.cells[col], numeric);
      if (x === null || y === null) return (x === null) - (y === null);
      var c = numeric ? x - y : String(x).localeCompare(String(y));
      return desc ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      h.removeAttribute('aria-sort');
    });
    th.setAttribute('aria-sort', desc ? 'descending' : 'ascending');
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (t) {
    Array.prototype.forEach.call(t.tHead.rows[0].cells, function (th, col) {
      if (!th.hasAttribute('data-type')) return;
      th.tabIndex = 0;
      th.addEventListener('click', function () { sortBy(t, col, th); });
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter') sortBy(t, col, th);
      });
    });
  });
})();
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1180px; color: #222;
       padding: 0 1em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
.prov { background: #f6f7f9; border: 1px solid #dde; padding: 0.5em 1em; font-size: 0.9em; }
.prov table { font-size: 0.95em; margin: 0.3em 0; }
.prov h2 { margin: 0.2em 0; font-size: 1.1em; }
.prov .cols { display: flex; gap: 2em; flex-wrap: wrap; }
.scroll { overflow-x: auto; }
table.sentences { font-size: 0.85em; width: 100%; }
table.sentences td.text, table.sentences th:nth-child(2) { text-align: left; min-width: 24em; }
table.sentences th { font-size: 0.9em; min-width: 4.5em; }
table.sentences th[data-type] { cursor: pointer; }
th[aria-sort=descending]::after { content: " ▼"; } th[aria-sort=ascending]::after { content: " ▲"; }
.asr { color: #444; margin-top: 2px; } .asr b { color: #666; font-weight: normal;
       display: inline-block; min-width: 9em; }
.utt { border-top: 1px solid #ccc; padding: 0.8em 0; }
.clips { display: flex; gap: 1em; flex-wrap: wrap; }
.clip { flex: 1 1 300px; }
.spec { display: grid; grid-template-columns: 38px 1fr; margin: 4px 0 0; }
.spec img { width: 100%; height: 110px; image-rendering: pixelated; display: block; }
.spec-y, .spec-x { position: relative; font-size: 10px; color: #555; }
.spec-y { height: 110px; border-right: 1px solid #888; }
.spec-y span { position: absolute; right: 3px; transform: translateY(50%); }
.spec-x { height: 22px; border-top: 1px solid #888; grid-column: 2; }
.spec-x span { position: absolute; top: 1px; transform: translateX(-50%); }
.spec-x span.unit { right: 0; left: auto; top: 11px; transform: none; }
.spec-y span.unit { top: -2px; right: 3px; transform: none; }
audio { width: 100%; }
.charts { display: flex; flex-wrap: wrap; } .charts svg { margin: 0 1em 1em 0; }
.funnel td.bar { width: 260px; } .funnel .b { background: #4c78a8; height: 12px; }
.good { color: #2a7a2a; } .bad { color: #b00; font-weight: bold; }
.v-better { color: #2a7a2a; font-weight: bold; } .v-worse { color: #b00; font-weight: bold; }
.v-unresolved { color: #777; }
.note { color: #b05000; } code { background: #f3f3f3; padding: 0 3px; }
"""


def _num(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.{digits}f}"
    if v is None:
        return "–"
    return escape(str(v))


def _float(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


# ---------------------------------------------------------------- volatile parts
_VOLATILE_OPEN = re.compile(r"<([a-zA-Z][\w-]*)\b[^>]*\sdata-volatile\b[^>]*>")


def strip_volatile(html: str) -> str:
    """The page with the content of every `data-volatile` element removed (the element's own
    tags stay): what must be identical between two runs of the same pipeline."""
    out, pos = [], 0
    while (m := _VOLATILE_OPEN.search(html, pos)) is not None:
        tag = m.group(1).lower()
        out.append(html[pos:m.end()])
        # find the matching close tag, counting nested elements of the same name
        tags = re.compile(rf"<(/?){tag}\b[^>]*>", re.IGNORECASE)
        depth, end = 1, len(html)
        for t in tags.finditer(html, m.end()):
            depth += -1 if t.group(1) else 1
            if depth == 0:
                end = t.start()
                break
        pos = end
    out.append(html[pos:])
    return "".join(out)


def _provenance(prov: Mapping[str, Any] | None) -> str:
    """The header: commit, date, params changes, stage times, packages, machine."""
    if not prov:
        return ('<section id="provenance" class="prov" data-volatile><p>No provenance was '
                'recorded for this page.</p></section>')
    diff = prov.get("params_diff")
    if diff is None:
        params = "<p>params.yaml: no committed version to compare with.</p>"
    elif not diff:
        params = "<p>params.yaml: the committed defaults (no change against HEAD).</p>"
    else:
        params = ('<table class="params-diff"><tr><th>params.yaml key</th>'
                  "<th>committed (HEAD)</th><th>this run</th></tr>" + "".join(
                      f"<tr><td><code>{escape(k)}</code></td><td>{_cell(a)}</td>"
                      f"<td>{_cell(b)}</td></tr>" for k, a, b in diff) + "</table>")
    stages = []
    for s in prov.get("stages") or []:
        secs = s.get("seconds")
        extra = []
        if s.get("steps"):
            extra.append(f"{s['steps']} steps, {s.get('s_per_step', math.nan):.2f} s/step")
        if s.get("note"):
            extra.append(str(s["note"]))
        stages.append(f"<tr><td>{escape(s['stage'])}</td><td>"
                      f"{duration_text(secs) if secs is not None else '–'}</td>"
                      f"<td>{escape('; '.join(extra))}</td></tr>")
    stage_table = ('<table class="stage-times"><tr><th>stage</th><th>took</th><th></th></tr>'
                   + "".join(stages) + "</table>") if stages else \
        "<p>No stage logs (logs/*.json) found.</p>"
    pk = prov.get("packages") or {}
    machine = prov.get("machine") or {}
    return (
        '<section id="provenance" class="prov" data-volatile>'
        "<h2>Provenance</h2>"
        f"<p>commit <code>{escape(str(prov.get('commit') or 'unknown (not a git checkout)'))}"
        f"</code> · evaluated {escape(str(prov.get('date', '?')))} · "
        f"CPU {escape(machine.get('cpu', '?'))} ({escape(machine.get('cores', '?'))} cores), "
        f"GPU {escape(machine.get('gpu', '?'))}, {escape(machine.get('system', ''))}</p>"
        f'<div class="cols"><div>{params}</div><div>{stage_table}</div></div>'
        "<p>" + " · ".join(f"{escape(k)} {escape(v)}" for k, v in pk.items()) + "</p>"
        "</section>")


# ---------------------------------------------------------------- headline
HEADLINE_ROWS = (  # key, label, higher is better
    ("cer", "CER (Whisper)", False), ("wer", "WER (Whisper)", False),
    ("mcd", "MCD, habla log-mel scale", False), ("mcd_sptk", "MCD, SPTK mel-cepstrum (dB)", False),
    ("spk_sim", "speaker similarity to the target voice", True),
    ("spk_utt", "speaker similarity to the same sentence's recording", True),
    ("dnsmos_ovrl", "DNSMOS OVRL (MOS estimate)", True), ("dnsmos_sig", "DNSMOS SIG", True),
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
    rows = ["<table id=\"headline-table\"><tr><th>measure</th><th>target recordings</th>"
            "<th>base</th><th>fine-tuned</th><th>fine-tuned − base [95% CI]</th>"
            "<th>verdict</th><th>better / n</th><th>fine-tuned ÷ target rec. [95% CI]</th>"
            "</tr>"]
    for key, label, higher in HEADLINE_ROWS:
        if key not in results.get("finetuned", {}):
            continue
        d = results.get("delta", {}).get(key)
        delta = (f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if d else "")
        better = f"{d['better']} / {d['n']}" if d else ""
        said = verdict(d["ci_low"], d["ci_high"], bool(higher)) if d and higher is not None \
            else ""
        ratio = (results.get("vs_reference", {}).get("finetuned") or {}).get(key)
        ratio_cell = (f"{ratio['ratio']:.2f} [{ratio['ci_low']:.2f}, {ratio['ci_high']:.2f}]"
                      if ratio else "")
        arrow = "" if higher is None else (" ↑" if higher else " ↓")
        rows.append(f"<tr><td>{escape(label)}{arrow}</td>"
                    f"<td>{_with_ci(results, 'reference', key)}</td>"
                    f"<td>{_with_ci(results, 'base', key)}</td>"
                    f"<td>{_with_ci(results, 'finetuned', key)}</td>"
                    f"<td>{delta}</td><td class=\"v-{said}\">{said}</td><td>{better}</td>"
                    f"<td>{ratio_cell}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


# ---------------------------------------------------------------- sentences
def sentence_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column] = TTS_COLUMNS,
                   asr: Sequence[tuple[str, str]] = TTS_ASR, sort_key: str = "cer_finetuned",
                   linked: set[str] | frozenset[str] = frozenset(), text_key: str = "text",
                   id_key: str = "id") -> str:
    """Every sentence, worst `sort_key` first (sortable by any column in the page): its text,
    each system's ASR transcript with the word errors marked, and the numeric columns. Row
    `row-<id>`; the id links to the sentence's players (`utt-<id>`) when it is in `linked`."""
    def order(r: Mapping[str, Any]) -> tuple[bool, float, str]:
        v = _float(r.get(sort_key))
        return (v is None, -(v or 0.0), str(r.get(id_key, "")))

    head = ['<th data-type="text">id</th><th>sentence; what Whisper heard from each</th>']
    for c in columns:
        arrow = "" if c.higher_is_better is None else (" ↑" if c.higher_is_better else " ↓")
        sort = ' aria-sort="descending"' if c.key == sort_key else ""
        head.append(f'<th data-type="num"{sort}>{escape(c.label)}{arrow}</th>')
    body = []
    for r in sorted(rows, key=order):
        uid = str(r.get(id_key, ""))
        ref = str(r.get(text_key) or "")
        name = (f'<a href="#utt-{escape(uid)}">{escape(uid)}</a>' if uid in linked
                else escape(uid))
        lines = "".join(f'<div class="asr"><b>{escape(label)}:</b> '
                        f'{diff_html(ref, str(r.get(key) or ""))}</div>'
                        for key, label in asr if key in r)
        cells = [f'<td data-v="{escape(uid)}"><code>{name}</code></td>',
                 f'<td class="text">{escape(ref)}{lines}</td>']
        for c in columns:
            v = _float(r.get(c.key))
            cells.append(f'<td data-v="{"" if v is None else repr(round(v, 6))}">'
                         f'{_num(v, c.digits) if v is not None else "–"}</td>')
        body.append(f'<tr id="row-{escape(uid)}">{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table class="sortable sentences"><thead><tr>'
            f'{"".join(head)}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


# ---------------------------------------------------------------- samples
def _nice_step(span: float, count: int) -> float:
    for step in (0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60):
        if span / step <= count:
            return float(step)
    return span / count


def _htk_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def _spectrogram(spec: Spectrogram | bytes, alt: str) -> str:
    png = spec.png if isinstance(spec, Spectrogram) else spec
    data = base64.b64encode(png).decode("ascii")
    img = f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'
    if not isinstance(spec, Spectrogram) or spec.seconds <= 0 or spec.max_hz <= 0:
        return f'<div class="spec-bare">{img}</div>'
    y = ['<span class="unit">kHz</span>']
    for hz in (0, 1000, 2000, 4000, 8000, 16000):
        if hz <= spec.max_hz * 0.97 or hz == 0:
            pos = 100 * _htk_mel(hz) / _htk_mel(spec.max_hz)
            y.append(f'<span style="bottom:{pos:.1f}%">{hz / 1000:g}</span>')
    step = _nice_step(spec.seconds, 6)
    x = []
    for k in range(int(spec.seconds / step + 1e-9) + 1):
        t = k * step
        if t <= spec.seconds * 0.93 or k == 0:
            x.append(f'<span style="left:{100 * t / spec.seconds:.1f}%">{t:g}</span>')
    x.append('<span class="unit">time (s)</span>')
    return (f'<figure class="spec" title="mel spectrogram: time (s) across, frequency (kHz, '
            f'mel-spaced) up"><div class="spec-y">{"".join(y)}</div><div>{img}</div>'
            f'<div class="spec-x">{"".join(x)}</div></figure>')


def _sample(s: Sample, in_table: bool = False) -> str:
    figs = " · ".join(f"{escape(k)} {escape(v)}" for k, v in s.figures.items())
    note = f'<div class="note">{escape(s.note)}</div>' if s.note else ""
    back = f' <a href="#row-{escape(s.id)}">(row in the table)</a>' if in_table else ""
    clips = []
    for label, href in s.audio.items():
        img = (_spectrogram(s.mels[label], f"mel spectrogram, {s.id}, {label}")
               if label in s.mels else "")
        clips.append(f'<div class="clip"><b>{escape(label)}</b>'
                     f'<audio controls preload="metadata" src="{escape(href)}"></audio>'
                     f'{img}</div>')
    return (f'<div class="utt" id="utt-{escape(s.id)}"><div><code>{escape(s.id)}</code> '
            f'{escape(s.text)}{back}</div><div>{figs}</div>{note}'
            f'<div class="clips">{"".join(clips)}</div></div>')


def _cell(v: Any) -> str:
    if isinstance(v, dict | list):
        return escape(json.dumps(v, ensure_ascii=False))
    return _num(v, 4)


# ---------------------------------------------------------------- data card
SPLITS = ("train", "val", "test")


def _rejects(card: Mapping[str, Any], stage: str) -> dict[str, int]:
    """{reason: count} of a stage's rejects in the data card."""
    prefix = f"{stage}_rejects_"
    out = {k[len(prefix):]: v for k, v in card.items() if k.startswith(prefix)
           and isinstance(v, int) and not isinstance(v, bool) and v}
    total = card.get(f"{stage}_rejected")
    if not out and isinstance(total, int) and not isinstance(total, bool) and total:
        out["rejected"] = total
    return out


# stage -> (hours in, count in, its unit), (hours kept, count kept, its unit): data card keys
_AMOUNTS = {
    "download": (("download_hours", "download_recordings", "recordings"),
                 ("download_hours", "download_recordings", "recordings")),
    "segment": (("segment_hours_in", "segment_recordings_in", "recordings"),
                ("segment_hours_kept", "segment_clips_out", "clips")),
    "transcribe": (("transcribe_hours_in", "transcribe_clips_in", "clips"),
                   ("transcribe_hours_kept", "transcribe_clips_kept", "clips")),
    "timestamps": (("", "timestamps_clips_in", "clips"),
                   ("timestamps_hours_kept", "timestamps_clips_kept", "clips")),
}


def _amount(card: Mapping[str, Any], keys: tuple[str, str, str]) -> tuple[float | None, str]:
    hours_key, count_key, unit = keys
    hours = _float(card.get(hours_key)) if hours_key else None
    count = card.get(count_key)
    text = ", ".join(x for x in (f"{hours:.3f} h" if hours is not None else "",
                                 f"{count} {unit}" if count is not None else "") if x)
    return hours, text


def _why(rejects: Mapping[str, int]) -> str:
    """'high wer 38, high cer 3': the reasons, most frequent first."""
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in
                     sorted(rejects.items(), key=lambda kv: (-kv[1], kv[0])))


def _funnel(card: Mapping[str, Any]) -> str:
    """Hours in, then per stage what it kept and what it rejected, and why; the splits."""
    top = _float(card.get("download_hours")) or max(
        (_float(v) or 0.0 for k, v in card.items() if "hours" in k), default=0.0)

    def bar(hours: float | None) -> str:
        width = 0.0 if not hours or not top else min(100.0, 100 * hours / top)
        return f'<td class="bar"><div class="b" style="width:{width:.1f}%"></div></td>'

    rows = []
    for stage, (keys_in, keys_kept) in _AMOUNTS.items():
        if not any(k.startswith(f"{stage}_") for k in card):
            continue
        _, came = _amount(card, keys_in)
        hours, kept = _amount(card, keys_kept)
        why = _rejects(card, stage)
        why_text = _why(why)
        rows.append(f"<tr><td>{stage}</td><td>{escape(came)}</td><td>{escape(kept)}</td>"
                    f"{bar(hours)}<td>{sum(why.values())}</td><td>{escape(why_text)}</td></tr>")
    if any(f"{s}_clips" in card for s in SPLITS):
        hours = sum(_float(card.get(f"{s}_hours")) or 0.0 for s in SPLITS)
        clips = sum(int(card.get(f"{s}_clips") or 0) for s in SPLITS)
        why = _rejects(card, "tokenize")
        why_text = _why(why)
        rows.append(f"<tr><td>tokenize (train + val + test)</td><td></td>"
                    f"<td>{hours:.3f} h, {clips} clips</td>{bar(hours)}"
                    f"<td>{sum(why.values())}</td><td>{escape(why_text)}</td></tr>")
    split_rows = "".join(
        f"<tr><td>{s}</td><td>{_num(_float(card.get(f'{s}_hours')), 3)} h</td>"
        f"<td>{card.get(f'{s}_clips', '–')} clips</td>"
        f"<td>{card.get(f'{s}_sentences', '–')} sentences</td>"
        f"<td>{card.get(f'{s}_speakers', '–')} speaker(s)</td></tr>"
        for s in SPLITS if f"{s}_clips" in card)
    every = "".join(f"<tr><td>{escape(str(k))}</td><td>{_cell(v)}</td></tr>"
                    for k, v in sorted(card.items()))
    return ('<table class="funnel"><tr><th>stage</th><th>came in</th><th>kept</th>'
            '<th>hours kept, of those downloaded</th><th>rejected</th><th>why</th></tr>'
            f'{"".join(rows)}</table>'
            + (f"<h3>Splits</h3><table>{split_rows}</table>" if split_rows else "")
            + "<details><summary>Every figure of the data card (metrics/data.json)</summary>"
            f"<table>{every}</table></details>")


# ---------------------------------------------------------------- training curves
# metric name -> (chart title, y-axis label); losses first, the rest after in this order
CURVES = {
    "train/loss": ("Training loss", "loss (training objective)"),
    "val/loss": ("Validation loss", "loss (training objective)"),
    "lr": ("Learning rate", "learning rate"),
    "grad_norm": ("Gradient norm", "L2 norm before clipping"),
}


def _read_tsv(tsv: Path) -> tuple[list[float], list[float]]:
    xs: list[float] = []
    ys: list[float] = []
    with open(tsv, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        value_col = next((c for c in reader.fieldnames or [] if c not in ("timestamp", "step")),
                         None)
        for row in reader:
            try:
                x, y = float(row["step"]), float(row[value_col])  # type: ignore[index]
            except (KeyError, TypeError, ValueError):
                continue  # a half-written last line of a running phase
            xs.append(x)
            ys.append(y)
    return xs, ys


def training_curves(root: Path = Path("."), phases: Sequence[str] = ("phase1", "phase2")
                    ) -> list[str]:
    """One SVG per metric in `dvclive/<phase>/plots/metrics/**.tsv`, a line per phase; the
    losses first, then learning rate and gradient norm, then anything else by name."""
    by_metric: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for phase in phases:
        folder = root / "dvclive" / phase / "plots" / "metrics"
        for tsv in sorted(folder.rglob("*.tsv")):
            name = tsv.relative_to(folder).with_suffix("").as_posix()
            xs, ys = _read_tsv(tsv)
            if xs:
                by_metric.setdefault(name, {})[phase] = (xs, ys)
    known = list(CURVES)
    order = sorted(by_metric, key=lambda n: (known.index(n) if n in known else len(known), n))
    charts = []
    for name in order:
        title, y_label = CURVES.get(name, (name, name.rsplit("/", 1)[-1].replace("_", " ")))
        charts.append(line_chart(by_metric[name], title=title, x_label="optimizer step "
                                 "(counted within each phase)", y_label=y_label))
    return charts


# ---------------------------------------------------------------- the page
def render(results: Mapping[str, Any], samples: Sequence[Sample], worse: Sequence[Sample],
           curves: Sequence[str], data_card: Mapping[str, Any] | None,
           rows: Sequence[Mapping[str, Any]] = (),
           provenance: Mapping[str, Any] | None = None) -> str:
    """The whole page as one string."""
    method = results.get("method", {})
    n = results.get("n_utterances", len(samples))
    vocoders = results.get("vocoder", {})
    row_ids = {str(r.get("id")) for r in rows}
    linked = {s.id for s in (*samples, *worse)}
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>habla evaluation</title>",
        f"<style>{_STYLE}{DIFF_CSS}</style></head><body>",
        "<h1>habla evaluation report</h1>",
        '<nav><a href="#headline">headline</a><a href="#sentences">test sentences</a>'
        '<a href="#samples">listen</a><a href="#training">training</a>'
        '<a href="#data">data</a><a href="#provenance">provenance</a></nav>',
        _provenance(provenance),
        f"<p>{n} test utterances; vocoder base <code>{escape(str(vocoders.get('base', '?')))}"
        f"</code>, fine-tuned <code>{escape(str(vocoders.get('finetuned', '?')))}</code>. "
        f"<span id=\"load-status\"></span></p>",
        '<section id="headline"><h2>Headline</h2>', _headline(results),
        "<p>↓ lower is better, ↑ higher is better. Brackets after a mean are its bootstrap "
        "95% interval; differences are fine-tuned − base with a paired bootstrap 95% interval "
        "over utterances, and the verdict is <i>better</i> or <i>worse</i> only when that "
        "interval excludes 0, else <i>unresolved</i>. DNSMOS predicts noise and overall "
        "quality as listeners of noisy recordings rate them; it does not measure naturalness, "
        "prosody or whether the words are right.</p>",
        "<details><summary>Method</summary><pre>"
        f"{escape(json.dumps(method, indent=2, ensure_ascii=False))}</pre></details>",
        "</section>",
    ]
    parts.append('<section id="sentences"><h2>Test sentences</h2>')
    if rows:
        parts += ["<p>Worst fine-tuned CER first; click a header to sort by it. Under each "
                  "sentence, what Whisper heard from the target recording and from each "
                  "model, against the text (normalised as scored): "
                  '<span class="w-sub" title="expected: …">substituted</span>, '
                  '<ins class="w-ins">inserted</ins>, <del class="w-del">missed</del>. '
                  "Linked ids have players and spectrograms below.</p>",
                  sentence_table(rows, linked=linked)]
    else:
        parts.append("<p>No per-sentence rows were given.</p>")
    parts.append("</section>")
    parts.append('<section id="samples">')
    if worse:
        parts += ["<h2>Utterances that got worse (fine-tuned MCD − base MCD)</h2>",
                  *(_sample(s, s.id in row_ids) for s in worse)]
    parts += ["<h2>Samples</h2>", *(_sample(s, s.id in row_ids) for s in samples), "</section>"]
    parts.append('<section id="training"><h2>Training curves</h2>')
    parts.append(f'<div class="charts">{"".join(curves)}</div>' if curves
                 else "<p>No dvclive curves found.</p>")
    parts.append('</section><section id="data"><h2>Data card</h2>')
    parts.append(_funnel(data_card) if data_card else "<p>No data card found.</p>")
    parts += ["</section>", f"<script>{LOAD_CHECK_SCRIPT}{_SORT_SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts)


def write_report(out_dir: Path, results: Mapping[str, Any], samples: Sequence[Sample],
                 worse: Sequence[Sample] = (), curves: Sequence[str] = (),
                 data_card: Mapping[str, Any] | None = None,
                 rows: Sequence[Mapping[str, Any]] = (),
                 provenance: Mapping[str, Any] | None = None) -> Path:
    """Write `<out_dir>/index.html` atomically; every audio href must exist under out_dir."""
    for s in (*samples, *worse):
        for href in s.audio.values():
            if not (out_dir / href).is_file():
                raise FileNotFoundError(f"report: audio file {out_dir / href} is missing")
    page = out_dir / "index.html"
    atomic.write_text(page, render(results, samples, worse, curves, data_card, rows,
                                   provenance))
    return page
