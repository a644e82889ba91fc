#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Supervision: per-task timeout, SIGTERM then SIGKILL after KillGraceSec=,
cancellation (running, queued, finished), MaxRunning= with the FIFO queue and its
queue positions, MaxRunningPerEnvironment=."""

import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import parse_time  # noqa: E402

GRACE = 2
# A task that handles SIGTERM (prints and exits 0) and one that ignores it.
HANDLES_TERM = "trap 'echo got TERM; exit 0' TERM; echo started; while :; do sleep 0.1; done"
IGNORES_TERM = "trap '' TERM; echo started; while :; do sleep 0.1; done"


def term_log(text):
    """Log lines without the shell's "Terminated" notice (printed when the signal also
    reached the loop's sleep, e.g. with `runc kill --all`)."""
    return [x for x in text.splitlines() if x != "Terminated"]


class Sampler:
    """Samples GET /v1/tasks every 50 ms in a thread: the max number running at once."""

    def __init__(self, client, ids):
        self.client = client
        self.ids = set(ids)
        self.max_running = 0
        self.samples = 0
        self.errors = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                ts = [t for t in self.client.tasks() if t["id"] in self.ids]
                self.max_running = max(self.max_running, sum(1 for t in ts if t["status"] == "running"))
                self.samples += 1
            except Exception as e:  # keep sampling; report at the end
                self.errors.append(repr(e))
            time.sleep(0.05)

    def stop(self):
        self._stop.set()
        self.thread.join(5)


