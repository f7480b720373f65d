"""tokenize: split aligned clips into train/val/test by sentence text, train the tokenizer.

In: `data/labels/aligned.jsonl` and the upstream stage summaries. Out: `data/splits/{train,
val,test,rejects}.jsonl`, `models/tokenizer/` (spm.model, spm.vocab, spm_info.json,
README.md) and the data card `metrics/data.json`. An ASR family (whisper) keeps its own
tokenizer: it takes only the split from here, and the summary says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from collections import defaultdict
from pathlib import Path
from typing import Any

import sentencepiece as spm

from habla import atomic, paths
from habla import tokenizer as tok
from habla.config import Params
from habla.errors import StageError
from habla.manifest import Record, Rejects, read_manifest, sha256_file, write_json, write_manifest

log = logging.getLogger("habla.tokenize")

ALIGNED = paths.ALIGNED
SPLITS_DIR = paths.SPLITS
TOKENIZER_DIR = paths.TOKENIZER
DATA_CARD = paths.DATA_CARD
SPLITS = ("train", "val", "test")
# Upstream summaries folded into the data card; each may be missing or lack any key.
SUMMARIES = {
    "download": paths.RAW_SUMMARY,
    "segment": paths.CLIPS_SUMMARY,
    "transcribe": paths.TRANSCRIBE_SUMMARY,
    "timestamps": paths.TIMESTAMPS_SUMMARY,
}
INFO_FILE = "spm_info.json"  # not tokenizer.json: that name is Hugging Face's fast tokenizer

# Summary keys that describe a run (time, cache use), not the data: left out of the card.
RUN_STATE = re.compile(r"(^|_)(seconds|rtf|stage|processed|reused|transcribed)$|cache")


# ---------------------------------------------------------------- splitting
def split_key(text: str) -> str:
    """The sentence identity used for splitting: case, accents, punctuation and spacing
    dropped, so 'Hola, ¿qué tal?' and 'hola que tal' can never land in two splits."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    letters = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.findall(r"\w+", letters))


