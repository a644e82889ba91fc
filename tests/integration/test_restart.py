#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""kill -9 of the daemon: running tasks continue under conmon and are re-adopted,
a task that ends while the daemon is down gets its real exit code, queued tasks run
exactly once, and every output line is in the task log and in journald exactly once,
in order."""

import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def numbered(prefix, n, delay="0.001"):
    return f"for i in $(seq 1 {n}); do echo {prefix} $i; sleep {delay}; done"


def ranges(indexes):
    """[3, 4, 5, 9] → "4-6, 10" (1-based line numbers)."""
    out, start, prev = [], None, None
    for i in indexes + [None]:
        if start is not None and (i is None or i != prev + 1):
            out.append(f"{start + 1}-{prev + 1}" if prev != start else f"{start + 1}")
            start = None
        if i is not None and start is None:
            start = i
        prev = i
    return ", ".join(out[:20]) + (" …" if len(out) > 20 else "")


class TestKill9(harness.TaskdTestCase):
    def check_output(self, tid, expected, timeout=60):
        logs = self.client.logs(tid).splitlines()
        self.assertEqual(len(logs), len(expected), f"{tid}: log has {len(logs)} lines, expected {len(expected)}")
        self.assertEqual(logs, expected, tid)
        es = self.journal.task_entries(tid, expect=len(expected), timeout=timeout)
        msgs = [e["MESSAGE"] for e in es]
        dupes = len(msgs) - len(set(msgs))
        seen = set(msgs)
        missing = [i for i, x in enumerate(expected) if x not in seen]
        self.assertEqual(len(msgs), len(expected),
                         f"{tid}: journald has {len(msgs)} entries, expected {len(expected)} "
                         f"({dupes} duplicates, {len(missing)} missing: lines {ranges(missing)})")
        self.assertEqual(msgs, expected, tid)
        self.assertEqual(self.journal.line_numbers(es), list(range(1, len(expected) + 1)))

    def client_lines_on_disk(self, tid):
        try:
            with open(self.task_log_path(tid), "rb") as f:
                return f.read().count(b"\n")
        except FileNotFoundError:
            return 0

    def test_kill9_mid_output(self):
        self.write_config(tasks={"MaxRunning": 2})
        d = self.daemon()
        a, b, c, e = (self.new_id(x) for x in ("a", "b", "c", "d"))
        self.submit_ok(numbered("line", 3000), id=a)
        self.submit_ok("echo start; sleep 4; echo end; exit 5", id=b)
        self.submit_ok("echo ran c; " + numbered("c", 300, "0"), id=c)
        self.submit_ok("echo ran d; exit 2", id=e)
        for tid in (c, e):
            self.assertEqual(self.client.task(tid)["status"], "pending")
        self.client.wait_status(b, "running")
        harness.wait_until(lambda: self.client.logs(a).count("\n") >= 200, 30, what="200 lines of a")
        cpids = {tid: self.conmon_pid(tid) for tid in (a, b)}
        self.assertTrue(all(cpids.values()), cpids)
        self.assertEqual(self.client.task(b)["status"], "running")
        d.kill9()
        lines_at_kill = self.client_lines_on_disk(a)
        for tid, pid in cpids.items():
            self.assertTrue(harness.pid_alive(pid), f"conmon of {tid} died with the daemon")
        # b ends (exit 5) while the daemon is down; a keeps printing.
        harness.wait_until(lambda: not harness.pid_alive(cpids[b]), 15, what="b to end while the daemon is down")
        self.assertLess(lines_at_kill, 3000, "a should have been killed mid-output")
        d.start()
        final = {tid: self.client.wait_final(tid, 90) for tid in (a, b, c, e)}
        self.assertEqual((final[a]["status"], final[a]["exitCode"]), ("complete", 0), final[a])
        self.assertEqual((final[b]["status"], final[b]["exitCode"], final[b]["reason"]),
                         ("failed", 5, "exit-code 5"), final[b])
        self.assertEqual((final[c]["status"], final[c]["exitCode"]), ("complete", 0), final[c])
        self.assertEqual((final[e]["status"], final[e]["exitCode"]), ("failed", 2), final[e])
        self.check_output(a, [f"line {i}" for i in range(1, 3001)])
        self.check_output(b, ["start", "end"])
        self.check_output(c, ["ran c"] + [f"c {i}" for i in range(1, 301)])
        self.check_output(e, ["ran d"])
        # Queued tasks ran once each, after the restart, within MaxRunning=2.
        for tid in (c, e):
            self.assertEqual(self.client.logs(tid).count("ran "), 1)
        for pid in cpids.values():
            harness.wait_until(lambda: not harness.pid_alive(pid), 10, what="conmon exit")

    def test_repeated_kill9_under_heavy_output(self):
        self.write_config()
        d = self.daemon()
        tid = self.new_id("heavy")
        chunks, size = 8, 4000
        n = chunks * size
        # Bursts of 4000 lines every 0.3 s, so that kills land while the daemon is busy.
        self.submit_ok(f"i=0; while [ $i -lt {chunks} ]; do seq $((i*{size}+1)) $((i*{size}+{size})); "
                       "i=$((i+1)); sleep 0.3; done", id=tid)
        self.client.wait_status(tid, ("running",) + harness.FINAL)
        rng = random.Random(tid)
        at_kill = []
        for _ in range(5):
            time.sleep(rng.uniform(0.2, 0.45))
            d.kill9()
            at_kill.append(self.client_lines_on_disk(tid))
            d.start()
        print(f"  lines in the task log at each kill: {at_kill}", end=" ", flush=True)
        t0 = time.monotonic()
        t = self.client.wait_final(tid, 90)
        self.assertEqual(t["status"], "complete", t)
        t0 = time.monotonic()
        try:
            self.check_output(tid, [str(i) for i in range(1, n + 1)], timeout=90)
        finally:
            print(f"  output checked in {time.monotonic() - t0:.1f}s", end=" ", flush=True)

    def test_submission_is_durable(self):
        self.write_config(tasks={"MaxRunning": 1})
        d = self.daemon()
        blocker, queued = self.new_id("blocker"), self.new_id("queued")
        self.submit_ok("sleep 1; echo blocker", id=blocker)
        self.submit_ok("echo queued ran", id=queued)
        d.kill9()  # right after the 201s
        d.start()
        tb = self.client.wait_final(blocker, 60)
        tq = self.client.wait_final(queued, 60)
        self.assertEqual(tb["status"], "complete", tb)
        self.assertEqual(tq["status"], "complete", tq)
        self.check_output(blocker, ["blocker"])
        self.check_output(queued, ["queued ran"])
        self.assertGreaterEqual(harness.parse_time(tq["startedAt"]), harness.parse_time(tb["finishedAt"]))

    def test_cancel_after_restart(self):
        self.write_config()
        d = self.daemon()
        tid = self.new_id("cancel")
        self.submit_ok("trap 'echo got TERM; exit 0' TERM; echo started; while :; do sleep 0.1; done", id=tid)
        harness.wait_until(lambda: "started" in self.client.logs(tid), 20, what="started")
        d.kill9()
        d.start()
        # The kill may land between the container's start and its record saying so (its
        # first line can be out by then): the restarted daemon finds it running, a step
        # that may still be under way when the API answers.
        self.client.wait_status(tid, ("running",), 15)
        self.assertEqual(self.client.cancel(tid).status, 202)
        t = self.client.wait_final(tid, 30)
        self.assertEqual(t["status"], "cancelled", t)
        logs = [x for x in self.client.logs(tid).splitlines() if x != "Terminated"]
        self.assertEqual(logs, ["started", "got TERM"])


if __name__ == "__main__":
    harness.main()
