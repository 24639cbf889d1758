"""bench/latency.py's CPU accounting: the CPU time of the stack's processes (one process group),
by role (one session, though dagster dev runs in a process group of its own), and nothing of
processes outside it. (It asserts what is counted, never how fast.)"""

import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from latency import CpuByRole  # noqa: E402

# burns 1 s of CPU, then idles so that the sampler sees its total before it exits
BUSY = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass\ntime.sleep(1.5)\n"
# the session's leader, as dev.sh is: once told to go, starts the script its environment names in
# a process group of its own, as klio-dev starts dagster dev
LEADER = ("import os, subprocess, sys, time\nwhile not os.path.exists(os.environ['GO']): time.sleep(0.05)\n"
          "subprocess.run([sys.executable, os.environ['SCRIPT']], process_group=0)\ntime.sleep(30)\n")


def test_cpu_is_counted_by_role_for_the_stack_session_only(tmp_path):
    script = tmp_path / "dagster._daemon.py"  # its command line names the daemon's module
    script.write_text(BUSY)
    go = tmp_path / "go"
    stack = subprocess.Popen([sys.executable, "-c", LEADER], start_new_session=True,
                             env={**os.environ, "SCRIPT": str(script), "GO": str(go)})
    try:
        with CpuByRole(stack.pid, emulator_port=1) as cpu:
            go.touch()
            outsider = subprocess.Popen([sys.executable, str(script)], start_new_session=True)  # same command
            outsider.wait()
            time.sleep(0.6)
        totals = cpu.totals()
    finally:
        stack.kill()
    assert 1.0 <= totals.get("daemon", 0) <= 1.5  # the session's 1 s, once; the outsider's not at all
    assert set(totals) <= {"daemon", "other"}  # the idle leader may show as "other"
    assert f"daemon {1000 * totals['daemon'] / 2:.0f}" in cpu.row("test", per=2)  # ms per media ID
