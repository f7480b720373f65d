"""ASR evaluation: the base and the fine-tuned Whisper transcribe the test split and are scored.

In: data/splits/test.jsonl (clips with reference texts and, from the synthetic source, the true
word times `truth_words`), `model.base` and models/merged/ct2 (both run by faster-whisper with
the same `asr.*` settings), params `asr.*`, `evaluate.*`. Out: metrics/eval.json (WER, CER and
word-start error per system, paired-bootstrap CIs of every fine-tuned − base difference),
metrics/eval_utterances.csv, reports/index.html with the clips in reports/audio/, and
reports/model_card.md (the merged model's card with these results, for `habla push`).
"""

from __future__ import annotations

import csv
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from habla import atomic, modelcard, paths, stats, text
from habla.asr import WHISPER_BASE, as_16k, load_model, transcribe_arrays
from habla.audio import AudioError, read_mono, write_wav
from habla.config import Params
from habla.crash import killpoint
from habla.errors import StageError
from habla.manifest import Record, Rejects, read_data_card, read_manifest, write_json
from habla.model_folder import has_info, load_info

log = logging.getLogger("habla.evaluate")

SYSTEMS = ("base", "finetuned")
CT2_DIR = "ct2"  # habla.families.whisper.CT2_DIR: the export inside a merged folder
WORSE_SHOWN = 5
CSV_COLUMNS = (
    "id", "speaker", "duration", "text", "wer_base", "wer_finetuned", "cer_base",
    "cer_finetuned", "start_mae_ms_base", "start_mae_ms_finetuned", "words_truth",
    "words_timed_base", "words_timed_finetuned", "hyp_base", "hyp_finetuned",
)
TIMING_METHOD = {
    "base": "cross-attention DTW of the reference text (faster-whisper/CTranslate2 alignment "
            "heads, habla.align.align_whisper: timestamps.method whisper)",
    "finetuned": "its own timestamp tokens, decoded with timestamps on (faster-whisper "
                 "without_timestamps=False): each segment's start goes to its first word",
}


def select(records: Sequence[Record], max_utterances: int | None, seed: int) -> list[Record]:
    """Every record, or `max_utterances` of them drawn with `seed`, in id order."""
    ordered = sorted(records, key=lambda r: r.id)
    if max_utterances is None or max_utterances >= len(ordered):
        return ordered
    keep = np.random.default_rng(seed).choice(len(ordered), max_utterances, replace=False)
    return [ordered[i] for i in sorted(keep)]


def _mae_ms(truth: list[tuple[str, float]], predicted: list[tuple[str, float | None]]
            ) -> tuple[float | None, int]:
    """Mean |start error| in ms over the truth words matched by text, and how many matched."""
    from habla.whisper_timing import word_start_error

    err = word_start_error([truth], [predicted])
    return (None if err.matched == 0 else err.mae_ms), err.matched


def score_utterance(row: dict[str, Any], record: Record, hyps: dict[str, str],
                    timed: dict[str, list[tuple[str, float | None]]] | None) -> dict[str, Any]:
    """WER/CER of each hypothesis against the reference; word-start error where the record
    knows its true word times."""
    ref = record.text or ""
    for system in SYSTEMS:
        row[f"hyp_{system}"] = hyps[system]
        row[f"wer_{system}"] = text.wer(ref, hyps[system])
        row[f"cer_{system}"] = text.cer(ref, hyps[system])
    truth = [(w.word, w.start) for w in record.truth_words or [] if w.start is not None]
    row["words_truth"] = len(truth)
    for system in SYSTEMS:
        mae, matched = _mae_ms(truth, timed[system]) if truth and timed else (None, 0)
        row[f"start_mae_ms_{system}"] = mae
        row[f"words_timed_{system}"] = matched
    return row


def _paired(rows: Sequence[dict[str, Any]], key: str, samples: int, seed: int
            ) -> dict[str, Any] | None:
    pairs = [(r[f"{key}_base"], r[f"{key}_finetuned"]) for r in rows
             if r[f"{key}_base"] is not None and r[f"{key}_finetuned"] is not None]
    if not pairs:
        return None
    base, tuned = zip(*pairs, strict=True)
    return stats.paired_bootstrap(base, tuned, samples=samples, seed=seed)


