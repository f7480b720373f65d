"""Spanish sentences composed from word lists and templates: `sentence(i)` for i = 0, 1, 2, ...

Index in, sentence out. Deterministic and distinct for distinct i below `capacity()` (over
10^6): i picks a template (i mod T), then a keyed permutation of i // T, decoded in mixed radix,
picks every slot, so neighbouring indices share no pattern. Nouns, adjectives, articles and numbers
agree in gender and number; verbs agree with their subject and with the time expression's tense.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TEXT_DIR = Path(__file__).parent / "text"


@dataclass(frozen=True)
class Noun:
    sg: str
    pl: str
    gender: str  # 'm' | 'f'

    def form(self, plural: bool) -> str:
        return self.pl if plural else self.sg


@dataclass(frozen=True)
class Adjective:
    forms: tuple[str, str, str, str]  # m sg, f sg, m pl, f pl

    def form(self, gender: str, plural: bool) -> str:
        return self.forms[(2 if plural else 0) + (1 if gender == "f" else 0)]


@dataclass(frozen=True)
class Verb:
    forms: tuple[str, str, str, str]  # 3sg present, 3pl present, 3sg preterite, 3pl preterite

    def form(self, plural: bool, past: bool) -> str:
        return self.forms[(2 if past else 0) + (1 if plural else 0)]


_ACUTE = str.maketrans("áéíóú", "aeiou")


def plural(word: str) -> str:
    """Regular Spanish plural: casa→casas, flor→flores, canción→canciones, feliz→felices."""
    if word[-1] in "aeiouáéó":
        return word + "s"
    if word.endswith("z"):
        return word[:-1] + "ces"
    vowels = [c for c in word if c in "aeiouáéíóú"]
    if word[-1] in "ns" and vowels and vowels[-1] in "áéíóú":
        # the stress mark of a final stressed syllable goes: canción → canciones
        head, _, tail = word.rpartition(vowels[-1])
        word = head + vowels[-1].translate(_ACUTE) + tail
    return word + "es"


def _lines(name: str) -> list[list[str]]:
    rows = []
    for line in (TEXT_DIR / name).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split())
    return rows


def _nouns(name: str) -> list[Noun]:
    out = []
    for row in _lines(name):
        sg, gender, *pl = row
        out.append(Noun(sg, pl[0] if pl else plural(sg), gender))
    return out


def _adjective(row: list[str]) -> Adjective:
    m = row[0]
    if len(row) == 2:
        f = row[1]
    elif m.endswith("o"):
        f = m[:-1] + "a"
    else:
        f = m  # alegre, azul, feliz: one form for both genders
    return Adjective((m, f, plural(m), plural(f)))


@dataclass(frozen=True)
class Lexicon:
    people: list[Noun]
    things: list[Noun]
    places: list[Noun]
    adjectives: list[Adjective]
    transitive: list[Verb]
    intransitive: list[Verb]
    names: list[str]
    times: list[tuple[bool, str]]  # (past tense?, phrase)


@cache
def lexicon() -> Lexicon:
    times = [(row[0] == "past", " ".join(row[1:])) for row in _lines("times.txt")]
    return Lexicon(
        people=_nouns("people.txt"),
        things=_nouns("things.txt"),
        places=_nouns("places.txt"),
        adjectives=[_adjective(r) for r in _lines("adjectives.txt")],
        transitive=[Verb(tuple(r)) for r in _lines("verbs_transitive.txt")],
        intransitive=[Verb(tuple(r)) for r in _lines("verbs_intransitive.txt")],
        names=[r[0] for r in _lines("names.txt")],
        times=times,
    )


# ---------------------------------------------------------------- numbers as words
_UNITS = ["", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve",
          "diez", "once", "doce", "trece", "catorce", "quince", "dieciséis", "diecisiete",
          "dieciocho", "diecinueve", "veinte", "veintiuno", "veintidós", "veintitrés",
          "veinticuatro", "veinticinco", "veintiséis", "veintisiete", "veintiocho",
          "veintinueve"]
_TENS = {3: "treinta", 4: "cuarenta", 5: "cincuenta", 6: "sesenta", 7: "setenta",
         8: "ochenta", 9: "noventa"}
_HUNDREDS = {2: "doscient", 3: "trescient", 4: "cuatrocient", 5: "quinient", 6: "seiscient",
             7: "setecient", 8: "ochocient", 9: "novecient"}


def number_words(n: int, gender: str = "m") -> str:
    """1..999 as words that agree with a following noun: veintiún libros, doscientas casas."""
    if not 1 <= n <= 999:
        raise ValueError(f"number_words handles 1..999, got {n}")
    parts = []
    hundreds, rest = divmod(n, 100)
    if hundreds == 1:
        parts.append("cien" if rest == 0 else "ciento")
    elif hundreds:
        parts.append(_HUNDREDS[hundreds] + ("as" if gender == "f" else "os"))
    if rest:
        if rest < 30:
            word = _UNITS[rest]
        else:
            tens, unit = divmod(rest, 10)
            word = _TENS[tens] + (f" y {_UNITS[unit]}" if unit else "")
        if word.endswith("uno"):  # before a noun: un libro, veintiún libros, treinta y una
            if gender == "f":
                word = word[:-3] + "una"
            else:
                word = "veintiún" if word == "veintiuno" else word[:-3] + "un"
        parts.append(word)
    return " ".join(parts)


# One-word numbers only, so a noun phrase is always three words long.
# (A short list, so numerals do not crowd out articles and demonstratives.)
_NUMBERS = [*range(2, 13), 15, 20, 21, 23, 30, 40, 50, 100, 200, 300, 500, 900]

# ---------------------------------------------------------------- phrases
_ARTICLES = {  # determiner: (m sg, f sg, m pl, f pl)
    "el": ("el", "la", "los", "las"),
    "un": ("un", "una", "unos", "unas"),
    "este": ("este", "esta", "estos", "estas"),
    "ese": ("ese", "esa", "esos", "esas"),
    "aquel": ("aquel", "aquella", "aquellos", "aquellas"),
    "mi": ("mi", "mi", "mis", "mis"),
    "su": ("su", "su", "sus", "sus"),
    "nuestro": ("nuestro", "nuestra", "nuestros", "nuestras"),
}
# Every (determiner, number) choice, then every numeral: one flat list, so decoding is 1:1.
_DETERMINERS: list[tuple[str, bool] | int] = [
    (d, p) for d in _ARTICLES for p in (False, True)
] + list(_NUMBERS)
_PLACE_DETERMINERS = ["el", "este", "aquel", "nuestro", "mi"]
_PREPOSITIONS = ["en", "cerca de", "junto a", "delante de", "detrás de", "lejos de"]


def _det(choice: tuple[str, bool] | int, noun: Noun) -> tuple[str, bool]:
    if isinstance(choice, int):
        return number_words(choice, noun.gender), True
    det, pl = choice
    return _ARTICLES[det][(2 if pl else 0) + (1 if noun.gender == "f" else 0)], pl


def _noun_phrase(det: int, noun: Noun, adj: Adjective) -> tuple[str, bool]:
    """'los niños altos', 'veintiuna manzanas rojas': text and whether it is plural."""
    word, pl = _det(_DETERMINERS[det], noun)
    return f"{word} {noun.form(pl)} {adj.form(noun.gender, pl)}", pl


def _place(prep: str, det: str, noun: Noun) -> str:
    article = _ARTICLES[det][1 if noun.gender == "f" else 0]
    phrase = f"{prep} {article} {noun.sg}"
    # Spanish contracts de + el and a + el.
    return phrase.replace(" de el ", " del ").replace(" a el ", " al ")


def _capitalise(text: str) -> str:
    for k, ch in enumerate(text):
        if ch.isalpha():
            return text[:k] + ch.upper() + text[k + 1:]
    return text


# ---------------------------------------------------------------- templates
@dataclass(frozen=True)
class _Template:
    sizes: tuple[int, ...]
    render: Callable[..., str]


def _templates() -> list[_Template]:
    lx = lexicon()
    n_det, n_adj = len(_DETERMINERS), len(lx.adjectives)
    n_place = len(_PREPOSITIONS) * len(_PLACE_DETERMINERS) * len(lx.places)

    def place(k: int) -> str:
        prep, rest = divmod(k, len(_PLACE_DETERMINERS) * len(lx.places))
        det, noun = divmod(rest, len(lx.places))
        return _place(_PREPOSITIONS[prep], _PLACE_DETERMINERS[det], lx.places[noun])

    def statement(sd, sn, sa, v, od, on, oa, p, t):
        subj, pl = _noun_phrase(sd, lx.people[sn], lx.adjectives[sa])
        obj, _ = _noun_phrase(od, lx.things[on], lx.adjectives[oa])
        past, when = lx.times[t]
        return _capitalise(f"{subj} {lx.transitive[v].form(pl, past)} {obj} {place(p)} {when}.")

    def where(v, sd, sn, sa, od, on, oa, t):
        subj, pl = _noun_phrase(sd, lx.people[sn], lx.adjectives[sa])
        obj, _ = _noun_phrase(od, lx.things[on], lx.adjectives[oa])
        past, when = lx.times[t]
        return f"¿Dónde {lx.transitive[v].form(pl, past)} {subj} {obj} {when}?"

    def how_beautiful(a, d, pl, n, name):
        noun = lx.things[n]
        article = _ARTICLES[["el", "este", "aquel"][d]][(2 if pl else 0) + (noun.gender == "f")]
        verb = "son" if pl else "es"
        adj = lx.adjectives[a].form(noun.gender, bool(pl))
        return f"¡Qué {adj} {verb} {article} {noun.form(bool(pl))} de {lx.names[name]}!"

    def says_that(name, sd, sn, sa, v, p, t):
        subj, pl = _noun_phrase(sd, lx.people[sn], lx.adjectives[sa])
        past, when = lx.times[t]
        verb = lx.intransitive[v].form(pl, past)
        return f"{lx.names[name]} dice que {subj} {verb} {place(p)} {when}."

    def why(v, name, od, on, oa, p, t):
        obj, _ = _noun_phrase(od, lx.things[on], lx.adjectives[oa])
        past, when = lx.times[t]
        verb = lx.transitive[v].form(False, past)
        return f"¿Por qué {verb} {lx.names[name]} {obj} {place(p)} {when}?"

    def how_many(on, oa, v, sd, sn, sa, t):
        noun = lx.things[on]
        many = "Cuántas" if noun.gender == "f" else "Cuántos"
        subj, pl = _noun_phrase(sd, lx.people[sn], lx.adjectives[sa])
        past, when = lx.times[t]
        adj = lx.adjectives[oa].form(noun.gender, True)
        verb = lx.transitive[v].form(pl, past)
        return f"¿{many} {noun.pl} {adj} {verb} {subj} {when}?"

    def look(sd, sn, sa, v, p):
        subj, pl = _noun_phrase(sd, lx.people[sn], lx.adjectives[sa])
        return f"¡Mira, {subj} {lx.intransitive[v].form(pl, False)} {place(p)}!"

    def two_actions(t, sd, sn, sa, v1, v2, p):
        subj, pl = _noun_phrase(sd, lx.people[sn], lx.adjectives[sa])
        past, when = lx.times[t]
        first = lx.intransitive[v1]
        # the second verb skips the first one's index, so the two always differ
        second = lx.intransitive[v2 + (v2 >= v1)]
        return (f"{_capitalise(when)}, {subj} {first.form(pl, past)} y "
                f"{second.form(pl, past)} {place(p)}.")

    n_people, n_things, n_names = len(lx.people), len(lx.things), len(lx.names)
    n_vt, n_vi, n_time = len(lx.transitive), len(lx.intransitive), len(lx.times)
    subject = (n_det, n_people, n_adj)
    obj = (n_det, n_things, n_adj)
    return [
        _Template((*subject, n_vt, *obj, n_place, n_time), statement),
        _Template((n_vt, *subject, *obj, n_time), where),
        _Template((n_adj, 3, 2, n_things, n_names), how_beautiful),
        _Template((n_names, *subject, n_vi, n_place, n_time), says_that),
        _Template((n_vt, n_names, *obj, n_place, n_time), why),
        _Template((n_things, n_adj, n_vt, *subject, n_time), how_many),
        _Template((*subject, n_vi, n_place), look),
        _Template((n_time, *subject, n_vi, n_vi - 1, n_place), two_actions),
    ]


def _mix(value: int, key: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread hash of (value, key)."""
    z = (value + key * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def _permute(x: int, total: int, key: int) -> int:
    """A keyed pseudo-random bijection of 0..total-1 (Feistel network + cycle walking).

    Neighbouring indices land far apart, so consecutive sentences share no slot by design.
    """
    half = max(1, (total - 1).bit_length() + 1) // 2
    mask = (1 << half) - 1
    while True:
        left, right = x >> half, x & mask
        for round_ in range(4):
            left, right = right, left ^ (_mix(right, key * 4 + round_) & mask)
        x = (left << half) | right
        if x < total:  # a permutation of 0..2^(2*half)-1 restricted by walking its cycles
            return x


@cache
def _compiled() -> list[tuple[_Template, int]]:
    return [(tpl, math.prod(tpl.sizes)) for tpl in _templates()]


def capacity() -> int:
    """How many distinct sentences `sentence` can enumerate."""
    compiled = _compiled()
    return len(compiled) * min(total for _, total in compiled)


def sentence(i: int) -> str:
    """The i-th sentence (i >= 0): deterministic, distinct for distinct i below capacity()."""
    if i < 0 or i >= capacity():
        raise ValueError(f"sentence index {i} outside 0..{capacity() - 1}")
    compiled = _compiled()
    t = i % len(compiled)
    tpl, total = compiled[t]
    j = _permute(i // len(compiled), total, key=t + 1)
    slots = []
    for size in reversed(tpl.sizes):
        j, k = divmod(j, size)
        slots.append(k)
    text = tpl.render(*reversed(slots))
    return unicodedata.normalize("NFC", text)
