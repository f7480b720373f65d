"""The evaluate stage: the base and the merged model read the test split aloud, and are scored.

In: `data/splits/test.jsonl` (24 kHz reference clips with label text), `models/base`,
`models/merged`, params `asr.*`, `evaluate.*`, `model.speaker`. Out: `metrics/eval.json`
(means, paired-bootstrap differences, method), `metrics/eval_utterances.csv` (one row per
utterance), `reports/index.html` with `reports/audio/` (reference, base, fine-tuned) and
`reports/model_card.md` (the merged model's card with these results, for `habla push`).
"""

from __future__ import annotations

import csv
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from habla import (
    atomic,
    distributed,
    dnsmos,
    mcd,
    mcd_sptk,
    modelcard,
    paths,
    progress,
    speaker_similarity,
    stats,
    text,
)
from habla.audio import AudioError, read_mono, write_wav
from habla.config import Params
from habla.crash import killpoint
from habla.errors import StageError
from habla.manifest import Record, Rejects, read_data_card, read_manifest, write_json
from habla.model_folder import has_info, load_info
from habla.report import compare, provenance
from habla.report.html import Sample, Spectrogram, training_curves, write_report

log = logging.getLogger("habla.evaluate")
# train.processes > 1: habla.runner starts this stage under `accelerate launch`, and the
# processes share the test sentences (synthesis and scoring)
DISTRIBUTED = True

TEST_SPLIT = paths.TEST_SPLIT
MERGED_MODEL = paths.MERGED
EVAL_JSON = paths.EVAL_JSON
EVAL_DETAILS = paths.EVAL_DETAILS
UTTERANCES_CSV = paths.UTTERANCES_CSV
REPORT_DIR = paths.REPORTS
DATA_CARD = paths.DATA_CARD
WORSE_SHOWN = 5
SYSTEMS = ("base", "finetuned")


class Synthesizer(Protocol):
    """What `habla.families.load_synthesizer` returns (the cross-module contract)."""

    sample_rate: int
    family: str
    vocoder_name: str

    def synthesize(self, text: str, speaker: str | None = None) -> tuple[np.ndarray, int]: ...


# (waves, sample_rate) -> one transcript per wave
Transcriber = Callable[[list[np.ndarray], int], list[str]]


class VoiceScorer(Protocol):
    """Speaker embeddings and MOS estimates of waveforms (see WheelVoiceScorer)."""

    def embed(self, waves: list[np.ndarray], sample_rate: int) -> np.ndarray: ...

    def mos(self, waves: list[np.ndarray], sample_rate: int) -> list[dict[str, float]]: ...


class WheelVoiceScorer:
    """GE2E speaker embeddings (resemblyzer's pretrained encoder) and DNSMOS P.835/P.808
    (speechmos's ONNX models), both run by habla's own code from the weights in the wheels."""

    def __init__(self) -> None:
        self._encoder = speaker_similarity.load_encoder()
        self._dnsmos = dnsmos.Dnsmos()

    def embed(self, waves: list[np.ndarray], sample_rate: int) -> np.ndarray:
        try:
            return speaker_similarity.embed(self._encoder, waves, sample_rate)
        except ValueError:  # a silent clip has no voice: a zero vector, similarity 0
            out = np.zeros((len(waves), 256), dtype=np.float32)
            for i, wave in enumerate(waves):
                try:
                    out[i] = speaker_similarity.embed(self._encoder, [wave], sample_rate)[0]
                except ValueError:
                    pass
            return out

    def mos(self, waves: list[np.ndarray], sample_rate: int) -> list[dict[str, float]]:
        return self._dnsmos.score_batch(waves, sample_rate)


# per-utterance measures: name -> True when higher is better
MEASURES = {"mcd": False, "mcd_sptk": False, "cer": False, "wer": False, "spk_sim": True,
            "spk_utt": True, "dnsmos_ovrl": True, "dnsmos_sig": True, "dnsmos_bak": True,
            "dnsmos_p808": True}
