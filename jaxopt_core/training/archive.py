"""The file layer of saved results: a zip of ``.npy`` entries and a checksummed manifest.

:func:`write_archive` writes ``manifest.json`` (``{"format", "format_version",
"content_sha256", "content"}``) and one uncompressed ``.npy`` entry per array
(written with ``allow_pickle=False``), records each entry's SHA-256 in its
node, and replaces the target file atomically. :func:`open_archive`,
:func:`read_manifest` and :class:`ArrayReader` read it back, checking
everything and turning every sign of damage into a :class:`ResultFileError`.
A ``.npy`` header is parsed as a literal and the data copied as raw bytes
into an allowlisted dtype: nothing is ever unpickled. What the content means
is :mod:`jaxopt_core.training.serialization`'s business.

Example:
    >>> import os, tempfile, numpy as np
    >>> from jaxopt_core.training.archive import (ArrayReader, open_archive,
    ...     read_manifest, write_archive)
    >>> node = {"t": "array", "kind": "numpy", "dtype": "<f4", "shape": [2], "entry": "x.npy"}
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npz")
    >>> write_archive(path, [(node, np.ones(2, np.float32))], {"x": node})
    >>> with open_archive(path) as zf:
    ...     content = read_manifest(zf)
    ...     ArrayReader(zf).read(content["x"], "x")
    array([1., 1.], dtype=float32)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from jaxopt_core.training.tree_codec import CodecError, get, parse_dtype

FORMAT = "jaxopt_core.result"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Fixed zip timestamps and modes make the same content the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class ResultFileError(ValueError):
    """A file that is not a complete, unmodified saved result."""


def manifest_digest(content: Any) -> str:
    """SHA-256 of the manifest content in canonical JSON (sorted keys, compact)."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


class _Hashing:
    """A file wrapper that hashes what passes through it."""

    def __init__(self, f: Any):
        self.f, self.sha = f, hashlib.sha256()

    def write(self, b: bytes) -> int:
        self.sha.update(b)
        return self.f.write(b)

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.sha.update(b)
        return b


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


def write_archive(path: str | os.PathLike, arrays: list, content: dict) -> None:
    """Arrays, then the manifest (which needs their hashes), into a temporary
    file beside ``path``, synced, then renamed over ``path``: a file at
    ``path`` is always either the old one or the complete new one.
    ``arrays``: ``(node, array)`` pairs; each node gets its entry's ``"sha256"``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            with zipfile.ZipFile(f, "w") as zf:
                for node, arr in arrays:
                    with zf.open(_zip_info(node["entry"]), "w",
                                 force_zip64=arr.nbytes > 2**30) as raw:
                        sink = _Hashing(raw)
                        np.lib.format.write_array(sink, arr, allow_pickle=False)
                    node["sha256"] = sink.sha.hexdigest()
                doc = {"format": FORMAT, "format_version": FORMAT_VERSION,
                       "content_sha256": manifest_digest(content), "content": content}
                zf.writestr(_zip_info(MANIFEST), json.dumps(doc, indent=1, allow_nan=False))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def open_archive(path: str | os.PathLike) -> Iterator[zipfile.ZipFile]:
    """Open the zip; every sign of damage becomes a :class:`ResultFileError`.

    A missing or unreadable file raises its ``OSError`` as usual; past the
    ``open``, an ``OSError`` (e.g. a seek to a damaged offset) is damage."""
    with open(path, "rb") as f:
        try:
            with zipfile.ZipFile(f) as zf:
                yield zf
        except (ValueError, OSError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError,
                KeyError, RecursionError, NotImplementedError, OverflowError, zlib.error,
                struct.error) as err:
            raise ResultFileError(f"cannot load {str(path)!r}: {err}") from None


def read_manifest(zf: zipfile.ZipFile) -> dict:
    """The manifest's ``content``, after checking the format, its version and checksum."""
    names = zf.namelist()
    if len(set(names)) != len(names):
        raise CodecError("the archive has duplicate entries")
    if MANIFEST not in names:
        raise CodecError(f"no {MANIFEST}: not a saved jaxopt_core result")
    doc = json.loads(zf.read(MANIFEST).decode(), parse_constant=_no_constant)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CodecError(f"{MANIFEST} does not describe a {FORMAT} file")
    if doc.get("format_version") != FORMAT_VERSION:
        raise CodecError(f"format version {doc.get('format_version')!r}; this jaxopt_core "
                         f"reads version {FORMAT_VERSION} (saved by a newer jaxopt_core?)")
    content = get(doc, "content", dict, MANIFEST)
    if doc.get("content_sha256") != manifest_digest(content):
        raise CodecError(f"{MANIFEST} does not match its checksum: it was edited or damaged")
    return content


def _no_constant(name: str) -> Any:
    raise CodecError(f"{MANIFEST} holds {name}, which is not JSON")


class ArrayReader:
    """Reads array entries: header and size checked before any allocation,
    raw bytes copied into an allowlisted dtype, SHA-256 checked."""

    def __init__(self, zf: zipfile.ZipFile):
        self.zf, self.entries = zf, set()

    def read(self, node: dict, where: str) -> np.ndarray:
        entry = get(node, "entry", str, where)
        dtype, stored = parse_dtype(node.get("dtype"), where)
        shape = tuple(get(node, "shape", list, where))
        if entry in self.entries or not all(type(n) is int and n >= 0 for n in shape):
            raise CodecError(f"{where}: entry {entry!r} reused, or bad shape {shape}")
        nbytes = math.prod(shape) * stored.itemsize
        if nbytes > self.zf.getinfo(entry).file_size:
            raise CodecError(f"{where}: entry {entry!r} is shorter than its shape {shape}")
        with self.zf.open(entry) as raw:
            src = _Hashing(raw)
            fortran = _check_header(src, stored, shape, where)
            flat = np.empty(nbytes, np.uint8)
            for pos in range(0, nbytes, 1 << 24):
                chunk = src.read(min(1 << 24, nbytes - pos))
                flat[pos:pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
                if len(chunk) < min(1 << 24, nbytes - pos):
                    raise CodecError(f"{where}: entry {entry!r} is truncated")
            if src.read(1):
                raise CodecError(f"{where}: entry {entry!r} has bytes after its data")
        if src.sha.hexdigest() != node.get("sha256"):
            raise CodecError(f"{where}: entry {entry!r} does not match its checksum: "
                             "the file was edited or damaged")
        self.entries.add(entry)
        arr = flat.view(stored).reshape(shape, order="F" if fortran else "C")
        return arr.view(dtype) if dtype != stored else arr


def _check_header(src: _Hashing, stored: np.dtype, shape: tuple, where: str) -> bool:
    """Parse a ``.npy`` header (a literal, never unpickled); it must give the
    manifest's dtype and shape. Returns whether the data is in Fortran order."""
    try:
        version = np.lib.format.read_magic(src)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(src)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(src)
        else:
            raise CodecError(f".npy version {version}")
    except ValueError as err:
        raise CodecError(f"{where}: bad .npy header: {err}") from None
    h_shape, fortran, h_dtype = header
    if h_dtype != stored or tuple(h_shape) != shape:
        raise CodecError(f"{where}: the array is {h_dtype}{list(h_shape)}, the manifest says "
                         f"{stored}{list(shape)}")
    return bool(fortran)
