"""Latency timed where the network will run, and one device per front.

With ``[latency] server = "http://host:port"`` each candidate is exported to ONNX (as the
in-process onnxruntime runtime does) and timed by a latency server on the target
(``latency_server.py``), with the token from ``$CNNSEARCH_LATENCY_TOKEN``. A server on this
machine (a loopback address) times while local trainers stand aside (``quiet.py``), as an
in-process timing does.

A study records the device of its first measurement (``user_attrs["latency_device"]``:
what ``device_identity`` keeps of the fingerprint, and the server, if any); a worker whose
figures would come from another device is refused before it trains anything, and a
measurement from another device fails its trial.
"""

from __future__ import annotations

import ipaddress
import json
import os
import urllib.error
import urllib.request
from contextlib import nullcontext
from urllib.parse import urlsplit

import torch

from .errors import CnnSearchError, RecipeError
from .latency import Latency, _machine_lock, fingerprint, measure, onnx_export
from .latency_reference import reference_model
from .latency_server import TOKEN_ENV
from .quiet import quiet_machine

# what makes two figures comparable; torch's version only where torch runs the network
COMPARED = ("device", "name", "cpus", "os", "arch", "runtime", "onnxruntime", "torch", "threads")
TIMEOUT_S = 300.0  # one measurement, the queue before it included


class LatencyServerError(CnnSearchError):
    """The latency server did not answer (``retry``: the trial fails and is re-queued), or
    refused the request (a 4xx: the trial fails)."""

    def __init__(self, message: str, *, retry: bool = True):
        super().__init__(message)
        self.retry = retry


class OtherDevice(CnnSearchError):
    """A figure from another device than the study's."""


def check_server_url(url: str) -> str:
    """``url`` as ``http(s)://host:port`` (a trailing ``/`` dropped), or a RecipeError."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if (parts.scheme not in ("http", "https") or not parts.hostname or port is None or parts.username
            or parts.password or parts.path not in ("", "/") or parts.query or parts.fragment):
        raise RecipeError(f"latency.server: {url!r} must be http://HOST:PORT (the address `cnnsearch latency-server` "
                          "prints), with no path")
    return url.rstrip("/")


def token() -> str:
    value = os.environ.get(TOKEN_ENV, "").strip()
    if not value:
        raise RecipeError(f"latency.server: set {TOKEN_ENV} to the server's token (the first line of its "
                          "--token-file)")
    return value


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a 3xx is an error here: the token is never sent on to another address


_OPENER = urllib.request.build_opener(_NoRedirect)


def call(server: str, path: str, *, body: bytes | None = None, timeout: float = TIMEOUT_S) -> dict:
    """One request to ``server``; LatencyServerError with the reason when it fails."""
    request = urllib.request.Request(server + path, data=body, method="POST" if body is not None else "GET",
                                     headers={"Authorization": f"Bearer {token()}",
                                              "Content-Type": "application/octet-stream"})
    try:
        with _OPENER.open(request, timeout=timeout) as response:  # http(s) only: check_server_url
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            why = json.loads(exc.read()).get("error", "")
        except (ValueError, OSError, AttributeError):
            why = ""
        raise LatencyServerError(f"latency server {server}: HTTP {exc.code} {exc.reason}"
                                 + (f": {why}" if why else ""), retry=exc.code >= 500) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        why = getattr(exc, "reason", None) or exc
        raise LatencyServerError(f"latency server {server} unreachable: {why}") from None


def measure_remote(model: torch.nn.Module, input_shape: tuple[int, ...], *, server: str,
                   batch_size: int = 1, reference: bool = False) -> Latency:
    """``measure``'s figures for ``model``, timed by the latency server at ``server``; with
    ``reference``, the reference network is sent too and timed interleaved with it there."""
    was_training = model.training
    model.eval()
    try:
        x = torch.randn(batch_size, *input_shape)
        body, _ = onnx_export(model, x)
    finally:
        model.train(was_training)
    shape = ",".join(map(str, x.shape))
    ref = reference_model() if reference else b""
    # a server on this machine: no local trainer runs while it times (nor another local timer)
    local = _loopback(server)
    with _machine_lock("cpu") if local else nullcontext(), quiet_machine("cpu") if local else nullcontext():
        got = call(server, f"/measure?shape={shape}" + (f"&reference={len(ref)}" if ref else ""), body=ref + body)
    if ref and isinstance(got, dict) and "median_ms" in got and "reference_calibration_ms" not in got:
        raise LatencyServerError(f"latency server {server}: no reference figures in its answer (a server from "
                                 "before [latency] reference): update it", retry=False)
    try:
        scaled = {k: got[k] for k in ("raw_median_ms", "reference_ms", "reference_calibration_ms")} if ref else {}
        return Latency(got["median_ms"], got["iqr_ms"], got["runs"], got["calls_per_run"], got["settled"],
                       batch_size, got["fingerprint"], "onnxruntime", rounds=got["rounds"],
                       round_medians_ms=got["round_medians_ms"], server=server, **scaled)
    except (KeyError, TypeError) as exc:
        raise LatencyServerError(f"latency server {server}: an answer without {exc}") from None


def time_candidate(model: torch.nn.Module, input_shape: tuple[int, ...], latency) -> Latency:
    """A recipe's ``[latency]`` (a LatencySection): on its server, or here."""
    if latency.server:
        return measure_remote(model, input_shape, server=latency.server, batch_size=latency.batch_size,
                              reference=latency.reference)
    return measure(model, input_shape, device=latency.device, batch_size=latency.batch_size,
                   threads=latency.threads, runtime=latency.runtime, reference=latency.reference)


