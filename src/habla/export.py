"""habla's splits in LJSpeech layout, for tools that take their data that way (coqui's trainers,
the XTTS fine-tuning guides).

In: data/splits/{train,val,test}.jsonl (clips with label text). Out: `<out>/wavs/<id>.wav`
(16-bit PCM; a clip that already is one is copied byte for byte), `metadata.csv` (every clip)
and `metadata_<split>.csv` per split, each line `id|text|text` (LJSpeech's id, transcription,
normalised transcription; habla's label text is already what was said, so both are the same).
The folder is rebuilt whole and replaced at the end; an existing folder that is not an earlier
export is never overwritten. A clip without text, with an id that is not a plain file name, or
whose audio cannot be read is skipped, counted in the summary and listed in the folder's
`.habla-ljspeech.json`. Needs no torch.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import soundfile as sf

from habla import atomic, paths
from habla.audio import AudioError, read_mono, write_wav
from habla.errors import HablaError
from habla.manifest import read_manifest

SPLITS = ("train", "val", "test")
MARKER = ".habla-ljspeech.json"
# an id is the wav's file name and LJSpeech's first column: one plain name, no '|'
PLAIN_ID = re.compile(r"[\w.-]+")


class ExportError(HablaError, ValueError):
    """An export that cannot be written; the message names the folder or file."""


def _line(rid: str, text: str) -> str:
    # '|' separates the columns and a newline ends the line: neither may stay in the text
    clean = " ".join(text.replace("|", " ").split())
    return f"{rid}|{clean}|{clean}"


def _is_pcm16_wav(path: Path) -> bool:
    try:
        info = sf.info(str(path))
    except Exception:  # unreadable: read_mono reports it properly
        return False
    return info.format == "WAV" and info.subtype == "PCM_16" and info.channels == 1


def export_ljspeech(out: str | Path, splits_dir: str | Path = paths.SPLITS) -> dict[str, Any]:
    """Write the LJSpeech folder `out` from the split manifests in `splits_dir`."""
    out, splits_dir = Path(out), Path(splits_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder; choose a new folder")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ExportError(f"{out}: exists and is not an earlier habla LJSpeech export; choose "
                          "an empty or new folder")
    manifests = {s: splits_dir / f"{s}.jsonl" for s in SPLITS}
    if not any(p.is_file() for p in manifests.values()):
        raise ExportError(f"{splits_dir}: no train/val/test.jsonl (run the tokenize stage, or "
                          "`dvc repro tokenize`, first)")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "wavs").mkdir(parents=True)
    lines: dict[str, list[str]] = {}
    skipped: dict[str, int] = {"no_text": 0, "unreadable": 0, "bad_id": 0}
    why: list[dict[str, str]] = []  # every skipped clip, in the marker file
    seen: set[str] = set()

    def skip(rec_id: str, reason: str, detail: str) -> None:
        skipped[reason] += 1
        why.append({"id": rec_id, "reason": reason, "detail": detail})

    for split, manifest in manifests.items():
        if not manifest.is_file():
            continue
        lines[split] = []
        for rec in read_manifest(manifest):
            if not rec.text or not rec.text.strip():
                skip(rec.id, "no_text", f"{manifest}: no label text")
                continue
            if not PLAIN_ID.fullmatch(rec.id) or rec.id.strip(".") == "":
                skip(rec.id, "bad_id", f"{manifest}: not a plain file name (letters, digits, "
                     "'_', '-', '.')")
                continue
            if rec.id in seen:
                raise ExportError(f"{manifest}: clip id '{rec.id}' is in two splits")
            seen.add(rec.id)
            dest = tmp / "wavs" / f"{rec.id}.wav"
            source = Path(rec.audio)
            try:
                if _is_pcm16_wav(source):
                    shutil.copyfile(source, dest)
                else:
                    wave, rate = read_mono(source)
                    write_wav(dest, wave, rate)
            except (AudioError, OSError) as exc:
                skip(rec.id, "unreadable", f"{source}: {exc}")
                continue
            lines[split].append(_line(rec.id, rec.text))
    everything = [line for split in SPLITS for line in lines.get(split, [])]
    if not everything:
        shutil.rmtree(tmp)
        raise ExportError(f"{splits_dir}: no clip with label text to export ({skipped})")
    atomic.write_text(tmp / "metadata.csv", "\n".join(everything) + "\n")
    for split, rows in lines.items():
        atomic.write_text(tmp / f"metadata_{split}.csv", "\n".join(rows) + ("\n" if rows else ""))
    summary = {"clips": len(everything), **{split: len(rows) for split, rows in lines.items()},
               "skipped": skipped, "from": str(splits_dir)}
    atomic.write_text(tmp / MARKER, json.dumps({**summary, "skipped_clips": why}, indent=1,
                                               sort_keys=True, ensure_ascii=False))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return {"out": str(out), **summary}
