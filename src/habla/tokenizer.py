"""The SentencePiece tokenizer: training it on label texts, loading it, and token <-> word maps.

In: label texts (and each label's word list). Out: `<folder>/spm.model` + `spm.vocab`, and for
training code the token ids of a text with, per token, the index of the word it belongs to
(None for spaces and punctuation between words) and of its first letter in that word, so word
and letter times can be carried onto tokens.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm

from habla.errors import HablaError

# Fixed special ids: the training code pads with 0 and may append </s>. No <s>: a TTS
# encoder gains nothing from a start token, and one fewer id to keep stable.
PAD_ID, UNK_ID, EOS_ID, BOS_ID = 0, 1, 2, -1
SPECIAL_PIECES = {"<pad>": PAD_ID, "<unk>": UNK_ID, "</s>": EOS_ID}
MODEL_FILE = "spm.model"
VOCAB_FILE = "spm.vocab"
# Case folding (nmt_nfkc_cf): case does not change Spanish pronunciation, and folding halves
# a char vocabulary so every letter gets twice the training examples.
NORMALIZATION = "nmt_nfkc_cf"
# For `char` the vocabulary is what the data needs: ask for far more than any alphabet and
# let SentencePiece stop at the characters it saw (hard_vocab_limit=false).
_CHAR_VOCAB_CEILING = 100_000

_WORD_CORE = re.compile(r"\w+(?:['’\-]\w+)*")


class TokenizerError(HablaError, ValueError):
    """A tokenizer that cannot be trained or loaded; the message says why and where."""


def train_tokenizer(
    texts: Iterable[str],
    model_type: str = "char",
    vocab_size: int = 64,
    character_coverage: float = 1.0,
) -> bytes:
    """Train on `texts` (in the given order) and return the serialised model.

    Deterministic: same texts in the same order give byte-identical bytes (one thread, no
    input sampling or shuffling, and no file paths recorded in the model).
    """
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise TokenizerError("no training text: every training label is empty")
    char = model_type == "char"
    out = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=out,
            model_type=model_type,
            vocab_size=_CHAR_VOCAB_CEILING if char else vocab_size,
            hard_vocab_limit=not char,
            character_coverage=character_coverage,
            normalization_rule_name=NORMALIZATION,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            num_threads=1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            max_sentence_length=1 << 16,
            minloglevel=2,
        )
    except RuntimeError as exc:
        msg = str(exc)
        hint = ""
        if "Vocabulary size too high" in msg:
            hint = " (lower tokenize.vocab_size, use model_type: char, or add more text)"
        raise TokenizerError(f"SentencePiece {model_type} training failed: {msg}{hint}") from None
    return out.getvalue()


def save_tokenizer(model: bytes, folder: str | Path) -> spm.SentencePieceProcessor:
    """Write `spm.model` and a `spm.vocab` (piece<TAB>score, one per id) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_FILE).write_bytes(model)
    sp = spm.SentencePieceProcessor(model_proto=model)
    vocab = "".join(
        f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size())
    )
    (folder / VOCAB_FILE).write_text(vocab, encoding="utf-8")
    return sp


def load_tokenizer(folder: str | Path) -> spm.SentencePieceProcessor:
    """The SentencePieceProcessor in `<folder>/spm.model`; checks the pad/unk/eos ids."""
    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise TokenizerError(f"{path}: no tokenizer model (run the tokenize stage)")
    sp = spm.SentencePieceProcessor()
    try:
        sp.load(str(path))
    except (OSError, RuntimeError) as exc:
        raise TokenizerError(f"{path}: not a SentencePiece model: {exc}") from None
    if (sp.pad_id(), sp.unk_id(), sp.eos_id()) != (PAD_ID, UNK_ID, EOS_ID):
        raise TokenizerError(
            f"{path}: special ids pad/unk/eos are {sp.pad_id()}/{sp.unk_id()}/{sp.eos_id()}, "
            f"expected {PAD_ID}/{UNK_ID}/{EOS_ID}"
        )
    return sp


