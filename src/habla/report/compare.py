"""Markdown summaries of an evaluated run, for a pull request and for the end of `make demo`.

In: the working tree's `metrics/*.json`, `params.yaml`, `metrics/eval_utterances.csv` and the
same files at a git revision (read with `git show`, so no DVC remote is needed). Out: Markdown
with the metrics diff, the params diff and the five test utterances that got worse.
"""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
from pathlib import Path
from typing import Any

import yaml

from habla import paths
from habla.errors import HablaError

EVAL_JSON = str(paths.EVAL_JSON)
EVAL_DETAILS = str(paths.EVAL_DETAILS)
UTTERANCES_CSV = str(paths.UTTERANCES_CSV)
REPORT = "reports/index.html"


class CompareError(HablaError, RuntimeError):
    """A revision or file that cannot be compared; the message says which."""


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)


def _at_rev(root: Path, rev: str, path: str) -> str | None:
    """The file's text at `rev`, or None when it did not exist there."""
    got = _git(root, "show", f"{rev}:{path}")
    return got.stdout if got.returncode == 0 else None


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of nested JSON/YAML as {"a.b": value}."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _metrics(root: Path, rev: str | None) -> dict[str, dict[str, Any]]:
    """{file: flat numeric metrics} for metrics/*.json in the tree (rev None) or at rev."""
    if rev is None:
        files = {p.relative_to(root).as_posix(): p.read_text("utf-8")
                 for p in sorted((root / "metrics").glob("*.json"))}
    else:
        listed = _git(root, "ls-tree", "--name-only", rev, "metrics/")
        names = [n for n in listed.stdout.split() if n.endswith(".json")]
        files = {n: _at_rev(root, rev, n) or "" for n in names}
    out = {}
    for name, text in files.items():
        try:
            flat = flatten(json.loads(text))
        except ValueError:
            continue  # an unreadable metrics file is shown as absent, not as a crash
        out[name] = {k: v for k, v in flat.items() if _is_num(v)}
    return out


def metrics_diff(root: Path, rev: str) -> list[tuple[str, str, Any, Any]]:
    """(file, key, old, new) for every numeric metric that changed, appeared or went."""
    old, new = _metrics(root, rev), _metrics(root, None)
    rows = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name, {}), new.get(name, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                rows.append((name, key, a.get(key), b.get(key)))
    return rows


def params_diff(root: Path, rev: str) -> list[tuple[str, Any, Any]]:
    """(key, old, new) for every params.yaml value that differs from `rev`."""
    old_text = _at_rev(root, rev, "params.yaml")
    new_path = root / "params.yaml"
    old = flatten(yaml.safe_load(old_text) or {}) if old_text else {}
    new = flatten(yaml.safe_load(new_path.read_text("utf-8")) or {}) if new_path.exists() else {}
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def _utterances(text: str | None) -> dict[str, dict[str, str]]:
    if not text:
        return {}
    return {row["id"]: row for row in csv.DictReader(io.StringIO(text)) if row.get("id")}


def worse_utterances(root: Path, rev: str, column: str = "mcd_finetuned", count: int = 5
                     ) -> list[tuple[str, str, float, float]]:
    """(id, text, old, new) of the `count` utterances whose `column` rose most since `rev`."""
    now_path = root / UTTERANCES_CSV
    old = _utterances(_at_rev(root, rev, UTTERANCES_CSV))
    new = _utterances(now_path.read_text("utf-8") if now_path.exists() else None)
    rows = []
    for uid in old.keys() & new.keys():
        try:
            a, b = float(old[uid][column]), float(new[uid][column])
        except (KeyError, ValueError):
            continue
        if math.isfinite(a) and math.isfinite(b) and b > a:
            rows.append((uid, new[uid].get("text", ""), a, b))
    rows.sort(key=lambda r: (-(r[3] - r[2]), r[0]))
    return rows[:count]


def compare_markdown(rev: str, root: Path = Path(".")) -> str:
    """The pull-request comment: metrics diff, params diff, the five utterances that got worse."""
    if _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").returncode != 0:
        raise CompareError(f"report --compare: '{rev}' is not a commit in {root.resolve()}")
    lines = [f"## habla: this change vs `{rev}`", ""]
    metrics = metrics_diff(root, rev)
    lines += ["### Metrics", ""]
    if metrics:
        lines += ["| file | metric | before | after | change |", "|---|---|---:|---:|---:|"]
        for name, key, a, b in metrics:
            change = f"{b - a:+.4g}" if _is_num(a) and _is_num(b) else ""
            lines.append(f"| {name} | {key} | {_fmt(a)} | {_fmt(b)} | {change} |")
    else:
        lines.append("No metric changed.")
    lines += ["", "### Params", ""]
    params = params_diff(root, rev)
    if params:
        lines += ["| key | before | after |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(a)} | {_fmt(b)} |" for k, a, b in params]
    else:
        lines.append("No param changed.")
    lines += ["", "### Test utterances that got worse (fine-tuned MCD)", ""]
    worse = worse_utterances(root, rev)
    if worse:
        lines += ["| id | text | before | after |", "|---|---|---:|---:|"]
        lines += [f"| {uid} | {_fmt(text)} | {a:.2f} | {b:.2f} |" for uid, text, a, b in worse]
    else:
        lines.append("None (or no per-utterance table at both revisions).")
    return "\n".join(lines) + "\n"


def headline(results: dict[str, Any]) -> list[str]:
    """Short lines with the main figures of an eval.json dict."""
    out = []
    for key, label in (("cer", "CER"), ("wer", "WER"), ("mcd", "MCD (habla scale)"),
                       ("mcd_sptk", "MCD (SPTK, dB)"), ("spk_sim", "speaker similarity"),
                       ("dnsmos_ovrl", "DNSMOS OVRL")):
        base = results.get("base", {}).get(key)
        ft = results.get("finetuned", {}).get(key)
        if base is None or ft is None:
            continue
        line = f"{label}: base {base:.3f} -> fine-tuned {ft:.3f}"
        d = results.get("delta", {}).get(key)
        if d:
            line += (f" (diff {d['mean']:+.3f}, 95% CI [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}],"
                     f" {d['better']}/{d['n']} better)")
        ref = results.get("reference", {}).get(key)
        if ref is not None:
            line += f"; reference recordings {ref:.3f}"
        ratio = (results.get("vs_reference", {}).get("finetuned") or {}).get(key)
        if ratio:
            line += (f" (fine-tuned/reference {ratio['ratio']:.2f}, 95% CI "
                     f"[{ratio['ci_low']:.2f}, {ratio['ci_high']:.2f}])")
        out.append(line)
    return out


def summary_text(root: Path = Path(".")) -> str:
    """Where the report is and the headline figures (the end of `make demo`)."""
    path = root / EVAL_DETAILS
    if not path.exists():
        raise CompareError(f"{path}: no evaluation results yet (run `dvc repro evaluate`)")
    results = json.loads(path.read_text("utf-8"))
    lines = [f"Report: {(root / REPORT).resolve().as_uri()}",
             f"Test utterances: {results.get('n_utterances', '?')}", *headline(results)]
    return "\n".join(lines) + "\n"
