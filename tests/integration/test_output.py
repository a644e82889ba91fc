#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A task's output on disk: about once while it runs (the forwarded part of conmon's CRI
log is punched out), the task log capped at TaskLogSizeMax= with a marker line, and
journald holding every line exactly once, in order, also across kill -9 of the daemon
before and after the cap."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

CAP = 16 * 1024 * 1024
LINE = 1000  # bytes per output line, newline included
MARKER = "lagoon-taskd: the task log stops here"


def printer(chunks, per_chunk=1000, pause="0.1"):
    """chunks × per_chunk lines of LINE bytes: an 8-digit number, a space, x's."""
    return ("awk -v c=%d -v n=%d -v p=%s 'BEGIN { s = sprintf(\"%%%ds\", \"\"); gsub(/ /, \"x\", s); "
            "for (k = 0; k < c; k++) { for (i = 1; i <= n; i++) printf \"%%08d %%s\\n\", k * n + i, s; "
            "fflush(); system(\"sleep \" p) } }'" % (chunks, per_chunk, pause, LINE - 10))


def expected_line(i):
    return "%08d %s" % (i, "x" * (LINE - 10))


def used(path):
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def size(path):
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def cri_record_len(path):
    """Length of the CRI log's last complete record (timestamp, stream, tag, line)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 3 * LINE))
            recs = f.read().split(b"\n")
    except FileNotFoundError:
        return None
    full = [r for r in recs[1:-1] if r.endswith(b"x")]
    return len(full[-1]) + 1 if full else None


class TestOutputOnDisk(harness.TaskdTestCase):
    tasks_config = {"TaskLogSizeMax": "16M"}

    def paths(self, tid):
        log = self.task_log_path(tid)
        return os.path.join(self.container_dir(tid), "ctr.log"), log, log + ".cursor"

    def sample(self, tid):
        """(disk used by the task's files, output so far in bytes, task log size)."""
        cri, log, cursor = self.paths(tid)
        rec = cri_record_len(cri)
        written = size(cri) * LINE // rec if rec else 0
        return used(cri) + used(log) + used(cursor), max(written, size(log)), size(log)

    def check_output(self, tid, n):
        with open(self.task_log_path(tid), "rb") as f:
            data = f.read()
        self.assertLessEqual(len(data), CAP + 200, "task log over its cap")
        lines = data.decode().split("\n")
        self.assertEqual(lines[-1], "", "task log ends in a newline")
        self.assertTrue(lines[-2].startswith(MARKER), f"no cap marker at the end: {lines[-2][:80]!r}")
        self.assertIn("TaskLogSizeMax=16777216", lines[-2])
        head = lines[:-2]
        self.assertEqual(len(head), CAP // LINE, "lines before the marker: as many as fit under the cap")
        self.assertEqual(head, [expected_line(i) for i in range(1, len(head) + 1)])

        es = self.journal.task_entries(tid, expect=n, timeout=60)
        msgs = [e["MESSAGE"] for e in es]
        self.assertEqual(len(msgs), n, f"journald has {len(msgs)} entries of {n} ({len(msgs) - len(set(msgs))} "
                                       "duplicates)")
        self.assertEqual(msgs, [expected_line(i) for i in range(1, n + 1)])
        self.assertEqual([e.get("LAGOON_LINE") for e in es], [str(i) for i in range(1, n + 1)])

    def test_50mb_once_on_disk_and_capped(self):
        self.write_config()
        self.daemon()
        tid = self.new_id("big")
        chunks = 50  # 50 MB
        self.submit_ok(printer(chunks), id=tid)
        self.client.wait_status(tid, ("running",) + harness.FINAL)
        worst_before_cap, worst_after_cap, n_samples, max_cri = 0.0, 0, 0, 0
        while self.client.task(tid)["status"] == "running":
            disk, out, log = self.sample(tid)
            max_cri = max(max_cri, size(self.paths(tid)[0]))
            if out >= 2 * 1024 * 1024 and log < CAP - LINE:
                worst_before_cap = max(worst_before_cap, disk / out)
                n_samples += 1
            elif log >= CAP - LINE:
                worst_after_cap = max(worst_after_cap, disk)
            time.sleep(0.02)
        t = self.client.wait_final(tid, 60)
        self.assertEqual(t["status"], "complete", t)
        print(f"  {n_samples} samples under the cap, worst disk/output {worst_before_cap:.3f}; "
              f"worst disk at the cap {worst_after_cap / 2**20:.1f} MiB; CRI log reached {max_cri / 2**20:.0f} MB",
              end=" ", flush=True)
        self.assertGreater(n_samples, 5, "too few samples while running under the cap")
        self.assertGreater(max_cri, 40 * 2**20, "the CRI log should have grown to nearly the whole output")
        self.assertLessEqual(worst_before_cap, 1.1, "output on disk more than 1.1 times while running")
        self.assertLessEqual(worst_after_cap, 1.1 * CAP, "output on disk over the cap while running")
        self.assertLessEqual(used(self.task_log_path(tid)), CAP + 64 * 1024)
        # The container directory goes after the final status (clean-up off the critical path).
        harness.wait_until(lambda: not os.path.exists(self.paths(tid)[0]), 30, what="the CRI log removed")
        self.check_output(tid, chunks * 1000)

    def test_kill9_before_and_after_the_cap(self):
        self.write_config()
        d = self.daemon()
        tid = self.new_id("kill")
        chunks = 30
        self.submit_ok(printer(chunks, pause="0.15"), id=tid)
        harness.wait_until(lambda: size(self.task_log_path(tid)) >= 5 * 2**20, 60, what="5 MB in the task log")
        d.kill9()
        time.sleep(0.3)  # more output while the daemon is down
        d.start()
        harness.wait_until(lambda: size(self.task_log_path(tid)) >= CAP - LINE, 60, what="the cap")
        self.assertEqual(self.client.task(tid)["status"], "running", "the task should still print after the cap")
        d.kill9()
        time.sleep(0.3)
        d.start()
        t = self.client.wait_final(tid, 90)
        self.assertEqual(t["status"], "complete", t)
        self.check_output(tid, chunks * 1000)


if __name__ == "__main__":
    harness.main()
