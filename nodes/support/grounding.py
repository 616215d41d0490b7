"""Grounding: is a minion's output supported by the chunk it read?

Small local models answer confidently from chunks that do not hold the answer, and
quote sentences that are not there. Both are checked here, on the local side,
before anything is forwarded to the supervisor:

- the **citation** against the chunk: the best fuzzy alignment of the normalised
  quote inside the normalised chunk (RapidFuzz ``partial_ratio``, 0-100). A quote
  that is the chunk's own sentence grounds its answer (a capable model may
  paraphrase or compute from what it quotes); an invented one fails it; one of
  fewer than three content words verifies nothing and is not counted;
- the **answer's support**: the share of the answer's content words (stemmed, Snowball)
  found together in one passage of the chunk (a sentence, or two adjacent ones), and
  the same share for the words the answer adds to its task: support is the smaller.
  At least half of the numbers the answer states (the one, if it states one) must
  be in that passage: small models copy a sentence and change its figures.
  Words scattered over a chunk ("Freight Brokerage" here, "facility" there) are not
  support; the sentence that holds them is. An answer that only restates its task
  ("Northwind closed the facility in 2025") adds nothing to support, and is not
  forwarded (a "yes" or "no" is an answer, and rests on its quote).

The passage that best supports the answer becomes the output's **evidence**: the
verified quote as the chunk writes it, or else the supporting sentence found here.
It is what the supervisor reads, so what it reads is always document text.

These are checks of co-occurrence, not of entailment: a wrong name taken from the
right sentence passes. They catch what small models do most (answers from chunks
that do not hold them, invented quotes and figures), cheaply, on the local side.

The same word statistics rank outputs by their **relevance** to the question (the
IDF-weighted share of the question's words in the evidence), which orders what is
forwarded and drives the extractive fallback (``nodes.support.extractive``).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each either few for from further had has have
    having he her here hers him his how i if in into is it its itself just may me might more most must my no nor
    not now of off on once only or other our ours out over own per same she should so some such than that the
    their theirs them then there these they this those through to too under until up upon very via was we were
    what when where which while who whom whose why will with within without would yes you your yours""".split()
    # words about the exchange, not the content: "the text says", "the task is to find"
    + "answer answers document documents question task text passage chunk mention mentions mentioned".split()
)

_WORD = re.compile(r"[^\W_]+(?:\.[0-9]+)?")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")


def _fold(text: str) -> str:
    return text.casefold().replace("\u2019", "'").replace(",", "")


def words(text: str) -> list[str]:
    """Casefolded word tokens in any script (numbers keep their decimal point, lose
    thousands commas)."""
    return _WORD.findall(_fold(text))


_local = threading.local()


def _stemmer() -> Any:
    """This thread's Snowball stemmer. A stemmer keeps the word it is working on, so the
    map node's threads cannot share one: another thread's word cut it (an IndexError)."""
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        # rapidfuzz and snowballstemmer load when a reply is first grounded, not at every
        # CLI start (0.25 s together)
        import snowballstemmer

        stemmer = _local.stemmer = snowballstemmer.stemmer("english")
    return stemmer


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The Snowball (Porter 2) stem of a lowercase word ("closed", "closing" -> "close");
    numbers stay whole."""
    return word if word[0].isdigit() else str(_stemmer().stemWord(word))


def content_terms(text: str) -> list[str]:
    """The stems of a text's content words (no stopwords), in order, repeated."""
    return [stem(w) for w in words(text) if w not in STOPWORDS and (len(w) > 1 or w.isdigit())]


_ABBREVIATION = re.compile(r"(?:\b(?:dr|mr|mrs|ms|prof|st|sr|jr|no|vs|inc|co|corp|ltd|fig|approx|e\.g|i\.e|etc)|\b[a-z])\.$",
                           re.IGNORECASE)


def _breaks(text: str, pattern: re.Pattern[str]) -> list[int]:
    """Where ``pattern`` breaks the text, except after an abbreviation ("Dr.", "e.g.", an initial)."""
    return [m.start() for m in pattern.finditer(text) if m.start() > 0 and not _ABBREVIATION.search(text[: m.start()])]


