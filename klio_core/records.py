"""What processing one media ID leaves behind, as versioned data: the record stored beside each
output (``OutputRecord``) and what happened to an ID in one task (``ItemResult``, in one of the
``ItemStatus`` states).

Both are JSON on the wire and in storage, with a format version. Records written before the
version existed (format 1, no ``record_version`` key) read as they are: the fields have not
changed, so upgrading recomputes nothing.
"""

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from typing import Any

RECORD_VERSION = 2
"""2 adds the ``record_version`` key itself; format 1 had the same fields without it."""
RESULT_VERSION = 1


class ItemStatus(enum.StrEnum):
    """What happened to one media ID in one task.

    - ``MATERIALIZED``: the outputs were written;
    - ``SKIPPED``: every output exists and was produced by the same code version, config and
      inputs (Klio's output existence check), and the task is not forced;
    - ``DROPPED``: an input (source media or an upstream output) is missing, or its upstream
      task failed or was dropped in this pass, so nothing was run;
    - ``FAILED``: an input could not be decoded, the function raised or timed out (after its
      retries), or its value could not be encoded.
    """

    MATERIALIZED = "materialized"
    SKIPPED = "skipped"
    DROPPED = "dropped"
    FAILED = "failed"


@dataclass(frozen=True)
class CheckOutcome:
    """One check of one output value."""

    name: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class OutputRecord:
    """What is stored beside an output, written after the output itself (so a half-finished
    write never counts as fresh): enough to tell whether the output is fresh, and to report it
    to Dagster again if the run that wrote it died before it could.

    ``fingerprint``: code version and config that produced it; ``version``: new on every write;
    ``inputs``: the versions of the upstream outputs it was computed from (None for an upstream
    that had no record); ``run_id``: the run that wrote it.
    """

    fingerprint: str
    code_version: str | None
    version: str
    inputs: dict[str, str | None]
    run_id: str | None
    metadata: dict[str, Any]
    checks: tuple[CheckOutcome, ...] = ()

    def to_json(self) -> bytes:
        body = {"record_version": RECORD_VERSION, **dataclasses.asdict(self)}
        return json.dumps(body).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "OutputRecord":
        body = json.loads(data)
        version = body.get("record_version", 1)
        if version > RECORD_VERSION:
            raise ValueError(f"output record format {version} is newer than this code reads ({RECORD_VERSION})")
        return cls(fingerprint=body.get("fingerprint", ""), code_version=body.get("code_version"),
                   version=str(body.get("version")), inputs=body.get("inputs") or {}, run_id=body.get("run_id"),
                   metadata=body.get("metadata") or {},
                   checks=tuple(CheckOutcome(**c) for c in body.get("checks") or ()))


@dataclass(frozen=True)
class WrittenOutput:
    """One output of one media ID, as stored: where, its version (a new one per write), what the
    UI shows about it (JSON-safe ``metadata``), its checks and the versions of the upstream
    outputs it was computed from. ``written_by_run`` is set only for an output found fresh
    (skipped): the run that wrote it, from its record."""

    uri: str
    version: str
    metadata: dict[str, Any]
    checks: tuple[CheckOutcome, ...] = ()
    written_by_run: str | None = None
    inputs: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def from_record(cls, uri: str, record: OutputRecord) -> "WrittenOutput":
        return cls(uri, record.version, record.metadata, record.checks, str(record.run_id), record.inputs)


@dataclass
class ItemResult:
    """What happened to one media ID in one task (``task`` is the task's name): for
    ``MATERIALIZED`` and ``SKIPPED``, each output asset's ``WrittenOutput``."""

    media_id: str
    status: ItemStatus
    reason: str = ""
    outputs: dict[str, WrittenOutput] = field(default_factory=dict)
    seconds: float = 0.0
    retries: int = 0
    task: str = ""

    def to_json(self) -> dict:
        return {"v": RESULT_VERSION, "media_id": self.media_id, "status": str(self.status), "reason": self.reason,
                "outputs": {asset: dataclasses.asdict(o) for asset, o in self.outputs.items()},
                "seconds": round(self.seconds, 6), "retries": self.retries, "task": self.task}

    @classmethod
    def from_json(cls, d: dict) -> "ItemResult":
        outputs = {asset: WrittenOutput(**{**o, "checks": tuple(CheckOutcome(**c) for c in o["checks"])})
                   for asset, o in d["outputs"].items()}
        return cls(d["media_id"], ItemStatus(d["status"]), d.get("reason", ""), outputs, d.get("seconds", 0.0),
                   d.get("retries", 0), d.get("task", ""))
