"""Deterministic answer matching: whether a system's answer is right, by rules a
reader can check (no model involved).

- Text is normalised first: Unicode compatibility forms, case, punctuation (kept
  inside numbers: ``1,577.5``), the articles *a*, *an* and *the*, whitespace.
- ``contains``: the normalised answer contains one acceptable answer, on word
  boundaries ("Duluth" is in "the Duluth facility", "ort" is not in "report"); an
  expected answer that is an article ("A", a blood type) keeps the articles.
- ``exact``: the normalised answer is one acceptable answer (a trailing full stop
  or a leading "Yes," do not count as more).
- ``numeric``: a number in the answer equals the expected number at the precision
  the coarser of the two is written with (half a unit in its last digit: "72.7
  billion" = "$72,705 million" = "$72.7bn", and "79" matches 79.2, but 78.9 does
  not), or within the item's relative ``tolerance`` when it sets one; currency,
  thousands separators, scale words and percentages are understood. When one side
  states no scale ("$1577.00" in a dataset whose figures are in millions) the
  numbers are compared as written.
- ``all``: every part is contained (a part may list alternatives); the quote an
  answer rests on may hold parts, once the answer itself holds one.
- ``abstain``: the documents do not answer the question, and the answer says so
  ("the documents do not mention ...", "not stated", "no information").
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

from .suite import Answer, SuiteItem

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")  # 1,577 -> 1577
_PUNCT = re.compile(r"[^\w\s.%]|_")  # everything but letters, digits, points and %
_STRAY_POINT = re.compile(r"(?<!\d)\.|\.(?!\d)")  # a point that is not a decimal point


def normalize(text: str, articles: bool = False) -> str:
    """Lowercase, no punctuation (but numbers keep their point), no articles (unless
    ``articles``), single spaces."""
    text = unicodedata.normalize("NFKC", text).casefold().replace("\u2212", "-")
    text = _STRAY_POINT.sub(" ", _PUNCT.sub(" ", _DIGIT_COMMA.sub("", text))).replace("%", " percent ")
    if not articles:
        text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _pair(answer: str, expected: str) -> tuple[str, str]:
    """Both normalised; articles are kept when the expected answer is one ("A", a blood type)."""
    want = normalize(expected)
    keep = not want or (len(want.split()) == 1 and want != normalize(expected, articles=True))
    return (normalize(answer, keep), normalize(expected, keep)) if keep else (normalize(answer), want)


def contains(answer: str, expected: str) -> bool:
    got, want = _pair(answer, expected)
    return bool(want) and f" {want} " in f" {got} "


_LEADING_YES_NO = re.compile(r"^(yes|no)\b")


def exact(answer: str, expected: str) -> bool:
    got, want = _pair(answer, expected)
    if got == want:
        return True
    # "Yes, the report says so." is an exact "yes"; "No idea" and "No information" are not a "no"
    m = _LEADING_YES_NO.match(got)
    return want in ("yes", "no") and m is not None and m.group(1) == want and not abstains(answer)


# --- numbers ---------------------------------------------------------------------------

_SCALES = {
    "thousand": 1e3, "k": 1e3, "million": 1e6, "millions": 1e6, "mn": 1e6, "mm": 1e6, "m": 1e6,
    "billion": 1e9, "billions": 1e9, "bn": 1e9, "b": 1e9, "trillion": 1e12, "tn": 1e12,
}
# single letters only count as a scale right after a currency amount ($5m), never after
# a bare number (a manual's "5 m" is metres)
_LETTER_SCALES = {"k", "m", "b", "mm"}
_NUMBER = re.compile(
    r"(?:(?<![\w.])(?P<neg>[-\u2212]))?\s?(?P<cur>[$€£¥]|usd\s?|eur\s?)?\s?"
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?"
    r"(?:\s?(?P<pct>%|percent\b|per cent\b)|\s?(?P<scale>thousand|millions?|billions?|trillion|bn|mn|mm|tn|k|m|b)\b)?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Number:
    """A number as written (``mantissa``), its scale (1 when none was stated) and
    whether it was a percentage."""

    mantissa: float
    scale: float
    stated_scale: bool
    percent: bool
    unit: float = 1.0  # the mantissa's last stated digit: 0.1 for "79.2"
    digits: int = 1  # significant digits as written: 3 for "72.7", 5 for "72,705"

    @property
    def value(self) -> float:
        return self.mantissa * self.scale


def numbers(text: str) -> list[Number]:
    """Every number in a text, with its currency, scale and percent read."""
    found: list[Number] = []
    text = unicodedata.normalize("NFKC", text)
    for m in _NUMBER.finditer(text):
        mantissa = float(m.group("int").replace(",", "") + ("." + m.group("frac") if m.group("frac") else ""))
        if m.group("neg") in ("-", "\u2212"):
            mantissa = -mantissa
        scale_word = (m.group("scale") or "").lower()
        if scale_word in _LETTER_SCALES and not m.group("cur"):
            scale_word = ""
        scale = _SCALES.get(scale_word, 1.0)
        unit = 10.0 ** -len(m.group("frac") or "")
        digits = len((m.group("int").replace(",", "") + (m.group("frac") or "")).lstrip("0")) or 1
        found.append(Number(mantissa, scale, bool(scale_word), bool(m.group("pct")), unit, digits))
    return found


MIN_ROUNDED_DIGITS = 3  # an answer rounder than the expected number keeps this many significant digits


def _same(got: Number, target: Number, scaled: bool, tolerance: float | None) -> bool:
    a, b = (got.value, target.value) if scaled else (got.mantissa, target.mantissa)
    if tolerance is not None and math.isclose(a, b, rel_tol=tolerance):
        return True
    unit_a, unit_b = (got.unit * got.scale, target.unit * target.scale) if scaled else (got.unit, target.unit)
    if unit_a > unit_b * (1 + 1e-9) and got.digits < MIN_ROUNDED_DIGITS:
        return False  # "2" is not 1.94, "$3 billion" is not $3,066.0 million
    return abs(a - b) <= 0.5 * max(unit_a, unit_b) * (1 + 1e-9)


def numeric(answer: str, expected: str, tolerance: float | None = None) -> bool:
    wanted = numbers(expected)
    if not wanted:  # the expected answer is not a number: fall back to text
        return contains(answer, expected)
    target = wanted[0]
    for got in numbers(answer):
        if _same(got, target, True, tolerance):
            return True
        if got.stated_scale != target.stated_scale and _same(got, target, False, tolerance):
            return True
    return False


# --- saying the documents do not answer -------------------------------------------------

_REPORTING = (r"(?:say|says|mention|mentions|state|states|specify|specifies|provide|provides|contain|contains|include|"
              r"includes|give|gives|list|lists|disclose|discloses|report|reports|indicate|indicates|address|addresses|"
              r"describe|describes|discuss|discusses|document|documents|cover|covers|record|records|answer|answers|"
              r"identify|identifies|show|shows|name|names|reveal|reveals)")
_PARTICIPLES = (r"(?:found|mentioned|stated|specified|provided|given|included|available|listed|disclosed|reported|"
                r"addressed|described|discussed|documented|indicated|known|covered|recorded|identified|shown|named|"
                r"revealed|present)")
# normalised text (lowercase, no punctuation: "doesn't" is "doesn t")
_ABSTAIN = re.compile(
    r"\b(?:"
    rf"not\s+(?:\w+\s+){{0,2}}{_PARTICIPLES}|"  # not (explicitly) mentioned, not found in
    rf"(?:does|do|did)\s*(?:not|n t)\s+(?:\w+\s+){{0,3}}{_REPORTING}|"  # does not (appear to) say
    rf"(?:no|none|nothing)\s+(?:\w+\s+){{0,3}}(?:is|are|was|were|has been|have been)\s+(?:\w+\s+)?{_PARTICIPLES}|"
    rf"none\s+of\s+(?:\w+\s+){{0,3}}{_REPORTING}|"
    r"no\s+(?:\w+\s+)?(?:information|mention|data|record|records|details?|answer|indication|evidence|reference|passage)|"
    r"(?:cannot|can not|can t|could not|couldn t|unable\s+to)\s+(?:be\s+)?(?:\w+\s+)?"
    r"(?:determined?|found|find|answered|answer|identif\w*|tell|locate|located)|"
    r"unknown|no\s+idea|(?:do|does)\s*(?:not|n t)\s+know|not\s+(?:in|part\s+of)\s+(?:\w+\s+)?(?:document|documents|text|report|record|manual)|there\s+is\s+nothing"
    r")\b"
)


_BARE_ABSTENTIONS = frozenset({"none", "n a", "na", "null", "nil", "nothing", "no answer", "not found", "not available"})


def abstains(answer: str) -> bool:
    """The answer says the documents do not hold what was asked."""
    text = normalize(answer)
    return text in _BARE_ABSTENTIONS or bool(_ABSTAIN.search(text))


# --- one question ------------------------------------------------------------------------


def _alternatives(answer: Answer) -> list[str]:
    return [answer] if isinstance(answer, str) else list(answer)


_FIRST_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n")


def first_sentence(text: str) -> str:
    return _FIRST_SENTENCE.split(text.strip(), maxsplit=1)[0]


def is_correct(item: SuiteItem, answer: str | None, quote: str | None = None) -> bool | None:
    """The deterministic verdict: True or False, or None for an unscored question.

    ``quote`` is the passage an answer rests on (``FinalAnswer.quote``). It may
    complete an answer, never be it: for ``all``, parts may be found in the quote once
    one part is in the answer itself; every other match reads the answer alone. An
    answer that opens by saying the documents do not answer is wrong wherever they do."""
    if not item.scored:
        return None
    text = answer or ""
    if item.match == "abstain":
        return abstains(text)
    if not text.strip() or abstains(first_sentence(text)):
        return False
    if item.match == "all":
        parts = [_alternatives(part) for part in item.answers]
        in_answer = [any(contains(text, alt) for alt in part) for part in parts]
        in_quote = [bool(quote) and any(contains(quote or "", alt) for alt in part) for part in parts]
        return any(in_answer) and all(a or q for a, q in zip(in_answer, in_quote, strict=True))
    candidates = [a for a in item.answers if isinstance(a, str)]
    if item.match == "exact":
        return any(exact(text, a) for a in candidates)
    if item.match == "numeric":
        return any(numeric(text, a, item.tolerance) for a in candidates)
    return any(contains(text, a) for a in candidates)
