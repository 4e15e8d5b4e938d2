"""thrum_example: a complete, minimal thrum plugin (see ``plugin.py``)."""

__version__ = "0.1.0"
