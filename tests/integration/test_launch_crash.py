#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""kill -9 of the daemon at each step of a launch, deterministically: the daemon stops
itself at a named step (LAGOON_TASKD_DEBUG_STOP_AT), the test SIGKILLs it there and
starts it again. Every task runs exactly once with its real exit code, and every line is
once in the task log and in journald. Then a random SIGKILL loop over launches: 20
kills and five 10 000-line tasks (LAGOON_TEST_LONG=1: the issue's full one, 40 kills
and five 20 000-line tasks, 26-36 s here)."""

import os
import json
import random
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

# prepared: recorded, nothing made yet; spawned: conmon forked, its create in flight;
# created: conmon reported the container created, recorded, not started; started:
# runc start done, recorded.
STEPS = ("prepared", "spawned", "created", "started")
LONG = os.environ.get("LAGOON_TEST_LONG") == "1"


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def runc_knows(cid):
    return subprocess.run([harness.RUNC, "state", cid], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


class TestLaunchCrash(harness.TaskdTestCase):
    def check_output(self, tid, expected, timeout=60):
        logs = self.client.logs(tid).splitlines()
        self.assertEqual(logs, expected, f"{tid}: task log")
        msgs = [e["MESSAGE"] for e in self.journal.task_entries(tid, expect=len(expected), timeout=timeout)]
        self.assertEqual(msgs, expected, f"{tid}: journald")

    def test_kill9_at_each_step(self):
        self.write_config(tasks={"MaxRunning": 2})
        d = self.daemon(start=False)
        for step in STEPS:
            with self.subTest(step=step):
                tid = self.new_id(step)
                d.start(extra_env={"LAGOON_TASKD_DEBUG_STOP_AT": step})
                self.submit_ok(f"echo ran {step}; echo two; exit 3", id=tid)
                harness.wait_until(lambda: harness.proc_state(d.pid) == "T", 30, what=f"the daemon to stop at {step}")
                self.assertIn(f"stopping at {step}", d.stderr())
                # "running" only once the container started: before, its process does not exist.
                with open(os.path.join(self.state_dir, "tasks", f"{tid}.json")) as f:
                    rec = json.load(f)
                want = "running" if step == "started" else "pending"
                self.assertEqual(rec["status"], want, f"record at step {step}: {rec}")
                self.assertIn(rec.get("launchStep"), ("prepared", "created", "started"), rec)
                d.kill9()
                d.start()
                t = self.client.wait_final(tid, 60)
                self.assertEqual((t["status"], t["exitCode"], t["reason"]), ("failed", 3, "exit-code 3"), t)
                self.check_output(tid, [f"ran {step}", "two"])
                d.stop()

    def test_kill9_during_cleanup(self):
        """The final state is announced before the container is deleted (the helper that
        deletes it is held at its start), and a restart finishes a clean-up the kill cut."""
        self.write_config()
        d = self.daemon(start=False)
        d.start(extra_env={"LAGOON_TASKD_DEBUG_STOP_AT": "cleanup"})
        tid = self.new_id("c")
        self.submit_ok("echo done; exit 4", id=tid)
        t = self.client.wait_final(tid, 60)
        self.assertEqual((t["status"], t["exitCode"]), ("failed", 4), t)
        self.assertEqual(self.client.logs(tid), "done\n")
        helpers = []
        harness.wait_until(lambda: helpers.extend(p for p in children(d.pid) if harness.proc_state(p) == "T") or helpers,
                           30, what="the clean-up helper to stop")
        cdir, cid = self.container_dir(tid), f"lagoon-task-{tid}"
        self.assertTrue(os.path.isdir(cdir), "container dir removed before the helper ran")
        self.assertTrue(runc_knows(cid), "container deleted before the helper ran")
        self.assertIn("stopping at cleanup", d.stderr())
        d.kill9()
        os.kill(helpers[0], signal.SIGKILL)
        harness.wait_until(lambda: harness.proc_state(helpers[0]) in (None, "Z"), 30, what="the helper's end")
        self.assertTrue(os.path.isdir(cdir))
        d.start()
        harness.wait_until(lambda: not os.path.exists(cdir), 30, what=f"{cdir} removed by the restart")
        self.assertFalse(runc_knows(cid))
        self.assertEqual(harness.mounts_under(self.state_dir), [])
        self.assertIn("finishing the removal", d.stderr())
        t = self.client.task(tid)
        self.assertEqual((t["status"], t["exitCode"]), ("failed", 4), t)

    def test_random_kill9_during_launches(self):
        n_tasks, n_lines, n_kills = (5, 20000, 40) if LONG else (5, 10000, 20)
        self.write_config(tasks={"MaxRunning": 2})
        d = self.daemon()
        ids = [self.new_id(f"r{i}") for i in range(n_tasks)]
        for i, tid in enumerate(ids):
            self.submit_ok(f"seq 1 {n_lines}; exit {i + 1}", id=tid)
        rng = random.Random(ids[0])
        for _ in range(n_kills):
            time.sleep(rng.uniform(0.05, 0.5))
            d.kill9()
            d.start()
        for i, tid in enumerate(ids):
            t = self.client.wait_final(tid, 120)
            self.assertEqual((t["status"], t["exitCode"]), ("failed", i + 1), t)
        for tid in ids:
            self.check_output(tid, [str(k) for k in range(1, n_lines + 1)], timeout=90)


if __name__ == "__main__":
    harness.main()
