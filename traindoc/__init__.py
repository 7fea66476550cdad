"""traindoc: training diagnostics for PyTorch. The reader side never imports torch."""

__version__ = "0.1.0"


def show(target, smoothing: float = 0.6, log_y: bool = False) -> None:
    """Display a run, or a folder of runs, with its findings in a notebook: see traindoc.notebook."""
    from .notebook import show as _show

    _show(target, smoothing, log_y)