REFERENCE_MEASURES = ("cer", "wer", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808")
# what metrics/eval.json (the DVC metric) keeps: the rest is in metrics/eval_details.json
HEADLINE = {"base": ("cer", "wer", "mcd", "mcd_sptk", "spk_sim", "dnsmos_ovrl"),
            "finetuned": ("cer", "wer", "mcd", "mcd_sptk", "spk_sim", "dnsmos_ovrl"),
            "reference": ("cer", "wer", "dnsmos_ovrl")}


@dataclass
class Utterance:
    record: Record
    ref_wave: np.ndarray
    waves: dict[str, np.ndarray]  # system -> waveform at its own rate
    rates: dict[str, int]
    row: dict[str, Any]
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # system -> GE2E vector


def select(records: Sequence[Record], max_utterances: int | None, seed: int) -> list[Record]:
    """A deterministic subset: every record, or `max_utterances` drawn with `seed`, by id."""
    ordered = sorted(records, key=lambda r: r.id)
    if max_utterances is None or max_utterances >= len(ordered):
        return ordered
    keep = np.random.default_rng(seed).choice(len(ordered), max_utterances, replace=False)
    return [ordered[i] for i in sorted(keep)]


def adapted_speaker(params: Params, records: Sequence[Record], model_dir: Path) -> str:
    """The voice the merged model was adapted to: params, else the model's default, else the
    test split's most frequent speaker."""
    if params.model.speaker:
        return params.model.speaker
    if has_info(model_dir):
        default = load_info(model_dir).default_speaker
        if default:
            return default
    return Counter(r.speaker for r in records).most_common(1)[0][0]


def _synthesize(synth: Synthesizer, sentence: str, speaker: str | None
                ) -> tuple[np.ndarray, int, float]:
    t0 = time.perf_counter()
    wave, sr = synth.synthesize(sentence, speaker=speaker)
    seconds = time.perf_counter() - t0
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    if not np.isfinite(wave).all():
        raise StageError(f"{synth.family}: synthesis of {sentence!r} produced NaN/inf samples")
    if wave.size == 0:
        # Scored as one frame of silence: a model that says nothing gets the (large) MCD and
        # CER of silence instead of silently dropping out of the paired comparison.
        wave = np.zeros(mcd.N_FFT, dtype=np.float32)
    return wave, int(sr), seconds


def _error_rates(ref_text: str, hyp: str) -> tuple[float, float]:
    return text.wer(ref_text, hyp), text.cer(ref_text, hyp)


def _score_chunk(chunk: list[Utterance], transcribe: Transcriber, voice: VoiceScorer,
                 order: int) -> None:
    """MCD (both scales), speaker embeddings, MOS estimates and ASR error rates for a chunk of
    utterances, written into their rows (embeddings into `utt.embeddings`)."""
    for utt in chunk:
        ref_sr = utt.record.sample_rate
        for system in SYSTEMS:
            utt.row[f"mcd_{system}"] = mcd.mcd(utt.waves[system], utt.rates[system],
                                              utt.ref_wave, ref_sr, order)
            utt.row[f"mcd_sptk_{system}"] = mcd_sptk.mcd(utt.waves[system], utt.rates[system],
                                                        utt.ref_wave, ref_sr, order)
    groups: dict[tuple[str, int], list[Utterance]] = {}
    for utt in chunk:
        groups.setdefault(("reference", utt.record.sample_rate), []).append(utt)
        for system in SYSTEMS:
            groups.setdefault((system, utt.rates[system]), []).append(utt)
    for (system, sr), utts in groups.items():
        waves = [u.ref_wave if system == "reference" else u.waves[system] for u in utts]
        hyps = transcribe(waves, sr)
        if len(hyps) != len(utts):
            raise StageError(f"ASR returned {len(hyps)} transcripts for {len(utts)} clips")
        for utt, hyp in zip(utts, hyps, strict=True):
            wer, cer = _error_rates(utt.record.text or "", hyp)
            utt.row[f"asr_{system}"] = hyp
            utt.row[f"wer_{system}"] = wer
            utt.row[f"cer_{system}"] = cer
        for utt, vector in zip(utts, voice.embed(waves, sr), strict=True):
            utt.embeddings[system] = np.asarray(vector, dtype=np.float64)
        for utt, scores in zip(utts, voice.mos(waves, sr), strict=True):
            for key in ("ovrl", "sig", "bak", "p808"):
                utt.row[f"dnsmos_{key}_{system}"] = float(scores[key])
    for utt in chunk:
        for system in SYSTEMS:
            utt.row[f"spk_utt_{system}"] = _cosine(utt.embeddings[system],
                                                   utt.embeddings["reference"])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def add_speaker_similarity(embeddings: dict[str, dict[str, np.ndarray]],
                           rows: list[dict[str, Any]]) -> None:
    """`spk_sim_<system>`: cosine of each synthesised utterance to the target speaker, i.e.
    the mean embedding of the speaker's other reference clips (leave-one-out, so a sentence
    never scores against its own recording)."""
    refs = {uid: e["reference"] for uid, e in embeddings.items()}
    total = np.sum(list(refs.values()), axis=0)
    for row in rows:
        others = (total - refs[row["id"]]) if len(refs) > 1 else total
        for system in SYSTEMS:
            row[f"spk_sim_{system}"] = _cosine(embeddings[row["id"]][system], others)


CSV_COLUMNS = (
    "id", "text", "speaker", "duration_reference", "duration_base", "duration_finetuned",
    "mcd_base", "mcd_finetuned", "mcd_sptk_base", "mcd_sptk_finetuned", "cer_base",
    "cer_finetuned", "cer_reference", "wer_base", "wer_finetuned", "wer_reference",
    "spk_sim_base", "spk_sim_finetuned", "spk_utt_base", "spk_utt_finetuned",
    "dnsmos_ovrl_reference", "dnsmos_ovrl_base", "dnsmos_ovrl_finetuned",
    "dnsmos_sig_reference", "dnsmos_sig_base", "dnsmos_sig_finetuned",
    "dnsmos_bak_reference", "dnsmos_bak_base", "dnsmos_bak_finetuned",
    "dnsmos_p808_reference", "dnsmos_p808_base", "dnsmos_p808_finetuned",
    "duration_ratio_base", "duration_ratio_finetuned", "asr_reference", "asr_base",
    "asr_finetuned",
)


def write_utterances_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with atomic.atomic_target(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: round(v, 4) if isinstance(v, float) else v
                             for k, v in row.items()})


