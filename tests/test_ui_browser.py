"""The UI workflows, in headless Chromium driven by Playwright, against the README's dev setup.

Each step saves a screenshot to ``test-output/ui/``. The UI's effects are cross-checked through
the webserver's GraphQL API (the run's logs, the backfill's runs).
"""

import os
import re
import shutil

import pytest

from klio_dev.stack import ROOT, start_dev_stack, wait_until
from resources.dagster_tags import PARTITION_TAG

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = os.path.join(ROOT, "test-output", "ui")
AUDIO = ["waveform", "spectrogram", "mel_spectrogram", "mfcc",
         "waveform_plot", "spectrogram_plot", "mel_spectrogram_plot", "mfcc_plot"]
DEMO_IDS = ["demo-000-tone", "demo-001-chord", "demo-002-sweep", "demo-003-noise", "demo-004-tone"]

RUNS_FOR = """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) {
  ... on Runs { results { runId status } } } }"""
BACKFILLS = """{ partitionBackfillsOrError(limit: 5) { ... on PartitionBackfills {
  results { id status runs { runId status } } } } }"""
PARTITION_STATUSES = """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
  assetPartitionStatuses { ... on DefaultPartitionStatuses { failedPartitions } } } } }"""
STALE_STATUS = """query($key: AssetKeyInput!, $partition: String!) { assetNodeOrError(assetKey: $key) {
  ... on AssetNode { staleStatus(partition: $partition) } } }"""
RUN_LOG = """query($runId: ID!) { logsForRun(runId: $runId, limit: 5000) {
  ... on EventConnection { events { __typename ... on MessageEvent { message } } } } }"""


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    stack = start_dev_stack(str(tmp_path_factory.mktemp("ui")), demo_count=5, max_ids_per_run=2)
    yield stack
    returncode, survivors = stack.stop()
    assert returncode == 0 and not survivors


