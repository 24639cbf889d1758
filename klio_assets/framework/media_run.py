"""What the media assets' step does in a run: ONE Beam pipeline over the run's media IDs, each ID
passing through every selected asset once, and Dagster events for each ID as soon as its results
come back from the workers (so the Partitions tab fills while the run goes on).

Per asset and media ID the UI gets:

- ``materialized``: an ``AssetMaterialization`` of that partition (path, size, shape, a link to
  the plot, its output version, how many of its checks passed) and a check evaluation for each
  check that failed (a pass is counted in the run's per-check result and in the metadata: per-ID
  passes were about 17 of the 43 events each ID cost);
- ``dropped`` / ``failed``: an ``AssetObservation`` with the state and the reason, and one error
  line per media ID in the run's log (``log_problems``); the step fails at the end, so Dagster
  marks exactly those partitions failed;
- ``skipped`` (fresh): no event per ID (the partition keeps its earlier materialization), unless
  Dagster has no materialization of that output version (its run died before reporting it):
  then it is reported now, from its stored record.

Each materialization carries the data versions Dagster reads to tell staleness (``Provenance``):
its output version, the versions of the upstream outputs it was computed from and where their
materializations are, and the asset's code version (with the config's fingerprint when the run's
config was not the default). So Dagster's Unsynced badge agrees with the project's freshness
rule: a partition is unsynced exactly when the next run would recompute it.

At the end, one observation per asset (not per partition) holds the run's counters, timings and
the first skipped media IDs. The streaming job (``klio_assets.framework.stream``) reports each
ID it finishes with the same ``report_output``.
"""

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pydantic

from klio_core.records import ItemResult, ItemStatus, WrittenOutput
from klio_core.run_tags import FORCE_TAG, PING_TAG, UPSTREAM_NOT_MADE_TAG, tag_is_true
from klio_core.wire import MediaEvent, encode_event
from pipelines.specs import ItemOutput, ItemTask
from resources.dagster_tags import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    INPUT_DATA_VERSION_TAG_PREFIX,
    INPUT_EVENT_POINTER_TAG_PREFIX,
    NULL_EVENT_POINTER,
)
from resources.pubsub import ASSET_ATTRIBUTE, REASON_ATTRIBUTE, STATUS_ATTRIBUTE

MAX_LISTED_PROBLEMS = 200
MAX_LISTED_SKIPPED = 100
RECONCILE_BATCH = 500


def run_media_assets(context: dg.AssetExecutionContext, ordered: Sequence):
    """The step's body: ``ordered`` holds every ``MediaAsset`` of the step, upstream first."""
    ids = list(context.partition_keys)
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    work = [(a, [o for o in a.outputs if o.asset in selected]) for a in ordered]
    work = [(a, outputs) for a, outputs in work if outputs]
    if tag_is_true(context.run.tags, PING_TAG):
        yield from ping_events(context, [o.asset for _, outputs in work for o in outputs], ids)
        for media, outputs in work:
            if media.event_output:  # Klio passes pings downstream, so a whole DAG can be traced
                publish_event_output(context, media, outputs, ids, "ping")
        yield from _check_summaries(context, Tally())
        return
    force = tag_is_true(context.run.tags, FORCE_TAG) or context.op_config.get("force", False)
    store = context.resources.media_storage.store()
    runner = context.resources.beam_runner
    tasks = [media.task(context.op_config.get(media.name), force, outputs, context.run_id) for media, outputs in work]
    by_task = {media.name: (media, outputs) for media, outputs in work}
    provenance = {task.name: Provenance.of(media, task) for (media, _), task in zip(work, tasks, strict=True)}
    not_made = context.run.tags.get(UPSTREAM_NOT_MADE_TAG)
    if not_made:  # an input from another code location was not made: nothing to compute
        context.log.info(f"{len(ids)} media IDs dropped by {', '.join(t.name for t in tasks)}: {not_made}")
        pipeline = None
        batches = [[ItemResult(media_id, ItemStatus.DROPPED, not_made, task=t.name) for t in tasks for media_id in ids]]
    else:
        context.log.info(f"one Beam pipeline on {runner.runner}: {len(ids)} media IDs through "
                         f"{', '.join(t.name for t in tasks)}{' (forced)' if force else ''}")
        pipeline = runner.run(tasks, store, ids, context.run_id)
        batches = pipeline.results()
    tally = Tally()
    finished: set[str] = set()
    for batch in batches:
        pointers = UpstreamPointers(context.instance, {r.media_id for r in batch})
        for task_name, results in _by_task(batch).items():  # upstream first
            media, outputs = by_task[task_name]
            tally.add(task_name, results.values())
            for output in outputs:
                yield from report_output(context, provenance[task_name], pointers, output, results, tally)
            if media.event_output:
                publish_event_output(context, media, outputs, list(results), {m: str(r.status) for m, r in results.items()},
                                     force=force, reasons={m: r.reason for m, r in results.items() if r.reason})
        log_problems(context, batch)
        finished.update(r.media_id for r in batch)
        context.log.info(f"{len(finished)} / {len(ids)} media IDs done; per asset: {tally.progress()}")
    for media, outputs in work:
        counters = pipeline.counters.get(media.name, {}) if pipeline else {"received": len(ids), "dropped": len(ids)}
        yield from _summaries(context, outputs, counters, tally, media.name)
    yield from _check_summaries(context, tally)
    if tally.failed or (tally.dropped and not tally.done):
        raise _run_failure(tally.failed, tally.dropped, any_done=bool(tally.done))


