"""Evaluation: suites of questions with checkable answers, deterministic matchers,
an optional LLM judge, the dataset loaders (FinanceBench, QASPER, LongHealth), and
the eval runner behind ``minionflow eval``."""
