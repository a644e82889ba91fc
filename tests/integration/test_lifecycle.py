#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The daemon's life cycle as systemd sees it: sd_notify READY=1, STATUS=, WATCHDOG=1,
RELOADING=1 + MONOTONIC_USEC= on SIGHUP (a broken new config is refused), STOPPING=1
on SIGTERM; socket activation; a broken config at startup; a SIGTERM while a task
runs leaves the container to conmon and the next start adopts it."""

import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

LONG = "trap 'exit 0' TERM; echo started; while :; do sleep 0.1; done"


def status_is(text):
    return lambda f: f.get("STATUS", "").endswith(text)


class TestNotify(harness.TaskdTestCase):
    def test_ready_and_status(self):
        self.write_config(tasks={"MaxRunning": 1})
        d = self.daemon()
        n = d.notify
        i, f = n.wait_key("READY", "1")
        self.assertRegex(f.get("STATUS", ""), r"0 running, 0 queued")
        a, b = self.new_id("a"), self.new_id("b")
        self.submit_ok(LONG, id=a)
        n.wait_for(status_is("1 running, 0 queued"), since=i, timeout=20, what="STATUS 1 running")
        self.submit_ok(LONG, id=b)
        j, _ = n.wait_for(status_is("1 running, 1 queued"), since=i, timeout=20, what="STATUS 1 running, 1 queued")
        self.client.cancel(b)
        self.client.cancel(a)
        n.wait_for(status_is("0 running, 0 queued"), since=j, timeout=20, what="STATUS idle again")
        for f in n.fields_since(0):
            if "STATUS" in f:
                self.assertRegex(f["STATUS"], r"^(Stopping: )?\d+ running, \d+ queued$")

    def test_watchdog(self):
        self.write_config()
        wrapper = ["sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh"]
        d = self.daemon(start=False, wrapper=wrapper, env={"WATCHDOG_USEC": "2000000"})
        d.start()
        t0 = time.monotonic()
        i, _ = d.notify.wait_key("WATCHDOG", "1", since=d.mark, timeout=5)
        d.notify.wait_key("WATCHDOG", "1", since=i + 1, timeout=5)
        pings = [m for m in d.notify.messages if m[1].get("WATCHDOG") == "1"]
        gaps = [b[0] - a[0] for a, b in zip(pings, pings[1:])]
        self.assertTrue(all(g < 2.0 for g in gaps), gaps)
        self.assertLess(time.monotonic() - t0, 8)
        # A busy daemon still pings.
        self.submit_ok("seq 1 3000")
        k = d.notify.mark()
        d.notify.wait_key("WATCHDOG", "1", since=k, timeout=3)

    def test_no_watchdog_for_other_pid(self):
        self.write_config()
        d = self.daemon(start=False, env={"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
        d.start()
        time.sleep(2.5)
        self.assertFalse([m for m in d.notify.messages if "WATCHDOG" in m[1]],
                         "WATCHDOG_PID names another process: no pings expected")

    def test_reload(self):
        self.write_config()
        d = self.daemon()
        n = d.notify
        self.assertErrorResponse(self.client.submit("true", service="cli2"), 400)
        self.write_config(services={"cli2": {"Bundle": self.bundle}})
        mark = n.mark()
        before = time.clock_gettime(time.CLOCK_MONOTONIC)
        d.signal(signal.SIGHUP)
        i, f = n.wait_key("RELOADING", "1", since=mark, timeout=10)
        self.assertIn("MONOTONIC_USEC", f, f)
        mono = int(f["MONOTONIC_USEC"]) / 1e6
        self.assertLess(abs(mono - before), 5, (mono, before))
        n.wait_key("READY", "1", since=i, timeout=10)
        t = self.run_task("echo on cli2", service="cli2")
        self.assertEqual(t["status"], "complete", t)
        self.assertEqual(self.client.logs(t["id"]), "on cli2\n")

    def test_reload_broken_config_refused(self):
        self.write_config()
        d = self.daemon()
        long_id = self.new_id("during")
        self.submit_ok("sleep 2; echo survived", id=long_id)
        self.client.wait_status(long_id, "running")
        # Broken: line 3 of the new file has an invalid value; it also adds a service.
        with open(self.config_path) as f:
            good = f.read()
        broken = "[Tasks]\n# a comment\nMaxRunning=banana\n\n" + good + "[Service cli2]\nBundle=" + self.bundle + "\n"
        with open(self.config_path, "w") as f:
            f.write(broken)
        mark = d.notify.mark()
        d.signal(signal.SIGHUP)
        i, _ = d.notify.wait_key("RELOADING", "1", since=mark, timeout=10)
        d.notify.wait_key("READY", "1", since=i, timeout=10)
        self.assertTrue(d.running())
        harness.wait_until(lambda: re.search(re.escape(os.path.basename(self.config_path)) + r":3\b", d.stderr()),
                           5, what="FILE:3 error in the daemon's log")
        # Old config still in force: cli works, cli2 unknown.
        t = self.run_task("echo still fine")
        self.assertEqual(t["status"], "complete", t)
        self.assertErrorResponse(self.client.submit("true", service="cli2"), 400)
        t = self.client.wait_final(long_id)
        self.assertEqual((t["status"], self.client.logs(long_id)), ("complete", "survived\n"))

    def test_stopping(self):
        self.write_config()
        d = self.daemon()
        mark = d.notify.mark()
        self.assertEqual(d.stop(), 0)
        d.notify.wait_key("STOPPING", "1", since=mark, timeout=5)


class TestStartup(harness.TaskdTestCase):
    def test_socket_activation(self):
        cfg = self.write_config()
        act_sock = os.path.join(self.tmp, "activated.sock")
        notify = harness.NotifyListener(os.path.join(self.tmp, "sa.notify"))
        self.addCleanup(notify.close)
        err = open(os.path.join(self.tmp, "sa.stderr"), "wb")
        self.extra_logs.append(err.name)
        self.addCleanup(err.close)
        # systemd-socket-activate passes only a few variables on, plus those of -E.
        env = {**os.environ, "NOTIFY_SOCKET": notify.path}
        p = subprocess.Popen(["systemd-socket-activate", "-l", act_sock, "--fdname=api",
                              f"--setenv=NOTIFY_SOCKET={notify.path}", "--setenv=PATH",
                              harness.TASKD, "--config", cfg, "--log-level", "debug"],
                             stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
        self.track_process(p)
        harness.wait_until(lambda: os.path.exists(act_sock), 10, what="activation socket")
        time.sleep(0.3)
        self.assertEqual(notify.messages, [], "the daemon must start only on the first connection")
        client = harness.ApiClient(act_sock)
        r = client.health()
        self.assertEqual(r.status, 200, r)
        notify.wait_key("READY", "1", timeout=10)
        self.assertEqual(p.poll(), None)
        self.assertFalse(os.path.exists(self.socket_path), "ListenSocket= must not be bound when activated")
        t = client.submit("echo activated")
        self.assertEqual(t.status, 201, t)
        t = client.wait_final(t.json["id"])
        self.assertEqual(t["status"], "complete", t)
        self.assertEqual(client.logs(t["id"]), "activated\n")
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(20), 0)
        notify.wait_key("STOPPING", "1", timeout=5)

    def check_broken(self, text, lines, what):
        with open(self.config_path, "w") as f:
            f.write(text)
        d = self.daemon(start=False)
        d.start(wait_ready=False)
        rc = d.wait_exit(15)
        self.assertNotEqual(rc, 0, f"{what}: the daemon must refuse to start")
        err = d.stderr()
        lines = lines if isinstance(lines, tuple) else (lines,)
        pattern = re.escape(os.path.basename(self.config_path)) + ":(" + "|".join(map(str, lines)) + r")\b"
        self.assertRegex(err, pattern, f"{what}: {err}")
        self.assertFalse([m for m in d.notify.messages if m[1].get("READY") == "1"])
        self.assertFalse(os.path.exists(self.socket_path))

    def test_broken_config_at_startup(self):
        good = harness.ini_text(self.base_config())
        self.check_broken(good + "[Tasks]\nMaxRunning=banana\n", good.count("\n") + 2, "invalid value")
        self.check_broken("[Daemon]\nNoSuchKey=1\n" + good, 2, "unknown key")
        n = good.count("\n")
        self.check_broken(good + "[NoSuchSection]\nA=b\n", (n + 1, n + 2), "unknown section")
        self.check_broken("[Tasks\n" + good, 1, "syntax")

    def test_missing_config_file(self):
        d = self.daemon(config_path=os.path.join(self.tmp, "nope.conf"), start=False)
        d.start(wait_ready=False)
        self.assertNotEqual(d.wait_exit(15), 0)
        self.assertIn("nope.conf", d.stderr())


class TestStateLock(harness.TaskdTestCase):
    """After a crash, a child the dead daemon forked may hold the state directory's lock
    for a moment (until its exec or close): a restart right then waited for nothing and
    refused to start (seen in test_bus_outage under load)."""

    def hold_lock(self, seconds):
        """A process that is not the lock's recorded owner holds it, as such a child does."""
        p = subprocess.Popen([sys.executable, "-c",
                              "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
                              "print('held', flush=True); time.sleep(float(sys.argv[2]))",
                              os.path.join(self.state_dir, "lock"), str(seconds)], stdout=subprocess.PIPE, text=True)
        self.track_process(p)
        self.assertEqual(p.stdout.readline(), "held\n")
        return p

    def test_lock_of_a_dead_daemon_is_waited_for(self):
        d = self.daemon()
        d.kill9()  # the lock file names a dead PID now
        self.hold_lock(1.5)
        t0 = time.monotonic()
        d.start()
        self.assertGreater(time.monotonic() - t0, 1.0)
        self.assertIn("its lock is still held though its daemon", d.stderr())
        self.assertHealthy()

    def test_lock_held_too_long_is_refused(self):
        d = self.daemon()
        d.kill9()
        self.hold_lock(30)
        t0 = time.monotonic()
        d.start(wait_ready=False)
        self.assertNotEqual(d.wait_exit(15), 0)
        self.assertTrue(4.5 < time.monotonic() - t0 < 12, time.monotonic() - t0)
        self.assertIn("is in use by another lagoon-taskd", d.stderr())


