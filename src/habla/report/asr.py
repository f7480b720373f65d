"""The ASR evaluation page `reports/index.html`: offline, no CDN, audio beside it in audio/.

In: the eval.json dict of habla.evaluate_asr, per-utterance rows (reference, both
hypotheses, error rates, word-start errors) with their clip's relative audio path, the
dvclive training curves and the data card. Out: one page where each sample plays its clip and
shows the reference and both hypotheses, word errors highlighted (substitutions, insertions,
deletions, as jiwer aligns the normalised words that WER counts).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from habla import atomic
from habla.report.html import LOAD_CHECK_SCRIPT, training_curves
from habla.text import normalize

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.utt { border-top: 1px solid #ccc; padding: 0.8em 0; }
.utt table { width: 100%; margin: 0.3em 0; } .utt td { text-align: left; }
.utt td:first-child { width: 8em; color: #555; }
audio { width: 100%; max-width: 500px; }
.sub { background: #fde2b8; } .ins { background: #f8c4c4; }
.del { background: #dde3f6; text-decoration: line-through; }
.legend span { padding: 0 4px; margin-right: 0.6em; }
.good { color: #2a7a2a; } .bad { color: #b00; font-weight: bold; }
.note { color: #b05000; } code { background: #f3f3f3; padding: 0 3px; }
.charts svg { margin: 0 1em 1em 0; }
"""

@dataclass
class AsrSample:
    """One test utterance as the page shows it."""

    row: dict[str, Any]  # a metrics/eval_utterances.csv row
    audio: str  # href relative to the page
    worse: bool = False  # fine-tuned WER above the base's


def highlight(reference: str, hypothesis: str) -> str:
    """The normalised hypothesis as HTML, each word error marked: substitutions (title: the
    reference word), insertions, and deleted reference words struck through."""
    import jiwer

    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return escape(hyp)
    if not hyp:
        return f'<span class="del">{escape(ref)}</span>'
    out = jiwer.process_words(ref, hyp)
    rw, hw = out.references[0], out.hypotheses[0]
    parts: list[str] = []
    for chunk in out.alignments[0]:
        ref_words = rw[chunk.ref_start_idx:chunk.ref_end_idx]
        hyp_words = hw[chunk.hyp_start_idx:chunk.hyp_end_idx]
        if chunk.type == "equal":
            parts += [escape(w) for w in hyp_words]
        elif chunk.type == "substitute":
            parts += [f'<span class="sub" title="reference: {escape(r)}">{escape(h)}</span>'
                      for r, h in zip(ref_words, hyp_words, strict=True)]
        elif chunk.type == "insert":
            parts += [f'<span class="ins" title="inserted">{escape(h)}</span>'
                      for h in hyp_words]
        else:  # delete
            parts += [f'<span class="del" title="missing">{escape(r)}</span>'
                      for r in ref_words]
    return " ".join(parts)


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.{digits}f}"
    return escape(str(v))


def _delta(d: Mapping[str, Any] | None, digits: int = 3) -> tuple[str, str]:
    if not d:
        return "", ""
    return (f"{d['mean']:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}]",
            f"{d['better']} / {d['n']}")