def summarise(rows: Sequence[dict[str, Any]], samples: int, seed: int) -> dict[str, Any]:
    """Means per system (with bootstrap CIs), paired-bootstrap differences fine-tuned − base
    and each system's CER/WER as a ratio to the reference recordings'."""
    out: dict[str, Any] = {
        "reference": {m: stats.mean([r[f"{m}_reference"] for r in rows])
                      for m in REFERENCE_MEASURES},
    }
    for system in SYSTEMS:
        out[system] = {m: stats.mean([r[f"{m}_{system}"] for r in rows])
                       for m in (*MEASURES, "duration_ratio")}
    out["ci"] = {system: {m: stats.bootstrap_mean([r[f"{m}_{system}"] for r in rows],
                                                  samples=samples, seed=seed)
                          for m in (REFERENCE_MEASURES if system == "reference" else MEASURES)}
                 for system in ("reference", *SYSTEMS)}
    out["delta"] = {
        m: stats.paired_bootstrap([r[f"{m}_base"] for r in rows],
                                  [r[f"{m}_finetuned"] for r in rows], samples=samples,
                                  seed=seed, higher_is_better=higher)
        for m, higher in MEASURES.items()
    }
    # How close each system comes to the reference recordings under the same listener:
    # system / reference error rate on the same sentences (None when the floor is 0).
    out["vs_reference"] = {system: {} for system in SYSTEMS}
    for m in ("cer", "wer"):
        floor = [r[f"{m}_reference"] for r in rows]
        for system in SYSTEMS:
            out["vs_reference"][system][m] = stats.paired_ratio_bootstrap(
                floor, [r[f"{m}_{system}"] for r in rows], samples=samples, seed=seed,
            ) if np.mean(floor) > 0 else None
    return out


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """What `dvc metrics show` and `dvc exp show` list: the means that matter, one per
    column (CIs, the other measures and the method are in metrics/eval_details.json)."""
    return {"utterances": results["n_utterances"],
            **{system: {m: results[system][m] for m in keys}
               for system, keys in HEADLINE.items()}}


