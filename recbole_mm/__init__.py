"""recbole-mm: a RecBole plugin for multi-modal, transferable sequential recommendation."""

__version__ = "0.1.0"