def _headline(results: Mapping[str, Any]) -> str:
    base, tuned = results.get("base", {}), results.get("finetuned", {})
    rows = ["<table><tr><th>metric</th><th>base</th><th>fine-tuned</th>"
            "<th>fine-tuned − base [95% CI]</th><th>better / n</th>"
            "<th>fine-tuned / base [95% CI]</th></tr>"]
    for key, label in (("wer", "WER"), ("cer", "CER")):
        delta, better = _delta(results.get("delta", {}).get(key))
        r = (results.get("ratio") or {}).get(key)
        ratio = f"{r['ratio']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r else ""
        rows.append(f"<tr><td>{label}</td><td>{_num(base.get(key))}</td>"
                    f"<td>{_num(tuned.get(key))}</td><td>{delta}</td><td>{better}</td>"
                    f"<td>{ratio}</td></tr>")
    for key, label in (("wer", "corpus WER"), ("cer", "corpus CER")):
        rows.append(f"<tr><td>{label}</td><td>{_num(base.get('corpus', {}).get(key))}</td>"
                    f"<td>{_num(tuned.get('corpus', {}).get(key))}</td><td></td><td></td>"
                    "<td></td></tr>")
    delta, better = _delta(results.get("delta", {}).get("start_mae_ms"), 1)
    if delta:
        rows.append("<tr><td>word-start error, ms (mean per utterance)</td><td></td><td></td>"
                    f"<td>{delta}</td><td>{better}</td><td></td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _timing(results: Mapping[str, Any]) -> str:
    base = (results.get("base") or {}).get("start_error_ms")
    tuned = (results.get("finetuned") or {}).get("start_error_ms")
    if not base or not tuned:
        return "<p>No true word times in the test split: word starts were not scored.</p>"
    rows = ["<table><tr><th>word starts vs truth</th><th>words matched</th><th>median ms</th>"
            "<th>p90 ms</th><th>mean |error| ms</th><th>mean signed ms</th>"
            "<th>within 50 ms</th></tr>"]
    for label, t in (("base (cross-attention DTW, reference text)", base),
                     ("fine-tuned (own timestamp tokens)", tuned)):
        rows.append(f"<tr><td>{label}</td><td>{t['matched']} / {t['words']}</td>"
                    f"<td>{_num(t['median_ms'], 1)}</td><td>{_num(t['p90_ms'], 1)}</td>"
                    f"<td>{_num(t['mae_ms'], 1)}</td><td>{_num(t['mean_signed_ms'], 1)}</td>"
                    f"<td>{_num(t['within_50ms'], 3)}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _sample(s: AsrSample) -> str:
    r = s.row
    note = ('<div class="note">fine-tuned WER above the base\'s</div>' if s.worse else "")
    timing = ""
    if r.get("words_truth"):
        timing = (f" · word starts: base {_num(r.get('start_mae_ms_base'), 1)} ms "
                  f"({r.get('words_timed_base')}/{r['words_truth']} words), fine-tuned "
                  f"{_num(r.get('start_mae_ms_finetuned'), 1)} ms "
                  f"({r.get('words_timed_finetuned')}/{r['words_truth']})")
    return (
        f'<div class="utt" id="utt-{escape(r["id"])}"><div><code>{escape(r["id"])}</code> '
        f'{escape(str(r.get("speaker", "")))} · {_num(r.get("duration"), 2)} s · WER base '
        f'{_num(r["wer_base"])}, fine-tuned {_num(r["wer_finetuned"])} · CER base '
        f'{_num(r["cer_base"])}, fine-tuned {_num(r["cer_finetuned"])}{timing}</div>{note}'
        f'<audio controls preload="metadata" src="{escape(s.audio)}"></audio><table>'
        f'<tr><td>reference</td><td>{escape(r["text"])}</td></tr>'
        f'<tr><td>base</td><td>{highlight(r["text"], r["hyp_base"])}</td></tr>'
        f'<tr><td>fine-tuned</td><td>{highlight(r["text"], r["hyp_finetuned"])}</td></tr>'
        "</table></div>")


def _card(card: Mapping[str, Any]) -> str:
    def cell(v: Any) -> str:
        return escape(json.dumps(v, ensure_ascii=False)) if isinstance(v, dict | list) \
            else _num(v, 4)

    rows = "".join(f"<tr><td>{escape(str(k))}</td><td>{cell(v)}</td></tr>"
                   for k, v in sorted(card.items()))
    return f"<table>{rows}</table>"


def render(results: Mapping[str, Any], samples: Sequence[AsrSample], curves: Sequence[str],
           data_card: Mapping[str, Any] | None) -> str:
    method = results.get("method", {})
    systems = method.get("systems", {})
    worse = [s for s in samples if s.worse]
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>habla ASR evaluation</title>", f"<style>{_STYLE}</style></head><body>",
        "<h1>habla ASR evaluation report</h1>",
        f"<p>{results.get('n_utterances')} test utterances "
        f"({', '.join(escape(str(s)) for s in results.get('speakers', []))}); base "
        f"<code>{escape(str(systems.get('base', '?')))}</code>, fine-tuned "
        f"<code>{escape(str(systems.get('finetuned', '?')))}</code>, both decoded by "
        "faster-whisper with the same settings. <span id=\"load-status\"></span></p>",
        "<h2>Headline</h2>", _headline(results),
        "<p>Lower is better. Differences are fine-tuned − base per utterance with a paired "
        "bootstrap 95% interval; ratios are of the means over the same resampled "
        "utterances.</p>",
        "<h2>Word start times</h2>", _timing(results),
        "<details><summary>Method</summary><pre>"
        f"{escape(json.dumps(method, indent=2, ensure_ascii=False))}</pre></details>",
        '<p class="legend">Hypotheses are shown normalised (as scored): '
        '<span class="sub">substituted</span><span class="ins">inserted</span>'
        '<span class="del">missing</span> (hover for the reference word).</p>',
    ]
    if worse:
        parts += ["<h2>Utterances the fine-tuned model got wrong more often</h2>",
                  *(_sample(s) for s in worse)]
    parts += ["<h2>Samples</h2>", *(_sample(s) for s in samples if not s.worse)]
    parts.append("<h2>Training curves</h2>")
    parts.append(f'<div class="charts">{"".join(curves)}</div>' if curves
                 else "<p>No dvclive curves found.</p>")
    parts.append("<h2>Data card</h2>")
    parts.append(_card(data_card) if data_card else "<p>No data card found.</p>")
    parts += [f"<script>{LOAD_CHECK_SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts)


def write_asr_report(out_dir: Path, results: Mapping[str, Any], samples: Sequence[AsrSample],
                     data_card: Mapping[str, Any] | None = None,
                     curves_root: Path = Path(".")) -> Path:
    """Write `<out_dir>/index.html` atomically; every sample's audio must exist under it."""
    for s in samples:
        if not (out_dir / s.audio).is_file():
            raise FileNotFoundError(f"report: audio file {out_dir / s.audio} is missing")
    page = out_dir / "index.html"
    atomic.write_text(page, render(results, samples, training_curves(curves_root), data_card))
    return page