def _sample(utt: Utterance, audio: dict[str, str], note: str = "") -> Sample:
    r = utt.row
    waves = {"reference": (utt.ref_wave, utt.record.sample_rate),
             "base": (utt.waves["base"], utt.rates["base"]),
             "fine-tuned": (utt.waves["finetuned"], utt.rates["finetuned"])}
    figures = {
        "MCD base": f"{r['mcd_base']:.2f}", "MCD fine-tuned": f"{r['mcd_finetuned']:.2f}",
        "CER ref/base/fine-tuned": f"{r['cer_reference']:.2f} / {r['cer_base']:.2f} / "
                                   f"{r['cer_finetuned']:.2f}",
        "ASR fine-tuned": f"“{r['asr_finetuned']}”",
    }
    return Sample(id=r["id"], text=r["text"], audio=audio,
                  mels={k: Spectrogram.of_logmel(mcd.log_mel(w, sr), mcd.HOP_LENGTH
                                                 / mcd.SAMPLE_RATE, mcd.SAMPLE_RATE / 2)
                        for k, (w, sr) in waves.items()},
                  figures=figures, note=note)


def _write_audio(utt: Utterance, audio_dir: Path) -> dict[str, str]:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in utt.record.id)
    hrefs = {}
    for label, wave, sr in (("reference", utt.ref_wave, utt.record.sample_rate),
                            ("base", utt.waves["base"], utt.rates["base"]),
                            ("fine-tuned", utt.waves["finetuned"], utt.rates["finetuned"])):
        name = f"{safe}.{label}.wav"
        write_wav(audio_dir / name, wave, sr)
        hrefs[label] = f"{audio_dir.name}/{name}"
    return hrefs


