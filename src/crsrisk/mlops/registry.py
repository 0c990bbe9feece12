"""The MLflow tracking store and model registry: where runs go, versions, aliases and their audit.

Every alias change (challenger, champion) is appended to an audit trail kept in the registry
itself, as tags of the registered model (`audit.000001`, ...), so it travels with the store.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from crsrisk.config import TrackingConfig
from crsrisk.errors import CrsriskError, ModelError

__all__ = [
    "CHAMPION",
    "CHALLENGER",
    "AUDIT_PREFIX",
    "METRIC_TAG_PREFIX",
    "RegistryError",
    "resolve_tracking_uri",
    "artifact_location",
    "existing_store",
    "use_store",
    "Store",
    "connect",
    "version_by_alias",
    "version_metrics",
    "next_version",
    "register_logged_model",
    "set_alias",
    "audit_trail",
    "promote",
    "list_versions",
]

CHAMPION, CHALLENGER = "champion", "challenger"
AUDIT_PREFIX = "audit."
METRIC_TAG_PREFIX = "metric."


class RegistryError(CrsriskError):
    """The registry cannot do what was asked (unknown version, no champion, unreachable store)."""


def resolve_tracking_uri(config: TrackingConfig | None = None, cwd: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` where set, else the config's SQLite file made absolute."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    config = config or TrackingConfig()
    uri = config.uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = prefix + str(((cwd or Path.cwd()) / uri[len(prefix):]).resolve())
    return uri


def artifact_location(config: TrackingConfig | None = None, cwd: Path | None = None) -> str:
    """The artefact folder for new experiments on the embedded default store."""
    config = config or TrackingConfig()
    return ((cwd or Path.cwd()) / config.artifact_root).resolve().as_uri()


def existing_store(uri: str) -> str:
    """The tracking URI, refusing a SQLite store that does not exist yet.

    mlflow would quietly create an empty store there and then not find the model ``uri``.
    """

    tracking = resolve_tracking_uri()
    store = tracking.removeprefix("sqlite:///")
    if tracking.startswith("sqlite:///") and not Path(store).is_file():
        raise ModelError(
            f"There is no tracking store at {store}, so {uri} cannot be found: train a model "
            "with crsrisk train, set MLFLOW_TRACKING_URI, or give --model an exported folder."
        )
    return tracking


def use_store(uri: str) -> None:
    """Point both mlflow's tracking and its registry at ``uri``.

    mlflow keeps the registry URI of the last ``set_registry_uri`` (and exports it as
    ``MLFLOW_REGISTRY_URI``), so setting only the tracking URI would register into whichever
    store was named before: always move the two together.
    """
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


@dataclass(frozen=True)
class Store:
    """A configured tracking store: client, experiment and registered-model name."""

    client: MlflowClient
    experiment_id: str
    model_name: str
    uri: str


def connect(config: TrackingConfig | None = None) -> Store:
    """Point mlflow at the tracking store and make sure the experiment exists."""
    config = config or TrackingConfig()
    # Read before set_tracking_uri, which exports MLFLOW_TRACKING_URI itself.
    embedded = not os.environ.get("MLFLOW_TRACKING_URI")
    uri = resolve_tracking_uri(config)
    use_store(uri)
    client = MlflowClient(uri, uri)
    try:
        experiment = client.get_experiment_by_name(config.experiment)
        if experiment is None:
            location = artifact_location(config) if embedded else None
            experiment_id = client.create_experiment(config.experiment, location)
        else:
            experiment_id = experiment.experiment_id
    except MlflowException as exc:
        raise RegistryError(f"The tracking store at {uri} cannot be used: {exc.message}") from exc
    return Store(client, experiment_id, config.model_name, uri)


def version_by_alias(store: Store, alias: str) -> str | None:
    """The version holding ``alias``, or None."""
    try:
        return str(store.client.get_model_version_by_alias(store.model_name, alias).version)
    except MlflowException:
        return None


def version_metrics(store: Store, version: str) -> dict[str, float]:
    """The key test metrics recorded on a model version."""
    tags = store.client.get_model_version(store.model_name, version).tags
    return {
        k[len(METRIC_TAG_PREFIX):]: float(v)
        for k, v in tags.items()
        if k.startswith(METRIC_TAG_PREFIX)
    }


def next_version(store: Store) -> str:
    """The number the next registered version of ``store.model_name`` will get."""
    versions = store.client.search_model_versions(f"name = '{store.model_name}'")
    return str(1 + max((int(v.version) for v in versions), default=0))


def register_logged_model(
    store: Store, model_uri: str, expected_version: str, tags: dict[str, str], reason: str
) -> str:
    """Register a logged model, tag the version and make it ``challenger``; returns the version.

    The version was written into the model's scores as ``expected_version`` before logging;
    when the registry numbered it otherwise (another run registered in between), the version
    gets a ``version_in_scores`` tag so the two can be matched.
    """
    registered = mlflow.register_model(model_uri, store.model_name)
    version = str(registered.version)  # an int on some stores
    if version != expected_version:
        tags = {**tags, "version_in_scores": expected_version}
    for key, value in tags.items():
        store.client.set_model_version_tag(store.model_name, version, key, value)
    set_alias(store, CHALLENGER, version, reason)
    return version


def _append_audit(store: Store, entry: dict) -> None:
    existing = store.client.get_registered_model(store.model_name).tags
    number = 1 + sum(1 for k in existing if k.startswith(AUDIT_PREFIX))
    store.client.set_registered_model_tag(
        store.model_name, f"{AUDIT_PREFIX}{number:06d}", json.dumps(entry, sort_keys=True)
    )


def set_alias(store: Store, alias: str, version: str, reason: str) -> None:
    """Move ``alias`` to ``version`` and append the change to the audit trail."""
    previous = version_by_alias(store, alias)
    store.client.set_registered_model_alias(store.model_name, alias, version)
    _append_audit(
        store,
        {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "who": _who(),
            "alias": alias,
            "version": version,
            "previous_version": previous,
            "reason": reason,
            "metrics": version_metrics(store, version),
        },
    )


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def audit_trail(store: Store) -> pd.DataFrame:
    """Every alias change, oldest first."""
    try:
        tags = store.client.get_registered_model(store.model_name).tags
    except MlflowException:
        return pd.DataFrame(columns=["when", "who", "alias", "version", "previous_version",
                                     "reason", "metrics"])
    rows = [json.loads(v) for k, v in sorted(tags.items()) if k.startswith(AUDIT_PREFIX)]
    frame = pd.DataFrame(rows, columns=["when", "who", "alias", "version", "previous_version",
                                        "reason", "metrics"])
    return frame.astype({"version": "str", "previous_version": "str"}).fillna(
        {"previous_version": ""})


def promote(store: Store, version: str, reason: str) -> None:
    """Make ``version`` the champion by hand, with a reason for the audit trail."""
    if not reason.strip():
        raise RegistryError("A promotion needs a reason: give --reason TEXT.")
    try:
        store.client.get_model_version(store.model_name, str(version))
    except MlflowException as exc:
        raise RegistryError(
            f"{store.model_name} has no version {version}: see `crsrisk models`."
        ) from exc
    set_alias(store, CHAMPION, str(version), f"manual: {reason}")


def list_versions(store: Store) -> pd.DataFrame:
    """Registered versions with their aliases and key metrics, newest first."""
    try:
        versions = store.client.search_model_versions(f"name = '{store.model_name}'")
    except MlflowException:
        versions = []
    # search_model_versions returns empty aliases on SQLite (pitfalls.md): ask per alias.
    holders = {alias: version_by_alias(store, alias) for alias in (CHAMPION, CHALLENGER)}
    rows = []
    for mv in versions:
        aliases = [a for a, v in holders.items() if v == str(mv.version)]
        metrics = {
            k[len(METRIC_TAG_PREFIX):]: float(v)
            for k, v in mv.tags.items()
            if k.startswith(METRIC_TAG_PREFIX)
        }
        rows.append(
            {
                "version": int(mv.version),
                "aliases": ",".join(aliases),
                "created": dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC)
                .isoformat(timespec="seconds"),
                "candidate": mv.tags.get("candidate", ""),
                **metrics,
            }
        )
    frame = pd.DataFrame(rows)
    return frame.sort_values("version", ascending=False) if not frame.empty else frame