def _corpus(rows: Sequence[dict[str, Any]], system: str) -> dict[str, float]:
    """Corpus WER/CER: all errors over all reference words (characters), jiwer."""
    import jiwer

    refs = [text.normalize(r["text"]) for r in rows]
    hyps = [text.normalize(r[f"hyp_{system}"]) for r in rows]
    return {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps))}


def summarise(rows: Sequence[dict[str, Any]], timing: dict[str, Any], samples: int,
              seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for system in SYSTEMS:
        out[system] = {
            "wer": stats.mean([r[f"wer_{system}"] for r in rows]),
            "cer": stats.mean([r[f"cer_{system}"] for r in rows]),
            "corpus": _corpus(rows, system),
            "start_error_ms": timing.get(system),
        }
    out["delta"] = {key: _paired(rows, key, samples, seed)
                    for key in ("wer", "cer", "start_mae_ms")}
    out["ratio"] = {}  # fine-tuned / base, the same resampled utterances for both
    for key in ("wer", "cer"):
        base = [r[f"{key}_base"] for r in rows]
        out["ratio"][key] = stats.paired_ratio_bootstrap(
            base, [r[f"{key}_finetuned"] for r in rows], samples=samples, seed=seed
        ) if np.mean(base) > 0 else None
    return out


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """What `dvc metrics show` and `dvc exp show` list: one mean per column (CIs, corpus
    figures and the method are in metrics/eval_details.json)."""
    def start(system: str) -> float | None:
        timing = results[system].get("start_error_ms") or {}
        return timing.get("median_ms") if isinstance(timing, dict) else None

    return {"utterances": results["n_utterances"],
            **{system: {"wer": results[system]["wer"], "cer": results[system]["cer"],
                        "start_error_ms_median": start(system)} for system in SYSTEMS}}


def pooled_timing(truth: list[list[tuple[str, float]]],
                  predicted: dict[str, list[list[tuple[str, float | None]]]]
                  ) -> dict[str, Any]:
    """Word-start error over every truth word of every timed utterance, per system."""
    from dataclasses import asdict

    from habla.whisper_timing import word_start_error

    if not truth:
        return {}
    def clean(v: Any) -> Any:  # no NaN in metrics files: None where no word matched
        return (None if np.isnan(v) else round(v, 4)) if isinstance(v, float) else v

    return {system: {k: clean(v) for k, v in
                     asdict(word_start_error(truth, predicted[system])).items()}
            for system in SYSTEMS}


def write_utterances_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with atomic.atomic_target(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: round(v, 4) if isinstance(v, float) else v
                             for k, v in row.items()})


def _models(params: Params, workdir: Path) -> dict[str, Any]:
    """The base and the fine-tuned model as faster-whisper runs them (CTranslate2)."""
    from habla.whisper_ct2 import ct2_folder

    merged = paths.MERGED
    if not (merged / CT2_DIR / "model.bin").is_file():
        raise StageError(f"{merged / CT2_DIR}: no CTranslate2 export of the fine-tuned model "
                         "(run the merge stage first)")
    if has_info(merged) and load_info(merged).family != params.model.family:
        raise StageError(f"{merged} holds a {load_info(merged).family} model, but params say "
                         f"model.family {params.model.family}: rerun the pipeline")
    base_ct2 = ct2_folder(params.model.base, params.model.revision, workdir)
    return {"base": load_model(str(base_ct2), params.asr),
            "finetuned": load_model(str(merged / CT2_DIR), params.asr)}


