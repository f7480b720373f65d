"""Markdown summaries of an evaluated run, for a pull request and for the end of `make demo`.

In: the working tree's `metrics/*.json`, `params.yaml`, `metrics/eval_utterances.csv` and the
same files at a git revision (read with `git show`, so no DVC remote is needed). Out: Markdown
that leads with the headline measures (change with a 95% interval and a verdict: better, worse
or unresolved), then the params diff, the sentences that got worse by CER and by MCD, and the
full metrics diff collapsed. Imports neither torch nor numpy (CI installs habla without them).
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
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


def _where(path: str, rev: str | None) -> str:
    """How a message names a file: its path, and the revision when it was read from git."""
    return path if rev is None else f"{path} at {rev}"


def _decode(data: bytes, path: str, rev: str | None) -> str:
    """UTF-8 text of a file's bytes; CompareError naming the file when they are not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CompareError(f"{_where(path, rev)}: not UTF-8 text (byte {exc.start}); save it "
                           "as UTF-8 or rerun the stage that writes it") from None


def _at_rev(root: Path, rev: str, path: str) -> str | None:
    """The file's text at `rev`, or None when it did not exist there."""
    got = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True,
                         check=False)
    return _decode(got.stdout, path, rev) if got.returncode == 0 else None


def _read(root: Path, rev: str | None, path: str) -> str | None:
    """The file's text in the tree (rev None) or at rev; None when it is not there."""
    if rev is not None:
        return _at_rev(root, rev, path)
    try:
        return _decode((root / path).read_bytes(), path, None)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CompareError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _json(text: str, path: str, rev: str | None) -> Any:
    """Parsed JSON; CompareError naming the file when it is not JSON or nested too deeply."""
    try:
        return json.loads(text)
    except RecursionError:
        raise CompareError(f"{_where(path, rev)}: JSON nested too deeply to read; rerun the "
                           "stage that writes it") from None
    except ValueError as exc:
        raise CompareError(f"{_where(path, rev)}: not valid JSON ({exc}); rerun the stage "
                           "that writes it") from None


