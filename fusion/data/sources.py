"""Real benchmark files this project knows by name, where to get them, and their sha256.

Every file here is a file of a public GitHub repository, pinned to one commit; its sha256
was verified byte for byte against the repository's git blob. A file enters the cache
(``<cache_dir>/downloads/<folder>/<file>``) only through :func:`fetch_pinned` (download,
checked) or :func:`import_files` (``fusion data import DIR``: files placed by hand,
checked); a file whose sha256 differs is refused with both hashes named, and nothing in the
cache is overwritten by it.

========================= ====================== ==========================================
folder                    repository @ commit    contents
========================= ====================== ==========================================
``rmd17-npz/``            andersx/rmd17-npz      rMD17 (Christensen & von Lilienfeld 2020):
                          @ 4f6bb0a              the author's 5 train/test pairs per molecule,
                                                 ``rmd17_<mol>_{train,test}_0<k>.npz``, 1,000
                                                 frames each, kcal/mol and kcal/mol/Å
``dataset_3BPA/``         davkovacs/               3BPA training sets (train_300K,
``dataset_acac/``         BOTNet-datasets        train_mixedT), acetylacetone (train 300/600 K,
``dataset_ethanol/``      @ 29e6d46              MD tests at 300/600 K, H transfer, dihedral
                                                 scan), ethanol; extxyz in eV and eV/Å, with
                                                 isolated-atom energies
========================= ====================== ==========================================

>>> PINNED["rmd17-npz/rmd17_ethanol_train_01.npz"].repository
'andersx/rmd17-npz'
>>> pinned_file("dataset_acac/train_300K.xyz").url.startswith("https://raw.githubusercontent.com/")
True
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from fusion.data.download import RemoteFile, download_dir, fetch, sha256_of

__all__ = ["PinnedFile", "PINNED", "REPOSITORIES", "pinned_file", "pinned_path",
           "fetch_pinned", "ImportReport", "import_files"]

#: folder -> (GitHub repository, commit) the files of that folder are pinned to.
REPOSITORIES = {
    "rmd17-npz": ("andersx/rmd17-npz", "4f6bb0a186822c90d47cd98b7a27991fe0b3173b"),
    "dataset_3BPA": ("davkovacs/BOTNet-datasets", "29e6d467317e4b5967b7ea5cbee54de953fa0d45"),
    "dataset_acac": ("davkovacs/BOTNet-datasets", "29e6d467317e4b5967b7ea5cbee54de953fa0d45"),
    "dataset_ethanol": ("davkovacs/BOTNet-datasets", "29e6d467317e4b5967b7ea5cbee54de953fa0d45"),
}

# "<folder>/<file>" -> sha256, from the sha256sum-format list shipped with the package
# (files/benchmark-files.sha256; verified against the repositories' git blobs).
_LIST = Path(__file__).with_name("files") / "benchmark-files.sha256"
_SHA256 = {path: sha for sha, path in (line.split() for line in _LIST.read_text().splitlines()
                                       if line.strip() and not line.startswith("#"))}


@dataclass(frozen=True)
class PinnedFile:
    """One file of a pinned repository: ``relpath`` = ``<folder>/<file>``."""

    relpath: str
    sha256: str

    @property
    def repository(self) -> str:
        return REPOSITORIES[self.folder][0]

    @property
    def commit(self) -> str:
        return REPOSITORIES[self.folder][1]

    @property
    def folder(self) -> str:
        return self.relpath.split("/", 1)[0]

    @property
    def url(self) -> str:
        return f"https://raw.githubusercontent.com/{self.repository}/{self.commit}/{self.relpath}"

    @property
    def remote(self) -> RemoteFile:
        return RemoteFile(self.url, self.relpath, self.sha256)


PINNED: dict[str, PinnedFile] = {p: PinnedFile(p, s) for p, s in _SHA256.items()}


def pinned_file(relpath: str) -> PinnedFile:
    """The pinned file ``<folder>/<file>``; KeyError listing the folders otherwise."""
    if relpath not in PINNED:
        raise KeyError(f"{relpath!r} is not a pinned benchmark file; known folders: "
                       f"{', '.join(REPOSITORIES)} (see fusion.data.sources)")
    return PINNED[relpath]


def pinned_path(relpath: str, cache_dir: str | os.PathLike = "resources") -> Path:
    """Where the pinned file lives in the cache: ``<cache_dir>/downloads/<folder>/<file>``."""
    return download_dir(cache_dir) / pinned_file(relpath).relpath


def fetch_pinned(relpath: str, cache_dir: str | os.PathLike = "resources", opener=None,
                 log: Callable[[str], None] = print) -> Path:
    """The checked file in the cache, downloaded from its pinned commit if missing.

    Without network the error names the URL, the place to put the file and its sha256;
    ``fusion data import DIR`` places a whole clone of the repository at once.
    """
    return fetch(pinned_file(relpath).remote, cache_dir, opener=opener, log=log)


@dataclass
class ImportReport:
    """What :func:`import_files` did: relpaths copied, already present, refused (with the
    reason), and files of ``DIR`` that are not pinned benchmark files (ignored)."""

    copied: list[str]
    present: list[str]
    refused: dict[str, str]
    ignored: list[str]

    def lines(self) -> list[str]:
        out = [f"imported {p}" for p in self.copied]
        out += [f"already in place {p}" for p in self.present]
        out += [f"REFUSED {p}: {why}" for p, why in self.refused.items()]
        if self.ignored:
            out.append(f"ignored {len(self.ignored)} file(s) that are not pinned benchmark "
                       f"files (e.g. {self.ignored[0]})")
        return out


def _candidates(source: Path) -> Iterable[tuple[str, Path]]:
    """``(<folder>/<file>, path)`` for every regular file under ``source`` (any depth)."""
    for path in sorted(source.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield f"{path.parent.name}/{path.name}", path


def _copy_atomic(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def import_files(source: str | os.PathLike, cache_dir: str | os.PathLike = "resources",
                 log: Callable[[str], None] = print) -> ImportReport:
    """Copy the pinned benchmark files found under ``source`` into the cache, checked.

    ``source`` is a folder holding (at any depth) ``<folder>/<file>`` as in the repositories,
    e.g. a clone of andersx/rmd17-npz or davkovacs/BOTNet-datasets. Each file is hashed
    before it is copied: a mismatch is refused (both hashes named) and the cache keeps what
    it had. A file already in the cache with the right hash is left alone. Raises
    ``FileNotFoundError`` when ``source`` is not a folder and ``ValueError`` when it holds
    no pinned file at all.
    """
    source = Path(source).expanduser()
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: not a folder; expected a folder holding e.g. "
                                "rmd17-npz/rmd17_aspirin_train_01.npz or "
                                "dataset_acac/train_300K.xyz")
    report = ImportReport([], [], {}, [])
    for relpath, path in _candidates(source):
        if relpath not in PINNED:
            report.ignored.append(str(path))
            continue
        pinned = PINNED[relpath]
        actual = sha256_of(path)
        if actual != pinned.sha256:
            report.refused[relpath] = (f"{path} has sha256 {actual}, expected {pinned.sha256} "
                                       f"({pinned.repository}@{pinned.commit[:7]}); the file "
                                       "is truncated, modified or from another version; the "
                                       "cache was not changed")
            continue
        dest = download_dir(cache_dir) / relpath
        if dest.is_file() and sha256_of(dest) == pinned.sha256:
            report.present.append(relpath)
            continue
        _copy_atomic(path, dest)
        report.copied.append(relpath)
    if not (report.copied or report.present or report.refused):
        raise ValueError(f"{source}: no pinned benchmark file found (looked for "
                         f"<folder>/<file> with folder in {', '.join(REPOSITORIES)})")
    for line in report.lines():
        log(line)
    return report