def _decode_chunk(chunk: list[tuple[Record, np.ndarray, int]], models: dict[str, Any],
                  params: Params, timed: bool) -> list[tuple[dict[str, str], dict | None]]:
    """Transcripts (habla's transcribe decoding) and word starts for clips of one rate."""
    from habla.align import align_whisper
    from habla.whisper_timing import fw_word_starts

    asr = params.asr
    rate = chunk[0][2]
    waves = [w for _r, w, _sr in chunk]
    hyps = {s: [r["text"] for r in transcribe_arrays(models[s], waves, rate, asr)]
            for s in SYSTEMS}
    timings: list[dict | None] = [None] * len(chunk)
    if timed:
        refs = [r.text or "" for r, _w, _sr in chunk]
        base_words = align_whisper(models["base"], waves, rate, refs, asr.language,
                                   asr.batch_size)
        tokens = min(440, 3 * asr.max_new_tokens)  # a word costs ~2 timestamp tokens more
        for k, wave16 in enumerate(as_16k(waves, rate)):
            timings[k] = {
                "base": [(w.word, w.start if w.aligned else None) for w in base_words[k]],
                "finetuned": fw_word_starts(models["finetuned"], wave16, asr.language, tokens)}
    return [({s: hyps[s][k] for s in SYSTEMS}, timings[k]) for k in range(len(chunk))]


# the bundled offline base has no model card of its own to read the licence from
WHISPER_BASE_LICENCE = ("mit", "the base is OpenAI's Whisper base (habla's bundled offline "
                        "copy), whose weights are under the MIT licence "
                        "(https://github.com/openai/whisper).")


def _write_card(params: Params, results: dict[str, Any], data_card: dict[str, Any] | None
                ) -> None:
    """The merged model's card with these results (reports/model_card.md), what `habla push`
    uploads; models/merged itself belongs to the merge stage."""
    from habla.whisper_ct2 import whisper_folder

    if not has_info(paths.MERGED):
        return
    base = params.model.base
    modelcard.write_evaluated(
        paths.MODEL_CARD, paths.MERGED, whisper_folder(base, params.model.revision),
        load_info(paths.MERGED).model_dump(mode="json"), results, data_card,
        modelcard.hub_datasets(params.download.sources),
        WHISPER_BASE_LICENCE if base == WHISPER_BASE else None)


