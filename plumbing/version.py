"""The project's version: one place, which results, summaries and --version quote."""

__version__ = "0.1.0"
