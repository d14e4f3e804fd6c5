"""Where a study's trained weights live: a folder (one machine, or a shared disk) or an
object store (``s3://bucket/prefix``: AWS S3, MinIO, Ceph, any S3-compatible store).

Both go through Optuna's artifact stores (``FileSystemArtifactStore``,
``Boto3ArtifactStore``). An object store's credentials and endpoint come from the usual
AWS environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``,
``AWS_PROFILE``, ...). A study records its location when it is made
(``user_attrs["artifacts"]``): every worker, ``finalize`` and ``export`` use that one.
Before a study is made or a worker starts, the location is checked by writing and
removing a small probe, so that a full, read-only or unreachable store is refused in one
line, not found after the first trainings. A store that fails mid-study fails the trial
it interrupted (re-queued) and is waited for (``CNNSEARCH_ARTIFACTS_RETRY_S``).
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from .errors import FailingTrials, RecipeError
from .interrupt import check as check_interrupt

# how long a worker waits for an artifact store that stopped answering before it stops
ARTIFACTS_RETRY_S = float(os.environ.get("CNNSEARCH_ARTIFACTS_RETRY_S", "120"))
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


class ArtifactsLost(BaseException):
    """Raised by the objective when the artifact store refuses a trial's weights. Not an
    Exception, so that Optuna does not record the trial as the candidate's failure: the
    worker fails it with this reason, re-queues it and waits for the store."""

    def __init__(self, location: str, reason: str):
        super().__init__(reason)
        self.location, self.reason = location, reason


def is_url(location: str) -> bool:
    return "://" in location


def parse_location(value: str, base: Path) -> str:
    """A recipe's (or ``--artifacts``') location: an ``s3://bucket[/prefix]`` URL as is, a
    folder made absolute against ``base``; RecipeError for a malformed URL."""
    if not is_url(value):
        return str((base / Path(value).expanduser()).resolve()) if value else value
    scheme, rest = value.split("://", 1)
    if scheme != "s3":
        raise RecipeError(f"artifacts: {value!r}: a folder or an s3://bucket/prefix URL (any S3-compatible "
                          f"store, AWS_ENDPOINT_URL for its endpoint); {scheme}:// is not supported")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise RecipeError(f"artifacts: {value!r}: {bucket!r} is not a bucket name (3 to 63 lowercase letters, "
                          "digits, '.' or '-')")
    prefix = prefix.strip("/")
    if "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
        raise RecipeError(f"artifacts: {value!r}: the prefix must be plain path segments")
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def _split(url: str) -> tuple[str, str]:
    bucket, _, prefix = url[len("s3://"):].partition("/")
    return bucket, prefix


def _client():
    """A boto3 S3 client, one per AWS environment (endpoint, region, profile, keys)."""
    keys = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    return _make_client(tuple(os.environ.get(k) for k in keys))


@functools.lru_cache(maxsize=8)
def _make_client(_environment: tuple):
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise RecipeError("artifacts: an s3:// store needs boto3 (pip install boto3)") from None
    # short connection timeouts and few retries: a store that is down is found in seconds
    config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.session.Session().client("s3", config=config)  # a session of its own: its environment


class _Prefixed:
    """An Optuna artifact store whose artifacts sit under a key prefix (``bucket/prefix/ID``)."""

    def __init__(self, store, prefix: str):
        self.store, self.prefix = store, prefix

    def _key(self, artifact_id: str) -> str:
        return f"{self.prefix}/{artifact_id}" if self.prefix else artifact_id

    def open_reader(self, artifact_id: str):
        return self.store.open_reader(self._key(artifact_id))

    def write(self, artifact_id: str, content_body) -> None:
        self.store.write(self._key(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(self._key(artifact_id))


def open_store(location: str):
    """The Optuna artifact store of ``location`` (a folder is made when missing)."""
    if is_url(location):
        from optuna.artifacts import Boto3ArtifactStore

        bucket, prefix = _split(location)
        return _Prefixed(Boto3ArtifactStore(bucket, client=_client()), prefix)
    from optuna.artifacts import FileSystemArtifactStore

    Path(location).mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(location)


def store_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the artifact store failing (unreachable, refusing, full), as
    opposed to a fault of the code."""
    if isinstance(exc, OSError):
        return True
    try:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return False
    return isinstance(exc, (BotoCoreError, ClientError, Boto3Error))


