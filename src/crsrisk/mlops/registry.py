"""The MLflow tracking store and model registry: where runs go, versions, aliases and their audit.

One rule says which store every command uses (`locate_store`): ``MLFLOW_TRACKING_URI``, else
the configuration's ``tracking.uri``, else ``[tracking] uri`` in the project's crsrisk.toml, else
the per-user store ``~/.crsrisk/mlflow.db`` (``CRSRISK_HOME`` moves the folder), never the
working directory. Commands that only read (`existing_store`, ``connect(create=False)``) never
create a store; commands that write check theirs with a probe before any long work
(`check_store`), and a new SQLite store is initialised under a file lock so that two commands
starting at once do not both run its schema migrations.

Every alias change (challenger, champion) is appended to an audit trail kept in the registry
itself, as tags of the registered model (`audit.000001`, ...), so it travels with the store.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from crsrisk.config import TrackingConfig, load_project_tracking
from crsrisk.errors import CrsriskError, EnvironmentFault, ModelError

__all__ = [
    "CHAMPION",
    "CHALLENGER",
    "AUDIT_PREFIX",
    "METRIC_TAG_PREFIX",
    "HOME_VARIABLE",
    "STORE_LOGGER",
    "PROBE_TIMEOUT_S",
    "RegistryError",
    "StoreFault",
    "StoreLocation",
    "crsrisk_home",
    "locate_store",
    "resolve_tracking_uri",
    "artifact_location",
    "check_store",
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
HOME_VARIABLE = "CRSRISK_HOME"
# Each store a command uses is announced (INFO) on this logger; the command line prints it.
STORE_LOGGER = "crsrisk.store"
_log = logging.getLogger(STORE_LOGGER)
# Seconds a tracking server gets to answer the reachability probe.
PROBE_TIMEOUT_S = 5.0
_SQLITE = "sqlite:///"
_SQLITE_HEADER = b"SQLite format 3\x00"
# Schemes mlflow can track to (SQLAlchemy URLs may name a driver: postgresql+psycopg2).
_SCHEMES = frozenset({"sqlite", "file", "http", "https", "postgresql", "mysql", "mssql",
                      "databricks", "databricks-uc", "uc"})


class RegistryError(CrsriskError):
    """The registry cannot do what was asked (unknown version, no champion, no store)."""


class StoreFault(RegistryError, EnvironmentFault):
    """The tracking store is unreachable, unwritable or not a store (the CLI exits 3)."""


@dataclass(frozen=True)
class StoreLocation:
    """Which tracking store, chosen by which rule, and where new experiments keep artefacts."""

    uri: str
    source: str
    artifact_location: str | None

    @property
    def sqlite_file(self) -> Path | None:
        """The database file of a SQLite store, else None."""
        return Path(self.uri[len(_SQLITE):]) if self.uri.startswith(_SQLITE) else None

    def describe(self) -> str:
        """One line for the user: the store and why it is this one."""
        return f"tracking store: {_redact(self.uri)} ({self.source})"


def crsrisk_home() -> Path:
    """The per-user folder of the default store: ``CRSRISK_HOME``, else ``~/.crsrisk``."""
    return Path(os.environ.get(HOME_VARIABLE) or Path.home() / ".crsrisk").expanduser().resolve()


def _redact(uri: str) -> str:
    """``uri`` without a password (https://user:secret@host -> https://user:***@host)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _first_line(message: str) -> str:
    lines = str(message).strip().splitlines() or [""]
    return lines[0].rstrip(".")


def _absolute_sqlite(uri: str) -> str:
    path = uri[len(_SQLITE):]
    if uri.startswith(_SQLITE) and path and not Path(path).is_absolute():
        return _SQLITE + str(Path(path).resolve())
    return uri


def _artifacts(uri: str, configured: str | None) -> str | None:
    if configured:
        return configured if "://" in configured else Path(configured).resolve().as_uri()
    if uri.startswith(_SQLITE):
        return (Path(uri[len(_SQLITE):]).parent / "mlartifacts").as_uri()
    return None  # a server decides where its artefacts go


def locate_store(config: TrackingConfig | None = None) -> StoreLocation:
    """The tracking store crsrisk uses, by the one rule (see the module docstring).

    Parameters
    ----------
    config
        The tracking section of a training config; None or ``uri`` None defers to the project's
        crsrisk.toml and then to the per-user store.

    Returns
    -------
    StoreLocation
        The store's URI (a relative SQLite path made absolute against the working directory),
        the rule that chose it, and the artefact location for new experiments.
    """
    configured = config.artifact_root if config else None
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        uri = _absolute_sqlite(env)
        return StoreLocation(uri, "from MLFLOW_TRACKING_URI", _artifacts(uri, configured))
    if config is not None and config.uri:
        uri = _absolute_sqlite(config.uri)
        source = f"from {config.origin}" if config.origin else "from the configuration"
        return StoreLocation(uri, source, _artifacts(uri, configured))
    project = load_project_tracking()
    if project is not None and project.uri:
        uri = _absolute_sqlite(project.uri)
        return StoreLocation(uri, f"from {project.origin}",
                             _artifacts(uri, configured or project.artifact_root))
    home = crsrisk_home()
    uri = _SQLITE + str(home / "mlflow.db")
    return StoreLocation(uri, f"the per-user store; MLFLOW_TRACKING_URI or {HOME_VARIABLE} "
                         "chooses another", _artifacts(uri, configured))


def resolve_tracking_uri(config: TrackingConfig | None = None) -> str:
    """The URI of the store `locate_store` chooses."""
    return locate_store(config).uri


def artifact_location(config: TrackingConfig | None = None) -> str | None:
    """The artefact location for new experiments (None: the tracking server chooses)."""
    return locate_store(config).artifact_location


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""


def _check_usable(where: StoreLocation) -> None:
    """Refuse what cannot be a store at all: an unknown scheme, a file that is no database."""
    uri, scheme = where.uri, _scheme(where.uri)
    if scheme and scheme not in _SCHEMES:
        raise StoreFault(
            f"The tracking URI {_redact(uri)} ({where.source}) uses the unsupported scheme "
            f"{scheme}://: give sqlite:///PATH/mlflow.db, http(s)://HOST:PORT of a tracking "
            "server, or a database URL."
        )
    if scheme in ("", "file"):
        path = Path(urllib.parse.urlsplit(uri).path if scheme else uri)
        if path.is_file():
            raise StoreFault(
                f"The tracking URI {uri} ({where.source}) names a file, not a tracking store: "
                f"for a SQLite database give sqlite:///{path}, otherwise point it at the store."
            )
    database = where.sqlite_file
    if database is not None and database.exists():
        if database.is_dir():
            raise StoreFault(f"The tracking store {database} ({where.source}) is a folder, not "
                             "a SQLite file: point the tracking URI at the database file.")
        try:
            with database.open("rb") as handle:
                header = handle.read(len(_SQLITE_HEADER))
        except OSError as exc:
            raise StoreFault(f"The tracking store {database} ({where.source}) cannot be read "
                             f"({exc.strerror}): check its permissions.") from exc
        if header and header != _SQLITE_HEADER:
            raise StoreFault(
                f"The tracking store {database} ({where.source}) is not a SQLite database: "
                "point the tracking URI at the store's mlflow.db, or at a new file."
            )
    if scheme in ("http", "https"):
        _probe_server(where)


def _missing_local_store(where: StoreLocation) -> Path | None:
    """The path of a store on this machine that does not exist (yet), else None."""
    scheme = _scheme(where.uri)
    if where.sqlite_file is not None:
        return None if where.sqlite_file.is_file() else where.sqlite_file
    if scheme in ("", "file"):
        path = Path(urllib.parse.urlsplit(where.uri).path if scheme else where.uri)
        return None if path.exists() else path
    return None


def _probe_server(where: StoreLocation) -> None:
    """A quick request to the server, so that an unreachable one fails in seconds."""
    parts = urllib.parse.urlsplit(where.uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]  # urllib cannot send credentials from the URL
    health = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health",
                                      "", ""))
    try:
        with urllib.request.urlopen(health, timeout=PROBE_TIMEOUT_S):
            return
    except urllib.error.HTTPError:
        return  # it answered (perhaps 401 behind a proxy): reachable
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StoreFault(
            f"The tracking server {_redact(where.uri)} ({where.source}) cannot be reached "
            f"({reason}): start it or check the address and network, or unset "
            "MLFLOW_TRACKING_URI to use the local store."
        ) from exc


