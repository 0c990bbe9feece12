"""Self-contained model directories for offline scoring, with a checksum manifest.

`crsrisk export` copies a registered model out of the registry into a plain MLflow model
directory and writes `crsrisk-manifest.json` (sha256 of every file, contract version, model name
and version). Loading checks the manifest first: a changed, missing or corrupted file, or a model
built for another contract version, is refused with one sentence.

A checksum finds accidental corruption, not tampering: whoever can change a file can recompute
its hash. With ``CRSRISK_SIGNING_KEY`` set, the manifest also carries an HMAC-SHA256 of its
content (file list, hashes, model and contract versions) under that key, and loading with the
key set accepts only a manifest signed with it; a signed export needs the key to be loaded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile
from pathlib import Path

from crsrisk.contract.spec import CONTRACT_VERSION
from crsrisk.errors import CrsriskError, ModelError
from crsrisk.modeling.riskmodel import RiskModel

__all__ = [
    "MANIFEST",
    "RISK_MODEL_FOLDER",
    "SIGNING_KEY_VARIABLE",
    "SIGNATURE_ALGORITHM",
    "ExportError",
    "signature",
    "looks_exported",
    "export_model",
    "verify",
    "load_exported",
]

MANIFEST = "crsrisk-manifest.json"
RISK_MODEL_FOLDER = Path("artifacts") / "risk_model"
SIGNING_KEY_VARIABLE = "CRSRISK_SIGNING_KEY"
SIGNATURE_ALGORITHM = "HMAC-SHA256"


class ExportError(CrsriskError):
    """An exported model cannot be written or trusted."""


def _signing_key() -> bytes | None:
    """The key of ``CRSRISK_SIGNING_KEY`` (None when unset)."""
    value = os.environ.get(SIGNING_KEY_VARIABLE)
    if value is None:
        return None
    if not value.strip():
        raise ExportError(f"{SIGNING_KEY_VARIABLE} is set but empty: set it to the signing key, "
                          "or unset it to export and load without signatures.")
    return value.encode("utf-8")


def signature(manifest: dict, key: bytes) -> str:
    """HMAC-SHA256 (hex) under ``key`` of the manifest's content, its signature left out.

    The content is the manifest as canonical JSON (sorted keys, no spaces): the file list with
    each file's sha256, the model's name and version, the contract version and the source URI.
    """
    content = {k: v for k, v in manifest.items() if k != "signature"}
    message = json.dumps(content, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _check_signature(manifest: dict, manifest_path: Path) -> None:
    key = _signing_key()
    signed = manifest.get("signature")
    if key is None:
        if signed is not None:
            raise ExportError(
                f"{manifest_path} is signed: set {SIGNING_KEY_VARIABLE} to the key it was "
                "signed with, so that loading can check it."
            )
        return
    if signed is None:
        raise ExportError(
            f"{manifest_path} is not signed but {SIGNING_KEY_VARIABLE} is set, so only signed "
            "exports are loaded: export the model again with the key set."
        )
    if not (isinstance(signed, dict) and signed.get("algorithm") == SIGNATURE_ALGORITHM
            and isinstance(signed.get("value"), str)
            and hmac.compare_digest(signed["value"], signature(manifest, key))):
        raise ExportError(
            f"{manifest_path} does not match its signature under {SIGNING_KEY_VARIABLE}: the "
            "export was changed after it was signed, or signed with another key; export the "
            "model again from the registry."
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def _inside(name: object) -> bool:
    """A manifest entry names a file inside the folder (relative, no '..')."""
    if not isinstance(name, str) or not name:
        return False
    path = Path(name)
    return not path.is_absolute() and ".." not in path.parts


def looks_exported(uri: str | Path) -> bool:
    """True for a local directory (exported models are directories, registry URIs are not)."""
    return "://" not in str(uri) and not str(uri).startswith("models:") and Path(uri).is_dir()


def export_model(uri: str, out: str | Path) -> dict:
    """Copy the model at ``uri`` into ``out`` with a checksum manifest; returns the manifest.

    The manifest is signed when ``CRSRISK_SIGNING_KEY`` is set (see `signature`).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from crsrisk.mlops.registry import existing_store, use_store

    out = Path(out)
    if out.exists():
        raise ExportError(f"{out} already exists: choose a new folder or remove it first.")
    key = _signing_key()
    store = existing_store(uri)
    use_store(store)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        staging = Path(tmp) / "model"
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(staging))
        except (MlflowException, OSError) as exc:
            raise ExportError(
                f"The model {uri} could not be fetched ({type(exc).__name__}): check the URI "
                "with crsrisk models."
            ) from exc
        try:
            risk_model = RiskModel.load(staging / RISK_MODEL_FOLDER)
        except (ModelError, OSError) as exc:
            raise ExportError(
                f"{uri} is not a crsrisk model (no loadable {RISK_MODEL_FOLDER}): export a "
                "model registered by crsrisk train."
            ) from exc
        manifest = {
            "model_name": risk_model.name,
            "model_version": str(risk_model.version),
            "contract_version": risk_model.contract_version,
            "source_uri": uri,
            "files": {p.relative_to(staging).as_posix(): _sha256(p) for p in _files(staging)},
        }
        if key is not None:
            manifest["signature"] = {"algorithm": SIGNATURE_ALGORITHM,
                                     "value": signature(manifest, key)}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        staging.rename(out)
    return manifest


def verify(folder: str | Path) -> dict:
    """Check an exported model against its manifest (and signature); returns the manifest."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ExportError(
            f"{folder} has no {MANIFEST}: it is not an exported crsrisk model; export one with "
            "crsrisk export --model URI --out DIR."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        expected = manifest["files"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ExportError(f"{manifest_path} is corrupted: export the model again.") from exc
    if not isinstance(expected, dict) or not all(_inside(name) for name in expected):
        raise ExportError(f"{manifest_path} is corrupted: export the model again.")
    _check_signature(manifest, manifest_path)
    present = {p.relative_to(folder).as_posix() for p in _files(folder)}
    missing = sorted(set(expected) - present)
    if missing:
        raise ExportError(f"{folder} lacks {missing[0]}: the export is incomplete; export again.")
    added = sorted(name for name in present - set(expected)
                   if not any(part.startswith(".") for part in Path(name).parts))
    if added:
        raise ExportError(
            f"{folder / added[0]} is not in the export's manifest: a file was added after "
            "export; export the model again into a new folder."
        )
    for name, digest in expected.items():
        if _sha256(folder / name) != digest:
            raise ExportError(
                f"{folder / name} does not match its checksum: the model was changed or "
                "corrupted after export; export it again from the registry."
            )
    if manifest.get("contract_version") != CONTRACT_VERSION:
        raise ExportError(
            f"{folder} was built for data contract version {manifest.get('contract_version')}, "
            f"this crsrisk uses version {CONTRACT_VERSION}: retrain or use a matching crsrisk."
        )
    return manifest


def load_exported(folder: str | Path) -> RiskModel:
    """The RiskModel of a verified exported directory (no tracking store needed)."""
    verify(folder)
    return RiskModel.load(Path(folder) / RISK_MODEL_FOLDER)