def describe(exc: BaseException) -> str:
    """One short line for a store's error (an S3 error's code and message, an OSError's text)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("Error"):
        error = response["Error"]
        return f"{error.get('Code', '?')}: {error.get('Message', '')}".strip().rstrip(":")[:200]
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def check_writable(location: str, *, create: bool) -> None:
    """Write and remove a probe where the weights go, or RecipeError in one line. A missing
    folder is made when ``create``; otherwise (a study's recorded folder, on a machine that
    does not have it) refused."""
    if is_url(location):
        _check_bucket(location)
        return
    folder = Path(location)
    if not folder.exists():
        if not create:
            raise RecipeError(f"artifacts: {folder} does not exist on this machine: the study keeps its trained "
                              "weights there; run this worker where that folder is mounted, or make the study "
                              "with an object store (artifacts = \"s3://bucket/prefix\")")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecipeError(f"artifacts: cannot create folder {folder} ({exc.strerror})") from None
    if not folder.is_dir():
        raise RecipeError(f"artifacts: {folder} is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".cnnsearch-probe-") as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise RecipeError(f"artifacts: cannot write in {folder} ({exc.strerror or exc})") from None


def _check_bucket(url: str) -> None:
    import io

    from botocore.exceptions import NoCredentialsError

    bucket, prefix = _split(url)
    key = f"{prefix}/.cnnsearch-probe-{uuid.uuid4().hex}" if prefix else f".cnnsearch-probe-{uuid.uuid4().hex}"
    client = _client()
    endpoint = client.meta.endpoint_url
    try:
        client.upload_fileobj(io.BytesIO(b"probe"), bucket, key)
        client.delete_object(Bucket=bucket, Key=key)
    except NoCredentialsError:
        raise RecipeError(f"artifacts: {url}: no AWS credentials (set AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)") from None
    except Exception as exc:
        if not store_error(exc):
            raise
        why = describe(exc)
        if "NoSuchBucket" in why:
            why = f"bucket {bucket!r} does not exist at {endpoint}"
        elif "Could not connect" in why or "Connect timeout" in why:
            why = f"cannot reach {endpoint}"
        raise RecipeError(f"artifacts: {url}: not writable: {why}") from None


def wait_for_store(location: str, exc: ArtifactsLost, *, on_note: Callable[[str], None] | None = None) -> None:
    """Return once ``location`` takes a probe again, trying every second; FailingTrials
    after ``ARTIFACTS_RETRY_S``."""
    if on_note is not None:
        on_note(f"the artifact store stopped answering ({exc.reason}); retrying for up to "
                f"{ARTIFACTS_RETRY_S:.0f} s")
    deadline, last = time.monotonic() + ARTIFACTS_RETRY_S, exc.reason
    while True:
        time.sleep(1.0)
        check_interrupt()  # Ctrl-C while waiting stops the wait, as it does the database's
        try:
            check_writable(location, create=False)
            return
        except RecipeError as again:
            last = str(again).removeprefix(f"artifacts: {location}: ")
        if time.monotonic() >= deadline:
            raise FailingTrials(f"the study's artifact store {location} has not answered for "
                                f"{ARTIFACTS_RETRY_S:.0f} s ({last}); every finished trial and its weights are "
                                "stored: run the search again when it is back") from None


def upload(location: str, path: Path, study_or_trial) -> str:
    """``path`` as an artifact of ``study_or_trial``: its id; ArtifactsLost when the store fails."""
    from optuna.artifacts import upload_artifact

    try:
        return upload_artifact(artifact_store=open_store(location), file_path=str(path),
                               study_or_trial=study_or_trial)
    except Exception as exc:
        from .storage import database_lost

        if database_lost(exc) or not store_error(exc):
            raise
        raise ArtifactsLost(location, describe(exc)) from exc


def download(location: str, artifact_id: str, path: Path) -> None:
    """An artifact into ``path`` (which must not exist); optuna's ArtifactNotFound when it is
    not there, RecipeError when the store cannot be read."""
    from optuna.artifacts import download_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound

    try:
        download_artifact(artifact_store=open_store(location), file_path=str(path), artifact_id=artifact_id)
    except ArtifactNotFound:
        raise
    except Exception as exc:
        if not store_error(exc) or isinstance(exc, FileExistsError):
            raise
        raise RecipeError(f"artifacts: {location}: cannot read the weights ({describe(exc)})") from None


def settle(recorded: str | None, wanted: str, *, given: str | None = None, made: bool = True) -> str:
    """The location a run on an existing study uses: the one it recorded when it was made
    (``recorded``), whatever the recipe here computes; a study made before locations were
    recorded keeps using the recipe's (``wanted``). ``--artifacts`` (``given``) that names
    another location than the recorded one (or, for such an old study, the recipe's) is
    refused: a study's weights live in one place. ``made``: False for a study not made yet."""
    if recorded is None and not made:
        return given or wanted  # a new study: it records this
    if recorded is None:
        if given and given != wanted:  # new weights there, old ones here: export would look in one place only
            raise RecipeError(f"--artifacts: {given}, but this study was made before studies recorded where their "
                              f"weights live, and keeps them in the recipe's {wanted}; leave --artifacts out")
        return wanted
    if given:
        if given != recorded:
            raise RecipeError(f"--artifacts: {given}, but the study keeps its weights in {recorded} (recorded "
                              "when it was made); leave --artifacts out, or give the study a new name")
        return recorded
    if is_url(wanted) and wanted != recorded:
        raise RecipeError(f"artifacts: the recipe says {wanted}, but the study keeps its weights in {recorded} "
                          "(recorded when it was made); use that, or give the study a new name")
    return recorded


def download_weights(artifact_id: str, artifacts: str, path: str | Path, *, what: str) -> None:
    """Artifact ``artifact_id`` of the store at ``artifacts`` written to ``path`` (replaced
    if there); ``what`` names it in the RecipeError when the store does not hold it."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    path = Path(path)
    # Optuna refuses to overwrite: download beside the target, then replace it in one step,
    # so exporting again (the demo, run twice) overwrites the old weights as it does the code
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        part = Path(tmp) / path.name
        try:
            download(artifacts, artifact_id, part)
        except ArtifactNotFound:
            if is_url(artifacts):
                raise RecipeError(f"{what} are not in {artifacts}") from None
            raise RecipeError(f"{what} are not in {artifacts} (a study made before recipe paths were relative "
                              "to the recipe kept a relative `artifacts` folder relative to where it ran: move "
                              "that folder there)") from None
        os.replace(part, path)
