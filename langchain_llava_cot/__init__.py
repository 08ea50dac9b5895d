"""LLaVA-CoT reasoning with stage-level beam search, for LangChain and LangGraph."""

__version__ = "0.1.0"