def _probe_folder(folder: Path, what: str, where: StoreLocation) -> None:
    """Create ``folder`` if needed and write a file there, or say why it cannot be used."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".crsrisk-probe-"):
            pass
    except OSError as exc:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()),
                       None)
        why = (f"{blocker} is a file, not a folder" if blocker is not None
               else exc.strerror or str(exc))
        raise StoreFault(
            f"The {what} {folder} ({where.source}) cannot be written ({why}): choose a "
            "writable place with MLFLOW_TRACKING_URI or CRSRISK_HOME, or fix the folder's "
            "permissions."
        ) from exc


def check_store(config: TrackingConfig | None = None) -> StoreLocation:
    """The store a writing command will use, checked before any long work starts.

    A SQLite store's folder and the artefact folder get a probe write (no database is created
    yet); a server gets a reachability probe.

    Raises
    ------
    StoreFault
        The store or its artefact folder cannot be used or written.
    """
    where = locate_store(config)
    _log.info(where.describe(), extra={"store_uri": where.uri})
    _check_usable(where)
    database = where.sqlite_file
    if database is not None:
        _probe_folder(database.parent, "tracking store folder", where)
        if database.is_file() and not os.access(database, os.W_OK):
            raise StoreFault(f"The tracking store {database} ({where.source}) is read-only: "
                             "make it writable, or choose another store.")
    if where.artifact_location and where.artifact_location.startswith("file:"):
        folder = Path(urllib.parse.unquote(urllib.parse.urlsplit(where.artifact_location).path))
        _probe_folder(folder, "artefact folder", where)
    return where


def existing_store(uri: str, config: TrackingConfig | None = None) -> str:
    """The tracking URI for reading ``uri``, refusing a store that does not exist yet.

    mlflow would quietly create an empty store there and then not find the model ``uri``.

    Raises
    ------
    ModelError
        No store exists where the rule points (the message names the place and the rule).
    StoreFault
        The store is unreachable or not a store.
    """
    where = locate_store(config)
    _log.info(where.describe(), extra={"store_uri": where.uri})
    _check_usable(where)
    database = _missing_local_store(where)
    if database is not None:
        raise ModelError(
            f"There is no tracking store at {database} ({where.source}), so {uri} cannot be "
            "found: train a model with crsrisk train, set MLFLOW_TRACKING_URI to the store "
            "that holds it, or give --model an exported folder."
        )
    return where.uri


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


@contextlib.contextmanager
def _first_use_lock(database: Path | None) -> Iterator[None]:
    """Hold ``<database>.lock`` while the store is opened, so only one process initialises it.

    mlflow creates a new SQLite store's tables, and upgrades an old one's, on first connection;
    two processes doing so at once crash in the schema migration.
    """
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock
        yield
        return
    if database is None:
        yield
        return
    with open(f"{database}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def connect(config: TrackingConfig | None = None, *, create: bool = True) -> Store:
    """Point mlflow at the tracking store and make sure the experiment exists.

    Parameters
    ----------
    config
        The tracking settings (see `locate_store`).
    create
        Create the store where none exists yet (a new SQLite file); False refuses instead, for
        commands that only read.

    Raises
    ------
    RegistryError
        ``create`` is False and there is no store where the rule points.
    StoreFault
        The store is unreachable, unwritable, or not a store.
    """
    config = config or TrackingConfig()
    where = check_store(config) if create else locate_store(config)
    database = where.sqlite_file
    if not create:
        _log.info(where.describe(), extra={"store_uri": where.uri})
        _check_usable(where)
        missing = _missing_local_store(where)
        if missing is not None:
            raise RegistryError(
                f"There is no tracking store at {missing} ({where.source}): train a model "
                "with crsrisk train first, or set MLFLOW_TRACKING_URI to the store that holds "
                "the models."
            )
    use_store(where.uri)
    try:
        with _first_use_lock(database if create else None):
            # The client opens the store (creating or upgrading its tables) as it is built.
            client = MlflowClient(where.uri, where.uri)
            experiment = client.get_experiment_by_name(config.experiment)
            if experiment is None:
                experiment_id = client.create_experiment(config.experiment,
                                                         where.artifact_location)
            else:
                experiment_id = experiment.experiment_id
            # The registry has its own connection: open it under the lock too.
            client.search_registered_models(max_results=1)
    except MlflowException as exc:
        raise StoreFault(f"The tracking store {_redact(where.uri)} ({where.source}) cannot be "
                         f"used ({_first_line(exc.message)}): check that it is a tracking store "
                         "and writable, or choose another.") from exc
    except OSError as exc:
        raise StoreFault(f"The tracking store {_redact(where.uri)} ({where.source}) cannot be "
                         f"used ({exc.strerror or exc}): check its folder and free space.") \
            from exc
    return Store(client, experiment_id, config.model_name, where.uri)


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
