"""The provenance document's schema: what a results folder says about how it was made, as typed fields. The run
writes it through this model and the store validates it on every read, so a report reads ``results.run.device_name``
and never walks the JSON by hand. Unknown keys are kept (a joined folder adds its sources), never relied on."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class ModelEntry(_Doc):
    attention: StrictStr
    arch: StrictStr
    pair: StrictStr = ""
    sha256: StrictStr
    source: StrictStr = ""
    folder: Optional[StrictStr] = None  # joined folders: the folder the model's results came from
    device_name: Optional[StrictStr] = None  # joined folders: the device they ran on


class DatasetEntry(_Doc):
    name: StrictStr
    source: StrictStr = ""
    split: Optional[StrictStr] = None
    content_sha256: StrictStr = ""


class ShiftEntry(_Doc):
    source: StrictStr = ""
    images: StrictInt = 0
    excluded_without_labels: StrictInt = 0


class SuiteEntry(_Doc):
    """The resolved suite as the run recorded it (config.suite.Suite.as_dict)."""

    name: StrictStr
    description: StrictStr = ""
    models: list[StrictStr]
    data: dict[str, Any]
    corruptions: Optional[dict[str, Any]] = None
    attacks: list[dict[str, Any]] = []
    study: Optional[dict[str, Any]] = None


class SourceEntry(_Doc):
    """Joined folders: one folder's part of the leaderboard."""

    folder: StrictStr
    device_name: Optional[StrictStr] = None
    device: Optional[StrictStr] = None
    suite_sha256: StrictStr = ""
    versions: dict[str, Any] = {}
    models: list[StrictStr] = []


class Provenance(_Doc):
    format: Literal[3]
    run_config: dict[str, Any]
    jobs: dict[str, StrictStr]  # planned job id -> identity hash
    suite: SuiteEntry
    suite_sha256: StrictStr
    versions: dict[str, Any]
    models: dict[str, ModelEntry]
    device: StrictStr
    device_name: StrictStr
    dtype: StrictStr
    seed: StrictInt
    limit: Optional[StrictInt] = None
    ranks: StrictInt
    corruption_implementation: StrictStr
    dataset: DatasetEntry
    sample_ids: dict[str, list[StrictStr]]
    shifts: dict[str, ShiftEntry] = {}
    sources: list[SourceEntry] = []  # joined folders only
    selected_from: Optional[StrictInt] = None  # a page of some of the models: how many the results held

    def suite_table(self, key: str) -> Optional[dict[str, Any]]:
        """A suite table a kind brings of its own (e.g. ``calibration``), as recorded; None when absent."""
        return (self.suite.model_extra or {}).get(key)
