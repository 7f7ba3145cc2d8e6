"""fusion.data.download: verified, resumable downloads (file:// URLs and fake openers)."""

import hashlib
import io
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from fusion.data.download import ChecksumError, DownloadError, RemoteFile, fetch, sha256_of


def _npz_bytes(tmp_path: Path) -> bytes:
    """A small archive in the real rMD17 npz layout."""
    f = tmp_path / "src.npz"
    np.savez(f, nuclear_charges=np.array([6, 1]), coords=np.zeros((3, 2, 3)),
             energies=np.zeros(3), forces=np.zeros((3, 2, 3)))
    return f.read_bytes()


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes, status: int):
        super().__init__(data)
        self.status = status

    def getcode(self):
        return self.status


class RangeServer:
    """Fake opener serving ``data``; honours Range; can fail after ``cut`` bytes once."""

    def __init__(self, data: bytes, cut: int | None = None, honour_range: bool = True):
        self.data, self.cut, self.honour_range = data, cut, honour_range
        self.ranges: list[str | None] = []

    def __call__(self, request):
        rng = request.get_header("Range")
        self.ranges.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng and self.honour_range else 0
        body = self.data[start:]
        if self.cut is not None:
            cut, self.cut = self.cut, None

            class Broken(FakeResponse):
                def read(self, n=-1):
                    chunk = super().read(min(n, cut - self.tell()) if n > 0 else cut)
                    if not chunk:
                        raise urllib.error.URLError("connection reset")
                    return chunk

            return Broken(body, 206 if start else 200)
        return FakeResponse(body, 206 if start else 200)


def test_file_url_download_verifies_and_caches(tmp_path):
    data = _npz_bytes(tmp_path)
    src = tmp_path / "upstream.npz"
    src.write_bytes(data)
    remote = RemoteFile(src.as_uri(), "rmd17_x.npz", hashlib.sha256(data).hexdigest())
    path = fetch(remote, tmp_path / "res", log=lambda s: None)
    assert path == tmp_path / "res" / "downloads" / "rmd17_x.npz"
    assert path.read_bytes() == data
    src.unlink()  # second call must not need the source any more
    assert fetch(remote, tmp_path / "res", log=lambda s: None) == path


def test_interrupted_download_resumes_with_range(tmp_path):
    data = bytes(range(256)) * 5000  # 1.28 MB, > one read chunk
    remote = RemoteFile("https://example.invalid/a.bin", "a.bin",
                        hashlib.sha256(data).hexdigest())
    server = RangeServer(data, cut=300_000)
    with pytest.raises(DownloadError) as err:
        fetch(remote, tmp_path, opener=server, log=lambda s: None)
    part = tmp_path / "downloads" / "a.bin.part"
    assert part.stat().st_size == 300_000
    assert "https://example.invalid/a.bin" in str(err.value)
    path = fetch(remote, tmp_path, opener=server, log=lambda s: None)
    assert server.ranges == [None, "bytes=300000-"]
    assert path.read_bytes() == data and not part.exists()


def test_server_ignoring_range_restarts(tmp_path):
    data = b"x" * 1000 + b"y" * 1000
    remote = RemoteFile("https://example.invalid/b", "b", hashlib.sha256(data).hexdigest())
    part = tmp_path / "downloads" / "b.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 500)
    path = fetch(remote, tmp_path, opener=RangeServer(data, honour_range=False),
                 log=lambda s: None)
    assert path.read_bytes() == data


def test_no_network_error_names_url_path_and_checksum(tmp_path):
    sha = "ab" * 32

    def offline(request):
        raise urllib.error.URLError("Name or service not known")

    remote = RemoteFile("https://figshare.com/ndownloader/files/1", "rmd17.tar.bz2", sha)
    with pytest.raises(DownloadError) as err:
        fetch(remote, tmp_path, opener=offline)
    msg = str(err.value)
    assert "https://figshare.com/ndownloader/files/1" in msg
    assert str(tmp_path / "downloads" / "rmd17.tar.bz2") in msg
    assert sha in msg


def test_checksum_mismatch_moves_bad_file_aside_and_keeps_others(tmp_path):
    data = _npz_bytes(tmp_path)
    truncated = data[: len(data) // 2]
    src = tmp_path / "upstream.npz"
    src.write_bytes(truncated)
    good_sha = hashlib.sha256(data).hexdigest()
    other = tmp_path / "res" / "downloads" / "other.npz"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"keep me")
    remote = RemoteFile(src.as_uri(), "x.npz", good_sha)
    with pytest.raises(ChecksumError) as err:
        fetch(remote, tmp_path / "res", log=lambda s: None)
    msg = str(err.value)
    bad_sha = hashlib.sha256(truncated).hexdigest()
    assert good_sha in msg and bad_sha in msg and "x.npz" in msg
    aside = list(other.parent.glob("x.npz.bad-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == truncated
    assert not (other.parent / "x.npz").exists()
    assert other.read_bytes() == b"keep me"


def test_hand_placed_corrupt_file_is_rejected(tmp_path):
    placed = tmp_path / "downloads" / "h.npz"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"not the file")
    remote = RemoteFile("https://example.invalid/h", "h.npz", "0" * 64)
    with pytest.raises(ChecksumError, match="expected sha256 0{64}"):
        fetch(remote, tmp_path, opener=lambda r: pytest.fail("must not download"))
    assert not placed.exists()


def test_unpublished_checksum_is_recorded_then_enforced(tmp_path):
    src = tmp_path / "up.xyz"
    src.write_text("1\nenergy=1.0\nH 0 0 0\n")
    remote = RemoteFile(src.as_uri(), "up.xyz", None)
    path = fetch(remote, tmp_path / "res", log=lambda s: None)
    record = path.with_name("up.xyz.sha256")
    assert record.read_text().split()[0] == sha256_of(path)
    path.write_text("tampered")
    with pytest.raises(ChecksumError, match="recorded|expected"):
        fetch(remote, tmp_path / "res", log=lambda s: None)