class Tally:
    """The run's per-asset outcome so far."""

    def __init__(self):
        self.done = 0
        self.dropped: dict[tuple[str, str], str] = {}  # (asset, media ID) -> reason
        self.failed: dict[tuple[str, str], str] = {}
        self.seconds: dict[str, list[float]] = {}
        self.skipped: dict[str, list[str]] = {}  # task -> the first skipped media IDs
        self.recovered: dict[str, int] = {}
        self.checks: dict[dg.AssetCheckKey, tuple[list[str], list[str]]] = {}  # -> (passed IDs, failed IDs)
        self.states: dict[str, dict[str, int]] = {}  # task -> state -> media IDs so far

    def progress(self) -> str:
        """Each task's counts so far, in the order the tasks first reported."""
        return "; ".join(f"{task} " + ", ".join(f"{n} {state}" for state, n in states.items())
                         for task, states in self.states.items())

    def add_check(self, key: dg.AssetCheckKey, media_id: str, passed: bool) -> None:
        self.checks.setdefault(key, ([], []))[0 if passed else 1].append(media_id)

    def add(self, task_name: str, results) -> None:
        states = self.states.setdefault(task_name, {})
        for result in results:
            states[str(result.status)] = states.get(str(result.status), 0) + 1
            self.seconds.setdefault(task_name, []).append(result.seconds)
            if result.status == ItemStatus.DROPPED:
                self.dropped[(task_name, result.media_id)] = result.reason
            elif result.status == ItemStatus.FAILED:
                self.failed[(task_name, result.media_id)] = result.reason
            else:
                self.done += 1
                listed = self.skipped.setdefault(task_name, [])
                if result.status == ItemStatus.SKIPPED and len(listed) < MAX_LISTED_SKIPPED:
                    listed.append(result.media_id)


def _by_task(batch: list[ItemResult]) -> dict[str, dict[str, ItemResult]]:
    grouped: dict[str, dict[str, ItemResult]] = {}
    for result in batch:
        grouped.setdefault(result.task, {})[result.media_id] = result
    return grouped


def _run_failure(failed: dict[tuple[str, str], str], dropped: dict[tuple[str, str], str],
                 any_done: bool) -> dg.Failure:
    """The step's failure: media IDs counted once each (an ID whose ``mfcc`` failed is usually
    dropped by ``mfcc_plot`` too), then per asset, with up to 200 reasons."""
    failed_ids = {media_id for _, media_id in failed}
    dropped_ids = {media_id for _, media_id in dropped} - failed_ids
    per_asset: dict[str, dict[str, int]] = {}
    for state, problems in (("failed", failed), ("dropped", dropped)):
        for asset, _ in problems:
            counts = per_asset.setdefault(asset, {"failed": 0, "dropped": 0})
            counts[state] += 1
    listed = {f"{asset} [{media_id}]": reason
              for (asset, media_id), reason in list({**failed, **dropped}.items())[:MAX_LISTED_PROBLEMS]}
    by_asset = ", ".join(f"{asset}: {', '.join(f'{n} {state}' for state, n in counts.items() if n)}"
                         for asset, counts in per_asset.items())
    head = (f"{len(failed_ids)} media ID(s) failed" if failed_ids else "no media ID was materialized") + (
        f" and {len(dropped_ids)} more were dropped" if dropped_ids else "")
    return dg.Failure(
        description=f"{head} ({by_asset})" + ("; the others were materialized" if any_done else "")
        + ". Reasons per asset [media ID] are in the metadata and in each asset's events.",
        metadata={"failed_media_ids": len(failed_ids), "dropped_media_ids": len(dropped_ids),
                  "per_asset": dg.MetadataValue.json(per_asset), "problems": dg.MetadataValue.json(listed)})