@pytest.fixture(scope="module")
def page(dev):
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "Chromium is missing: scripts/test.sh installs it (apt-get install chromium)"
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    os.makedirs(SCREENSHOTS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def visit(page, dev, path: str):
    page.goto(dev.url + path)
    skip = page.get_by_role("button", name="Skip")  # the first-visit "join the community" dialog
    try:
        skip.wait_for(timeout=3000)
        skip.click()
    except Exception:
        pass


def shoot(page, name: str):
    page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"), full_page=False)


def run_messages(dev, run_id: str) -> list[str]:
    events = dev.server.query(RUN_LOG, {"runId": run_id})["logsForRun"]["events"]
    return [e["message"] for e in events if "message" in e]


def launch_from_dialog(page, dev, ids: list[str], button: str):
    visit(page, dev, "/locations/klio_assets/asset-groups/media")
    page.get_by_role("button", name="Materialize all").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Select a partition or create one").click()
    for media_id in ids:
        page.get_by_role("menuitem", name=media_id).first.click()
    page.keyboard.press("Escape")
    return dialog.get_by_role("button", name=button)


def test_a_asset_graph_shows_every_media_asset_partitioned_by_media_id(page, dev):
    visit(page, dev, "/locations/klio_assets/asset-groups/media")
    page.get_by_text("waveform", exact=True).first.wait_for()
    wait_until(lambda: page.get_by_text(f"{len(DEMO_IDS)} partitions", exact=True).count() == len(AUDIO),
               60, "every media asset node to show its partitions", dev.log_path)
    shoot(page, "a-asset-graph")
    for asset in AUDIO:
        visit(page, dev, f"/assets/{asset}?view=partitions")
        for media_id in DEMO_IDS:
            page.get_by_text(media_id, exact=True).first.wait_for()
        page.get_by_text(f"Missing ({len(DEMO_IDS)})").wait_for()
    shoot(page, "a-partitions-of-mfcc_plot")


def test_b_materialize_one_media_id_and_wait_for_success(page, dev):
    launch = launch_from_dialog(page, dev, ["demo-000-tone"], "Launch 1 run")
    shoot(page, "b-materialize-one-dialog")
    launch.click()
    runs = lambda: dev.server.query(RUNS_FOR, {"tags": [{"key": PARTITION_TAG, "value": "demo-000-tone"}]})[  # noqa: E731
        "runsOrError"]["results"]
    wait_until(lambda: len(runs()) == 1, 60, "the run to be created", dev.log_path)
    run_id = runs()[0]["runId"]
    visit(page, dev, f"/runs/{run_id}")
    wait_until(lambda: page.get_by_text("Success", exact=True).count() > 0, 300, "the run to succeed", dev.log_path)
    shoot(page, "b-run-succeeded")
    assert runs()[0]["status"] == "SUCCESS"


def test_c_backfill_several_ids_one_beam_pipeline_per_run(page, dev):
    ids = DEMO_IDS[1:]
    launch = launch_from_dialog(page, dev, ids, "Launch backfill")
    shoot(page, "c-backfill-dialog")
    launch.click()
    backfills = lambda: dev.server.query(BACKFILLS)["partitionBackfillsOrError"]["results"]  # noqa: E731
    wait_until(lambda: len(backfills()) == 1, 60, "the backfill to be created", dev.log_path)
    backfill_id = backfills()[0]["id"]
    visit(page, dev, f"/runs/b/{backfill_id}")
    wait_until(lambda: backfills()[0]["status"] != "REQUESTED", 600, "the backfill to complete", dev.log_path)
    page.reload()
    page.get_by_text(re.compile("Completed|Succeeded")).first.wait_for(timeout=60_000)
    shoot(page, "c-backfill-completed")

    [backfill] = backfills()
    assert backfill["status"] == "COMPLETED_SUCCESS" and len(backfill["runs"]) == 2  # 4 IDs, 2 per run
    for run in backfill["runs"]:
        pipelines = [m for m in run_messages(dev, run["runId"]) if "one Beam pipeline" in m]
        assert len(pipelines) == 1, pipelines  # one for the run, not one per asset or per ID
        assert ": 2 media IDs through " in pipelines[0] and all(a in pipelines[0] for a in AUDIO)
    visit(page, dev, f"/runs/{backfill['runs'][0]['runId']}")
    page.get_by_text("Success", exact=True).first.wait_for(timeout=60_000)
    shoot(page, "c-run-log")


def test_d_a_published_id_appears_as_a_partition_with_a_sensor_run(page, dev):
    shutil.copy(os.path.join(dev.data_root, "sources", "demo-002-sweep.ogg"),
                os.path.join(dev.data_root, "sources", "track-ui.ogg"))
    published = dev.publish("track-ui")
    assert published.returncode == 0, published.stderr
    visit(page, dev, "/assets/waveform?view=partitions")
    wait_until(lambda: (page.reload(), page.get_by_text("track-ui", exact=True).first.wait_for(timeout=5000)),
               120, "the published ID to appear as a partition", dev.log_path)
    shoot(page, "d-new-partition")
    visit(page, dev, "/runs")
    wait_until(lambda: (page.reload(), page.get_by_text("pubsub_media_events").first.wait_for(timeout=5000)),
               120, "the sensor's run to appear", dev.log_path)
    shoot(page, "d-sensor-run")
    wait_until(lambda: os.path.exists(os.path.join(dev.data_root, "mfcc_plot", "track-ui.png")), 300,
               "the sensor's run to materialize track-ui", dev.log_path)


def test_e_a_plot_partition_shows_its_image(page, dev):
    visit(page, dev, "/assets/mel_spectrogram_plot?view=partitions&partition=demo-000-tone")
    # shown inline, full size, from media storage (klio-dev serves it); Dagster keeps only the link
    image = page.locator(f"img[src^='{dev.media_url}/mel_spectrogram_plot/']").first
    image.wait_for()
    wait_until(lambda: image.evaluate("img => img.complete && img.naturalWidth") == 640, 30,
               "the plot image to render", dev.log_path)
    shoot(page, "e-plot-in-metadata")


def test_f_a_failed_partition_shows_its_reason(page, dev):
    with open(os.path.join(dev.data_root, "sources", "bad-ui.mp3"), "w") as f:
        f.write("not audio at all\n")
    published = dev.publish("bad-ui")
    assert published.returncode == 0, published.stderr
    wait_until(lambda: "bad-ui" in failed_partitions(dev, "waveform"), 300,
               "the sensor's run to fail bad-ui", dev.log_path)
    visit(page, dev, "/assets/waveform?view=partitions&partition=bad-ui")
    page.get_by_text("failed, and did not materialize this asset").first.wait_for()
    page.get_by_role("button", name=re.compile("View all historical events")).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Observation", exact=True).first.click()  # the event's metadata opens below it
    dialog.get_by_text(re.compile(r"bad-ui\.mp3\b.*could not be decoded")).first.wait_for()
    shoot(page, "f-failed-partition-reason")


def test_g_materialized_partitions_are_not_unsynced(dev):
    """The badge beside "Materialized" reads each partition's stale status: the demo IDs that
    tests b and c materialized are fresh, as the project holds them."""
    for asset in AUDIO:
        for media_id in DEMO_IDS:
            status = dev.server.query(STALE_STATUS, {"key": {"path": [asset]}, "partition": media_id})
            assert status["assetNodeOrError"]["staleStatus"] == "FRESH", (asset, media_id)


def failed_partitions(dev, asset: str) -> set[str]:
    statuses = dev.server.query(PARTITION_STATUSES, {"key": {"path": [asset]}})["assetNodeOrError"]
    return set(statuses["assetPartitionStatuses"]["failedPartitions"])


def test_h_one_asset_graph_across_the_two_teams(page, dev):
    """The tags team's group shows its assets with the media team's outputs they read, as
    upstream nodes of another location; the lineage of one of them goes back to the audio."""
    visit(page, dev, "/locations/music_tags/asset-groups/media")
    for asset in ("tempo", "musical_key", "loudness", "notes_summary", "waveform", "note_events"):
        page.get_by_text(asset, exact=True).first.wait_for(timeout=60_000)
    shoot(page, "h-the-tags-teams-graph")
    visit(page, dev, "/assets/notes_summary?view=lineage&lineageScope=upstream&lineageDepth=5")
    for asset in ("notes_summary", "tempo", "note_events", "waveform"):
        page.get_by_text(asset, exact=True).first.wait_for(timeout=60_000)
    shoot(page, "h-lineage-across-the-two-teams")


def test_i_a_million_media_ids_render(page, dev, tmp_path):
    """A catalogue of 1,000,000 registered IDs: the asset graph shows the count on every node, an
    asset's page loads, and its Partitions tab lists the IDs with the count. Last: it leaves the
    stack with a million partitions."""
    path = tmp_path / "catalogue.txt"
    path.write_text("".join(f"catalogue/{i:07d}\n" for i in range(1_000_000)))
    registered = dev.command("klio-register", "--file", str(path), timeout_s=600)
    assert registered.returncode == 0, registered.stderr
    count = re.compile(r"1,000,0\d\d partitions")
    visit(page, dev, "/locations/klio_assets/asset-groups/media")
    wait_until(lambda: page.get_by_text(count).count() >= len(AUDIO), 120,
               "every media asset node to show a million partitions", dev.log_path)
    shoot(page, "i-asset-graph-a-million")
    visit(page, dev, "/assets/mfcc")  # its status, description, metadata and lineage
    page.get_by_text("Upstream assets").first.wait_for(timeout=120_000)
    page.get_by_text("mel_spectrogram", exact=True).first.wait_for(timeout=60_000)  # its upstream asset
    shoot(page, "i-asset-page-a-million")
    visit(page, dev, "/assets/mfcc?view=partitions")
    page.get_by_text(re.compile(r"1,000,0\d\d Partitions Selected")).first.wait_for(timeout=120_000)
    page.get_by_text(re.compile(r"Missing \(\d{7}\)")).first.wait_for(timeout=60_000)
    page.get_by_text("catalogue/0000000", exact=True).first.wait_for(timeout=60_000)
    shoot(page, "i-partitions-a-million")
