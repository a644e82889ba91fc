#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The operator's view: lagoon-taskctl (the real binary) against the real daemon, the
state-directory lock, and GET /metrics read by the Prometheus client's parser."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class TestTaskctl(harness.TaskdTestCase):
    def setUp(self):
        super().setUp()
        self.write_config()
        self.d = self.daemon()

    def ctl_ok(self, *args, **kw):
        r = self.taskctl(*args, **kw)
        self.assertEqual(r.returncode, 0, f"taskctl {' '.join(args)}: {r}")
        return r

    def test_options_after_the_task_id(self):
        tid = self.new_id("after")
        self.submit_ok("echo one; echo two", id=tid)
        self.client.wait_final(tid)
        for verb in ("show", "wait", "cancel"):
            r = self.taskctl(verb, tid, "--json")
            if verb == "cancel":
                self.assertEqual(r.returncode, 1, r)  # finished: conflict, but parsed
                self.assertIn("already finished", r.stderr)
                continue
            self.assertEqual(r.returncode, 0, r)
            self.assertEqual(json.loads(r.stdout)["id"], tid, r)
        r = self.ctl_ok("logs", tid, "-f")
        self.assertEqual(r.stdout, "one\ntwo\n")
        r = self.ctl_ok("logs", tid, "--follow")
        self.assertEqual(r.stdout, "one\ntwo\n")
        r = self.ctl_ok("ls", "--json")
        self.assertIn(tid, r.stdout)
        # run still stops at the command: its options belong to the command.
        r = self.ctl_ok("run", "--wait", "echo", "--json")
        self.assertEqual(r.stdout, "--json\n")

    def test_state_directory_lock(self):
        cfg = self.base_config()
        cfg["Daemon"]["ListenSocket"] = os.path.join(self.tmp, "other.sock")
        path = self.write_config(config=cfg, path=os.path.join(self.tmp, "other.conf"))
        d2 = self.daemon(config_path=path, start=False, name="second")
        d2.start(wait_ready=False)
        self.assertNotEqual(d2.wait_exit(15), 0)
        err = d2.stderr()
        self.assertIn(f"State directory {self.state_dir} is in use by another lagoon-taskd (PID {self.d.pid})", err)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "other.sock")))
        self.assertHealthy()
        # Once the first one is gone, the lock is free (no stale lock after a crash).
        self.d.kill9()
        d2.start()
        self.assertEqual(harness.ApiClient(os.path.join(self.tmp, "other.sock")).health().status, 200)


if __name__ == "__main__":
    harness.main()