def _kind(value: Any) -> str:
    """A JSON value's type in words, for messages."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return {dict: "an object", list: "a list", str: "text"}.get(type(value), "a number")


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
        names = [p.relative_to(root).as_posix() for p in sorted((root / "metrics").glob("*.json"))]
    else:
        listed = _git(root, "ls-tree", "--name-only", rev, "metrics/")
        names = [n for n in listed.stdout.split() if n.endswith(".json")]
    out = {}
    for name in names:
        flat = _flat(_json(_read(root, rev, name) or "null", name, rev), name, rev)
        out[name] = {k: v for k, v in flat.items() if _is_num(v)}
    return out


def _flat(data: Any, path: str, rev: str | None) -> dict[str, Any]:
    """flatten(data); CompareError naming the file when it is nested too deeply to walk."""
    try:
        return flatten(data)
    except RecursionError:
        raise CompareError(f"{_where(path, rev)}: nested too deeply to compare") from None


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
    old, new = _params(root, rev), _params(root, None)
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def _params(root: Path, rev: str | None) -> dict[str, Any]:
    """Flat params.yaml in the tree (rev None) or at rev; {} when there is none."""
    text = _read(root, rev, "params.yaml")
    if not text:
        return {}
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise CompareError(f"{_where('params.yaml', rev)}: nested too deeply to read") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise CompareError(f"{_where('params.yaml', rev)}: not valid YAML{line}: "
                           f"{getattr(exc, 'problem', None) or exc}") from None
    return _flat(data or {}, "params.yaml", rev)


def _utterances(text: str | None, path: str, rev: str | None) -> dict[str, dict[str, str]]:
    """{id: row} of a per-sentence CSV table; CompareError naming the file when unreadable."""
    if not text:
        return {}
    try:
        return {row["id"]: row for row in csv.DictReader(io.StringIO(text)) if row.get("id")}
    except csv.Error as exc:
        raise CompareError(f"{_where(path, rev)}: not a readable CSV table ({exc}); rerun "
                           "`dvc repro evaluate`") from None


def _value(row: dict[str, str], column: str) -> float | None:
    try:
        v = float(row[column])
    except (KeyError, TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def sentence_pairs(root: Path, rev: str) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """{id: (row at rev, row now)} for the test sentences in both per-sentence tables."""
    old = _utterances(_read(root, rev, UTTERANCES_CSV), UTTERANCES_CSV, rev)
    new = _utterances(_read(root, None, UTTERANCES_CSV), UTTERANCES_CSV, None)
    return {uid: (old[uid], new[uid]) for uid in sorted(old.keys() & new.keys())}


def worse_utterances(root: Path, rev: str, column: str = "mcd_finetuned", count: int = 5
                     ) -> list[tuple[str, str, float, float]]:
    """(id, text, old, new) of the `count` utterances whose `column` rose most since `rev`."""
    rows = []
    for uid, (a_row, b_row) in sentence_pairs(root, rev).items():
        a, b = _value(a_row, column), _value(b_row, column)
        if a is not None and b is not None and b > a:
            rows.append((uid, b_row.get("text", ""), a, b))
    rows.sort(key=lambda r: (-(r[3] - r[2]), r[0]))
    return rows[:count]


# ---------------------------------------------------------------- run against run
# The rows a pull request is judged by: the fine-tuned model's key, label, higher is better.
HEADLINE = (("cer", "CER", False), ("mcd", "MCD (habla log-mel scale)", False),
            ("spk_sim", "speaker similarity", True), ("dnsmos_ovrl", "DNSMOS OVRL (MOS estimate)",
                                                      True), ("wer", "WER", False))
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0


def verdict(ci_low: float, ci_high: float, higher_is_better: bool) -> str:
    """'better' or 'worse' when a 95% interval of a change excludes 0, else 'unresolved'."""
    if ci_low > 0 or ci_high < 0:
        return "better" if (ci_low > 0) == higher_is_better else "worse"
    return "unresolved"


def paired_change(before: list[float], after: list[float], samples: int = BOOTSTRAP_SAMPLES,
                  seed: int = BOOTSTRAP_SEED, confidence: float = 0.95) -> dict[str, float]:
    """Mean of (after − before) over paired sentences and its percentile bootstrap interval
    (sentences resampled with replacement). Pure Python: `habla report` runs without numpy."""
    diffs = [b - a for a, b in zip(before, after, strict=True)]
    n = len(diffs)
    if n == 0:
        raise ValueError("paired_change: no sentences")
    rng = random.Random(seed)
    means = sorted(math.fsum(diffs[rng.randrange(n)] for _ in range(n)) / n
                   for _ in range(samples))
    tail = (1 - confidence) / 2
    low = means[max(0, math.floor(tail * samples))]
    high = means[min(samples - 1, math.ceil((1 - tail) * samples) - 1)]
    def tidy(x: float) -> float:  # a change of exactly nothing prints as 0, not -1e-17 or -0
        return round(x, 12) or 0.0

    return {"mean": tidy(math.fsum(diffs) / n), "ci_low": tidy(low), "ci_high": tidy(high),
            "n": n}


def _results(root: Path, rev: str | None) -> dict[str, Any]:
    """eval_details.json (or an older eval.json) in the tree (rev None) or at rev; {} if none.
    CompareError naming the file when it is not JSON or its sections are not objects."""
    for name in (EVAL_DETAILS, EVAL_JSON):
        text = _read(root, rev, name)
        data = _json(text, name, rev) if text else None
        if isinstance(data, dict) and "finetuned" in data:
            return _checked(data, name, rev)
    return {}


# Sections of eval_details.json that hold {measure: ...}, and those holding {system: {...}}
SECTIONS = ("base", "finetuned", "reference", "delta", "ci", "vs_reference")
BY_SYSTEM = ("ci", "vs_reference")


def _checked(results: Any, path: str, rev: str | None) -> dict[str, Any]:
    """`results` when it and its sections are JSON objects; else CompareError naming the file
    and the section (a single value of the wrong type is shown as text, not refused)."""
    def refuse(what: str, value: Any) -> CompareError:
        return CompareError(f"{_where(path, rev)}: {what} is {_kind(value)}, expected an "
                            "object; rerun `dvc repro evaluate`")

    if not isinstance(results, dict):
        raise refuse("the whole file", results)
    for key in SECTIONS:
        section = results.get(key)
        if section is not None and not isinstance(section, dict):
            raise refuse(f'"{key}"', section)
        if key not in BY_SYSTEM:
            continue
        for system, value in (section or {}).items():
            if value is not None and not isinstance(value, dict):
                raise refuse(f'"{key}.{system}"', value)
    return results


def _interval(ci: Any, *keys: str) -> dict[str, Any] | None:
    """`ci` when it is an object whose `keys` (default ci_low, ci_high) are numbers, else None:
    an interval with a missing or non-numeric bound is not shown and not used for a verdict."""
    keys = keys or ("ci_low", "ci_high")
    return ci if isinstance(ci, dict) and all(_is_num(ci.get(k)) for k in keys) else None


def _mean_ci(results: dict[str, Any], key: str) -> tuple[float | None, dict[str, Any] | None]:
    value = (results.get("finetuned") or {}).get(key)
    ci = ((results.get("ci") or {}).get("finetuned") or {}).get(key)
    return (value if _is_num(value) else None), _interval(ci)


def headline_changes(root: Path, rev: str) -> list[dict[str, Any]]:
    """Per headline measure: before/after means (with their CIs) and the change with a verdict.

    Paired when both runs scored the same sentences: the mean change per sentence with a
    bootstrap interval over sentences. Otherwise (other test sets, or no per-sentence table)
    the verdict needs the two runs' own intervals of the mean not to overlap.
    """
    old, new = _results(root, rev), _results(root, None)
    pairs = sentence_pairs(root, rev)
    out = []
    for key, label, higher in HEADLINE:
        column = f"{key}_finetuned"
        a_mean, a_ci = _mean_ci(old, key)
        b_mean, b_ci = _mean_ci(new, key)
        paired = [(_value(a, column), _value(b, column)) for a, b in pairs.values()]
        paired = [(a, b) for a, b in paired if a is not None and b is not None]
        row: dict[str, Any] = {"key": key, "label": label, "higher_is_better": higher,
                               "before": a_mean, "after": b_mean, "before_ci": a_ci,
                               "after_ci": b_ci, "change": None, "verdict": "unresolved"}
        if len(paired) >= 2:
            change = paired_change([a for a, _ in paired], [b for _, b in paired])
            row.update(change=change, how="paired",
                       verdict=verdict(change["ci_low"], change["ci_high"], higher))
            if row["before"] is None:
                row["before"] = sum(a for a, _ in paired) / len(paired)
            if row["after"] is None:
                row["after"] = sum(b for _, b in paired) / len(paired)
        elif a_ci and b_ci:
            row["how"] = "intervals"
            if a_ci["ci_high"] < b_ci["ci_low"] or b_ci["ci_high"] < a_ci["ci_low"]:
                went_up = b_ci["ci_low"] > a_ci["ci_high"]
                row["verdict"] = "better" if went_up == higher else "worse"
        else:
            row["how"] = "none"
        if row["before"] is None and row["after"] is None:
            continue
        out.append(row)
    return out


def _with_ci(value: float | None, ci: dict[str, Any] | None) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" + (f" [{ci['ci_low']:.4g}, {ci['ci_high']:.4g}]" if ci else "")


def _headline_md(rows: list[dict[str, Any]], n_pairs: int) -> list[str]:
    lines = ["| measure | before [95% CI] | after [95% CI] | change [95% CI] | verdict |",
             "|---|---:|---:|---:|---|"]
    for r in rows:
        c = r["change"]
        change = (f"{c['mean']:+.4g} [{c['ci_low']:+.4g}, {c['ci_high']:+.4g}]" if c else
                  (f"{r['after'] - r['before']:+.4g}" if r["before"] is not None
                   and r["after"] is not None else "–"))
        arrow = "↑" if r["higher_is_better"] else "↓"
        lines.append(f"| {r['label']} {arrow} | {_with_ci(r['before'], r['before_ci'])} | "
                     f"{_with_ci(r['after'], r['after_ci'])} | {change} | "
                     f"**{r['verdict']}** |")
    hows = {r.get("how") for r in rows}
    lines.append("")
    if "paired" in hows:
        lines.append(
            f"Fine-tuned model, this change against the base revision. Both runs read the "
            f"same {n_pairs} test sentences, so the change is the mean over sentences of "
            f"(after − before) and its 95% interval a paired bootstrap over those sentences "
            f"({BOOTSTRAP_SAMPLES} resamples, seed {BOOTSTRAP_SEED}): pairing takes each "
            "sentence's difficulty out of the comparison. **better** / **worse**: the whole "
            "interval is on that side of 0; otherwise **unresolved** (the test sentences "
            "cannot tell). The interval does not include training-seed noise: confirm a small "
            "change with a second seed.")
    if "intervals" in hows:
        lines.append(
            "Rows without a paired interval: the runs share too few test sentences, so the "
            "verdict compares each run's own 95% interval of the mean and says better or worse "
            "only when the two do not overlap (conservative).")
    return lines


def _sentence_md(title: str, column: str, pairs: dict[str, tuple[dict[str, str],
                 dict[str, str]]], count: int = 5, digits: int = 3) -> list[str]:
    rows = []
    for uid, (a_row, b_row) in pairs.items():
        a, b = _value(a_row, column), _value(b_row, column)
        if a is not None and b is not None and b > a:
            rows.append((b - a, uid, a, b, b_row))
    rows.sort(key=lambda r: (-r[0], r[1]))
    lines = [f"### {title}", ""]
    if not rows:
        return [*lines, "None got worse (or no per-sentence table at both revisions).", ""]
    lines += ["| id | text | before | after | heard now (fine-tuned) |",
              "|---|---|---:|---:|---|"]
    lines += [f"| {uid} | {_fmt(row.get('text', ''))} | {a:.{digits}f} | {b:.{digits}f} | "
              f"{_fmt(row.get('asr_finetuned', ''))} |" for _, uid, a, b, row in rows[:count]]
    return [*lines, ""]


def compare_markdown(rev: str, root: Path = Path(".")) -> str:
    """The pull-request comment: the headline verdicts, the params diff, the sentences that got
    worse by CER and by MCD, and the full metrics diff collapsed."""
    if _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").returncode != 0:
        raise CompareError(f"report --compare: '{rev}' is not a commit in {root.resolve()}")
    pairs = sentence_pairs(root, rev)
    lines = [f"## habla: this change vs `{rev}`", "", "### Headline", ""]
    rows = headline_changes(root, rev)
    lines += _headline_md(rows, len(pairs)) if rows else [
        "No evaluation results (metrics/eval_details.json) at one of the two revisions."]
    lines += ["", "### Params", ""]
    params = params_diff(root, rev)
    if params:
        lines += ["| key | before | after |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(a)} | {_fmt(b)} |" for k, a, b in params]
    else:
        lines.append("No param changed.")
    lines.append("")
    lines += _sentence_md("Sentences that got worse: fine-tuned CER", "cer_finetuned", pairs)
    lines += _sentence_md("Sentences that got worse: fine-tuned MCD", "mcd_finetuned", pairs,
                          digits=2)
    metrics = metrics_diff(root, rev)
    lines += [f"<details><summary>All changed metrics ({len(metrics)})</summary>", ""]
    if metrics:
        lines += ["| file | metric | before | after | change |", "|---|---|---:|---:|---:|"]
        for name, key, a, b in metrics:
            change = f"{b - a:+.4g}" if _is_num(a) and _is_num(b) else ""
            lines.append(f"| {name} | {key} | {_fmt(a)} | {_fmt(b)} | {change} |")
    else:
        lines.append("No metric changed.")
    lines += ["", "</details>", ""]
    if pairs:
        lines += [f"<details><summary>Every test sentence ({len(pairs)})</summary>", "",
                  "| id | CER before | CER after | MCD before | MCD after |",
                  "|---|---:|---:|---:|---:|"]
        for uid, (a_row, b_row) in pairs.items():
            cells = [_value(r, c) for c in ("cer_finetuned", "mcd_finetuned")
                     for r in (a_row, b_row)]
            lines.append(f"| {uid} | " + " | ".join(_fmt(v) for v in
                                                     (cells[0], cells[1], cells[2], cells[3]))
                         + " |")
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def _section(results: dict[str, Any], *keys: str) -> dict[str, Any]:
    """results[keys[0]][keys[1]]...; {} where a level is missing or not an object."""
    for key in keys:
        results = results.get(key) if isinstance(results, dict) else None
    return results if isinstance(results, dict) else {}


def _figure(value: Any, spec: str = ".3f") -> str:
    """A number formatted with `spec`; anything else as its text (never a format error)."""
    return format(value, spec) if isinstance(value, int | float) else _fmt(value)


def headline(results: dict[str, Any]) -> list[str]:
    """Short lines with the main figures of an eval.json dict (sections that are not objects
    count as absent, an interval without numeric bounds is left out)."""
    out = []
    for key, label in (("cer", "CER"), ("wer", "WER"), ("mcd", "MCD (habla scale)"),
                       ("mcd_sptk", "MCD (SPTK, dB)"), ("spk_sim", "speaker similarity"),
                       ("dnsmos_ovrl", "DNSMOS OVRL")):
        base = _section(results, "base").get(key)
        ft = _section(results, "finetuned").get(key)
        if base is None or ft is None:
            continue
        line = f"{label}: base {_figure(base)} -> fine-tuned {_figure(ft)}"
        d = _interval(_section(results, "delta").get(key), "mean", "ci_low", "ci_high")
        if d:
            line += (f" (diff {d['mean']:+.3f}, 95% CI [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}],"
                     f" {d.get('better', '?')}/{d.get('n', '?')} better)")
        ref = _section(results, "reference").get(key)
        if ref is not None:
            line += f"; reference recordings {_figure(ref)}"
        ratio = _interval(_section(results, "vs_reference", "finetuned").get(key), "ratio",
                          "ci_low", "ci_high")
        if ratio:
            line += (f" (fine-tuned/reference {ratio['ratio']:.2f}, 95% CI "
                     f"[{ratio['ci_low']:.2f}, {ratio['ci_high']:.2f}])")
        out.append(line)
    return out


def summary_text(root: Path = Path(".")) -> str:
    """Where the report is and the headline figures (the end of `make demo`).
    CompareError naming metrics/eval_details.json when it is missing or unreadable."""
    path = root / EVAL_DETAILS
    if not path.exists():
        raise CompareError(f"{path}: no evaluation results yet (run `dvc repro evaluate`)")
    results = _checked(_json(_read(root, None, EVAL_DETAILS) or "", str(path), None),
                       str(path), None)
    lines = [f"Report: {(root / REPORT).resolve().as_uri()}",
             f"Test utterances: {results.get('n_utterances', '?')}", *headline(results)]
    return "\n".join(lines) + "\n"
