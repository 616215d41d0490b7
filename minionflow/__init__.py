"""minionflow: local-remote LLM collaboration protocols as LangGraph graphs."""

__version__ = "0.2.0"