class TestAdoption(harness.TaskdTestCase):
    def test_sigterm_leaves_task_running_and_restart_adopts_it(self):
        self.write_config()
        d = self.daemon()
        tid = self.new_id("adopt")
        self.submit_ok("echo before; sleep 3; echo after; exit 7", id=tid)
        self.client.wait_status(tid, "running")
        harness.wait_until(lambda: "before" in self.client.logs(tid), 10, what="first line")
        cpid = harness.wait_until(lambda: self.conmon_pid(tid), 10, what="conmon.pid")
        self.assertEqual(d.stop(), 0)
        self.assertTrue(harness.pid_alive(cpid), "conmon must outlive the daemon")
        time.sleep(0.5)
        self.assertTrue(harness.pid_alive(cpid), "conmon must outlive the daemon")
        d.start()
        t = self.client.task(tid)
        self.assertIn(t["status"], ("running", "failed"), t)
        t = self.client.wait_final(tid, 30)
        self.assertEqual(t["status"], "failed", t)
        self.assertEqual(t["exitCode"], 7, t)
        self.assertEqual(t["reason"], "exit-code 7", t)
        self.assertEqual(self.client.logs(tid), "before\nafter\n")
        self.assertEqual(self.journal.task_messages(tid, expect=2), ["before", "after"])
        harness.wait_until(lambda: not harness.pid_alive(cpid), 10, what="conmon exit")

    def test_task_ends_while_stopped(self):
        self.write_config()
        d = self.daemon()
        tid = self.new_id("down")
        self.submit_ok("echo one; sleep 1; echo two; exit 4", id=tid)
        self.client.wait_status(tid, "running")
        self.assertEqual(d.stop(), 0)
        time.sleep(2.5)  # the task ends while no daemon runs
        d.start()
        t = self.client.wait_final(tid, 30)
        self.assertEqual((t["status"], t["exitCode"], t["reason"]), ("failed", 4, "exit-code 4"), t)
        self.assertEqual(self.client.logs(tid), "one\ntwo\n")
        self.assertEqual(self.journal.task_messages(tid, expect=2), ["one", "two"])
        # finishedAt is when the daemon noticed at the latest, not before the start.
        self.assertGreaterEqual(harness.parse_time(t["finishedAt"]), harness.parse_time(t["startedAt"]))


if __name__ == "__main__":
    harness.main()
