"""Word alignment of ASR output against the reference text, as the reports highlight it."""

import pytest

from habla.report.worddiff import align, counts, diff_html
from habla.text import normalize, wer

PAIRS = [
    ("¿Dónde queda la estación de tren?", "donde queda la estación del tren"),
    ("uno dos tres cuatro", "uno tres cuatro cinco"),
    ("Cinco abuelas rápidas pierden las galletas.", "5 a muelas rápidas pierden galletas"),
    ("hola", "hola hola hola"),
    ("la casa", "el perro grande"),
]


@pytest.mark.parametrize(("ref", "hyp"), PAIRS)
def test_alignment_counts_give_the_wer_habla_reports(ref, hyp):
    c = counts(align(ref, hyp))
    n_ref = len(normalize(ref).split())
    assert c["ok"] + c["sub"] + c["del"] == n_ref
    assert c["ok"] + c["sub"] + c["ins"] == len(normalize(hyp).split())
    assert (c["sub"] + c["del"] + c["ins"]) / n_ref == pytest.approx(wer(ref, hyp))


def test_alignment_names_each_kind_of_error_in_place():
    ops = align("uno dos tres cuatro", "uno tres cuatro cinco")
    assert [(o.op, o.ref, o.hyp) for o in ops] == [
        ("ok", "uno", "uno"), ("del", "dos", None), ("ok", "tres", "tres"),
        ("ok", "cuatro", "cuatro"), ("ins", None, "cinco")]
    assert [o.op for o in align("ocho nueve", "noche nueve")] == ["sub", "ok"]


def test_diff_html_marks_errors_in_the_normalised_text():
    out = diff_html("Uno, dos, tres.", "¡uno <b>tres</b> cuatro!")  # markup is not text
    assert out == ('uno <span class="w-sub" title="expected: dos">b</span> tres '
                   '<ins class="w-ins" title="not in the text">b</ins> '
                   '<ins class="w-ins" title="not in the text">cuatro</ins>')
    assert '<del class="w-del" title="not heard">dos</del>' in diff_html("uno dos", "uno")
    sub = diff_html("ocho", "noche")
    assert 'class="w-sub" title="expected: ocho">noche<' in sub


def test_empty_sides_are_all_deletions_or_all_insertions():
    assert [o.op for o in align("hola mundo", "")] == ["del", "del"]
    assert [o.op for o in align("", "eh")] == ["ins"]
    assert "nothing" in diff_html("", "")
