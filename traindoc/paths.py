"""Where traindoc keeps what it makes itself: the cache (catalogs, TensorBoard caches), the
spool a collector writes into before its run is uploaded, and the local mirrors of object-store
prefixes. The bottom of the house: it imports nothing of traindoc's."""

from __future__ import annotations

import hashlib
import os


def cache_root() -> str:
    """`$TRAINDOC_CACHE`, or ~/.cache/traindoc."""
    return os.environ.get("TRAINDOC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "traindoc")


def url_key(url: str) -> str:
    """A short stable name for an object-store URL (its spool and mirror folders)."""
    return hashlib.sha1(url.rstrip("/").encode("utf-8")).hexdigest()[:16]


def spool_base() -> str:
    """`$TRAINDOC_SPOOL`, or the cache root's spool/: every URL's spool is a folder in it."""
    return os.environ.get("TRAINDOC_SPOOL") or os.path.join(cache_root(), "spool")


def spool_root(url: str) -> str:
    """Where the collector writes runs meant for `url` before they are uploaded."""
    return os.path.join(spool_base(), url_key(url))


def mirror_path(url: str) -> str:
    """The local folder that mirrors `url`."""
    return os.path.join(cache_root(), "mirror", url_key(url))


def catalog_db(root: str, cache: str | None = None) -> str:
    """The catalog database of a local root (its real path), under `cache` or the cache root."""
    folder = os.path.join(cache or cache_root(), "catalog")
    os.makedirs(folder, exist_ok=True)
    key = hashlib.sha1(os.path.realpath(root).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(folder, f"{key}.sqlite")


def tb_cache_dir() -> str:
    """Where parsed TensorBoard event files are cached."""
    return os.path.join(cache_root(), "tb")