def ping_events(context: dg.AssetExecutionContext | dg.OpExecutionContext, assets: Sequence[str], ids: list[str]):
    """Klio's ping: record that the event reached each asset it would have run, and do nothing
    else. One observation per asset, of no partition, so that a ping never sits on top of a
    partition's materialization in the UI."""
    for asset in assets:
        context.log.info(f"ping: '{asset}' reached for {len(ids)} media IDs; nothing processed")
        yield dg.AssetObservation(asset_key=asset, metadata={
            "status": "ping", "reason": "event reached this asset; nothing was processed (ping)",
            "pinged": len(ids), "media_ids": dg.MetadataValue.json(ids[:MAX_LISTED_SKIPPED])})


@dataclass(frozen=True)
class Provenance:
    """What one task's materializations in one run tell Dagster about their data versions.

    ``code_version``: the asset's code version when the run's config is the default one (as the
    definition declares it); with another config, the code version and the config's fingerprint,
    so Dagster calls the outputs unsynced, as the project does (a run with the default config
    recomputes them). An asset without a code version reports the fingerprint alone (Dagster then
    compares only the data versions). ``upstream``: the assets whose versions it records.
    """

    code_version: str
    upstream: tuple[str, ...]

    @classmethod
    def of(cls, media, task: ItemTask) -> "Provenance":
        try:
            default = media.task(None).fingerprint
        except pydantic.ValidationError:  # a config field without a default: there is no default run
            default = None
        if task.code_version is None:
            code_version = f"config:{task.fingerprint}"
        elif task.fingerprint == default:
            code_version = task.code_version
        else:
            code_version = f"{task.code_version}+config:{task.fingerprint}"
        return cls(code_version, tuple(task.upstream))

    def tags(self, media_id: str, written: WrittenOutput, pointers: "UpstreamPointers") -> dict[str, str]:
        """The tags of one output's materialization."""
        tags = {CODE_VERSION_TAG: self.code_version, DATA_VERSION_TAG: written.version,
                DATA_VERSION_IS_USER_PROVIDED_TAG: "true"}
        for asset in self.upstream:
            tags[INPUT_DATA_VERSION_TAG_PREFIX + asset] = written.inputs.get(asset) or "unknown"
            pointer = pointers.of(asset).get(media_id)
            tags[INPUT_EVENT_POINTER_TAG_PREFIX + asset] = NULL_EVENT_POINTER if pointer is None else str(pointer)
        return tags


class UpstreamPointers:
    """Where the upstream materializations of a batch of media IDs are (their storage IDs, where
    Dagster looks for newer ones): fetched once per upstream asset and batch, when a downstream
    output first asks, which is after the batch's upstream events are stored (they are reported
    upstream first).

    Read as the storage's latest ID per partition, the query Dagster's own staleness checks use:
    reading the records themselves deserialised every upstream materialization again, a quarter
    of the media stream's reporting (py-spy, docs/BENCHMARKS.md)."""

    def __init__(self, instance: dg.DagsterInstance, media_ids: Collection[str]):
        self.instance, self.media_ids = instance, sorted(media_ids)
        self.by_asset: dict[str, dict[str, int]] = {}

    def of(self, asset: str) -> dict[str, int]:
        if asset not in self.by_asset:
            storage = self.instance.event_log_storage
            pointers: dict[str, int] = {}
            for start in range(0, len(self.media_ids), RECONCILE_BATCH):  # no IDs: nothing asked, not all
                pointers.update(storage.get_latest_storage_id_by_partition(
                    dg.AssetKey(asset), dg.DagsterEventType.ASSET_MATERIALIZATION,
                    set(self.media_ids[start:start + RECONCILE_BATCH])))
            self.by_asset[asset] = pointers
        return self.by_asset[asset]


