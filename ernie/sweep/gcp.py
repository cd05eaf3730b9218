"""List and delete ernie's TPU nodes and buckets in a Google Cloud project through the REST APIs.

The HTTP client is the seam: `GcpRest` signs requests with the user's Application Default Credentials
(google-auth); the tests hand in a double that replays recorded API responses.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote

from ernie.errors import ErnieError
from ernie.sweep import STACK_TAG, Leftover, Tagged
from catalog import pricing, tpu_catalog

TPU_API = "https://tpu.googleapis.com/v2"
STORAGE_API = "https://storage.googleapis.com/storage/v1"


class Http(Protocol):
    """What the sweeper needs from an HTTP client: JSON GET with paging, and DELETE."""

    def get(self, url: str, params: dict[str, str] | None = None) -> dict[str, Any]: ...
    def delete(self, url: str) -> None: ...


class GcpRest:
    """The real client: google-auth's AuthorizedSession with Application Default Credentials."""

    def __init__(self) -> None:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
        from google.auth.transport.requests import AuthorizedSession

        try:
            credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        except DefaultCredentialsError as exc:
            raise ErnieError("no Google Cloud credentials: run `gcloud auth application-default login`") from exc
        self.session = AuthorizedSession(credentials)

    def get(self, url: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        response = self.session.get(url, params=params, timeout=60)
        if response.status_code == 404:
            return {}
        response.raise_for_status()
        return response.json()

    def delete(self, url: str) -> None:
        self.session.delete(url, timeout=60).raise_for_status()


def _created(stamp: str | None) -> datetime | None:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


def _paged(http: Http, url: str, key: str, params: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    params = dict(params or {})
    while True:
        page = http.get(url, params)
        yield from page.get(key, [])
        if not page.get("nextPageToken"):
            return
        params["pageToken"] = page["nextPageToken"]


def _tpu_price(accelerator_type: str) -> float | None:
    tpu = tpu_catalog.lookup_tpu(accelerator_type)
    if tpu is None:
        return None
    try:
        return pricing.quote("gcp", tpu.generation.name, tpu.chips).usd_per_hour
    except KeyError:
        return None  # not in the catalog: shown as unknown, never guessed


def all_tpu_zones() -> list[str]:
    """Every zone the TPU catalog knows, so a sweep without --zone misses none ernie could have used."""
    return sorted({z for g in tpu_catalog.GENERATIONS for z in (*g.zones, *g.pod_zones)})


class GcpProject:
    """ernie's resources in one project."""

    def __init__(self, project: str, zones: list[str], http: Http) -> None:
        self.project, self.zones, self.http = project, zones, http

    def tagged(self) -> Iterator[Tagged]:
        for zone in self.zones:
            url = f"{TPU_API}/projects/{self.project}/locations/{zone}/nodes"
            for node in _paged(self.http, url, "nodes"):
                labels = node.get("labels", {})
                if STACK_TAG in labels:
                    yield Tagged("gcp", "tpu-node", node["name"], zone, labels, _created(node.get("createTime")),
                                 _tpu_price(node.get("acceleratorType", "")),
                                 f'{node.get("acceleratorType", "?")}, {node.get("state", "?")}')
        for bucket in _paged(self.http, f"{STORAGE_API}/b", "items", {"project": self.project}):
            labels = bucket.get("labels", {})
            if STACK_TAG in labels:
                yield Tagged("gcp", "bucket", bucket["name"], bucket.get("location", ""), labels,
                             _created(bucket.get("timeCreated")), 0.0)

    def delete(self, leftovers: list[Leftover]) -> list[str]:
        """Delete TPU nodes, then empty and delete buckets; returns what failed."""
        failures = []
        for item in sorted(leftovers, key=lambda x: x.resource.kind != "tpu-node"):
            r = item.resource
            try:
                if r.kind == "tpu-node":
                    self.http.delete(f"{TPU_API}/{r.id}")
                elif r.kind == "bucket":
                    for obj in _paged(self.http, f"{STORAGE_API}/b/{r.id}/o", "items", {"versions": "true"}):
                        self.http.delete(f"{STORAGE_API}/b/{r.id}/o/{quote(obj['name'], safe='')}"
                                         f"?generation={obj['generation']}")
                    self.http.delete(f"{STORAGE_API}/b/{r.id}")
            except Exception as exc:  # noqa: BLE001 - one failed delete must not hide the others
                failures.append(f"{r.kind} {r.id}: {exc}")
        return failures

