"""What several steps share, so that no step imports another: the prompts, the budget,
the grounding check, reading minion replies, the filter's toolkit (``outputs``), what
the aggregation reads (``aggregation``), the extractive answer, PII redaction
(``redaction``), and reaching the run's store and batches (``common``)."""
