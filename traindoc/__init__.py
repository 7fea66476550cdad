"""traindoc: training diagnostics for PyTorch. The reader side never imports torch."""

__version__ = "0.1.0"
