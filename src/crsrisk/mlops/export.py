"""Self-contained model directories for offline scoring, with a checksum manifest.

`crsrisk export` copies a registered model out of the registry into a plain MLflow model
directory and writes `crsrisk-manifest.json` (sha256 of every file, contract version, model name
and version). Loading checks the manifest first: a changed, missing or corrupted file, or a model
built for another contract version, is refused with one sentence.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from crsrisk.contract.spec import CONTRACT_VERSION
from crsrisk.errors import CrsriskError
from crsrisk.modeling.riskmodel import RiskModel

__all__ = [
    "MANIFEST",
    "RISK_MODEL_FOLDER",
    "ExportError",
    "looks_exported",
    "export_model",
    "verify",
    "load_exported",
]

MANIFEST = "crsrisk-manifest.json"
RISK_MODEL_FOLDER = Path("artifacts") / "risk_model"


class ExportError(CrsriskError):
    """An exported model cannot be written or trusted."""


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
    """Copy the model at ``uri`` into ``out`` with a checksum manifest; returns the manifest."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from crsrisk.mlops.registry import existing_store, use_store

    out = Path(out)
    if out.exists():
        raise ExportError(f"{out} already exists: choose a new folder or remove it first.")
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
        except (OSError, EOFError, ValueError, AttributeError) as exc:
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
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        staging.rename(out)
    return manifest


def verify(folder: str | Path) -> dict:
    """Check an exported model against its manifest; returns the manifest."""
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