def report_output(context: dg.AssetExecutionContext | dg.OpExecutionContext, provenance: Provenance,
                  pointers: UpstreamPointers, output: ItemOutput, results: Mapping[str, ItemResult], tally: Tally):
    """One output's events for a batch of its results (by media ID). The batch's upstream
    outputs must have been reported first."""
    asset = output.asset
    skipped = {m: r.outputs[asset].version for m, r in results.items() if r.status == ItemStatus.SKIPPED}
    unreported = set(_unreported(context.instance, asset, skipped)) if skipped else set()
    for media_id, result in results.items():
        if result.status == ItemStatus.MATERIALIZED or media_id in unreported:
            written = result.outputs[asset]
            yield dg.AssetMaterialization(
                asset_key=asset, partition=media_id, metadata=_materialization_metadata(context, written, result),
                tags=provenance.tags(media_id, written, pointers))
            for check in written.checks:
                key = dg.AssetCheckKey(dg.AssetKey(asset), check.name)
                tally.add_check(key, media_id, check.passed)
                if not check.passed:  # passes are counted, in the run's check results and the metadata
                    yield dg.AssetCheckEvaluation(asset_key=key.asset_key, check_name=key.name,
                                                  passed=False, partition=media_id,
                                                  metadata={"detail": check.detail})
        elif result.status in (ItemStatus.DROPPED, ItemStatus.FAILED):
            yield dg.AssetObservation(asset_key=asset, partition=media_id,
                                      metadata={"status": str(result.status), "reason": result.reason})
    if unreported:
        tally.recovered[asset] = tally.recovered.get(asset, 0) + len(unreported)
        context.log.warning(f"'{asset}': {len(unreported)} fresh output(s) had no materialization in Dagster "
                            "(their run stopped before reporting them); recorded now from storage")


def log_problems(context: dg.AssetExecutionContext | dg.OpExecutionContext, results: Sequence[ItemResult]) -> None:
    """One ERROR line per media ID of ``results`` (in chain order) that failed or was dropped: the
    asset where it went wrong and why, and the assets downstream it left unmade (whose own
    reasons only repeat that one, and are in their observations)."""
    problems: dict[str, list[ItemResult]] = {}
    for result in results:
        if result.status in (ItemStatus.DROPPED, ItemStatus.FAILED):
            problems.setdefault(result.media_id, []).append(result)
    for media_id, [first, *rest] in problems.items():
        context.log.error(f"[{media_id}] {first.status} in '{first.task}': {first.reason}"
                          + (f"; so not made either: {', '.join(r.task for r in rest)}" if rest else ""))


def _summaries(context, outputs: Sequence[ItemOutput], counters: dict[str, int], tally: Tally, task_name: str):
    """One observation per output asset for the whole run: counters and per-item timing."""
    ms = np.array([s * 1000 for s in tally.seconds.get(task_name, [])] or [0.0])
    for output in outputs:
        summary = {**{state: counters.get(state, 0) for state in ("received", *map(str, ItemStatus), "retried")},
                   **counters,  # and any others, such as a per-worker value's "<param>_loads"
                   "recovered": tally.recovered.get(output.asset, 0),
                   **{f"item_ms_p{p}": round(float(np.percentile(ms, p)), 1) for p in (50, 90, 99)},
                   "item_ms_max": round(float(ms.max()), 1), "run_id": context.run_id,
                   **({"skipped_media_ids": dg.MetadataValue.json(tally.skipped[task_name])}
                      if tally.skipped.get(task_name) else {})}
        context.log.info(f"'{output.asset}': {summary}")
        yield dg.AssetObservation(asset_key=output.asset, metadata=summary)


def _check_summaries(context: dg.AssetExecutionContext, tally: Tally):
    """One result per selected check for the whole run, after the per-ID evaluations: how many
    IDs passed and which failed. (Dagster expects a result for each selected check of the step,
    and logs that the step "did not yield expected outputs" without one; an evaluation without a
    partition does not change any partition's check status.)"""
    for key in sorted(context.selected_asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        passed, failed = tally.checks.get(key, ([], []))
        yield dg.AssetCheckResult(
            asset_key=key.asset_key, check_name=key.name, passed=not failed,
            description=f"{len(passed)} of {len(passed) + len(failed)} media IDs written in this run passed"
            if passed or failed else "no media ID was written in this run, so none was checked",
            metadata={"passed": len(passed), "failed": len(failed),
                      **({"failed_media_ids": dg.MetadataValue.json(failed[:MAX_LISTED_PROBLEMS])} if failed else {})})


def _latest(instance: dg.DagsterInstance, asset: str, ids: Sequence[str]) -> dict[str, dg.EventLogRecord]:
    """The latest materialization record of each of ``ids`` that ``asset`` has in Dagster."""
    latest: dict[str, dg.EventLogRecord] = {}
    for start in range(0, len(ids), RECONCILE_BATCH):
        chunk = ids[start:start + RECONCILE_BATCH]
        found: dict[str, dg.EventLogRecord] = {}
        cursor = None
        while len(found) < len(chunk):
            page = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=chunk),
                limit=min(1000, 2 * len(chunk)), cursor=cursor)
            for record in page.records:  # newest first
                if record.partition_key is not None:
                    found.setdefault(record.partition_key, record)
            if not page.has_more:
                break
            cursor = page.cursor
        latest.update(found)
    return latest