def hash_score(seed: int, key: str) -> float:
    """A stable number in [0, 1) for (seed, key): adding clips never moves existing ones."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_text(
    keys: list[str], seed: int, val: float, test: float
) -> tuple[dict[str, str], int]:
    """Split of each distinct key; returns (key -> split, how many keys were moved so that
    no split asked for is empty on a tiny corpus)."""
    score = {k: hash_score(seed, k) for k in sorted(set(keys))}
    split = {
        k: "test" if s < test else "val" if s < test + val else "train" for k, s in score.items()
    }
    moved = 0
    for name, fraction in (("test", test), ("val", val)):
        train_keys = sorted((k for k, v in split.items() if v == "train"), key=score.get)
        if fraction > 0 and name not in split.values() and len(train_keys) > 1:
            # the lowest-scoring train text is the one nearest the held-out range
            split[train_keys[0]] = name
            moved += 1
    return split, moved


def split_by_speaker(
    durations: dict[str, float], seed: int, val: float, test: float
) -> dict[str, str]:
    """Whole speakers held out: speakers in hash order fill test, then val, by duration
    share (at least one speaker each); the rest train."""
    order = sorted(durations, key=lambda s: hash_score(seed, f"speaker\x00{s}"))
    needed = 1 + (test > 0) + (val > 0)
    if len(order) < needed:
        raise StageError(
            f"tokenize.by_speaker: true needs at least {needed} speakers to hold out whole "
            f"speakers for val/test; {ALIGNED} has {len(order)} ({', '.join(order)}). "
            "Set by_speaker: false or add speakers."
        )
    total = sum(durations.values()) or 1.0
    split: dict[str, str] = {}
    queue = list(order)
    # `reserve`: speakers that must stay in the queue for the splits still to fill
    for name, fraction, reserve in (("test", test, 1 + (val > 0)), ("val", val, 1)):
        share = 0.0
        while fraction > 0 and len(queue) > reserve and share < fraction:
            speaker = queue.pop(0)
            split[speaker] = name
            share += durations[speaker] / total
    split.update({s: "train" for s in queue})
    return split


def assign_splits(
    records: list[Record], seed: int, val: float, test: float, by_speaker: bool
) -> tuple[dict[str, list[Record]], Rejects, int]:
    """Records per split (each with `split` set), the clips rejected, keys moved."""
    rejects = Rejects("tokenize")
    usable = []
    for rec in records:
        if not rec.text or not split_key(rec.text):
            rejects.add(rec.id, "no_text", "label text is empty or has no letters")
        else:
            usable.append(rec)
    keys = [split_key(r.text or "") for r in usable]
    moved = 0
    if by_speaker:
        durations: dict[str, float] = defaultdict(float)
        for rec in usable:
            durations[rec.speaker] += rec.duration
        by_spk = split_by_speaker(dict(durations), seed, val, test)
        wanted = [by_spk[r.speaker] for r in usable]
        # a sentence spoken in a held-out split belongs there only: test > val > train
        owner: dict[str, str] = {}
        for key, name in zip(keys, wanted, strict=True):
            if SPLITS.index(name) >= SPLITS.index(owner.get(key, "train")):
                owner[key] = name
    else:
        owner, moved = split_by_text(keys, seed, val, test)
        wanted = [owner[k] for k in keys]
    out: dict[str, list[Record]] = {name: [] for name in SPLITS}
    for rec, key, name in zip(usable, keys, wanted, strict=True):
        if owner[key] != name:
            rejects.add(rec.id, "text_held_out",
                        f"sentence is in the {owner[key]} split; kept out of {name}")
            continue
        out[name].append(rec.model_copy(update={"split": name}))
    for recs in out.values():
        recs.sort(key=lambda r: r.id)  # outputs independent of the input's clip order
    return out, rejects, moved


# ---------------------------------------------------------------- data card
def _flatten(prefix: str, data: Any, out: dict[str, Any], depth: int = 2) -> None:
    """Numbers (and short strings) from an upstream summary, as flat `prefix_key` entries."""
    if isinstance(data, bool | int | float):
        out[prefix] = data
    elif isinstance(data, str) and len(data) <= 80:
        out[prefix] = data
    elif isinstance(data, dict) and depth > 0:
        for key, value in data.items():
            _flatten(f"{prefix}_{key}", value, out, depth - 1)


def upstream_card(summaries: dict[str, Path] = SUMMARIES) -> dict[str, Any]:
    """Flat figures from each upstream summary that exists and parses; never fails."""
    card: dict[str, Any] = {}
    for name, path in summaries.items():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable summary, left out of the data card: %s", path, exc)
            continue
        flat: dict[str, Any] = {}
        _flatten(name, data, flat)
        # the card must be the same on every rerun: run timings and cache use are not data
        card.update({k: v for k, v in flat.items() if not RUN_STATE.search(k)})
    return card


def coverage(sp: spm.SentencePieceProcessor, records: list[Record]) -> tuple[int, int, set[str]]:
    """(tokens, unknown tokens, characters the vocabulary lacks) over the records' texts."""
    tokens = unknown = 0
    missing: set[str] = set()
    for rec in records:
        n, n_unk, surfaces = tok.unknown_surfaces(sp, rec.text or "")
        tokens += n
        unknown += n_unk
        missing.update(c for c in surfaces if not c.isspace())
    return tokens, unknown, missing


def split_card(
    sp: spm.SentencePieceProcessor, splits: dict[str, list[Record]]
) -> dict[str, Any]:
    card: dict[str, Any] = {}
    oov: set[str] = set()
    unmatched = words = 0
    for name, recs in splits.items():
        tokens, unknown, missing = coverage(sp, recs)
        card[f"{name}_clips"] = len(recs)
        card[f"{name}_hours"] = round(sum(r.duration for r in recs) / 3600, 4)
        card[f"{name}_speakers"] = len({r.speaker for r in recs})
        card[f"{name}_sentences"] = len({split_key(r.text or "") for r in recs})
        card[f"{name}_tokens"] = tokens
        card[f"{name}_unk_rate"] = round(unknown / tokens, 6) if tokens else 0.0
        if name != "train":
            oov |= missing
        for rec in recs:
            if rec.words:
                spans = tok.word_spans(rec.text or "", rec.words)
                words += len(spans)
                unmatched += sum(s is None for s in spans)
    card["tokenizer_oov_chars"] = "".join(sorted(oov))
    card["tokenizer_oov_char_count"] = len(oov)
    # words whose letters are not found in the label text get no tokens (no duration)
    card["words_unmatched_rate"] = round(unmatched / words, 6) if words else 0.0
    return card


