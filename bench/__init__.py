"""benchbox: measure whether a compressed LLM can replace its baseline."""

__version__ = "0.1.0"