class TestSupervision(harness.TaskdTestCase):
    def start(self, **tasks):
        self.write_config(tasks={"KillGraceSec": GRACE, **tasks})
        return self.daemon()

    def wait_log(self, tid, text, timeout=30):
        return harness.wait_until(lambda: text in self.client.logs(tid), timeout, 0.05, f"{text!r} in log of {tid}")

    def test_timeout(self):
        self.start()
        tid = self.new_id("timeout")
        t = self.submit_ok("echo started; sleep 100", id=tid, timeout=2)
        self.assertEqual(t["timeout"], 2, t)
        t = self.client.wait_final(tid, 30)
        self.assertEqual(t["status"], "failed", t)
        self.assertEqual(t["reason"], "timeout", t)
        ran = parse_time(t["finishedAt"]) - parse_time(t["startedAt"])
        # sleep as the container's PID 1 ignores SIGTERM: SIGKILL after the grace.
        self.assertGreaterEqual(ran, 1.9, t)
        self.assertLess(ran, 2 + GRACE + 2.5, t)
        self.assertIn("started", self.client.logs(tid))

    def test_timeout_duration_string_and_term_handled(self):
        self.start()
        tid = self.new_id("timeout-s")
        t = self.submit_ok(HANDLES_TERM, id=tid, timeout="2s")
        self.assertEqual(t["timeout"], 2, t)
        t = self.client.wait_final(tid, 30)
        self.assertEqual(t["status"], "failed", t)
        self.assertEqual(t["reason"], "timeout", t)
        ran = parse_time(t["finishedAt"]) - parse_time(t["startedAt"])
        # The task handles SIGTERM: it ends right after the deadline, no grace needed.
        self.assertGreaterEqual(ran, 1.9, t)
        self.assertLess(ran, 2 + 1.5, t)
        self.assertEqual(term_log(self.client.logs(tid)), ["started", "got TERM"])

    def test_taskctl_exit_status(self):
        self.start()
        r = self.taskctl("run", "--wait", "--timeout=1", "echo begun; sleep 100", timeout=30)
        self.assertEqual(r.returncode, 124, r)
        self.assertIn("begun", r.stdout, r)
        r = self.taskctl("run", "--wait", "--service=nope", "true", timeout=30)
        self.assertNotEqual(r.returncode, 0, r)
        # Cancelled while waiting: 130.
        tid = self.new_id("ctl-cancel")
        p = subprocess.Popen([harness.TASKCTL, "--socket", self.socket_path, "run", "--wait", f"--id={tid}",
                              HANDLES_TERM], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.track_process(p)
        self.client.wait_status(tid, "running", 30)
        # "running" covers the launch too (asynchronous now): the trap must be set first.
        harness.wait_until(lambda: "started" in self.client.logs(tid), 30, what="the task's trap")
        self.assertEqual(self.client.cancel(tid).status, 202)
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 130, (out, err))
        self.assertIn("started", out)

    def test_default_timeout(self):
        self.start(DefaultTimeoutSec=1)
        t = self.run_task("sleep 100", timeout=30)
        self.assertEqual(t["status"], "failed", t)
        self.assertEqual(t["reason"], "timeout", t)
        ran = parse_time(t["finishedAt"]) - parse_time(t["startedAt"])
        self.assertLess(ran, 1 + GRACE + 2.5, t)

    def test_cancel_running(self):
        self.start()
        tid = self.new_id("cancel")
        self.submit_ok(HANDLES_TERM, id=tid)
        self.client.wait_status(tid, "running")
        self.wait_log(tid, "started")
        t0 = time.monotonic()
        r = self.client.cancel(tid)
        self.assertEqual(r.status, 202, r)
        t = self.client.wait_final(tid, 30)
        took = time.monotonic() - t0
        self.assertEqual(t["status"], "cancelled", t)
        self.assertLess(took, 1.5, t)
        self.assertEqual(term_log(self.client.logs(tid)), ["started", "got TERM"])
        # Cancelling again: already finished.
        self.assertErrorResponse(self.client.cancel(tid), 409)

    def test_sigterm_ignored_gets_sigkill(self):
        self.start()
        tid = self.new_id("kill")
        self.submit_ok(IGNORES_TERM, id=tid)
        self.client.wait_status(tid, "running")
        self.wait_log(tid, "started")
        t0 = time.monotonic()
        self.assertEqual(self.client.cancel(tid).status, 202)
        time.sleep(GRACE - 0.7)
        self.assertEqual(self.client.task(tid)["status"], "running",
                         "the task ignores SIGTERM: it must still run during KillGraceSec=")
        t = self.client.wait_final(tid, 30)
        took = time.monotonic() - t0
        self.assertEqual(t["status"], "cancelled", t)
        self.assertGreaterEqual(took, GRACE - 0.3, t)
        self.assertLess(took, GRACE + 2.5, t)
        cpid = self.conmon_pid(tid)
        if cpid:
            harness.wait_until(lambda: not harness.pid_alive(cpid), 10, what="conmon exit")

    def test_cancel_queued_and_finished(self):
        self.start(MaxRunning=1)
        running = self.new_id("blocker")
        queued = self.new_id("queued")
        self.submit_ok(HANDLES_TERM, id=running)
        self.client.wait_status(running, "running")
        t = self.submit_ok("echo must not run", id=queued)
        self.assertEqual(t["status"], "pending", t)
        self.assertEqual(t.get("queuePosition"), 1, t)
        r = self.client.cancel(queued)
        self.assertEqual(r.status, 202, r)
        t = self.client.task(queued)
        self.assertEqual(t["status"], "cancelled", t)
        self.assertIn(t.get("startedAt"), (None, ""), t)
        self.assertEqual(self.client.cancel(running).status, 202)
        self.client.wait_final(running)
        time.sleep(1)  # a wrongly queued task would have started by now
        t = self.client.task(queued)
        self.assertEqual(t["status"], "cancelled", t)
        self.assertIn(t.get("startedAt"), (None, ""), t)
        self.assertEqual(self.client.logs(queued), "")
        self.assertEqual(self.journal.task_messages(queued), [])
        self.assertFalse(os.path.exists(self.container_dir(queued)))
        # Finished tasks cannot be cancelled; unknown ones are 404.
        done = self.run_task("true")
        self.assertErrorResponse(self.client.cancel(done["id"]), 409)
        self.assertErrorResponse(self.client.cancel(queued), 409)
        self.assertErrorResponse(self.client.cancel("no-such-task"), 404)
        self.assertHealthy()

    def test_max_running_fifo(self):
        self.start(MaxRunning=2)
        ids = [self.new_id(f"q{i}") for i in range(5)]
        durations = [2.0, 1.0, 0.5, 0.5, 0.5]
        sampler = None
        try:
            submitted = []
            for tid, dur in zip(ids, durations):
                submitted.append(self.submit_ok(f"sleep {dur}", id=tid))
            sampler = Sampler(self.client, ids)
            # Once two run: three queued, positions 1..3 in submission order.
            harness.wait_until(lambda: sum(1 for t in self.client.tasks() if t["status"] == "running") == 2,
                               10, what="two tasks running")
            snap = {t["id"]: t for t in self.client.tasks()}
            queued = [snap[i] for i in ids if snap[i]["status"] in ("new", "pending")]
            self.assertEqual([t["id"] for t in queued], ids[2:], [(i, snap[i]["status"]) for i in ids])
            self.assertEqual([t.get("queuePosition") for t in queued], [1, 2, 3], queued)
            self.assertEqual([self.client.task(i).get("queuePosition") for i in ids[2:]], [1, 2, 3])
            for t in submitted[2:]:
                self.assertEqual(t["status"], "pending", t)
            final = [self.client.wait_final(i, 60) for i in ids]
        finally:
            if sampler:
                sampler.stop()
        for t in final:
            self.assertEqual(t["status"], "complete", t)
            self.assertNotIn("queuePosition", t, t)
        self.assertFalse(sampler.errors, sampler.errors)
        self.assertGreater(sampler.samples, 10)
        self.assertEqual(sampler.max_running, 2, "never more than MaxRunning=2, and 2 reached")
        # Intervals: at no instant more than 2 tasks between start and finish.
        spans = [(parse_time(t["startedAt"]), parse_time(t["finishedAt"])) for t in final]
        for s, _ in spans:
            overlapping = sum(1 for s2, f2 in spans if s2 <= s < f2)
            self.assertLessEqual(overlapping, 2, spans)
        starts = [s for s, _ in spans]
        # FIFO: the queued ones start in submission order, each in a slot a running one freed
        # (q1 ends first, then q2 takes its place…). q0 and q1 launch together, in parallel:
        # either container may start first.
        self.assertLess(max(starts[:2]), min(starts[2:]), starts)
        self.assertEqual(starts[2:], sorted(starts[2:]), starts)

    def test_max_running_per_environment(self):
        self.start(MaxRunning=4, MaxRunningPerEnvironment=1)
        a1, a2, b1 = self.new_id("a1"), self.new_id("a2"), self.new_id("b1")
        self.submit_ok("sleep 1.5", id=a1, environment="a")
        self.submit_ok("echo a2", id=a2, environment="a")
        self.submit_ok("sleep 1.5", id=b1, environment="b")
        # a1 and b1 launch together (a launch does not wait for another): either may be
        # running first. a2 waits for a1 (its environment's limit) the whole time a1 runs.
        self.client.wait_status(a1, ("running",))
        t = self.client.task(a2)
        self.assertEqual(t["status"], "pending", t)
        self.client.wait_status(b1, ("running", "complete"))
        ta1, ta2, tb1 = (self.client.wait_final(i) for i in (a1, a2, b1))
        for t in (ta1, ta2, tb1):
            self.assertEqual(t["status"], "complete", t)
        # b1 was not held back by a2 (queued earlier, blocked by its environment).
        self.assertLess(parse_time(tb1["startedAt"]), parse_time(ta1["finishedAt"]))
        self.assertGreaterEqual(parse_time(ta2["startedAt"]), parse_time(ta1["finishedAt"]))


if __name__ == "__main__":
    harness.main()