def encode(sp: spm.SentencePieceProcessor, text: str, add_eos: bool = False) -> list[int]:
    """Token ids of `text` (with a final </s> when `add_eos`)."""
    ids = list(sp.encode(text))
    return [*ids, EOS_ID] if add_eos else ids


def _word_text(word: Any) -> str:
    return word if isinstance(word, str) else str(getattr(word, "word", None) or word["word"])


def _fold(text: str) -> str:
    # One char in, one char out (accent and case dropped), so indices stay valid in `text`.
    return "".join(unicodedata.normalize("NFKD", c)[:1].casefold()[:1] or c for c in text)


def word_spans(text: str, words: Sequence[Any]) -> list[tuple[int, int] | None]:
    """Character span in `text` of each word's letters (punctuation around it excluded).

    Words are found in order, case- and accent-insensitively; a word that cannot be found
    after the previous one gets None (its tokens then map to no word).
    """
    folded = _fold(text)
    spans: list[tuple[int, int] | None] = []
    cursor = 0
    for word in words:
        core = _WORD_CORE.search(_fold(_word_text(word)))
        if core is None:  # a "word" that is only punctuation
            spans.append(None)
            continue
        found = re.compile(rf"(?<!\w){re.escape(core.group(0))}(?!\w)").search(folded, cursor)
        if found is None:
            spans.append(None)
            continue
        spans.append((found.start(), found.end()))
        cursor = found.end()
    return spans


def token_words(
    sp: spm.SentencePieceProcessor, text: str, words: Sequence[Any]
) -> tuple[list[int], list[int | None]]:
    """Token ids of `text` and, per token, the index into `words` it belongs to.

    `words` are strings or {word, ...} items (manifest `Word`s). A token that overlaps a
    word's letters belongs to that word (the one it overlaps most); spaces, punctuation and
    the leading '▁' belong to None.
    """
    ids, owners, _letters = token_letters(sp, text, words)
    return ids, owners


def token_letters(
    sp: spm.SentencePieceProcessor, text: str, words: Sequence[Any]
) -> tuple[list[int], list[int | None], list[int | None]]:
    """`token_words` plus, per token, the index of its first letter among its word's letters
    (the `word_spans` characters; None for tokens of no word), so letter times can be
    carried onto tokens whatever the tokenizer's piece sizes."""
    spans = word_spans(text, words)
    # SentencePiece reports byte offsets into the UTF-8 text; convert the char spans.
    byte_at = [0]
    for c in text:
        byte_at.append(byte_at[-1] + len(c.encode("utf-8")))
    char_at = {b: i for i, b in enumerate(byte_at)}
    byte_spans = [(byte_at[s[0]], byte_at[s[1]]) if s else None for s in spans]
    proto = sp.encode(text, return_type="proto")
    ids: list[int] = []
    owners: list[int | None] = []
    letters: list[int | None] = []
    for piece in proto.pieces:
        ids.append(piece.id)
        best, best_overlap = None, 0
        for index, span in enumerate(byte_spans):
            if span is None:
                continue
            overlap = min(piece.end, span[1]) - max(piece.begin, span[0])
            if overlap > best_overlap:
                best, best_overlap = index, overlap
        owners.append(best)
        if best is None:
            letters.append(None)
        else:
            first_byte = max(piece.begin, byte_spans[best][0])
            # a piece may begin inside a multi-byte character: count from that character
            while first_byte not in char_at:
                first_byte -= 1
            letters.append(char_at[first_byte] - spans[best][0])
    return ids, owners, letters


def unknown_surfaces(sp: spm.SentencePieceProcessor, text: str) -> tuple[int, int, str]:
    """(tokens, unknown tokens, the characters those unknown tokens stand for) of `text`."""
    proto = sp.encode(text, return_type="proto")
    unk = [p.surface for p in proto.pieces if p.id == UNK_ID]
    return len(proto.pieces), len(unk), "".join(unk)