def _worse(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows whose MCD rose most from base to fine-tuned (at most WORSE_SHOWN)."""
    rose = [r for r in rows if r["mcd_finetuned"] > r["mcd_base"]]
    return sorted(rose, key=lambda r: (r["mcd_base"] - r["mcd_finetuned"], r["id"]))[:WORSE_SHOWN]


def evaluate(params: Params, records: Sequence[Record], base: Synthesizer,
             finetuned: Synthesizer, transcribe: Transcriber, asr_name: str,
             speaker: str, voice: VoiceScorer) -> dict[str, Any]:
    """Synthesise, score, write metrics and the report; return the eval.json dict."""
    cfg = params.evaluate
    rejects = Rejects("evaluate")
    chosen = select(records, cfg.max_utterances, params.seed)
    # Scoring runs in chunks so memory stays bounded: between chunks only the waveforms the
    # report may still show are kept (the first samples, and the worst changes so far).
    chunk_size = max(2, params.asr.batch_size * 2)
    rows: list[dict[str, Any]] = []
    kept: dict[str, Utterance] = {}
    embeddings: dict[str, dict[str, np.ndarray]] = {}
    speakers = {"base": None, "finetuned": speaker}
    t_start = time.perf_counter()
    chunk: list[Utterance] = []

    def flush() -> None:
        try:
            _score_chunk(chunk, transcribe, voice, cfg.mcd_order)
            scored = list(chunk)
        except Exception:  # find the utterance that broke the chunk; the others go on
            scored = []
            for utt in chunk:
                try:
                    _score_chunk([utt], transcribe, voice, cfg.mcd_order)
                    scored.append(utt)
                except Exception as exc:
                    rejects.add(utt.record.id, "internal_error", f"scoring failed: {exc!r}")
        for utt in scored:
            rows.append(utt.row)
            kept[utt.record.id] = utt
            embeddings[utt.record.id] = utt.embeddings
        chunk.clear()
        killpoint("eval_chunk")
        wanted = {r["id"] for r in rows[: cfg.samples_in_report]}
        wanted |= {r["id"] for r in _worse(rows)}
        for uid in set(kept) - wanted:
            del kept[uid]

    # train.processes > 1: each process reads its share of the sentences (every world-th)
    for order, rec in progress.track(distributed.shard(list(enumerate(chosen))), "evaluate",
                                     unit="sentences", show=distributed.is_main()):
        if not (rec.text and text.normalize(rec.text)):
            rejects.add(rec.id, "no_text", "test clip without label text")
            continue
        try:
            ref_wave, ref_sr = read_mono(rec.audio)
        except AudioError as exc:
            rejects.add(rec.audio, exc.reason, exc.detail)
            continue
        rec = rec.model_copy(update={"sample_rate": ref_sr})
        waves, rates, row = {}, {}, {"id": rec.id, "text": rec.text, "speaker": rec.speaker,
                                     "duration_reference": len(ref_wave) / ref_sr,
                                     "_order": order}
        try:
            for system, synth in (("base", base), ("finetuned", finetuned)):
                wave, sr, seconds = _synthesize(synth, rec.text, speakers[system])
                waves[system], rates[system] = wave, sr
                duration = len(wave) / sr
                row[f"duration_{system}"] = duration
                row[f"rtf_{system}"] = seconds / duration
                row[f"duration_ratio_{system}"] = duration / row["duration_reference"]
        except StageError:
            raise  # NaN output: the model is broken, not this sentence
        except Exception as exc:  # one sentence never stops the others
            rejects.add(rec.id, "internal_error", f"synthesis failed: {exc!r}")
            continue
        chunk.append(Utterance(rec, ref_wave, waves, rates, row))
        if len(chunk) >= chunk_size:
            flush()
            log.info("scored %d/%d utterances", len(rows), len(chosen))
    if chunk:
        flush()
    if distributed.world_size() > 1:  # every process's sentences, then the main one goes on
        shares = distributed.gather([(rows, kept, embeddings, rejects.items)])
        if not distributed.is_main():
            return {}
        rows = sorted((r for share in shares for r in share[0]), key=lambda r: r["_order"])
        kept = {k: v for share in shares for k, v in share[1].items()}
        embeddings = {k: v for share in shares for k, v in share[2].items()}
        rejects.items = [r for share in shares for r in share[3]]
        wanted = {r["id"] for r in rows[: cfg.samples_in_report]} | {r["id"] for r in _worse(rows)}
        kept = {k: v for k, v in kept.items() if k in wanted}
    position = {key: i for i, rec in enumerate(chosen) for key in (rec.id, rec.audio)}
    rejects.items.sort(key=lambda r: (position.get(r.item, len(position)), r.item))
    if not rows:
        raise StageError(f"{TEST_SPLIT}: no usable test utterance "
                         f"(rejects: {rejects.counts() or 'none'})")

    add_speaker_similarity(embeddings, rows)
    results = summarise(rows, cfg.bootstrap_samples, params.seed)
    results.update({
        "n_utterances": len(rows),
        "rejected": rejects.counts(),
        "speaker": {"base": "(its default)", "finetuned": speaker},
        "vocoder": {"base": base.vocoder_name, "finetuned": finetuned.vocoder_name},
        "family": {"base": base.family, "finetuned": finetuned.family},
        "method": {
            "mcd": mcd.method(cfg.mcd_order),
            "mcd_sptk": mcd_sptk.method(cfg.mcd_order),
            "spk_sim": {**speaker_similarity.method(), "spk_sim": "cosine to the mean "
                        "embedding of the speaker's other test recordings (leave-one-out)",
                        "spk_utt": "cosine to the same sentence's recording"},
            "dnsmos": dnsmos.method(),
            "asr": {"model": asr_name, "language": params.asr.language,
                    "beam_size": params.asr.beam_size, "normaliser": "habla.text.normalize",
                    "error_rates": "per-utterance WER/CER (jiwer), averaged over utterances"},
            "delta": {"what": "fine-tuned − base per utterance, mean", "ci": "paired bootstrap "
                      "percentile interval", "samples": cfg.bootstrap_samples,
                      "seed": params.seed, "better": "utterances where fine-tuned is lower"},
            "subset": ("all test utterances" if cfg.max_utterances is None else
                       f"{cfg.max_utterances} drawn with seed {params.seed}"),
        },
    })
    write_json(EVAL_JSON, headline(results))
    write_json(EVAL_DETAILS, results)
    write_utterances_csv(UTTERANCES_CSV, rows)
    rejects.write(REPORT_DIR / "rejects.jsonl")

    # only the main process gets here: with train.processes > 1, every process removing the
    # old clips at the start raced (one's rmtree failed on what the other had just removed)
    audio_dir = REPORT_DIR / "audio"
    if audio_dir.exists():
        shutil.rmtree(audio_dir)
    worse = _worse(rows)
    shown = [r["id"] for r in rows[: cfg.samples_in_report]]
    samples = [_sample(kept[i], _write_audio(kept[i], audio_dir)) for i in shown]
    worse_samples = [
        _sample(kept[r["id"]], _write_audio(kept[r["id"]], audio_dir),
                note=f"MCD rose by {r['mcd_finetuned'] - r['mcd_base']:.2f}")
        for r in worse
    ]
    card = read_data_card(DATA_CARD)
    page = write_report(REPORT_DIR, results, samples, worse_samples, training_curves(Path(".")),
                        card, rows, provenance.collect(
                            Path("."), {"evaluate": time.perf_counter() - t_start}))
    log.info("report: %s", page.resolve().as_uri())
    _write_card(params, results, card, base)
    for line in compare.headline(results):
        log.info("%s", line)
    # how fast synthesis ran depends on the machine: reported, never in the tracked metrics
    timing = {"seconds": round(time.perf_counter() - t_start, 1),
              **{f"rtf_{s}": round(stats.mean([r[f"rtf_{s}"] for r in rows]), 4)
                 for s in SYSTEMS}}
    return {**results, "timing": timing}


def _write_card(params: Params, results: dict[str, Any], data_card: dict[str, Any] | None,
                base: Synthesizer) -> None:
    """The merged model's card with these results, for `habla push` (models/merged itself
    belongs to the merge stage)."""
    if not has_info(MERGED_MODEL):
        return
    modelcard.write_evaluated(paths.MODEL_CARD, MERGED_MODEL, getattr(base, "folder", None),
                              load_info(MERGED_MODEL).model_dump(mode="json"), results,
                              data_card, modelcard.hub_datasets(params.download.sources))


def _real_transcriber(params: Params) -> tuple[Transcriber, str]:
    from habla import asr

    model = asr.load_asr(params.asr)

    def transcribe(waves: list[np.ndarray], sample_rate: int) -> list[str]:
        return [r["text"] for r in asr.transcribe_arrays(model, waves, sample_rate, params.asr)]

    return transcribe, asr.model_id(params.asr.model)


def run(params: Params) -> dict[str, Any]:
    if params.model.task == "asr":  # a speech recogniser is scored by habla.evaluate_asr
        if not distributed.is_main():
            # train.processes > 1: the ASR evaluation runs whole in the main process (the
            # others would write the same report at the same time)
            return {}
        from habla.evaluate_asr import evaluate_asr

        return evaluate_asr(params)
    records = read_manifest(TEST_SPLIT)
    if not records:
        raise StageError(f"{TEST_SPLIT}: the test split is empty")
    base_model = params.model.base
    from habla.families import FAMILIES, load_synthesizer  # heavy (transformers)

    for folder in (Path(base_model), MERGED_MODEL):
        # a folder without habla.json is usable only in a family's own upstream layout
        if folder.is_dir() and not has_info(folder) \
                and not any(cls.recognizes(folder) for cls in FAMILIES.values()):
            raise StageError(f"{folder}: not a habla model folder (no habla.json)")
    if not MERGED_MODEL.is_dir():
        raise StageError(f"{MERGED_MODEL}: no merged model (run the merge stage first)")
    speaker = adapted_speaker(params, records, MERGED_MODEL)
    others = [r for r in records if r.speaker != speaker]
    if others:
        # MCD against another voice measures nothing: score only the adapted speaker's clips.
        log.info("skipping %d test clips of other speakers than %s", len(others), speaker)
        records = [r for r in records if r.speaker == speaker]
        if not records:
            raise StageError(f"{TEST_SPLIT}: no test clip of the adapted speaker '{speaker}'")

    iters = params.evaluate.griffin_lim_iters
    base = load_synthesizer(base_model, revision=params.model.revision, griffin_lim_iters=iters)
    finetuned = load_synthesizer(str(MERGED_MODEL), griffin_lim_iters=iters)
    transcribe, asr_name = _real_transcriber(params)
    results = evaluate(params, records, base, finetuned, transcribe, asr_name, speaker,
                       WheelVoiceScorer())
    if not distributed.is_main():
        return {}
    return {
        "utterances": results["n_utterances"],
        "mcd_base": round(results["base"]["mcd"], 3),
        "mcd_finetuned": round(results["finetuned"]["mcd"], 3),
        "cer_base": round(results["base"]["cer"], 4),
        "cer_finetuned": round(results["finetuned"]["cer"], 4),
        "cer_reference": round(results["reference"]["cer"], 4),
        "report": str(REPORT_DIR / "index.html"),
        **results["timing"],
    }