def _split(text: str, pattern: re.Pattern[str]) -> list[str]:
    parts, last = [], 0
    for m in pattern.finditer(text):
        if m.start() > 0 and not _ABBREVIATION.search(text[: m.start()]):
            parts.append(text[last:m.start()])
            last = m.end()
    parts.append(text[last:])
    return parts


def sentences(text: str) -> list[str]:
    """A chunk split into sentences and lines (Markdown tables stay one row a sentence)."""
    return [s.strip() for s in _split(text, _SENTENCE_END) if s and s.strip()]


def normalize(text: str) -> str:
    return " ".join(words(text))


class Grounding(BaseModel):
    """How well one output is supported by its chunk (kept in the job's result)."""

    grounded: bool
    reason: str | None = None  # why not, when not grounded
    citation_score: float | None = None  # 0-100; None when the output quoted nothing
    answer_support: float = 0.0  # 0-1
    evidence: str | None = None  # the chunk passage that supports the answer
    # the answer cut to its supported part, when the rest of it is not supported (small
    # models state the answer, then ramble on: "..., which is a type of heparin")
    supported_answer: str | None = None


def citation_score(citation: str, chunk: str) -> float:
    """0-100: how well the quote aligns with some stretch of the chunk."""
    quote, text = normalize(citation), normalize(chunk)
    if not quote or not text:
        return 0.0
    from rapidfuzz import fuzz

    return float(fuzz.partial_ratio(quote, text))


def _passages(chunk: str) -> list[str]:
    """Sentences and pairs of adjacent sentences (an answer may span a sentence break)."""
    parts = sentences(chunk)
    return parts + [f"{a} {b}" for a, b in zip(parts, parts[1:], strict=False)]


def support(answer: str, chunk: str, task: str = "") -> tuple[float, str | None]:
    """How well the best passage of the chunk holds the answer, and that passage: the
    share of the answer's content terms (each counted once) the passage holds, or the
    share of the terms the answer adds to ``task``, whichever is smaller. Shorter
    passages win ties."""
    terms = set(content_terms(answer))
    if not terms:
        return 0.0, None
    new = terms - set(content_terms(task))
    figures = {t for t in terms if t[0].isdigit()}
    best, best_passage = 0.0, None
    for passage in _passages(chunk):
        held = set(content_terms(passage))
        if 2 * len(figures - held) > len(figures):
            continue  # numbers the passage does not state are not supported, however many words match
        share = len(terms & held) / len(terms)
        if new:
            share = min(share, len(new & held) / len(new))
        if share > best or (share == best and best_passage is not None and len(passage) < len(best_passage)):
            best, best_passage = share, passage
    return best, best_passage


_YES_NO = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def restates(answer: str, task: str) -> bool:
    """The answer adds no word to its task (and is not a yes or a no)."""
    return not (set(content_terms(answer)) - set(content_terms(task))) and not _YES_NO.match(answer)


def _quoted_passage(citation: str, chunk: str) -> str | None:
    """The sentence(s) of the chunk that a (fuzzily) verified quote comes from."""
    quote = set(content_terms(citation))
    if not quote:
        return None
    scored = [(len(quote & set(content_terms(p))) / len(quote), -len(p), p) for p in _passages(chunk)]
    share, _, passage = max(scored, default=(0.0, 0, None))
    return passage if share > 0 else None


# where an answer may be cut: after a sentence, before a relative or linking clause,
# before a parenthesis or a dash
_CLAUSE_BREAK = re.compile(
    r"(?<=[.!?;:])\s+|\s*,\s+(?=(?:which|who|whom|whose|where|while|but|and|as|because|although|though|so|with|"
    r"including|making|meaning|indicating)\b)|\s+\(|\s+[-\u2013\u2014]+\s+",
    re.IGNORECASE,
)


def prefixes(answer: str) -> list[str]:
    """The answer, then each shorter prefix of it that ends at a clause break."""
    cuts = _breaks(answer, _CLAUSE_BREAK)
    return [answer] + [answer[:cut].rstrip(" ,;:") for cut in reversed(cuts)]


