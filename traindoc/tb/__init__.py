"""TensorBoard interop: read any logdir as traindoc runs, write traindoc runs as event files.

Parsing uses the `tensorboard` package's protobuf classes only (no TensorFlow).
"""

from .logdir import TBRunReader, find_tb_runs, is_tb_run, read_tb_run

__all__ = ["TBRunReader", "find_tb_runs", "is_tb_run", "read_tb_run"]