def _unreported(instance: dg.DagsterInstance, asset: str, versions: Mapping[str, str]) -> list[str]:
    """The media IDs among ``versions`` (fresh outputs' stored versions, by ID) whose latest
    materialization in Dagster is missing or reports another output version."""
    latest = _latest(instance, asset, list(versions))
    unreported = []
    for media_id, version in versions.items():
        record = latest.get(media_id)
        materialization = record.asset_materialization if record else None
        reported = materialization.metadata.get("output_version") if materialization else None
        # A materialization from before output versions were reported counts as reported.
        if record is None or (reported is not None and str(reported.value) != version):
            unreported.append(media_id)
    return unreported


def publish_event_output(context, media, outputs: Sequence[ItemOutput], ids: Sequence[str],
                          status: Mapping[str, str] | str, force: bool = False,
                          reasons: Mapping[str, str] | None = None, log: bool = True) -> int:
    """One message per output asset and media ID in ``ids``, with its ``status`` (per ID, or
    ``"ping"``: then the message is a ping too, as Klio passes pings downstream) and the output
    it announces (attribute ``asset``); a forced event's outputs announce a forced event, so
    that the jobs downstream recompute too (Klio passes ``force`` on). A ``failed`` or
    ``dropped`` status carries its reason (attribute ``reason``): a location downstream runs
    nothing for it, and one that asked for the output records why it is not coming. Returns how
    many messages it published, and logs it unless ``log`` is false (the media stream counts
    them in its progress lines: a line per report was most of its log)."""
    pubsub = context.resources.pubsub
    if not pubsub.output_topic:
        raise dg.Failure(f"media asset '{media.name}' has event_output={media.event_output!r}, but the "
                         "pubsub resource has no output_topic (set KLIO_PUBSUB_OUTPUT_TOPIC)")
    ping = isinstance(status, str)
    messages = [(encode_event(MediaEvent(media_id, force=force, ping=ping), media.event_output),
                 {ASSET_ATTRIBUTE: output.asset, STATUS_ATTRIBUTE: status if isinstance(status, str) else status[media_id],
                  "run_id": context.run_id,
                  **({REASON_ATTRIBUTE: reasons[media_id][:1024]} if reasons and media_id in reasons else {})})
                for output in outputs for media_id in ids]
    if messages:
        pubsub.publish(pubsub.output_topic, messages)
    if log:
        context.log.info(f"'{media.name}': published {len(messages)} event(s) to {pubsub.output_topic}")
    return len(messages)


def _table(rows: list[dict], columns: list[str]) -> dg.TableMetadataValue:
    kinds = {bool: "bool", int: "int", float: "float"}
    types = {c: next((kinds.get(type(r[c]), "string") for r in rows if r.get(c) is not None), "string")
             for c in columns}
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: r.get(c) for c in columns}) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, types[c]) for c in columns]))


def _materialization_metadata(context, written: WrittenOutput, result: ItemResult) -> dict:
    """What the UI shows for one written output; for a fresh output recovered from storage, what
    its record kept, and which run wrote it."""
    meta = dict(written.metadata)
    out: dict = {"path": dg.MetadataValue.path(written.uri)}
    url = context.resources.media_storage.browser_url(written.uri)
    if url and written.uri.endswith(".png"):
        out["plot"] = dg.MetadataValue.md(f"![plot]({url})")
    elif url:
        out["open"] = dg.MetadataValue.url(url)
    if written.written_by_run:
        out.update(recovered_from_storage=True, written_by_run=written.written_by_run,
                   output_version=written.version)
    else:
        out.update(compute_ms=round(result.seconds * 1000, 1), output_version=written.version)
    if "shape" in meta:
        meta["shape"] = str(tuple(meta["shape"]))
    if "preview" in meta:  # a table's first rows (codecs.TABLE)
        meta["preview"] = _table(meta["preview"], meta.get("columns", []))
        meta["columns"] = ", ".join(meta.get("columns", []))
    if result.retries:
        out["retries"] = result.retries
    if written.checks:
        passed = [c.name for c in written.checks if c.passed]
        out["checks_passed"] = f"{len(passed)} of {len(written.checks)}" + (f": {', '.join(passed)}" if passed else "")
    out.update(meta)
    return out
