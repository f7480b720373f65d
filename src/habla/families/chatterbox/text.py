"""Text to Chatterbox's grapheme token ids, with the word each token belongs to.

In: a label text (and its manifest words), the folder's grapheme tokenizer JSON, a language
code. Out: ids wrapped in [START] ... [STOP] exactly as upstream's `MTLTokenizer` makes them
(numbers spelt out first: upstream leaves digits as they are), per token the index of its word
(None for the tag, spaces and punctuation), and the new-vocabulary path: symbols the tokenizer
lacks become new tokens, for languages the base model never saw.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

import habla.families.chatterbox.upstream as upstream
from habla.errors import HablaError
from habla.text import spell_digits
from habla.tokenizer import word_spans

SOT, EOT, UNK, SPACE = "[START]", "[STOP]", "[UNK]", "[SPACE]"
# upstream's MTLTokenizer runs extra converters (and their packages) for these languages;
# habla then encodes through it and cannot tell which word a token belongs to
CONVERTED_LANGUAGES = {"zh", "ja", "he", "ko", "ru"}
_PUNCTUATION = [("...", ", "), ("…", ", "), (":", ","), (" - ", ", "), (";", ", "), ("—", "-"),
                ("–", "-"), (" ,", ","), ("“", '"'), ("”", '"'), ("‘", "'"), ("’", "'")]
_ENDERS = {".", "!", "?", "-", ",", "、", "，", "。", "？", "！"}


def punc_norm(text: str) -> str:
    """Upstream's `punc_norm` (chatterbox.mtl_tts, which imports the watermarker): capital
    first letter, single spaces, rare punctuation replaced, a full stop when none ends it."""
    if not text:
        return text
    if text[0].islower():
        text = text[0].upper() + text[1:]
    text = " ".join(text.split())
    for old, new in _PUNCTUATION:
        text = text.replace(old, new)
    text = text.rstrip(" ")
    if not any(text.endswith(p) for p in _ENDERS):
        text += "."
    return text


def prepare(text: str) -> str:
    """The text Chatterbox reads: digits spelt out in Spanish, punctuation as upstream."""
    return punc_norm(" ".join(spell_digits(text).split()))


class GraphemeText:
    """A grapheme tokenizer JSON (`grapheme_mtl_merged_expanded_v1.json`) and a language."""

    def __init__(self, path: Path, language: str) -> None:
        from tokenizers import Tokenizer

        try:
            self.tok = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise HablaError(f"{path}: not a tokenizers JSON file: {exc}") from None
        vocab = self.tok.get_vocab()
        for special in (SOT, EOT):
            if special not in vocab:
                raise HablaError(f"{path}: the grapheme tokenizer has no {special} token")
        self.path = path
        self.language = language.lower()
        self.sot, self.eot = vocab[SOT], vocab[EOT]
        self.unk = vocab.get(UNK)

    def __len__(self) -> int:
        return int(self.tok.get_vocab_size(with_added_tokens=True))

    def _preprocess(self, text: str) -> tuple[str, list[int | None]]:
        """Upstream's lowercase + NFKD + `[lang]` + `[SPACE]`, and per output character the
        index of the input character it came from (None for the tag)."""
        out: list[str] = []
        origin: list[int | None] = []
        tag = f"[{self.language}]"
        out.append(tag)
        origin.extend([None] * len(tag))
        for i, ch in enumerate(text):
            piece = unicodedata.normalize("NFKD", ch.lower())
            piece = piece.replace(" ", SPACE)
            out.append(piece)
            origin.extend([i] * len(piece))
        return "".join(out), origin

    def encode(self, text: str, words: list[Any] | None = None
               ) -> tuple[list[int], list[int | None]]:
        """[START] ids [STOP] of `text` (already `prepare`d) and each token's word index."""
        if self.language in CONVERTED_LANGUAGES:
            mtl = upstream.module("models.tokenizers").MTLTokenizer(str(self.path))
            ids = list(mtl.encode(text, language_id=self.language))
            return [self.sot, *ids, self.eot], [None] * (len(ids) + 2)
        processed, origin = self._preprocess(text)
        whole = unicodedata.normalize("NFKD", text.lower())
        expected = self.tok.encode(f"[{self.language}]{whole}".replace(" ", SPACE)).ids
        encoding = self.tok.encode(processed)
        ids = list(encoding.ids)
        owners: list[int | None] = [None] * len(ids)
        if ids != list(expected):
            # per-character normalisation differed from the whole string's (rare): trust
            # upstream's ids, and give no word times to the tokens
            return [self.sot, *expected, self.eot], [None] * (len(expected) + 2)
        if words:
            spans = word_spans(text, words)
            for t, (start, end) in enumerate(encoding.offsets):
                chars = [origin[c] for c in range(start, end) if origin[c] is not None]
                for w, span in enumerate(spans):
                    if span and chars and span[0] <= chars[0] < span[1]:
                        owners[t] = w
                        break
        return [self.sot, *ids, self.eot], [None, *owners, None]

    def missing(self, symbols: list[str]) -> list[str]:
        """Characters of `symbols` (after upstream's lowercase + NFKD) the tokenizer maps to
        [UNK] or drops."""
        out: list[str] = []
        for symbol in symbols:
            for ch in unicodedata.normalize("NFKD", symbol.lower()):
                if ch.isspace() or ch in out:
                    continue
                ids = self.tok.encode(ch).ids
                if not ids or (self.unk is not None and self.unk in ids):
                    out.append(ch)
        return out

    def add(self, symbols: list[str]) -> list[int]:
        """New tokens for `symbols` (and the language tag when the tokenizer lacks it); their
        ids follow the existing ones. Returns the new ids."""
        from tokenizers import AddedToken

        before = len(self)
        tag = f"[{self.language}]"
        if self.tok.token_to_id(tag) is None:
            self.tok.add_special_tokens([AddedToken(tag, normalized=False)])
        self.tok.add_tokens([AddedToken(s, normalized=False) for s in symbols])
        return list(range(before, len(self)))

    def save(self, path: Path) -> None:
        self.tok.save(str(path))