def ground(answer: str, citation: str | None, chunk: str, task: str = "", *, min_citation_score: float,
           min_support: float) -> Grounding:
    """Check one output (its answer to ``task`` and its citation) against its chunk. An
    answer whose whole is not supported but whose leading clauses are is grounded as
    those clauses (``supported_answer``), even when its quote would ground it whole."""
    whole = _ground_one(answer, citation, chunk, task, min_citation_score, min_support)
    if whole.grounded and whole.answer_support >= min_support:
        return whole  # supported as it is
    if whole.citation_score is not None and whole.citation_score < min_citation_score:
        return whole  # its citation is not in the chunk: no cut mends that
    for part in prefixes(answer)[1:]:
        if task and restates(part, task):
            break
        grounding = _ground_one(part, citation, chunk, task, min_citation_score, min_support)
        if grounding.grounded and grounding.answer_support >= min_support:
            grounding.supported_answer = part
            return grounding
    return whole  # grounded by its quote alone, or not at all


MIN_QUOTE_TERMS = 3  # a shorter quote ("2019", "the CFO") aligns with almost any chunk: it verifies nothing


def _ground_one(answer: str, citation: str | None, chunk: str, task: str, min_citation_score: float,
                min_support: float) -> Grounding:
    quote = citation if citation and len(content_terms(citation)) >= MIN_QUOTE_TERMS else None
    score = citation_score(quote, chunk) if quote else None
    verified = score is not None and score >= min_citation_score
    quoted = _quoted_passage(quote, chunk) if quote and verified else None
    share, passage = support(answer, chunk, task)
    if task and restates(answer, task):
        return Grounding(grounded=False, reason="the answer only restates the task", citation_score=score,
                         answer_support=0.0, evidence=None)
    if score is not None and not verified:
        return Grounding(grounded=False, reason=f"the citation is not in the chunk (match {score:.0f}/100)",
                         citation_score=score, answer_support=round(share, 3), evidence=passage)
    if quoted is not None:
        # a quote that is the chunk's own sentence grounds the answer it comes with: a capable
        # model may paraphrase, compute or summarise what it quotes; the supervisor reads the quote
        evidence = passage if passage and share >= min_support and not _overlaps(answer, quoted) else quoted
        return Grounding(grounded=True, citation_score=score, answer_support=round(share, 3), evidence=evidence)
    if share < min_support:
        return Grounding(grounded=False, reason=f"the chunk does not support the answer (support {share:.2f})",
                         citation_score=score, answer_support=round(share, 3), evidence=passage)
    return Grounding(grounded=True, citation_score=score, answer_support=round(share, 3), evidence=passage)


def _overlaps(answer: str, passage: str) -> bool:
    terms = set(content_terms(answer))
    return bool(terms & set(content_terms(passage)))


# --- relevance to the question ------------------------------------------------------------


@lru_cache(maxsize=64)
def _question_terms(question: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(content_terms(question)))


def relevance(question: str, texts: Sequence[str]) -> list[float]:
    """For each text, the IDF-weighted share of the question's content terms it holds,
    with document frequencies taken over ``texts`` themselves (a word every candidate
    shares, like the company's name, tells them apart least). 0-1."""
    q = _question_terms(question)
    if not q or not texts:
        return [0.0] * len(texts)
    term_sets = [set(content_terms(t)) for t in texts]
    n = len(texts)
    weights = {t: math.log(1 + n / (0.5 + sum(t in s for s in term_sets))) for t in q}
    total = sum(weights.values())
    return [sum(w for t, w in weights.items() if t in s) / total for s in term_sets]


def agreement(answers: Iterable[str]) -> list[int]:
    """For each answer, how many of the others say the same thing (their content terms
    overlap by at least half of the shorter one's)."""
    sets = [set(content_terms(a)) for a in answers]
    counts = []
    for i, a in enumerate(sets):
        count = 0
        for j, b in enumerate(sets):
            if i != j and a and b and len(a & b) >= 0.5 * min(len(a), len(b)):
                count += 1
        counts.append(count)
    return counts