def device_identity(fp: dict) -> dict:
    """What of a latency fingerprint must be equal for two figures to share a front."""
    found = {k: fp[k] for k in COMPARED if k in fp}
    if found.get("runtime") == "onnxruntime":
        found.pop("torch", None)  # a server has no torch; the exported graph is what is timed
    if str(found.get("device", "cpu")).startswith("cuda"):
        found.pop("threads", None)  # a GPU timing's host threads: cores/K under --workers K, not the device
    return found


def describe(identity: dict) -> str:
    """'Intel(R) Xeon(R) ... (2 cores, Linux/x86_64, onnxruntime 1.20.1, 1 thread)'."""
    runtime = identity.get("runtime", "torch")
    version = identity.get(runtime, "")
    where = "/".join(str(identity[k]) for k in ("os", "arch") if k in identity)
    return (f"{identity.get('name', '?')} ({identity.get('device', 'cpu')}, {identity.get('cpus', '?')} cores"
            + (f", {where}" if where else "") + f", {runtime} {version}, {identity.get('threads', '?')} thread(s))")


def worker_device(latency) -> dict:
    """The device this worker's figures would come from (asks the server, if any)."""
    if latency.server:
        return device_identity(call(latency.server, "/device", timeout=10.0))
    return device_identity(fingerprint(torch.device(latency.device), latency.threads, latency.runtime))


def refusal(study, mine: dict, server: str) -> str | None:
    """Why this worker may not add figures to ``study`` (None: it may)."""
    stored = study.user_attrs.get("latency_device")
    if not stored or stored.get("device") == mine:
        return None
    theirs = stored.get("server") or ""
    way = (f'time through the study\'s server: [latency] server = "{theirs}"' if theirs else
           "run this worker on that machine, or serve that machine with `cnnsearch latency-server` and set "
           "[latency] server")
    return (f"latency: study {study.study_name!r} is timed on {describe(stored['device'])}"
            + (f" via {theirs}" if theirs else "") + ", but this worker's figures would come from "
            + describe(mine) + (f" via {server}" if server else "") + f"; one front holds one device's figures: {way}")


def check_worker(study, latency) -> None:
    """Before a worker trains anything: refuse it if its figures would come from another device."""
    why = refusal(study, worker_device(latency), latency.server)
    if why:
        raise RecipeError(why)


def settle_device(study, lat: Latency, server: str, known: dict | None, trial_number: int) -> dict:
    """The study's device after this measurement: recorded now if it is the study's first,
    else OtherDevice if ``lat`` came from another one."""
    mine = device_identity(lat.fingerprint)
    if known is None:
        if "latency_device" not in study.user_attrs:
            study.set_user_attr("latency_device", {"device": mine, "server": server, "trial": trial_number})
        known = study.user_attrs["latency_device"]["device"]
    if mine != known:
        raise OtherDevice(refusal(study, mine, server) or "latency: another device")
    return known


def check_server(latency) -> None:
    """Before a study is created: the server answers, takes the token, and times with the
    recipe's thread count; a RecipeError (one line) otherwise."""
    try:
        device = call(latency.server, "/device", timeout=10.0)
    except LatencyServerError as exc:
        raise RecipeError(f"latency.server: {exc}") from None
    if device.get("threads") != latency.threads:
        raise RecipeError(f"latency.threads: {latency.threads}, but the server at {latency.server} times with "
                          f"{device.get('threads')} thread(s) (its --threads): make them equal")
    if getattr(latency, "reference", False) and "reference" not in device.get("features", ()):
        raise RecipeError(f"latency.reference: the latency server at {latency.server} predates timing with a "
                          "reference network: copy this version's latency_server.py to it, or set reference = false")
