"""Word-level alignment of an ASR hypothesis against its reference text, to show the errors.

In: a reference text and a hypothesis (raw strings). Out: `align` pairs their words, normalised
as habla scores them (`habla.text.normalize`), along the same Levenshtein alignment jiwer's WER
counts (ok / sub / del / ins); `diff_html` writes the hypothesis as HTML with substitutions,
insertions and deletions marked (styled by `DIFF_CSS`). Used by the TTS and ASR reports alike.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from html import escape
from typing import Literal

import jiwer

from habla.text import normalize

Op = Literal["ok", "sub", "del", "ins"]

# The look of the marks: substitution amber (the word heard, the expected one on hover),
# insertion underlined blue, deletion struck-through red (the word that was not heard).
DIFF_CSS = """
.w-sub { background: #ffe2a8; border-radius: 2px; }
.w-ins { background: #d7e8ff; text-decoration: underline dotted; }
.w-del { color: #b00; text-decoration: line-through; }
"""


@dataclass(frozen=True)
class WordOp:
    """One step of the alignment: a word heard right, heard as another, missed or added."""

    op: Op
    ref: str | None  # the reference word (None for an insertion)
    hyp: str | None  # the hypothesis word (None for a deletion)


def align(reference: str, hypothesis: str) -> list[WordOp]:
    """The normalised words of both texts, paired by jiwer's word alignment.

    The counts of sub + del + ins over the reference length are the WER that
    `habla.text.wer` reports for the same pair.
    """
    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    if not ref or not hyp:  # jiwer refuses empty sentences
        return [WordOp("del", w, None) for w in ref] + [WordOp("ins", None, w) for w in hyp]
    out: list[WordOp] = []
    for chunk in jiwer.process_words(" ".join(ref), " ".join(hyp)).alignments[0]:
        r = ref[chunk.ref_start_idx:chunk.ref_end_idx]
        h = hyp[chunk.hyp_start_idx:chunk.hyp_end_idx]
        if chunk.type == "equal":
            out += [WordOp("ok", a, b) for a, b in zip(r, h, strict=True)]
        elif chunk.type == "substitute":
            # Levenshtein substitutions pair words one to one; any surplus is an ins/del
            out += [WordOp("sub", a, b) for a, b in zip(r, h, strict=False)]
            out += [WordOp("del", a, None) for a in r[len(h):]]
            out += [WordOp("ins", None, b) for b in h[len(r):]]
        elif chunk.type == "delete":
            out += [WordOp("del", a, None) for a in r]
        else:
            out += [WordOp("ins", None, b) for b in h]
    return out


def counts(ops: list[WordOp]) -> dict[str, int]:
    """{'ok': n, 'sub': n, 'del': n, 'ins': n} of an alignment."""
    got = Counter(o.op for o in ops)
    return {k: got.get(k, 0) for k in ("ok", "sub", "del", "ins")}


def diff_html(reference: str, hypothesis: str) -> str:
    """The hypothesis as HTML: correct words plain, errors marked (see DIFF_CSS); the words
    it missed appear struck through where they belong."""
    parts = []
    for o in align(reference, hypothesis):
        if o.op == "ok":
            parts.append(escape(o.hyp or ""))
        elif o.op == "sub":
            parts.append(f'<span class="w-sub" title="expected: {escape(o.ref or "")}">'
                         f'{escape(o.hyp or "")}</span>')
        elif o.op == "ins":
            parts.append(f'<ins class="w-ins" title="not in the text">{escape(o.hyp or "")}'
                         '</ins>')
        else:
            parts.append(f'<del class="w-del" title="not heard">{escape(o.ref or "")}</del>')
    return " ".join(parts) if parts else '<span class="w-empty">(nothing)</span>'