# ---------------------------------------------------------------- tokenizer files
def _write_tokenizer_docs(folder: Path, info: dict[str, Any]) -> None:
    write_json(folder / INFO_FILE, info)
    special = ", ".join(f"`{p}` = {i}" for p, i in tok.SPECIAL_PIECES.items())
    atomic.write_text(
        folder / "README.md",
        f"""# habla tokenizer

SentencePiece `{info['model_type']}` model, {info['vocab_size']} pieces, trained by the
`tokenize` stage on the {info['train_sentences']} training label texts of
`data/splits/train.jsonl` only (val/test texts never seen), one thread, no sampling:
the same texts give a byte-identical `spm.model`.

- Special ids (stable; training pads with 0): {special}; no `<s>`.
- Normalisation: `{info['normalization']}` (NFKC + case folding), applied by `spm.model`
  itself on encode.
- `character_coverage`: {info['character_coverage']}; requested `vocab_size`:
  {info['requested_vocab_size']} (for `char` the vocabulary is every character seen).
- `spm.vocab`: piece and score per id. Load with
  `habla.tokenizer.load_tokenizer(folder)` or `sentencepiece.SentencePieceProcessor(
  model_file="spm.model")`.
""",
    )


def run(params: Params) -> dict[str, Any]:
    cfg = params.tokenize
    duplicates = Rejects("tokenize")
    records = read_manifest(ALIGNED, duplicates)
    if not records:
        raise StageError(f"{ALIGNED}: no clips (did every clip get rejected upstream?)")
    splits, rejects, moved = assign_splits(
        records, params.seed, cfg.split.val, cfg.split.test, cfg.by_speaker
    )
    rejects.items[:0] = duplicates.items
    if not splits["train"]:
        raise StageError(f"{ALIGNED}: no clip left for training after the split")
    if moved:
        log.info("tiny corpus: %d sentence(s) moved from train so no split is empty", moved)

    SPLITS_DIR.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        write_manifest(SPLITS_DIR / f"{name}.jsonl", splits[name])
    rejects.write(SPLITS_DIR / "rejects.jsonl")

    # sorted, de-duplicated texts: the model depends on the set of texts, not clip order
    train_texts = sorted({r.text for r in splits["train"] if r.text})
    try:
        model = tok.train_tokenizer(
            train_texts, cfg.model_type, cfg.vocab_size, cfg.character_coverage
        )
    except tok.TokenizerError as exc:
        raise StageError(f"tokenize: {exc}") from None
    sp = tok.save_tokenizer(model, TOKENIZER_DIR)
    info = {
        "model_type": cfg.model_type,
        "vocab_size": sp.get_piece_size(),
        "requested_vocab_size": cfg.vocab_size,
        "character_coverage": cfg.character_coverage,
        "normalization": tok.NORMALIZATION,
        "special_ids": tok.SPECIAL_PIECES,
        "bos_id": tok.BOS_ID,
        "train_sentences": len(train_texts),
        "trained_on": str(SPLITS_DIR / "train.jsonl"),
        "train_manifest_sha256": sha256_file(SPLITS_DIR / "train.jsonl"),
        "model_sha256": hashlib.sha256(model).hexdigest(),
        "sentencepiece_version": spm.__version__,
        "seed": params.seed,
    }
    _write_tokenizer_docs(TOKENIZER_DIR, info)

    card = {
        **upstream_card(),
        **split_card(sp, splits),
        "tokenizer_vocab_size": sp.get_piece_size(),
        "tokenizer_model_type": cfg.model_type,
        "tokenize_rejected": len(rejects),
        **{f"tokenize_rejected_{reason}": n for reason, n in rejects.counts().items()},
        "tokenize_moved_sentences": moved,
    }
    unused = None
    if params.model.task == "asr":
        # the split is what an ASR family takes from this stage; it keeps its own tokenizer
        unused = (f"not used: model.family {params.model.family} keeps its own tokenizer, so "
                  f"this SentencePiece vocabulary does not apply (written for the data card)")
        card["tokenizer_used_by_model"] = False
    write_json(DATA_CARD, card)
    return {
        **{f"clips_{n}": len(splits[n]) for n in SPLITS},
        "rejected": rejects.counts(),
        "vocab_size": sp.get_piece_size(),
        "test_unk_rate": card["test_unk_rate"],
        **({"tokenizer": unused} if unused else {}),
    }
