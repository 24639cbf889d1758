"""The benchmark command keeps working: a tiny run prints every row of its table with figures.
(It asserts what is measured, never how fast: timings are for docs/BENCHMARKS.md, not for tests.)"""

import os
import re
import subprocess
import sys

import dagster_webserver
import pytest

from bench.scale import PARTITION_PAGE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_bench_prints_every_measure_with_figures():
    run = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run.py"), "--n", "4", "--seconds", "1",
                          "--memory-n", "4", "--ingest-n", "20", "--scale-n", "2000", "--launch-n", "600"],
                         capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    table = [line for line in run.stdout.splitlines() if line.startswith("| (")]
    rows_a = 2 + 3 * ((os.cpu_count() or 1) > 1)
    expected = ["(a)"] * rows_a + ["(b)", "(e)", "(c)", "(d)", "(d)", "(d)"]
    assert [line.split("|")[1].strip()[:3] for line in table] == expected
    assert re.search(r"\(iii\)/\(i'\) \d+\.\d\d, \(iii\)/\(i\) \d+\.\d\d, \(iii\)/\(ii\) \d+\.\d\d", table[0])
    assert re.search(r"\| \d+ MiB \|", table[-5])
    assert re.search(r"ingestion of 20 published IDs .* \| \d+\.\d s \|", table[-4])
    assert re.search(r"backfill launch of 600 IDs \(2 runs\), 2000 registered \| \d+\.\d s", table[-3])


@pytest.mark.slow
def test_cli_bench_prints_the_publish_ratio_and_every_help():
    run = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "cli.py"), "--runs", "1"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(r"\| ratio, median of 1 pairs \(min-max\) \| \d+\.\d\d \(", run.stdout), run.stdout
    assert len(re.findall(r"\| klio-[a-z]+ --help \| \d+\.\d\d s \|", run.stdout)) == 6, run.stdout


def test_register_bench_registers_every_id_from_the_folder_and_the_file():
    run = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "register.py"), "--n", "300"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith("| folder") or line.startswith("| file")]
    assert len(rows) == 3, run.stdout
    first, again, from_file = rows
    assert "300 added" in first and "0 added" in again and "300 added" in from_file, run.stdout


def test_the_partitions_tab_query_is_the_one_the_installed_ui_sends():
    """bench/scale.py times the Partitions tab by the UI's own query: the installed dagster-webserver
    bundle must hold it, field for field (a query asking more, or less, would time another page)."""
    def fields(text: str) -> str:
        return " ".join(text.split())

    chunks = os.path.join(os.path.dirname(dagster_webserver.__file__), "webapp", "build", "_next", "static", "chunks")
    bundles = [os.path.join(chunks, name) for name in os.listdir(chunks) if name.endswith(".js")]
    texts = [open(path).read().replace("\\n", "\n") for path in bundles]
    ui_queries = [m.group(0) for text in texts for m in re.finditer(r"query PartitionHealthQuery\(.*?\n  }\n", text, re.S)]
    assert ui_queries, "no PartitionHealthQuery in the installed UI bundle"
    ours = fields(PARTITION_PAGE)
    default_fragment = "... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }"
    assert default_fragment in ours
    for ui in map(fields, ui_queries):
        head = ui[:ui.index("assetPartitionStatuses")]
        assert ours.startswith(head), (ours, ui)
        assert default_fragment in ui
