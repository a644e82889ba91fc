#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Running tasks: exit codes (API and lagoon-taskctl), output in the task log and in
journald with every field, the task's environment and filesystem, volume of output,
conmon's split lines, secret masking, idempotent submission."""

import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class TestRun(harness.TaskdTestCase):
    tasks_config = {"Secret": ["hunter2", "correct-horse"]}

    def setUp(self):
        super().setUp()
        self.write_config(services={"other": {"Bundle": self.bundle}})
        self.d = self.daemon()

    def test_exit_codes_api(self):
        ids = {}
        for code in (0, 1, 3):
            ids[code] = self.submit_ok(f"echo exiting {code}; exit {code}", id=self.new_id(f"exit{code}"))["id"]
        for code, tid in ids.items():
            t = self.client.wait_final(tid, 60)
            self.assertEqual(t["exitCode"], code, t)
            if code == 0:
                self.assertEqual(t["status"], "complete", t)
                self.assertIn(t.get("reason"), (None, ""), t)
            else:
                self.assertEqual(t["status"], "failed", t)
                self.assertEqual(t["reason"], f"exit-code {code}", t)
            self.assertEqual(self.client.logs(tid), f"exiting {code}\n")
            created, started, finished = (harness.parse_time(t[k]) for k in ("createdAt", "startedAt", "finishedAt"))
            self.assertLessEqual(created, started, t)
            self.assertLessEqual(started, finished, t)
            self.assertLess(finished - created, 60, t)

    def test_task_json_fields(self):
        tid = self.new_id("fields")
        t = self.submit_ok("true", id=tid, name="lagoon-task-abc", project="My_Proj", environment="Feature/X",
                           service="cli", timeout=120)
        for k in ("id", "name", "project", "environment", "namespace", "service", "command", "status",
                  "createdAt", "timeout"):
            self.assertIn(k, t, t)
        self.assertEqual(t["id"], tid)
        self.assertEqual(t["name"], "lagoon-task-abc")
        self.assertEqual(t["project"], "My_Proj")
        self.assertEqual(t["environment"], "Feature/X")
        self.assertEqual(t["namespace"], "my-proj-feature-x")
        self.assertEqual(t["service"], "cli")
        self.assertEqual(t["command"], "true")
        self.assertIn(t["status"], ("new", "pending", "running", "complete"))
        t = self.client.wait_final(tid)
        self.assertEqual(t["status"], "complete", t)
        self.assertEqual(t["exitCode"], 0)
        # Defaults from the config, and a generated id.
        t2 = self.submit_ok("true")
        self.assertTrue(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", t2["id"]), t2)
        self.assertEqual((t2["project"], t2["environment"], t2["service"], t2["namespace"]),
                         ("demo", "main", "cli", "demo-main"), t2)
        self.assertEqual(t2["name"], t2["id"])
        self.client.wait_final(t2["id"])
        listed = [x["id"] for x in self.client.tasks()]
        self.assertLess(listed.index(tid), listed.index(t2["id"]), listed)

    def test_output_in_logs_and_journal(self):
        tid = self.new_id("out")
        self.submit_ok("echo out1; sleep 0.3; echo err1 >&2; sleep 0.3; echo 'out2 with  spaces'",
                       id=tid, name="lagoon-task-xyz", project="proj", environment="env1")
        t = self.client.wait_final(tid)
        self.assertEqual(t["status"], "complete", t)
        self.assertEqual(self.client.logs(tid), "out1\nerr1\nout2 with  spaces\n")
        with open(self.task_log_path(tid)) as f:
            self.assertEqual(f.read(), "out1\nerr1\nout2 with  spaces\n")
        es = self.journal.task_entries(tid, expect=3)
        self.assertEqual([e["MESSAGE"] for e in es], ["out1", "err1", "out2 with  spaces"])
        self.assertEqual(self.journal.line_numbers(es), [1, 2, 3])
        for e, prio, stream in zip(es, ("6", "4", "6"), ("stdout", "stderr", "stdout")):
            self.assertEqual(e.get("PRIORITY"), prio, e)
            self.assertEqual(e.get("LAGOON_STREAM"), stream, e)
            self.assertEqual(e.get("SYSLOG_IDENTIFIER"), "lagoon-task", e)
            self.assertEqual(e.get("LAGOON_TASK_ID"), tid, e)
            self.assertEqual(e.get("LAGOON_TASK_NAME"), "lagoon-task-xyz", e)
            self.assertEqual(e.get("LAGOON_PROJECT"), "proj", e)
            self.assertEqual(e.get("LAGOON_ENVIRONMENT"), "env1", e)
            self.assertEqual(e.get("LAGOON_NAMESPACE"), "proj-env1", e)
            self.assertEqual(e.get("LAGOON_SERVICE"), "cli", e)

    def test_environment(self):
        tid = self.new_id("env")
        self.submit_ok("env", id=tid, project="p1", environment="e1")
        t = self.client.wait_final(tid)
        self.assertEqual(t["status"], "complete", t)
        env = dict(line.split("=", 1) for line in self.client.logs(tid).splitlines() if "=" in line)
        self.assertNotIn("CRONJOBS", env)
        self.assertEqual(env.get("TASK_DATA_ID"), tid, env)
        self.assertTrue(any(k.startswith("TASK_") for k in env), env)
        self.assertEqual(env.get("LAGOON_PROJECT"), "p1", env)
        self.assertIn("/bin", env.get("PATH", ""), env)  # kept from the service
        self.assertEqual(env.get("LAGOON_SERVICE_NAME"), "cli", env)  # other service vars kept

    def test_service_files_isolated(self):
        tid = self.new_id("fs")
        self.submit_ok("cat /srv/service.txt; echo changed > /srv/service.txt; echo new > /srv/task.txt; "
                       "cat /srv/service.txt /srv/task.txt; rm /bin/busybox && echo removed", id=tid)
        t = self.client.wait_final(tid)
        self.assertEqual(t["status"], "complete", t)
        self.assertEqual(self.client.logs(tid), "written by the service\nchanged\nnew\nremoved\n")
        rootfs = os.path.join(self.bundle, "rootfs")
        with open(os.path.join(rootfs, "srv", "service.txt")) as f:
            self.assertEqual(f.read(), "written by the service\n")
        self.assertFalse(os.path.exists(os.path.join(rootfs, "srv", "task.txt")))
        self.assertTrue(os.path.exists(os.path.join(rootfs, "bin", "busybox")))
        # A later task sees the service's files again, not the first task's.
        t2 = self.run_task("cat /srv/service.txt; ls /srv")
        self.assertEqual(self.client.logs(t2["id"]), "written by the service\nservice.txt\n")

    def test_10000_lines(self):
        tid = self.new_id("lines")
        t0 = time.monotonic()
        self.submit_ok("seq 1 10000", id=tid)
        t = self.client.wait_final(tid, 120)
        elapsed = time.monotonic() - t0
        self.assertEqual(t["status"], "complete", t)
        expected = [str(i) for i in range(1, 10001)]
        self.assertEqual(self.client.logs(tid).splitlines(), expected)
        es = self.journal.task_entries(tid, expect=10000, timeout=60)
        msgs = [e["MESSAGE"] for e in es]
        self.assertEqual(len(msgs), 10000)
        self.assertEqual(msgs, expected)
        self.assertEqual(self.journal.line_numbers(es), list(range(1, 10001)))  # line N is "N"
        # LAGOON_LINE on the first entry of each datagram and every 256th after, no more.
        numbered = [e for e in es if "LAGOON_LINE" in e]
        self.assertEqual(numbered[0]["LAGOON_LINE"], "1")
        self.assertLess(len(numbered), 10000 // 50, f"{len(numbered)} of 10000 entries carry LAGOON_LINE")
        gaps = [b - a for a, b in zip([int(e["LAGOON_LINE"]) for e in numbered],
                                      [int(e["LAGOON_LINE"]) for e in numbered[1:]])]
        self.assertLessEqual(max(gaps), 256, gaps)
        print(f"  10000 lines: task final after {elapsed:.2f}s")

    def test_long_line_split_by_conmon_is_joined(self):
        tid = self.new_id("long")
        # conmon reads in 8 KiB buffers: a 20000-character line becomes P records.
        self.submit_ok("head -c 20000 /dev/zero | tr '\\0' a; echo; sleep 1.5; echo after; "
                       "head -c 9000 /dev/zero | tr '\\0' b >&2; echo >&2", id=tid)
        # While it runs: conmon really wrote partial (P) records for that line.
        harness.wait_until(lambda: len(self.client.logs(tid)) > 20000, 20, what="the long line")
        ctr_log = harness.read_text(os.path.join(self.container_dir(tid), "ctr.log"), "")
        records = [r.split(" ", 3) for r in ctr_log.splitlines()]
        self.assertIn("P", [r[2] for r in records if len(r) > 2], "expected P records in ctr.log")
        self.assertEqual("".join(r[3] for r in records if len(r) > 3 and r[1] == "stdout"), "a" * 20000)
        t = self.client.wait_final(tid)
        self.assertEqual(t["status"], "complete", t)
        lines = self.client.logs(tid).split("\n")
        self.assertEqual(len(lines), 4, [len(x) for x in lines])
        self.assertEqual(lines[0], "a" * 20000)
        self.assertEqual(lines[1], "after")
        self.assertEqual(lines[2], "b" * 9000)
        self.assertEqual(lines[3], "")
        msgs = self.journal.task_messages(tid, expect=3)
        self.assertEqual(len(msgs), 3, [len(m) for m in msgs])
        self.assertEqual(msgs[0], "a" * 20000)
        self.assertEqual(msgs[1], "after")
        self.assertEqual(msgs[2], "b" * 9000)

    def test_container_removed_after_end(self):
        t = self.run_task("echo bye > /tmp/x; cat /tmp/x")
        self.assertEqual(t["status"], "complete", t)
        cdir = self.container_dir(t["id"])
        harness.wait_until(lambda: not os.path.exists(cdir), 10, what=f"{cdir} removed")
        self.assertEqual(harness.mounts_under(self.state_dir), [])
        r = subprocess.run([harness.RUNC, "state", f"lagoon-task-{t['id']}"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertEqual(self.client.logs(t["id"]), "bye\n")  # the log outlives the container

    def test_last_line_without_newline(self):
        t = self.run_task("echo first; printf 'no newline at the end'")
        self.assertEqual(t["status"], "complete", t)
        self.assertEqual(self.client.logs(t["id"]), "first\nno newline at the end\n")
        self.assertEqual(self.journal.task_messages(t["id"], expect=2), ["first", "no newline at the end"])

    def test_secrets_masked(self):
        tid = self.new_id("secret")
        # Pauses around the stderr line: the order between two streams is only kept in time.
        self.submit_ok("echo 'the password is hunter2!'; sleep 0.3; echo hunter2 >&2; sleep 0.3; "
                       "echo 'correct-horse and hunter2'; echo clean", id=tid)
        t = self.client.wait_final(tid)
        self.assertEqual(t["status"], "complete", t)
        expected = ["the password is ***!", "***", "*** and ***", "clean"]
        logs = self.client.logs(tid)
        self.assertEqual(logs.splitlines(), expected)
        with open(self.task_log_path(tid)) as f:
            self.assertNotIn("hunter2", f.read())
        es = self.journal.task_entries(tid, expect=4)
        self.assertEqual([e["MESSAGE"] for e in es], expected)
        for e in es:
            for v in e.values():
                self.assertNotIn("hunter2", str(v))

    def test_idempotent_submission(self):
        tid = self.new_id("idem")
        cmd = "echo ran; sleep 1"
        r1 = self.client.submit(cmd, id=tid)
        self.assertEqual(r1.status, 201, r1)
        r2 = self.client.submit(cmd, id=tid)
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(r2.json["id"], tid)
        self.assertEqual(r2.json["createdAt"], r1.json["createdAt"])
        t = self.client.wait_final(tid)
        self.assertEqual(t["status"], "complete", t)
        r3 = self.client.submit(cmd, id=tid)
        self.assertEqual(r3.status, 200, r3)
        self.assertEqual(r3.json["status"], "complete")
        self.assertEqual(r3.json["startedAt"], t["startedAt"])
        time.sleep(1)
        # One run only: one "ran" line in the log and in journald, one task listed.
        self.assertEqual(self.client.logs(tid), "ran\n")
        self.assertEqual(self.journal.task_messages(tid), ["ran"])
        self.assertEqual(sum(1 for x in self.client.tasks() if x["id"] == tid), 1)

    def test_same_id_other_command_conflicts(self):
        tid = self.new_id("conflict")
        self.submit_ok("sleep 0.5", id=tid)
        r = self.client.submit("echo something else", id=tid)
        self.assertErrorResponse(r, 409)
        r = self.client.submit("sleep 0.5", id=tid, service="other")
        self.assertErrorResponse(r, 409)
        t = self.client.wait_final(tid)
        self.assertEqual(t["command"], "sleep 0.5")
        self.assertEqual(t["service"], "cli")

    def test_logs_follow(self):
        tid = self.new_id("follow")
        self.submit_ok("for i in 1 2 3 4 5; do echo step $i; sleep 0.4; done", id=tid)
        self.client.wait_status(tid, ("running",) + harness.FINAL)
        t0 = time.monotonic()
        text = self.client.logs(tid, follow=True, timeout=60)
        self.assertEqual(text, "".join(f"step {i}\n" for i in range(1, 6)))
        self.assertEqual(self.client.task(tid)["status"], "complete")
        self.assertGreater(time.monotonic() - t0, 0.5)  # it really waited for the task
        # Following a finished task returns at once.
        self.assertEqual(self.client.logs(tid, follow=True, timeout=10), text)

    def test_taskctl_run_wait(self):
        for code in (0, 1, 3):
            r = self.taskctl("run", "--wait", f"echo from taskctl {code}; exit {code}")
            self.assertEqual(r.returncode, code, r)
            self.assertIn(f"from taskctl {code}", r.stdout, r)

    def test_readme_demo(self):
        """The demo of README: make a bundle, point a service at it, run a task."""
        bundle = os.path.join(self.tmp, "demo-bundle")
        r = subprocess.run(["sh", harness.MAKE_BUNDLE, bundle], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.d.stop()
        self.write_config(services={"cli": {"Bundle": bundle}})
        self.d.start()
        # README's command, word for word.
        r = self.taskctl("run", "--service", "cli", "--wait", "--", "echo hello; uname -a; exit 3")
        self.assertEqual(r.returncode, 3, r)
        self.assertEqual(r.stdout.splitlines()[0], "hello", r)
        self.assertIn("Linux", r.stdout, r)
        tid = [t for t in self.client.tasks() if t["command"] == "echo hello; uname -a; exit 3"][0]["id"]
        self.assertEqual(self.journal.task_messages(tid, expect=2)[0], "hello")
        r = self.taskctl("run", "--wait", "cat /srv/service.txt; echo $CRONJOBS; echo done")
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("written by the service", r.stdout)
        self.assertIn("done", r.stdout)
        self.assertNotIn("drush cron", r.stdout)
        r = self.taskctl("list")
        self.assertEqual(r.returncode, 0, r)


if __name__ == "__main__":
    harness.main()
