"""The one text normaliser behind every WER/CER in habla, and the one definition of a word.

In: raw reference/hypothesis strings. Out: `normalize(text)` (NFC, digits spelt out, lowercase,
punctuation incl. ¿¡«» removed, whitespace collapsed; ñ á é í ó ú ü kept), `wer`/`cer` scored
by jiwer on normalised text, and `words(text)` (the word spans timestamps are given for).
"""

from __future__ import annotations

import re
import unicodedata

import jiwer

# A word: a run of letters/digits, with inner apostrophes or hyphens ("franco-alemán", "o'neill").
# The same pattern as the synthetic source's word events, so aligned words match its truth.
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")


_UNITS = ("cero uno dos tres cuatro cinco seis siete ocho nueve diez once doce trece catorce "
          "quince dieciséis diecisiete dieciocho diecinueve veinte veintiuno veintidós "
          "veintitrés veinticuatro veinticinco veintiséis veintisiete veintiocho "
          "veintinueve").split()
_TENS = "treinta cuarenta cincuenta sesenta setenta ochenta noventa".split()
_HUNDREDS = ("ciento doscientos trescientos cuatrocientos quinientos seiscientos setecientos "
             "ochocientos novecientos").split()
# A digit run, optionally grouped in thousands with '.' or a space: 7, 1990, 1.000, 25 000.
_NUMBER = re.compile(r"(?<![\d.,])\d{1,3}(?:[. ]\d{3})+(?![\d,]|\.\d)|\d+")


def _below_thousand(n: int) -> str:
    if n < 30:
        return _UNITS[n]
    if n < 100:
        tens, unit = divmod(n, 10)
        return _TENS[tens - 3] + (f" y {_UNITS[unit]}" if unit else "")
    if n == 100:
        return "cien"
    hundreds, rest = divmod(n, 100)
    return _HUNDREDS[hundreds - 1] + (f" {_below_thousand(rest)}" if rest else "")


def _apocope(words: str) -> str:
    # "uno" drops its last vowel before mil/millones: veintiún mil, un millón.
    return words[:-3] + ("ún" if words.endswith("veintiuno") else "un") \
        if words.endswith("uno") else words


def spell_number(n: int) -> str:
    """Spanish cardinal in words (masculine), 0 ≤ n < 10⁹: 1990 -> 'mil novecientos noventa'."""
    if not 0 <= n < 10**9:
        raise ValueError(f"spell_number handles 0..999999999, got {n}")
    millions, rest = divmod(n, 10**6)
    thousands, units = divmod(rest, 1000)
    parts = []
    if millions:
        parts.append("un millón" if millions == 1 else
                     f"{_apocope(_below_thousand(millions))} millones")
    if thousands:
        parts.append("mil" if thousands == 1 else f"{_apocope(_below_thousand(thousands))} mil")
    if units or not parts:
        parts.append(_below_thousand(units))
    return " ".join(parts)


def _value(m: re.Match) -> int | None:
    """The number a digit run writes, or None past 999 999 999 (left as digits). Checked on
    the digits before int(): a run of thousands of digits would exceed Python's int-parsing
    limit (ValueError) in a transcript line."""
    digits = re.sub(r"[. ]", "", m.group()).lstrip("0") or "0"
    return int(digits) if len(digits) <= 9 else None


def _spell_digits(text: str) -> str:
    def spell(m: re.Match) -> str:
        value = _value(m)
        return m.group() if value is None else f" {spell_number(value)} "

    return _NUMBER.sub(spell, text)


def spell_digits(text: str) -> str:
    """`text` with every digit run spelt out as a Spanish cardinal ("350" -> "trescientos
    cincuenta"), all else untouched: for TTS models that read digits badly (Chatterbox)."""
    def spell(m: re.Match) -> str:
        value = _value(m)
        if value is None:
            return m.group()
        before = " " if m.start() > 0 and text[m.start() - 1].isalnum() else ""
        after = " " if m.end() < len(text) and text[m.end()].isalnum() else ""
        return f"{before}{spell_number(value)}{after}"

    return _NUMBER.sub(spell, text)


def _keep(ch: str) -> bool:
    # Letters (L*), digits (N*) and combining marks (M*, in case NFC leaves any) make words;
    # everything else (punctuation, symbols, ¿¡«»—…) is a separator.
    return unicodedata.category(ch)[0] in "LNM"


def normalize(text: str) -> str:
    """NFC, digits spelt out, lowercase, punctuation/symbols to spaces, whitespace collapsed.

    "¿Qué tal?  «Muy bien», dijo." -> "qué tal muy bien dijo". Accents and ñ/ü are kept (they
    change the word in Spanish). Whisper writes numbers as digits and our references as words,
    so digit runs become masculine Spanish cardinals ("1990" -> "mil novecientos noventa",
    "1.000" -> "mil"); gender agreement ("veintiuna casas") and decimals are not attempted.
    """
    text = _spell_digits(unicodedata.normalize("NFC", text)).lower()
    text = "".join(ch if _keep(ch) else " " for ch in text)
    return " ".join(text.split())


def _score(measure, ref: str, hyp: str) -> float:
    ref_n, hyp_n = normalize(ref), normalize(hyp)
    if not ref_n:
        # Error rates are undefined for an empty reference (jiwer raises). We define them so
        # that silence read as silence is perfect and any text read into silence is a full
        # error. Stages reject empty references before scoring; this keeps callers total.
        return 0.0 if not hyp_n else 1.0
    return float(measure(ref_n, hyp_n))


def wer(ref: str, hyp: str) -> float:
    """Word error rate of `hyp` against `ref`, both normalised. Can exceed 1 (insertions).

    Empty normalised reference: 0.0 if the hypothesis is empty too, else 1.0.
    """
    return _score(jiwer.wer, ref, hyp)


def cer(ref: str, hyp: str) -> float:
    """Character error rate (spaces count as characters) on normalised text; empty: as `wer`."""
    return _score(jiwer.cer, ref, hyp)


def words(text: str) -> list[tuple[str, int, int]]:
    """The words of `text` (punctuation stripped) with [start, end) spans into its NFC form."""
    text = unicodedata.normalize("NFC", text)
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]
