"""Saving and loading model artefacts without pickle: files + a checksummed manifest.

A saved artefact is a directory::

    manifest.json     name, format version, classes, params, sha256 and size of each file,
                      created (UTC), library versions, and ``checksum``: the sha256 of the
                      manifest's own canonical JSON (without that key)
    model.skops       scikit-learn objects, written by skops.io (no pickle)
    ...               any other files the artefact lists (e.g. a JSON vocabulary)

``read_manifest`` verifies the manifest's checksum and every listed file's sha256 before
anything is parsed; :func:`load_skops` then reads the verified bytes and refuses any type
outside an explicit allowlist (on top of the types skops trusts by default), so a
tampered or foreign file is never executed.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import CorruptArtifactError, StudentError

__all__ = [
    "MANIFEST",
    "write_artifact",
    "read_manifest",
    "dump_skops",
    "load_skops",
    "sha256_bytes",
]

MANIFEST = "manifest.json"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8"
    )


def dump_skops(obj: Any) -> bytes:
    """Serialise scikit-learn objects with skops (deflate-compressed zip)."""
    import skops.io as sio

    return sio.dumps(obj, compression=zipfile.ZIP_DEFLATED)


def load_skops(data: bytes, *, allowed: Iterable[str], where: Path) -> Any:
    """Load skops bytes, trusting only skops' defaults plus the ``allowed`` type names.

    Raises
    ------
    CorruptArtifactError
        When the file holds a type outside the allowlist, or cannot be parsed.
    """
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises assorted types on a damaged zip
        raise CorruptArtifactError(f"{where}: not a readable skops file ({exc})") from None
    unexpected = sorted(set(untrusted) - set(allowed))
    if unexpected:
        raise CorruptArtifactError(
            f"{where}: refusing to load types this student never writes: {', '.join(unexpected)}"
        )
    try:
        return sio.loads(data, trusted=list(untrusted))
    except Exception as exc:
        raise CorruptArtifactError(f"{where}: cannot load the skops file ({exc})") from None


def write_artifact(
    directory: str | os.PathLike[str],
    files: dict[str, bytes],
    *,
    name: str,
    version: int,
    classes: list[str],
    params: dict[str, Any],
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``files`` then ``manifest.json`` (last: its presence marks a complete artefact)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise StudentError(f"{directory}: exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise StudentError(
            f"{directory}: directory is not empty; choose a new one or pass overwrite=True"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        old = directory / MANIFEST
        if old.exists():
            old.unlink()
        for fname, data in files.items():
            tmp = directory / f".{fname}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, directory / fname)
    except OSError as exc:
        raise StudentError(f"{directory}: cannot write the student ({exc})") from None
    import sklearn

    manifest: dict[str, Any] = {
        "name": name,
        "version": version,
        "classes": list(classes),
        "params": params,
        "files": {f: {"sha256": sha256_bytes(d), "bytes": len(d)} for f, d in files.items()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "library": {
            "downsize": __version__,
            "scikit-learn": sklearn.__version__,
            **_skops_version(),
        },
    }
    if extra:
        manifest.update(extra)
    manifest["checksum"] = sha256_bytes(_canonical(manifest))
    tmp = directory / f".{MANIFEST}.tmp"
    try:
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, directory / MANIFEST)
    except OSError as exc:
        raise StudentError(f"{directory}: cannot write {MANIFEST} ({exc})") from None
    return directory


def _skops_version() -> dict[str, str]:
    try:
        import skops

        return {"skops": skops.__version__}
    except ImportError:  # pragma: no cover - skops is a core dependency
        return {}


def read_manifest(directory: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The verified manifest and the verified bytes of every file it lists.

    Raises
    ------
    StudentError
        No such directory, or no manifest in it.
    CorruptArtifactError
        Garbled manifest, manifest checksum mismatch, or a listed file missing or with a
        sha256 other than the manifest's (the message names the file).
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise StudentError(f"{directory}: no such directory; expected a saved student")
    if not path.is_file():
        raise StudentError(
            f"{directory}: no {MANIFEST}; this is not a saved student (or saving was interrupted)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptArtifactError(
            f"{path}: garbled manifest, not valid JSON ({exc}); retrain or restore the student"
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CorruptArtifactError(
            f"{path}: garbled manifest (no 'files' table); retrain or restore the student"
        )
    claimed = manifest.pop("checksum", None)
    actual = sha256_bytes(_canonical(manifest))
    if claimed != actual:
        raise CorruptArtifactError(
            f"{path}: the manifest was modified after saving (checksum {str(claimed)[:12]}… ≠ {actual[:12]}…)"
        )
    for key in ("name", "version", "classes", "params"):
        if key not in manifest:
            raise CorruptArtifactError(f"{path}: garbled manifest, no {key!r}")
    blobs: dict[str, bytes] = {}
    for fname, meta in manifest["files"].items():
        fpath = directory / fname
        if Path(fname).name != fname:
            raise CorruptArtifactError(f"{path}: file name {fname!r} is not a plain file name")
        try:
            data = fpath.read_bytes()
        except FileNotFoundError:
            raise CorruptArtifactError(f"{fpath}: missing (listed in {MANIFEST})") from None
        except OSError as exc:
            raise StudentError(f"{fpath}: cannot read ({exc})") from None
        digest = sha256_bytes(data)
        if digest != meta.get("sha256"):
            raise CorruptArtifactError(
                f"{fpath}: sha256 {digest[:16]}… does not match the manifest's "
                f"{str(meta.get('sha256'))[:16]}…; the file is corrupt or was modified"
            )
        blobs[fname] = data
    return manifest, blobs
