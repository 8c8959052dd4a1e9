"""Kaggle datasets in the fake (tests/fake_kaggle.py): create, new version, status, files, and
which datasets a push may attach, as the real client (2.2.5) drives them.

Endpoints (paths with or without the ``/api`` prefix):

* ``POST /api/v1/blobs.BlobApiService/StartBlobUpload`` → ``{"token", "createUrl"}``, then
  ``PUT /blobs/<token>`` with the file's bytes (the client's resumable upload: 200 when done);
* ``POST /api/v1/datasets.DatasetApiService/CreateDataset`` (owner = the caller, a slug not in use,
  6–50 characters) and ``CreateDatasetVersion`` (the dataset's owner only): the files named by
  their blob tokens make the version, the earlier versions stay;
* ``GetDatasetStatus`` (``READY``), ``GetDataset`` (``currentVersionNumber``, ``isPrivate``,
  ``ownerRef``) and ``ListDatasetFiles`` (paged, of the current or a given version). A private
  dataset is visible to its owner only: anyone else gets 404, as for a dataset that does not exist.

A push's ``datasetDataSources`` naming a dataset the fake knows but the caller cannot see (another
user's private dataset) is listed in the push answer's ``invalidDatasetSources``, as Kaggle does;
each accepted push records the version of each dataset it attached (``attached(ref)``).

Scripting and inspection: ``add_dataset(ref, files, private=True)`` (a dataset of any owner),
``datasets`` (ref → ``FakeDataset``), ``dataset_files(ref, version=None)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

_DATASETS = "datasets.DatasetApiService"
_BLOBS = "blobs.BlobApiService"
BLOB_PATH = "/blobs/"


@dataclass
class FakeDataset:
    """One dataset: its owner, title, privacy and versions (each a {name: bytes})."""

    ref: str  # "owner/slug"
    title: str
    private: bool
    versions: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # each version's notes ("" for the first)

    @property
    def owner(self) -> str:
        return self.ref.split("/")[0]

    def visible_to(self, user: str | None) -> bool:
        return not self.private or user is None or user == self.owner


class DatasetsFake:
    """The datasets part of FakeKaggle (mixed into it)."""

    def _init_datasets(self) -> None:
        self.datasets: dict[str, FakeDataset] = {}
        self._dataset_blobs: dict[str, dict] = {}  # token → {"name", "content"}
        self._attached: dict[tuple[str, int], dict[str, int]] = {}

    # ------------------------------------------------------------------ scripting
    def add_dataset(self, ref: str, files: dict, private: bool = True, title: str | None = None):
        """A dataset of any owner, with one version of ``files`` ({name: bytes or str})."""
        content = {
            name: value.encode() if isinstance(value, str) else bytes(value)
            for name, value in files.items()
        }
        with self._lock:
            dataset = FakeDataset(ref, title or ref.split("/")[1], private, [content], [""])
            self.datasets[ref] = dataset
        return dataset

    # ----------------------------------------------------------------- inspection
    def dataset_files(self, ref: str, version: int | None = None) -> dict:
        """{name: bytes} of a dataset's version (default: its latest)."""
        with self._lock:
            versions = self.datasets[ref].versions
            return dict(versions[(version or len(versions)) - 1])

    def attached(self, ref: str, version: int | None = None) -> dict:
        """{dataset ref: its version} that an accepted push of kernel ``ref`` attached (default:
        the latest push)."""
        with self._lock:
            version = version or self._versions.get(ref, 0)
            return dict(self._attached.get((ref, version), {}))

    # ------------------------------------------------------------------ internals
    def _dataset_routes(self) -> dict:
        return {
            (_BLOBS, "StartBlobUpload"): self._start_blob_upload,
            (_DATASETS, "CreateDataset"): self._create_dataset,
            (_DATASETS, "CreateDatasetVersion"): self._create_dataset_version,
            (_DATASETS, "GetDatasetStatus"): self._dataset_status,
            (_DATASETS, "GetDataset"): self._get_dataset,
            (_DATASETS, "ListDatasetFiles"): self._list_dataset_files,
        }

    def _invalid_dataset_sources(self, sources, user: str | None) -> list:
        """The sources of a push the caller cannot see (another user's private dataset)."""
        with self._lock:
            return [
                source
                for source in sources or []
                if source in self.datasets and not self.datasets[source].visible_to(user)
            ]

    def _record_attached(self, ref: str, version: int, sources) -> None:
        with self._lock:
            self._attached[(ref, version)] = {
                source: len(self.datasets[source].versions)
                for source in sources or []
                if source in self.datasets
            }

    def _start_blob_upload(self, rec):
        token = f"dsblob{self._next_id()}"
        with self._lock:
            self._dataset_blobs[token] = {"name": rec.body.get("name"), "content": None}
        return 200, {"token": token, "createUrl": f"{self.url}{BLOB_PATH}{token}"}, {}

    def _blob_upload(self, rec):
        token = rec.path.rsplit("/", 1)[-1]
        with self._lock:
            blob = self._dataset_blobs.get(token)
            if blob is None or rec.method != "PUT":
                return self._unknown(rec, 404, f"No blob upload {token}")
            blob["content"] = rec.raw
        return 200, None, {}

    def _uploaded_files(self, files):
        """{name: bytes} of the blob tokens a create request names; an error message if one
        was never uploaded."""
        content = {}
        with self._lock:
            for entry in files or []:
                blob = self._dataset_blobs.get(entry.get("token"))
                if blob is None or blob["content"] is None:
                    return None, f"Unknown or empty blob token {entry.get('token')!r}"
                content[blob["name"]] = blob["content"]
        return content, None

    @staticmethod
    def _dataset_answer(ref: str, error: str | None = None):
        if error:
            return 200, {"status": "error", "error": error}, {}
        return (
            200,
            {"ref": f"/{ref}", "url": f"https://www.kaggle.com/datasets/{ref}", "status": "ok"},
            {},
        )

    def _create_dataset(self, rec):
        body = rec.body
        owner, slug = body.get("ownerSlug") or rec.user or "", body.get("slug") or ""
        ref = f"{owner}/{slug}"
        if rec.user is not None and owner != rec.user:
            return self._dataset_answer(ref, f"Cannot create {ref}: you are {rec.user}")
        if not 6 <= len(slug) <= 50:
            return self._dataset_answer(ref, "The dataset slug must be between 6 and 50 characters")
        content, error = self._uploaded_files(body.get("files"))
        if error:
            return 400, {"code": 400, "message": error}, {}
        with self._lock:
            if ref in self.datasets:
                return self._dataset_answer(ref, f'The requested slug "{slug}" is already in use')
            self.datasets[ref] = FakeDataset(
                ref, body.get("title") or slug, bool(body.get("isPrivate", False)), [content], [""]
            )
        return self._dataset_answer(ref)

    def _create_dataset_version(self, rec):
        ref = f"{rec.body.get('ownerSlug', '')}/{rec.body.get('datasetSlug', '')}"
        with self._lock:
            dataset = self.datasets.get(ref)
            if dataset is None or not dataset.visible_to(rec.user):
                return 404, {"code": 404, "message": f"Dataset {ref} not found"}, {}
            if rec.user is not None and dataset.owner != rec.user:
                return 403, {"code": 403, "message": f"{rec.user} cannot update {ref}"}, {}
        version = rec.body.get("body") or {}
        content, error = self._uploaded_files(version.get("files"))
        if error:
            return 400, {"code": 400, "message": error}, {}
        with self._lock:
            dataset.versions.append(content)
            dataset.notes.append(version.get("versionNotes") or "")
        return self._dataset_answer(ref)

    def _visible_dataset(self, rec):
        ref = f"{rec.body.get('ownerSlug', '')}/{rec.body.get('datasetSlug', '')}"
        with self._lock:
            dataset = self.datasets.get(ref)
        if dataset is None or not dataset.visible_to(rec.user):
            return ref, None
        return ref, dataset

    def _dataset_status(self, rec):
        ref, dataset = self._visible_dataset(rec)
        if dataset is None:
            return 404, {"code": 404, "message": f"Dataset {ref} not found"}, {}
        return 200, {"status": "READY"}, {}

    def _get_dataset(self, rec):
        ref, dataset = self._visible_dataset(rec)
        if dataset is None:
            return 404, {"code": 404, "message": f"Dataset {ref} not found"}, {}
        with self._lock:
            latest = dataset.versions[-1]
            number = len(dataset.versions)
        return (
            200,
            {
                "ref": ref,
                "title": dataset.title,
                "ownerRef": dataset.owner,
                "ownerName": dataset.owner,
                "isPrivate": dataset.private,
                "currentVersionNumber": number,
                "totalBytes": sum(len(content) for content in latest.values()),
                "url": f"https://www.kaggle.com/datasets/{ref}",
            },
            {},
        )

    def _list_dataset_files(self, rec):
        ref, dataset = self._visible_dataset(rec)
        if dataset is None:
            return 404, {"code": 404, "message": f"Dataset {ref} not found"}, {}
        with self._lock:
            number = int(rec.body.get("datasetVersionNumber") or len(dataset.versions))
            if not 1 <= number <= len(dataset.versions):
                return 404, {"code": 404, "message": f"{ref} has no version {number}"}, {}
            files = dataset.versions[number - 1]
        names = sorted(files)
        page_size = int(rec.body.get("pageSize") or 20)
        token = rec.body.get("pageToken") or ""
        start = int(token) if token.isdigit() else 0
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        page = [
            {
                "ref": f"{ref}/{name}",
                "datasetRef": ref,
                "ownerRef": dataset.owner,
                "name": name,
                "totalBytes": len(files[name]),
                "creationDate": created,
            }
            for name in names[start : start + page_size]
        ]
        more = start + page_size < len(names)
        return (
            200,
            {"datasetFiles": page, "nextPageToken": str(start + page_size) if more else ""},
            {},
        )