def evaluate_asr(params: Params) -> dict[str, Any]:
    """Transcribe, time and score the test split with both systems; write metrics and report."""
    from habla.report.asr import AsrSample, write_asr_report

    cfg = params.evaluate
    records = read_manifest(paths.TEST_SPLIT)
    if not records:
        raise StageError(f"{paths.TEST_SPLIT}: the test split is empty")
    chosen = select(records, cfg.max_utterances, params.seed)
    rejects = Rejects("evaluate")
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    audio: dict[str, str] = {}  # id -> clip, read again for the report's samples
    truth_all: list[list[tuple[str, float]]] = []
    pred_all: dict[str, list[list[tuple[str, float | None]]]] = {s: [] for s in SYSTEMS}
    with tempfile.TemporaryDirectory(prefix="habla-eval-") as tmp:
        models = _models(params, Path(tmp))
        chunk: list[tuple[Record, np.ndarray, int]] = []

        def flush() -> None:
            timed = all(r.truth_words for r, _w, _sr in chunk)
            try:
                decoded = _decode_chunk(chunk, models, params, timed)
            except Exception:  # find the clip that broke the chunk; the others go on
                decoded = []
                for item in chunk:
                    try:
                        decoded += _decode_chunk([item], models, params,
                                                 bool(item[0].truth_words))
                    except Exception as exc:
                        rejects.add(item[0].id, "internal_error", f"decoding failed: {exc!r}")
                        decoded.append(None)
            for (rec, wave, rate), result in zip(chunk, decoded, strict=True):
                if result is None:
                    continue
                hyps, timing = result
                row = {"id": rec.id, "speaker": rec.speaker, "text": rec.text,
                       "duration": len(wave) / rate}
                rows.append(score_utterance(row, rec, hyps, timing))
                if timing and row["words_truth"]:
                    truth_all.append([(w.word, w.start) for w in rec.truth_words or []
                                      if w.start is not None])
                    for s in SYSTEMS:
                        pred_all[s].append(timing[s])
                audio[rec.id] = rec.audio
            chunk.clear()
            killpoint("eval_chunk")
            log.info("scored %d/%d utterances", len(rows), len(chosen))

        for rec in chosen:
            if not (rec.text and text.normalize(rec.text)):
                rejects.add(rec.id, "no_text", "test clip without label text")
                continue
            try:
                wave, rate = read_mono(rec.audio)
            except AudioError as exc:
                rejects.add(rec.audio, exc.reason, exc.detail)
                continue
            if chunk and rate != chunk[0][2]:
                flush()
            chunk.append((rec, wave, rate))
            if len(chunk) >= max(2, params.asr.batch_size * 4):
                flush()
        if chunk:
            flush()
    if not rows:
        raise StageError(f"{paths.TEST_SPLIT}: no usable test utterance "
                         f"(rejects: {rejects.counts() or 'none'})")

    results = summarise(rows, pooled_timing(truth_all, pred_all), cfg.bootstrap_samples,
                        params.seed)
    results.update({
        "task": "asr",
        "n_utterances": len(rows),
        "n_timed": len(truth_all),
        "rejected": rejects.counts(),
        "speakers": sorted({r["speaker"] for r in rows}),
        "method": {
            "systems": {"base": params.model.base, "finetuned": str(paths.MERGED / CT2_DIR)},
            "decoding": {"runtime": "faster-whisper (CTranslate2), both systems alike",
                         "compute_type": params.asr.compute_type,
                         "language": params.asr.language, "beam_size": params.asr.beam_size,
                         "timestamps": "off (habla's transcribe decoding)",
                         "max_new_tokens": params.asr.max_new_tokens},
            "error_rates": "per-utterance WER/CER (jiwer) on habla.text.normalize'd text, "
                           "averaged over utterances; `corpus`: all errors / all reference "
                           "words",
            "word_starts": {**TIMING_METHOD, "truth": "the synthetic source's word events "
                            "(truth_words)", "matching": "truth and predicted words paired by "
                            "normalised text, in order (difflib); per utterance the mean "
                            "|error| of its matched words"},
            "delta": {"what": "fine-tuned − base per utterance, mean", "ci": "paired bootstrap "
                      "percentile interval", "samples": cfg.bootstrap_samples,
                      "seed": params.seed, "better": "utterances where fine-tuned is lower"},
            "ratio": "mean fine-tuned / mean base over the same resampled utterances",
            "subset": ("all test utterances" if cfg.max_utterances is None else
                       f"{cfg.max_utterances} drawn with seed {params.seed}"),
        },
    })
    write_json(paths.EVAL_JSON, headline(results))
    write_json(paths.EVAL_DETAILS, results)
    write_utterances_csv(paths.UTTERANCES_CSV, rows)
    report_dir = paths.REPORTS
    if report_dir.exists():
        shutil.rmtree(report_dir)
    (report_dir / "audio").mkdir(parents=True)
    rejects.write(report_dir / "rejects.jsonl")

    shown = rows[: cfg.samples_in_report]
    worse = sorted((r for r in rows if r["wer_finetuned"] > r["wer_base"]),
                   key=lambda r: (r["wer_base"] - r["wer_finetuned"], r["id"]))[:WORSE_SHOWN]
    samples = []
    for row in [*shown, *(r for r in worse if r not in shown)]:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in row["id"])
        wave, rate = read_mono(audio[row["id"]])
        write_wav(report_dir / "audio" / f"{safe}.wav", wave, rate)
        samples.append(AsrSample(row=row, audio=f"audio/{safe}.wav",
                                 worse=row in worse))
    card = read_data_card(paths.DATA_CARD)
    page = write_asr_report(report_dir, results, samples, card)
    log.info("report: %s", page.resolve().as_uri())
    _write_card(params, results, card)
    return {
        "utterances": len(rows),
        "wer_base": round(results["base"]["wer"], 4),
        "wer_finetuned": round(results["finetuned"]["wer"], 4),
        "cer_base": round(results["base"]["cer"], 4),
        "cer_finetuned": round(results["finetuned"]["cer"], 4),
        "report": str(report_dir / "index.html"),
        # how fast decoding ran depends on the machine: reported, never in the tracked metrics
        "seconds": round(time.perf_counter() - t_start, 1),
    }
