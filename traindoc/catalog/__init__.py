"""The run catalog: a persistent per-run summary index of a root, in SQLite in the cache folder.

Opening the runs page, or `traindoc diagnose ROOT`, used to read and diagnose every run each
time. The catalog keeps, per run: its status, steps, last update, best validation figures,
hyperparameters, its own findings and those its siblings add (sweeps, a task's ceiling), what
the rules could not judge, and a signature of what was read (each file's size and mtime). A
refresh lists the root, compares signatures, and reads again only the runs whose files
changed; a run whose files did not change is never read again, finished or not. Everything a
sibling judgement needs is kept as a small JSON digest (`rules.together.digest`), so judging
runs together never re-reads the siblings.

One database per root (`$TRAINDOC_CACHE/catalog/<hash of the root>.sqlite`, default
`~/.cache/traindoc`). Rows carry the version of the code that wrote them (a hash of the
reader and rule sources): new rules re-index everything once. The database is only a
cache: deleting it costs one full index.

The package by job: `version` (which code wrote a row), `changes` (what changed on disk),
`summary` (one run's row), `pool` (reading many runs), `siblings` (judging a folder's runs
together), `query` (the runs table's filter language), `index` (the table itself).
"""

from .index import Catalog, Refresh
from .summary import index_one, short_config
from .version import SCHEMA, code_version

__all__ = ["Catalog", "Refresh", "SCHEMA", "code_version", "index_one", "short_config"]
