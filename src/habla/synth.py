"""`habla synth`: sentences to wav files with a finished model folder (or a hub model).

In: one sentence, or several (a text file or stdin, one per line), a model folder or hub id
(models/merged, models/base, org/name), an optional speaker. Out: one 16-bit mono wav per
sentence at the model's sample rate (`out.wav` for one sentence; `out_001.wav`, `out_002.wav`,
... for a file). The text, the output folder and the model are checked before torch loads:
a missing folder is named with the fix, and a hub id that is neither cached nor reachable
fails within seconds. Every sentence is checked against the model's tokenizer before the
first is spoken: a character the model has no token for is refused, never skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from habla.errors import HablaError, StageError, describe
from habla.model_folder import looks_like_hub_id
from habla.text import normalize, spell_digits

HUB_TIMEOUT = 8.0  # seconds for the hub to answer whether a model exists
FIX = "run `dvc repro` to make models/merged, or pass --model models/base"
# About a minute of speech. Memory grows with the square of the length: 2,000 characters
# took 124 s of audio to say, 10,000 asked torch for 44 GB.
MAX_SENTENCE_CHARS = 1000


def read_sentences(text: str | None, source: str | Path | None,
                   stdin: Callable[[], str] | None = None) -> list[tuple[str, str]]:
    """The sentences to speak, each with where it came from: `text` ('the sentence'), or one
    per non-empty line of `source` ('-': stdin; '<file>, line N'). Every sentence is checked
    before any model loads (UTF-8, length, words), and every faulty one is named at once."""
    if (text is None) == (source is None):
        raise StageError("synth: give a sentence or --file (one sentence per line; - for "
                         "stdin), not both")
    if text is not None:
        lines, where = [text], "the sentence"
    elif str(source) == "-":
        import sys

        try:
            lines = (stdin or sys.stdin.read)().splitlines()
        except UnicodeDecodeError:  # a strict UTF-8 locale; others give surrogates (below)
            raise StageError("synth: stdin is not UTF-8 text") from None
        where = "stdin"
    else:
        path = Path(source)  # type: ignore[arg-type]
        if not path.is_file():
            raise StageError(f"synth: {path} does not exist (give a text file with one "
                             "sentence per line)")
        try:
            lines = path.read_text("utf-8").splitlines()
        except UnicodeDecodeError:
            raise StageError(f"synth: {path} is not UTF-8 text") from None
        where = str(path)
    numbered = [(where if text is not None else f"{where}, line {n}", line.strip())
                for n, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        raise StageError(f"synth: {where} is empty: nothing to say")
    _refuse([f"{at} {fault}" for at, s in numbered if (fault := _fault(s))])
    return numbered


def _fault(sentence: str) -> str | None:
    """Why `sentence` cannot be spoken by any model, or None."""
    try:
        sentence.encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 arrive as lone surrogates
        return "is not UTF-8 (save the text as UTF-8)"
    if len(sentence) > MAX_SENTENCE_CHARS:
        return (f"({_quote(sentence)}) has {len(sentence):,} characters, more than the "
                f"{MAX_SENTENCE_CHARS:,} of one sentence: split it into shorter sentences, "
                "one per line of a --file")
    if not normalize(sentence):
        return f"({_quote(sentence)}) has no words to say"
    return None


def _quote(sentence: str, width: int = 40) -> str:
    """`sentence` quoted for a message, cut to `width` characters."""
    return repr(sentence if len(sentence) <= width else sentence[:width] + "…")


def _refuse(faults: list[str]) -> None:
    """One StageError naming every faulty sentence (the first few, and how many more)."""
    if faults:
        more = f"; and {len(faults) - 5} more" if len(faults) > 5 else ""
        raise StageError(f"synth: {'; '.join(faults[:5])}{more}")


def numbers_in_words(sentences: list[tuple[str, str]], unsayable: Callable[[str], str]
                     ) -> list[tuple[str, str]]:
    """Each sentence with its digit runs spelt out in Spanish words ("3" -> "tres",
    habla.text.spell_digits) when the model has no token for some digit in it (`unsayable`:
    the model's letters and digits it cannot say), as Chatterbox's guides do; others as is."""
    return [(at, spell_digits(sentence) if any(c.isdigit() for c in unsayable(sentence))
             else sentence) for at, sentence in sentences]


def check_sayable(sentences: list[tuple[str, str]], synthesizer: Any, model: str) -> None:
    """Refuse sentences with letters or digits the model has no token for (it would skip
    them silently: '你好' spoken as a click), and those with more text tokens than it reads
    at once; `synthesizer.unsayable` and `.text_budget` are its family's rules (SentencePiece,
    Chatterbox's graphemes, XTTS's BPE). The check is on the text the model gets (synthesis
    does not normalise). Here, not in the families, so that evaluate synthesises its test
    sentences as before."""
    faults = []
    for at, sentence in sentences:
        if missing := synthesizer.unsayable(sentence):
            fix = ("write numbers in words" if any(c.isdigit() for c in missing) else
                   "spell them with letters it knows, or use a model trained on them")
            faults.append(f"{at} ({_quote(sentence)}) has characters {model} cannot say: "
                          f"{missing} ({fix})")
            continue
        tokens, limit = synthesizer.text_budget(sentence)
        if limit is not None and tokens > limit:
            faults.append(f"{at} ({_quote(sentence)}) has {tokens} tokens, more than the "
                          f"{limit} {model} reads at once: split it into shorter sentences")
    _refuse(faults)


def outputs(out: str | Path, count: int, numbered: bool) -> list[Path]:
    """Where each sentence goes: `out` itself, or `<stem>_001<suffix>`, ... beside it."""
    out = Path(out)
    if out.suffix.lower() != ".wav":
        raise StageError(f"synth: {out}: the output must be a .wav file")
    if not out.parent.is_dir():
        raise StageError(f"synth: folder {out.parent} does not exist (create it, or choose "
                         "another -o)")
    width = max(3, len(str(count)))
    targets = [out.with_name(f"{out.stem}_{k:0{width}d}{out.suffix}")
               for k in range(1, count + 1)] if numbered else [out]
    folders = [t for t in targets if t.is_dir()]
    if folders:
        raise StageError(f"synth: {folders[0]} is a folder, not a wav file (choose another "
                         "-o)")
    return targets


def _check_hub(repo_id: str, revision: str | None = None) -> None:
    """Whether a hub model can be had: from the local cache without the network, else by
    asking the hub (HUB_TIMEOUT) that it exists. The download itself is left to the family
    that loads it (some fetch only the files they need)."""
    from huggingface_hub import HfApi, constants, snapshot_download

    try:
        snapshot_download(repo_id, revision=revision, local_files_only=True)
        return
    except Exception:  # not cached (any kind of miss): ask the hub
        pass
    if constants.HF_HUB_OFFLINE:
        raise StageError(f"synth: model '{repo_id}' is not a folder here and not in the local "
                         f"Hugging Face cache, and HF_HUB_OFFLINE is set ({FIX})")
    try:
        HfApi().model_info(repo_id, revision=revision, timeout=HUB_TIMEOUT)
    except Exception as exc:
        name = type(exc).__name__
        if "NotFound" in name:  # RepositoryNotFoundError, RevisionNotFoundError
            what = f"no model '{repo_id}'" + (f" at revision {revision}" if revision else "")
            raise StageError(f"synth: {what} on the hub ({constants.ENDPOINT}), and no folder "
                             f"{repo_id} here ({FIX})") from None
        raise StageError(f"synth: model '{repo_id}' is not a folder here, and the hub "
                         f"({constants.ENDPOINT}) could not be reached: {describe(exc)}. "
                         f"Connect and retry, or {FIX}") from None


def check_model(model: str | Path) -> str:
    """What to load (a folder, or a hub id known to exist), found before any heavy import; a
    clear error for a model that cannot be used (a hub id is looked up on the hub, briefly).
    Whether an existing folder is one habla can read (habla.json, or a family's own upstream
    layout) the family decides when it loads."""
    folder = Path(model)
    if folder.is_dir():
        return str(folder)
    # 'models/merged' before `dvc repro`: its parent folder is here, so it means a folder
    local = folder.exists() or folder.parent.is_dir() and folder.parent != Path(".")
    if local or not looks_like_hub_id(str(model)):
        what = "does not exist" if not folder.exists() else "is a file, not a model folder"
        raise StageError(f"synth: model folder {folder} {what} ({FIX})")
    _check_hub(str(model))
    return str(model)


def _load(model: str) -> Any:
    """The model's `Synthesizer`; a corrupt folder's error (bad JSON, truncated weights) in
    one line that names the folder."""
    from habla.families import load_synthesizer

    try:
        return load_synthesizer(model)
    except HablaError:
        raise  # already says what and where
    except Exception as exc:
        raise StageError(f"synth: cannot load {model}: {describe(exc)}") from None


def synth(text: str | None, model: str | Path, out: str | Path, speaker: str | None = None,
          source: str | Path | None = None) -> list[dict[str, object]]:
    """Speak `text` (or each line of `source`) with `model` into `out` (or numbered files
    beside it); one summary per file written."""
    sentences = read_sentences(text, source)
    targets = outputs(out, len(sentences), numbered=source is not None)
    to_load = check_model(model)
    # torch and transformers from here on; their weight-loading bars are noise for one wav
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as transformers_logging

    from habla.audio import write_wav

    transformers_logging.disable_progress_bar()  # also when transformers was loaded before

    synthesizer = _load(to_load)
    known = list(synthesizer.speakers)
    if speaker is not None and known and speaker not in known:
        raise StageError(f"synth: unknown speaker '{speaker}' for {model}; valid: "
                         f"{', '.join(known)}")
    sentences = numbers_in_words(sentences, synthesizer.unsayable)
    check_sayable(sentences, synthesizer, str(model))
    done = []
    for (_, sentence), target in zip(sentences, targets, strict=True):
        wave, sample_rate = synthesizer.synthesize(sentence, speaker)
        write_wav(target, wave, sample_rate)
        done.append({"out": str(target), "text": sentence,
                     "seconds": round(len(wave) / sample_rate, 3), "sample_rate": sample_rate,
                     "speaker": speaker or synthesizer.default_speaker,
                     "family": synthesizer.family, "vocoder": synthesizer.vocoder_name})
    return done
