#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The operator's view: lagoon-taskctl (the real binary) against the real daemon, the
state-directory lock, and GET /metrics read by the Prometheus client's parser."""

import datetime
import grp
import http.client
import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import promcheck  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DASHBOARD = os.path.join(harness.SRCDIR, "docs", "grafana-dashboard.json")
ALERTS = os.path.join(harness.SRCDIR, "docs", "prometheus-alerts.yml")
# Series only a daemon with [Lagoon] exports.
LAGOON_ONLY = {promcheck.PREFIX + n for n in ("outbox_messages", "outbox_oldest_age_seconds", "broker_up",
                                               "broker_disconnects_total", "lagoon_api_up")}


# Documented command lines, by their program: run against the test's daemon, or not
# runnable here (and why). A program in neither list fails the test, so a new kind of
# command in the docs is looked at.
DOC_PAGES = ("README.md", "docs/man/lagoon-taskctl.1.scd", "docs/man/lagoon-taskd.8.scd",
             "docs/man/lagoon-taskd.conf.5.scd")
DOC_RUN = ("lagoon-taskctl", "curl", "echo")
DOC_NOT_HERE = {
    "systemctl": "needs systemd as PID 1 (tests/e2e runs the units)",
    "journalctl": "reads the system journal, not the test's journald",
    "apt-get": "installs packages (tests/e2e installs the .deb)",
    "kubectl": "needs a cluster",
    "rabbitmqadmin": "needs a broker's management plugin",
    "bench/run": "the benchmark, minutes",
    "./scripts/demo.sh": "installs packages",
    "./scripts/test": "the whole test suite",
    "./scripts/fuzz": "long fuzz runs, minutes",
    "dnf": "installs packages",
    "usermod": "changes the system's accounts",
    "chmod": "a file of the example",
}
# A synopsis is no command line.
SYNOPSIS = re.compile(r"\[-|\b(ID|COMMAND|PATH|FILE|ARGS|OPTIONS)\b(\.\.\.)?( |\]|$)|\|inspect|\|stop")
PROGRAM = re.compile(r"^(LAGOON_TASKD_SOCKET=\S+ )?(\./)?[a-z][a-z0-9_./-]*( |$)")


def documented_commands():
    """(file, line) for each command line of README and the man pages: the lines after a
    prompt ("$ ", or "# " in a block without "$ "), and every line of a ```sh block."""
    out = []
    for page in DOC_PAGES:
        text = open(os.path.join(harness.SRCDIR, page)).read()
        for lang, block in re.findall(r"^```([a-z]*)\n(.*?)^```", text, re.S | re.M):
            lines = [line.strip() for line in block.splitlines()]
            user = any(line.startswith("$ ") for line in lines)
            for line in lines:
                m = re.match(r"^\$ (.*)" if user else r"^# (.*)", line)
                if m:
                    cmd = m.group(1)
                elif lang == "sh" and not line.startswith("#"):
                    cmd = line
                else:
                    continue  # output, a comment, a file's contents
                if cmd and PROGRAM.match(cmd) and not SYNOPSIS.search(cmd):
                    out.append((page, cmd))
    return out


def read_all(fd, into):
    """Reads a pty master until every slave end is closed."""
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        into.extend(data)
    os.close(fd)


class Received:
    """What a stream brought and when, read in a thread: data(at) is what had arrived by
    time.monotonic() `at`, when(text) the moment text had fully arrived."""

    def __init__(self, read):
        self.parts = []  # (monotonic time, bytes)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, args=(read,), daemon=True)
        self.thread.start()

    def _run(self, read):
        while True:
            try:
                chunk = read()
            except (OSError, ValueError):
                break
            if not chunk:
                break
            with self.lock:
                self.parts.append((time.monotonic(), chunk))

    def data(self, at=None):
        with self.lock:
            return b"".join(c for t, c in self.parts if at is None or t <= at)

    def when(self, text):
        with self.lock:
            got = b""
            for t, c in self.parts:
                got += c
                if text in got:
                    return t
        return None

    def wait_for(self, text, timeout=30):
        harness.wait_until(lambda: self.when(text) is not None, timeout, what=f"{text!r} on the stream")
        return self.when(text)


def wait_stderr(p, timeout):
    """Waits for p and returns its stderr, leaving its stdout to a Received (communicate()
    would read stdout too, taking bytes from under it)."""
    p.wait(timeout)
    return p.stderr.read()


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

    def test_connection_errors(self):
        """What an operator sees first when the daemon is not there or the socket is not
        theirs: README's messages, exit status 1."""
        missing = os.path.join(self.tmp, "missing.sock")
        r = self.taskctl("ls", socket_path=missing)
        self.assertEqual((r.returncode, r.stdout), (1, ""), r)
        self.assertEqual(r.stderr, f"lagoon-taskctl: cannot connect to lagoon-taskd at {missing}: No such file or "
                                   "directory — is lagoon-taskd.socket running?\n")
        stale = os.path.join(self.tmp, "stale.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(stale)
        s.close()
        r = self.taskctl("health", socket_path=stale)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn(f"cannot connect to lagoon-taskd at {stale}: Connection refused — is lagoon-taskd.socket "
                      "running?", r.stderr)

        def as_nobody(*args):
            return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", harness.TASKCTL,
                                   "--socket", self.socket_path, *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, timeout=60, stdin=subprocess.DEVNULL)

        # Not in the socket's group: the group named is the socket's (SocketGroup=).
        r = as_nobody("ls")
        self.assertEqual((r.returncode, r.stdout), (1, ""), r)
        self.assertEqual(r.stderr, f"lagoon-taskctl: cannot connect to lagoon-taskd at {self.socket_path}: "
                                   f"permission denied: you must be root or in group {harness.SOCKET_GROUP}\n")
        # Let in by the file mode, refused by the daemon's peer check: its message.
        os.chmod(self.socket_path, 0o666)
        try:
            r = as_nobody("ls")
        finally:
            os.chmod(self.socket_path, 0o660)
        self.assertEqual((r.returncode, r.stdout), (1, ""), r)
        self.assertRegex(r.stderr, rf"^lagoon-taskctl: .*uid 65534.*\b{harness.SOCKET_GROUP}\b.*\(forbidden\)\n$")

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

    def test_metrics(self):
        before = promcheck.scrape(self, self.client)
        self.assertEqual(before.value("launches_total"), 0)
        self.assertFalse(before.has("broker_up"), "no [Lagoon]: no broker families")
        ok, bad, long = self.new_id("ok"), self.new_id("bad"), self.new_id("long")
        self.submit_ok("echo fine", id=ok)
        self.submit_ok("exit 3", id=bad)
        self.submit_ok("sleep 300", id=long)
        self.client.wait_final(ok)
        self.client.wait_final(bad)
        self.client.wait_status(long, "running")
        self.assertEqual(self.client.cancel(long).status, 202)
        self.client.wait_final(long)

        m = promcheck.scrape(self, self.client)
        for status, n in (("complete", 1), ("failed", 1), ("cancelled", 1)):
            self.assertEqual(m.value("tasks_finished_total", status=status), n, status)
            self.assertEqual(m.value("tasks", status=status), n, status)
        for status in ("new", "pending", "running"):
            self.assertEqual(m.value("tasks", status=status), 0, status)
        self.assertEqual(m.value("queue_length"), 0)
        self.assertEqual(m.value("running_limit"), 4)
        self.assertEqual(m.value("launches_total"), 3)
        self.assertEqual(m.value("launch_failures_total"), 0)
        count, total = promcheck.check_histogram(self, m, "launch_duration_seconds")
        self.assertEqual(count, 3, "every launch succeeded, so each is in the histogram")
        self.assertGreater(total, 0)
        self.assertEqual(m.value("journal_up"), 1)
        self.assertEqual(m.value("journal_send_failures_total"), 0)
        self.assertEqual(m.value("build_info", version=self.taskctl("--version").stdout.split()[-1]), 1)
        self.assertEqual(m.value("reloads_total"), 0)
        self.assertEqual(m.value("last_reload_success"), 1)
        self.assertLessEqual(m.value("start_time_seconds"), time.time())
        self.assertGreater(m.value("start_time_seconds"), time.time() - 300)

        # A refused reload, then a good one.
        good = open(self.config_path).read()
        with open(self.config_path, "w") as f:
            f.write(good + "\n[Tasks]\nMaxRunning=many\n")
        self.d.signal(signal.SIGHUP)
        harness.wait_until(lambda: promcheck.scrape(self, self.client).value("reloads_total") == 1, 30,
                           what="reload counted")
        m = promcheck.scrape(self, self.client)
        self.assertEqual(m.value("reload_failures_total"), 1)
        self.assertEqual(m.value("last_reload_success"), 0)
        self.assertAlmostEqual(m.value("last_reload_timestamp_seconds"), time.time(), delta=60)
        with open(self.config_path, "w") as f:
            f.write(good)
        self.d.signal(signal.SIGHUP)
        harness.wait_until(lambda: promcheck.scrape(self, self.client).value("reloads_total") == 2, 30,
                           what="reload counted")
        self.assertEqual(promcheck.scrape(self, self.client).value("last_reload_success"), 1)

        # Every series the shipped dashboard and alerts query exists (those of [Lagoon] are
        # checked by test_bus_outage).
        for doc in (DASHBOARD, ALERTS):
            missing = promcheck.referenced_names(doc) - m.sample_names() - LAGOON_ONLY
            self.assertFalse(missing, f"{doc} queries series the daemon does not export")

        self.assertEqual(self.client.request("HEAD", "/metrics").status, 200)
        r = self.client.post("/metrics", {})
        self.assertEqual(r.status, 405, r)
        self.assertEqual(r.headers.get("allow"), "GET, HEAD")

    def test_usual_verbs(self):
        done, busy, other = self.new_id("done"), self.new_id("busy"), self.new_id("other")
        self.submit_ok("echo kept", id=done)
        self.submit_ok("echo other", id=other)
        self.submit_ok("sleep 300", id=busy)
        self.client.wait_final(done)
        self.client.wait_final(other)
        self.client.wait_status(busy, "running")
        # inspect = show
        self.assertEqual(self.ctl_ok("inspect", done).stdout, self.ctl_ok("show", done).stdout)
        self.assertEqual(json.loads(self.ctl_ok("inspect", done, "--json").stdout)["id"], done)
        # rm: a running task is refused, the finished one given with it still goes.
        r = self.taskctl("rm", busy, done)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("cancel it first", r.stderr)
        self.assertEqual(r.stdout, f"{done}\n")
        self.assertEqual(self.client.get(f"/v1/tasks/{done}").status, 404)
        self.assertFalse(os.path.exists(self.task_log_path(done)))
        r = self.taskctl("show", done)
        self.assertEqual(r.returncode, 1, r)
        # stop = cancel
        self.assertEqual(self.ctl_ok("stop", busy).stdout, f"{busy}\n")
        self.assertEqual(self.client.wait_final(busy)["status"], "cancelled")
        # prune: every finished task, and nothing when there is none left.
        r = self.ctl_ok("prune")
        self.assertEqual(sorted(r.stdout.split()), sorted([busy, other]))
        self.assertEqual(self.client.tasks(), [])
        self.assertEqual(self.ctl_ok("prune").stdout, "")
        tid = self.new_id("json")
        self.submit_ok("true", id=tid)
        self.client.wait_final(tid)
        self.assertEqual(json.loads(self.ctl_ok("rm", tid, "--json").stdout)["status"], "complete")
        self.assertEqual(self.taskctl("rm").returncode, 2)
        self.assertEqual(self.taskctl("rm", "-bad").returncode, 2)

    def test_cancel_waits_like_podman_stop(self):
        stuck, plain, quick = self.new_id("stuck"), self.new_id("plain"), self.new_id("quick")
        self.submit_ok("trap '' TERM; sleep 300", id=stuck)
        self.submit_ok("sleep 300", id=plain)
        self.submit_ok("echo done", id=quick)
        self.client.wait_final(quick)
        fillers = [self.new_id("fill") for _ in range(2)]  # with stuck and plain: MaxRunning=4
        for f in fillers:
            self.submit_ok("sleep 300", id=f)
        for tid in [stuck, plain] + fillers:
            self.client.wait_status(tid, "running")
        queued = self.new_id("queued")
        self.submit_ok("echo never", id=queued)
        r = self.ctl_ok("cancel", queued)
        self.assertEqual(r.stdout, f"{queued}\n")
        self.assertIn(f"task {queued} cancelled before it started", r.stderr)
        for f in fillers:
            self.ctl_ok("cancel", "--no-wait", "--time=0", f)
        # --no-wait: back once SIGTERM was sent; the grace (KillGraceSec=2) is said.
        t0 = time.monotonic()
        r = self.ctl_ok("cancel", "--no-wait", plain)
        self.assertLess(time.monotonic() - t0, 1.5, r)
        self.assertEqual(r.stdout, f"{plain}\n")
        self.assertIn(f"task {plain}: SIGTERM sent, SIGKILL in 2s", r.stderr)
        # A task that ignores SIGTERM: waits for the SIGKILL --time=1 sends (not the 2 s grace).
        t0 = time.monotonic()
        r = self.ctl_ok("stop", stuck, "--time=1", "--json")
        self.assertGreaterEqual(time.monotonic() - t0, 0.9, r)
        self.assertLess(time.monotonic() - t0, 1.9, r)
        self.assertEqual(json.loads(r.stdout)["status"], "cancelled", r)
        self.assertRegex(r.stderr, rf"task {stuck} killed \(SIGKILL\) after 1\.\ds")
        # One that stops on SIGTERM (Init= forwards it) is waited for too.
        self.assertEqual(self.client.wait_final(plain)["status"], "cancelled")
        again = self.new_id("again")
        self.submit_ok("sleep 300", id=again)
        self.client.wait_status(again, "running")
        r = self.ctl_ok("cancel", again)
        self.assertRegex(r.stderr, rf"task {again} stopped after \d+\.\ds")
        self.assertEqual(self.client.task(again)["status"], "cancelled")
        # Already ended: no error, says so (podman stop of a stopped container).
        r = self.ctl_ok("cancel", quick)
        self.assertEqual(r.stdout, f"{quick}\n")
        self.assertIn(f"task {quick} had already ended (complete)", r.stderr)
        self.assertEqual(self.taskctl("cancel", "nope").returncode, 1)
        for bad in ("abc", "infinity", "-1", ""):
            self.assertEqual(self.taskctl("cancel", f"--time={bad}", quick).returncode, 2, bad)
        for q in ("time=abc", "time=infinity", "time=-1", "time=", "time=1%00"):
            r = self.client.post(f"/v1/tasks/{quick}/cancel?{q}")
            self.assertEqual((r.status, r.json["error"]), (400, "bad-request"), q)

    def test_run_wait_progress_on_a_terminal(self):
        blockers = [self.new_id("block") for _ in range(4)]  # MaxRunning=4
        for b in blockers:
            self.submit_ok("sleep 300", id=b)
        for b in blockers:
            self.client.wait_status(b, "running")
        tid = self.new_id("queued")
        master, slave = pty.openpty()
        p = subprocess.Popen([harness.TASKCTL, "--socket", self.socket_path, "run", "--wait", f"--id={tid}",
                              "--timeout=1", "--", "echo out; trap '' TERM; sleep 300"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        self.track_process(p)
        err = bytearray()
        reader = threading.Thread(target=lambda: read_all(master, err), daemon=True)
        reader.start()
        harness.wait_until(lambda: b"queued #1" in err, 15, what="the queue position on the terminal")
        self.assertIn(f"lagoon-taskctl: task {tid} queued #1: MaxRunning=4 reached".encode(), err)
        self.assertRegex(self.ctl_ok("show", tid).stdout, r"waitReason: +MaxRunning=4 reached")
        self.assertEqual(self.client.task(tid)["waitReason"], "MaxRunning=4 reached")
        self.ctl_ok("cancel", "--no-wait", blockers[0])
        # It runs, hits its timeout, ignores SIGTERM: stopping for KillGraceSec=2, then SIGKILL.
        out, _ = p.communicate(timeout=30)
        reader.join(10)
        self.assertEqual(p.returncode, 124, err)
        self.assertEqual(out, b"out\n")
        text = err.decode()
        self.assertEqual(text.count("queued #1"), 1, text)  # each state said once
        self.assertIn(f"task {tid} stopping: SIGTERM sent, SIGKILL 2s later if it is still running", text)
        self.assertIn("timed out", text)
        # Not a terminal: nothing of the kind.
        r = self.ctl_ok("run", "--wait", "--", "echo quiet")
        self.assertEqual(r.stderr, "")
        for b in blockers[1:]:
            self.client.cancel(b)

    def test_run_wait_says_starting(self):
        """run --wait on a terminal says "starting" while the runtime is slow to start the
        container (here a wrapper of runc that takes 3 s for "start")."""
        slow = os.path.join(self.tmp, "slow-runc")
        with open(slow, "w") as f:
            f.write(f'#!/bin/sh\ncase " $* " in *" start "*) sleep 3;; esac\nexec {harness.RUNC} "$@"\n')
        os.chmod(slow, 0o755)
        self.write_config(runtime={"Runtime": slow})
        self.d.restart()
        master, slave = pty.openpty()
        p = subprocess.Popen([harness.TASKCTL, "--socket", self.socket_path, "run", "--wait", "--", "echo started"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        self.track_process(p)
        err = bytearray()
        reader = threading.Thread(target=lambda: read_all(master, err), daemon=True)
        reader.start()
        # The API and show say how far the launch got meanwhile.
        tid = harness.wait_until(lambda: next((t["id"] for t in self.client.tasks()
                                               if t.get("launchStep") == "created"), None), 30,
                                 interval=0.05, what="launchStep created")
        self.assertEqual(self.client.task(tid)["status"], "pending")
        self.assertRegex(self.ctl_ok("show", tid).stdout, r"launchStep: +created")
        out, _ = p.communicate(timeout=60)
        reader.join(10)
        self.assertEqual((p.returncode, out), (0, b"started\n"), err)
        self.assertNotIn("launchStep", self.client.task(tid))
        self.assertIn(f"lagoon-taskctl: task {tid} starting (created)", err.decode())

    def test_logs_tail(self):
        done, live = self.new_id("done"), self.new_id("live")
        self.submit_ok("seq 1 5", id=done)
        self.client.wait_final(done)
        self.assertEqual(self.ctl_ok("logs", "--tail=2", done).stdout, "4\n5\n")
        self.assertEqual(self.ctl_ok("logs", done, "-n", "1").stdout, "5\n")
        self.assertEqual(self.ctl_ok("logs", "--tail=0", done).stdout, "")
        self.assertEqual(self.ctl_ok("logs", "--tail=99", done).stdout, "1\n2\n3\n4\n5\n")
        self.assertEqual(self.ctl_ok("logs", "-f", "-n", "2", done).stdout, "4\n5\n")
        # Following from the tail, across a daemon restart: nothing repeated, nothing lost.
        self.submit_ok("seq 1 3; sleep 3; echo four", id=live)
        harness.wait_until(lambda: self.client.get(f"/v1/tasks/{live}/logs").body == b"1\n2\n3\n", 15,
                           what="three lines")
        p = subprocess.Popen([harness.TASKCTL, "--socket", self.socket_path, "logs", "-f", "--tail=1", live],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.track_process(p)
        time.sleep(0.5)
        self.d.restart()
        out, err = p.communicate(timeout=30)
        self.assertEqual((p.returncode, out), (0, "3\nfour\n"), err)
        self.assertIn("lost connection", err)  # it did reconnect

        r = self.client.get(f"/v1/tasks/{done}/logs?tail=2")
        self.assertEqual((r.status, r.body, r.headers.get("lagoon-log-offset")), (200, b"4\n5\n", "6"))
        r = self.client.get(f"/v1/tasks/{done}/logs?offset=4")
        self.assertEqual((r.body, r.headers.get("lagoon-log-offset")), (b"3\n4\n5\n", "4"))
        self.assertEqual(self.client.get(f"/v1/tasks/{done}/logs?offset=99999").body, b"")
        for q in ("tail=abc", "tail=-1", "tail=", "tail=1%00", "tail=99999999999999999999999", "tail=1&offset=0",
                  "offset=x", "offset=-5", "tail=+1", "tail=0x10"):
            r = self.client.get(f"/v1/tasks/{done}/logs?{q}")
            self.assertEqual((r.status, r.json["error"]), (400, "bad-request"), q)
            r = self.client.get(f"/v1/tasks/{done}/logs?follow=1&{q}")
            self.assertEqual(r.status, 400, q)
        for bad in ("abc", "-1", ""):
            self.assertEqual(self.taskctl("logs", f"--tail={bad}", done).returncode, 2, bad)

    def test_logs_partial_lines(self):
        """A line a task writes in pieces reaches followers as it comes, before its newline
        (the API's follow stream, logs -f, run --wait), and the task log and journald get
        it once complete, as one line. A piece that could be the start of a Secret= value
        is held back until the line shows it is not, or it is masked."""
        secret = "tok-3f9a1c77"
        cfg = self.base_config()
        cfg["Tasks"]["Secret"] = secret
        self.write_config(config=cfg)
        self.d.signal(signal.SIGHUP)
        harness.wait_until(lambda: "Configuration reloaded" in self.d.stderr(), 30, what="reload")

        tid = self.new_id("partial")
        self.submit_ok("printf 'step 1 of 2'; sleep 4; printf ' done\\n'; printf 'key=tok-3f'; sleep 4; "
                       "printf '9a1c77 end\\n'; printf 'out-half'; sleep 1; echo err-line >&2; sleep 2; "
                       "printf ' rest\\n'", id=tid)
        # The API's follower, read as the bytes come.
        sock = self.client.connect()
        self.addCleanup(sock.close)
        sock.sendall(f"GET /v1/tasks/{tid}/logs?follow=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        resp = http.client.HTTPResponse(sock, method="GET")
        resp.begin()
        self.assertEqual(resp.status, 200)
        api = Received(lambda: resp.read1(65536))
        # lagoon-taskctl logs -f, its stdout a pipe.
        p = subprocess.Popen([harness.TASKCTL, "--socket", self.socket_path, "logs", "-f", tid],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.track_process(p)
        ctl = Received(lambda: os.read(p.stdout.fileno(), 65536))

        for got in (api, ctl):
            # The first piece, at least 2.5 s before the rest of its line (printed 4 s later).
            first, rest = got.wait_for(b"step 1 of 2"), got.wait_for(b" done\n")
            self.assertGreater(rest - first, 2.5, got.parts)
            # "tok-3f" could be the secret's start: only "key=" is shown until the line ends.
            held, end = got.wait_for(b"done\nkey="), got.wait_for(b"*** end\n")
            self.assertGreater(end - held, 2.5, got.parts)
            self.assertEqual(got.data(end - 0.5), b"step 1 of 2 done\nkey=", got.parts)
            got.wait_for(b" rest\n")
        err = wait_stderr(p, 30)
        api.thread.join(10)
        ctl.thread.join(10)
        self.assertEqual(p.returncode, 0, err)
        # The followers saw the stdout piece before the stderr line written meanwhile;
        # the task log has the lines whole, in the order they were completed.
        expect = b"step 1 of 2 done\nkey=*** end\nout-halferr-line\n rest\n"
        self.assertEqual(api.data(), expect)
        self.assertEqual(ctl.data(), expect)
        log = "step 1 of 2 done\nkey=*** end\nerr-line\nout-half rest\n"
        self.assertEqual(self.client.logs(tid), log)
        self.assertEqual(open(self.task_log_path(tid)).read(), log)
        self.assertEqual(self.journal.task_messages(tid, expect=4),
                         ["step 1 of 2 done", "key=*** end", "err-line", "out-half rest"])
        for got in (api, ctl):
            self.assertNotIn(secret[:5].encode(), got.data())

        # run --wait shows it as it comes too; the line is one line in the end.
        p = subprocess.Popen([harness.TASKCTL, "--socket", self.socket_path, "run", "--wait", "--",
                              "printf 'waiting...'; sleep 3; echo ' ok'"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.track_process(p)
        run = Received(lambda: os.read(p.stdout.fileno(), 65536))
        first, rest = run.wait_for(b"waiting..."), run.wait_for(b" ok\n")
        self.assertGreater(rest - first, 1.5, run.parts)
        err = wait_stderr(p, 30)
        run.thread.join(10)
        self.assertEqual((p.returncode, run.data()), (0, b"waiting... ok\n"), err)

    def test_logs_partial_line_across_restart(self):
        """A follower that saw the start of a line goes on across a daemon restart without
        repeating it."""
        tid = self.new_id("prestart")
        self.submit_ok("echo first; printf 'half'; sleep 6; echo ' whole'; echo last", id=tid)
        p = subprocess.Popen([harness.TASKCTL, "--socket", self.socket_path, "logs", "-f", tid],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.track_process(p)
        got = Received(lambda: os.read(p.stdout.fileno(), 65536))
        got.wait_for(b"first\nhalf")
        self.d.restart()
        err = wait_stderr(p, 60)
        got.thread.join(10)
        self.assertEqual((p.returncode, got.data()), (0, b"first\nhalf whole\nlast\n"), err)
        self.assertIn(b"lost connection", err)  # it did reconnect
        self.assertEqual(self.client.logs(tid), "first\nhalf whole\nlast\n")

    def test_logs_long_line_split(self):
        """A line longer than 1 MiB becomes lines of 1 MiB, in the task log, in logs and
        in journald, as documented."""
        tid = self.new_id("long")
        mib = 1024 * 1024
        self.submit_ok(f"head -c {mib + mib // 2} /dev/zero | tr '\\0' x; echo; echo after", id=tid)
        self.assertEqual(self.client.wait_final(tid)["status"], "complete")
        expect = "x" * mib + "\n" + "x" * (mib // 2) + "\nafter\n"
        self.assertEqual(self.ctl_ok("logs", tid).stdout, expect)
        self.assertEqual(open(self.task_log_path(tid)).read(), expect)
        self.assertEqual([len(m) for m in self.journal.task_messages(tid, expect=3)], [mib, mib // 2, 5])

    def test_logs_from_journal(self):
        """--stdout/--stderr, --timestamps and --since read the task's lines from the
        (test's) journald: each line once, with its stream and time."""
        tid, live = self.new_id("jl"), self.new_id("jlf")
        self.submit_ok("echo out1; echo err1 >&2; sleep 2; echo out2; echo err2 >&2", id=tid)
        harness.wait_until(lambda: self.client.get(f"/v1/tasks/{tid}/logs").body.count(b"\n") == 2, 15,
                           what="two lines")
        time.sleep(0.5)
        between = time.time()
        self.client.wait_final(tid)
        self.journal.task_entries(tid, expect=4)
        self.assertEqual(self.ctl_ok("logs", "--stdout", tid).stdout, "out1\nout2\n")
        self.assertEqual(self.ctl_ok("logs", tid, "--stderr").stdout, "err1\nerr2\n")
        self.assertEqual(self.ctl_ok("logs", "--stdout", "--tail=1", tid).stdout, "out2\n")
        # Without the journal options: the task log as before (both streams).
        self.assertEqual(sorted(self.ctl_ok("logs", tid).stdout.split()), ["err1", "err2", "out1", "out2"])

        out = self.ctl_ok("logs", "--timestamps", tid).stdout.splitlines()
        self.assertEqual(len(out), 4, out)
        times = []
        for line in out:
            ts, _, msg = line.partition(" ")
            self.assertRegex(ts, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", line)
            times.append(datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp())
            self.assertIn(msg, ("out1", "err1", "out2", "err2"))
        self.assertEqual(times, sorted(times))
        self.assertLess(abs(times[0] - between), 60)
        self.assertEqual(sorted(m.partition(" ")[2] for m in out), ["err1", "err2", "out1", "out2"])
        # The pause lies between the second and third line.
        self.assertLess(times[1], between)
        self.assertGreater(times[2], between)

        since = datetime.datetime.fromtimestamp(between, datetime.timezone.utc)
        for when in (since.isoformat(), since.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                     since.astimezone().strftime("%Y-%m-%d %H:%M:%S")):
            r = self.ctl_ok("logs", f"--since={when}", tid)
            if " " in when:  # whole seconds: may reach back before the pause
                self.assertTrue(r.stdout.endswith("out2\nerr2\n") or r.stdout.endswith("err2\nout2\n"), r.stdout)
            else:
                self.assertEqual(sorted(r.stdout.split()), ["err2", "out2"], when)
        self.assertEqual(self.ctl_ok("logs", "--since=1h", "--stderr", tid).stdout, "err1\nerr2\n")
        self.assertEqual(self.ctl_ok("logs", "--since=2h ago", "--stdout", tid).stdout, "out1\nout2\n")
        self.assertEqual(self.ctl_ok("logs", "--since=2099-01-01T00:00:00Z", tid).stdout, "")
        for bad in ("abc", "", "2026-13-01T00:00:00Z", "10 parsecs", "2026-01-01T00:00:00+25:00"):
            r = self.taskctl("logs", f"--since={bad}", tid)
            self.assertEqual(r.returncode, 2, bad)
            self.assertIn(f"--since: invalid time '{bad}'", r.stderr)
        r = self.taskctl("logs", "--stdout", "--stderr", tid)
        self.assertEqual(r.returncode, 2, r)
        r = self.taskctl("logs", "--stdout", "no-such-task")
        self.assertEqual(r.returncode, 1, r)

        # -f with --stdout: follows until the task has ended, each line once.
        self.submit_ok("echo a; sleep 1; echo b >&2; echo c; sleep 1; echo d", id=live)
        r = self.ctl_ok("logs", "-f", "--stdout", live, timeout=60)
        self.assertEqual(r.stdout, "a\nc\nd\n")
        self.assertEqual(self.client.get(f"/v1/tasks/{live}").json["status"], "complete")

    def test_wait_several_and_timeout(self):
        ok, bad, slow = self.new_id("ok"), self.new_id("bad"), self.new_id("slow")
        self.submit_ok("sleep 1; echo ok", id=ok)
        self.submit_ok("sleep 1; exit 4", id=bad)
        r = self.taskctl("wait", ok, bad)
        self.assertEqual(r.returncode, 4, r)
        self.assertEqual(r.stdout, f"{ok} 0\n{bad} 4\n")
        r = self.taskctl("wait", ok, bad, "--json")
        self.assertEqual([json.loads(line)["id"] for line in r.stdout.splitlines()], [ok, bad])
        self.assertEqual(self.ctl_ok("wait", ok).stdout, "")  # one id: only the status, as before
        self.submit_ok("sleep 300", id=slow)
        t0 = time.monotonic()
        r = self.taskctl("wait", "--timeout=1500ms", ok, slow)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("wait: timed out after 1500ms", r.stderr)
        self.assertLess(time.monotonic() - t0, 20)
        self.assertIn(self.client.task(slow)["status"], ("pending", "running"))
        for bad_value in ("abc", "0", ""):
            r = self.taskctl("wait", f"--timeout={bad_value}", ok)
            self.assertEqual(r.returncode, 2, r)
            self.assertIn("--timeout: invalid duration", r.stderr)
        self.assertEqual(self.ctl_ok("wait", "--timeout=infinity", ok).returncode, 0)
        self.assertEqual(self.taskctl("wait").returncode, 2)

    def test_help_per_verb(self):
        verbs = ("run", "ls", "list", "show", "inspect", "logs", "cancel", "stop", "wait", "rm", "prune", "health")
        for verb in verbs:
            for flag in ("--help", "-h"):
                r = self.ctl_ok(verb, flag)
                self.assertRegex(r.stdout, rf"^lagoon-taskctl {verb}( |\n)")
                self.assertIn("Common options:", r.stdout)
                self.assertIn("--socket=PATH", r.stdout)
                self.assertEqual("--json" in r.stdout, verb != "logs", r.stdout)
        self.assertIn("--timeout=DURATION", self.ctl_ok("run", "--help").stdout)
        self.assertIn("--no-trunc", self.ctl_ok("ls", "--help").stdout)
        self.assertIn("--follow", self.ctl_ok("logs", "--help").stdout)
        # The global help lists every command.
        r = self.ctl_ok("--help")
        for verb in verbs:
            self.assertRegex(r.stdout, rf"\b{verb}\b")

    def test_health_text(self):
        r = self.ctl_ok("health")
        fields = dict(line.split(": ", 1) for line in r.stdout.splitlines())
        self.assertEqual(fields["status"].strip(), "ok", r.stdout)
        self.assertEqual(fields["journal"].strip(), "ok", r.stdout)
        self.assertEqual(fields["lastReload"].strip(), "-", r.stdout)
        self.assertEqual(fields["running"].strip(), "0", r.stdout)
        good = open(self.config_path).read()
        with open(self.config_path, "w") as f:
            f.write(good + "\n[Tasks]\nMaxRunning=many\n")
        self.d.signal(signal.SIGHUP)
        harness.wait_until(lambda: "refused" in self.ctl_ok("health").stdout, 30, what="reload refused")
        r = self.ctl_ok("health")
        self.assertRegex(r.stdout, r"lastReloadAt: +20\d\d-")
        self.assertRegex(r.stdout, r"lastReloadError: +invalid configuration")
        h = json.loads(self.ctl_ok("health", "--json").stdout)
        self.assertEqual((h["status"], h["journal"], h["lastReload"]), ("ok", "ok", "refused"))

    def test_health_journal_unreachable(self):
        """A daemon that cannot reach journald's socket says so in health, as text and
        --json; the task log still gets the output."""
        self.d.stop()
        # Its own mount namespace, with an empty /run/systemd/journal: no socket there.
        wrapper = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                   'mount -t tmpfs tmpfs /run/systemd/journal && exec "$@"', "sh"]
        self.d = self.daemon(name="nojournal", wrapper=wrapper)
        r = self.ctl_ok("health")
        fields = dict(line.split(": ", 1) for line in r.stdout.splitlines())
        self.assertEqual(fields["journal"].strip(), "unreachable", r.stdout)
        self.assertEqual(fields["status"].strip(), "ok", r.stdout)
        h = json.loads(self.ctl_ok("health", "--json").stdout)
        self.assertEqual((h["status"], h["journal"]), ("ok", "unreachable"))
        tid = self.new_id("nojournal")
        self.submit_ok("echo still logged", id=tid)
        self.assertEqual(self.client.wait_final(tid)["status"], "complete")
        self.assertEqual(self.client.logs(tid), "still logged\n")
        # The same daemon with journald's socket there: ok again.
        self.d.stop()
        self.d = self.daemon(name="journal")
        self.assertEqual(json.loads(self.ctl_ok("health", "--json").stdout)["journal"], "ok")

    def test_logs_without_journal_access(self):
        """A user who may use the socket (SocketGroup=) but not read the journal gets the
        task log from logs, and from the options that read journald a message saying
        what it needs, with exit status 1."""
        users = grp.getgrnam("users").gr_gid
        self.d.stop()
        cfg = self.base_config()
        cfg["Daemon"]["SocketGroup"] = "users"
        self.write_config(config=cfg)
        self.d = self.daemon(name="users")
        tid = self.new_id("nojaccess")
        self.submit_ok("echo visible", id=tid)
        self.client.wait_final(tid)
        self.journal.task_entries(tid, expect=1)

        def as_nobody(*args):
            return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", f"--groups={users}",
                                   harness.TASKCTL, "--socket", self.socket_path, *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60,
                                  stdin=subprocess.DEVNULL)

        r = as_nobody("logs", tid)
        self.assertEqual((r.returncode, r.stdout), (0, "visible\n"), r)
        for opt in ("--stdout", "--stderr", "--timestamps", "--since=1h"):
            r = as_nobody("logs", opt, tid)
            self.assertEqual((r.returncode, r.stdout), (1, ""), (opt, r))
            self.assertIn("lagoon-taskctl: cannot read the journal, where --since, --timestamps, --stdout and "
                          "--stderr take the output from: run as root or as a member of group 'systemd-journal'",
                          r.stderr, opt)
            self.assertIn("(without them, logs prints the task log)", r.stderr, opt)
        # Root reads it.
        self.assertEqual(self.ctl_ok("logs", "--stdout", tid).stdout, "visible\n")

    def test_reload_logs_changes(self):
        cfg = self.base_config()
        cfg["Tasks"]["MaxRunning"] = 6
        cfg["Tasks"]["Secret"] = "reload-secret-value"
        self.write_config(config=cfg)
        self.d.signal(signal.SIGHUP)
        harness.wait_until(lambda: "Configuration reloaded" in self.d.stderr(), 30, what="reload logged")
        log = self.d.stderr()
        self.assertIn("Configuration change: [Tasks] MaxRunning=4 → 6", log)
        self.assertIn("Configuration change: [Tasks] Secret= set (values not shown)", log)
        self.assertNotIn("reload-secret-value", log)
        self.assertEqual(json.loads(self.ctl_ok("health", "--json").stdout)["lastReload"], "ok")
        self.d.signal(signal.SIGHUP)
        harness.wait_until(lambda: "Configuration reloaded: nothing changed." in self.d.stderr(), 30,
                           what="second reload logged")

    def test_secret_masked_in_command_and_record(self):
        secret = "s3cr3t-value-x"
        cfg = self.base_config()
        cfg["Tasks"]["Secret"] = secret
        self.write_config(config=cfg)
        self.d.signal(signal.SIGHUP)
        harness.wait_until(lambda: "Configuration reloaded" in self.d.stderr(), 30, what="reload")
        tid = self.new_id("secret")
        command = f"echo {secret} >/dev/null"
        self.submit_ok(command, id=tid)
        self.client.wait_final(tid)
        for out in (self.ctl_ok("ls", "--no-trunc").stdout, self.ctl_ok("show", tid).stdout,
                    self.ctl_ok("ls", "--json").stdout):
            self.assertNotIn(secret, out)
            self.assertIn("echo *** >/dev/null", out)
        # The record kept for KeepFinished= holds it masked, and a digest to recognise it.
        record = open(os.path.join(self.state_dir, "tasks", f"{tid}.json")).read()
        self.assertNotIn(secret, record)
        self.assertRegex(json.loads(record).get("commandDigest", ""), r"^[0-9a-f]{64}$")
        # The same submission is still the same task (also after a restart); another is not.
        self.d.restart()
        self.assertEqual(self.client.submit(command, id=tid).status, 200)
        self.assertEqual(self.client.submit("echo *** >/dev/null", id=tid).status, 409)

    def test_documented_commands(self):
        """Every command line README and the man pages show runs against the real daemon
        (local mode) without a usage or API error; the tasks they name exist."""
        bindir = os.path.join(self.tmp, "bin")
        os.makedirs(bindir)
        os.symlink(harness.TASKCTL, os.path.join(bindir, "lagoon-taskctl"))
        os.symlink(harness.TASKD, os.path.join(bindir, "lagoon-taskd"))
        env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", LAGOON_TASKD_SOCKET=self.socket_path)
        commands = documented_commands()
        self.assertGreater(len(commands), 30, "the extraction found too few command lines")
        run = 0
        for page, cmd in commands:
            program = cmd.split()[1] if cmd.startswith("LAGOON_TASKD_SOCKET=") else cmd.split()[0]
            if program in DOC_NOT_HERE:
                continue
            if program == "lagoon-taskd":
                if "--check-config" not in cmd:
                    continue  # a daemon in the foreground: what every test here starts
                cmd = f"{cmd} --config={self.config_path}"
            self.assertIn(program, DOC_RUN + ("lagoon-taskd",), f"{page}: {cmd}: a program this test does not know")
            # The tasks the examples name, as the examples made them (drush is not in the
            # test's image: they fail at once, which is all a later line needs).
            for tid, command in (("cache-clear-42", "drush cr"), ("db-dump", "mysqldump drupal > /tmp/dump.sql")):
                if self.client.get(f"/v1/tasks/{tid}").status == 404:
                    self.submit_ok(command, id=tid)
                self.client.wait_final(tid)
            shown = cmd
            cmd = cmd.replace("/run/lagoon-taskd/api.sock", self.socket_path)
            cmd = cmd.replace("/tmp/taskd/api.sock", self.socket_path).replace("<id>", "cache-clear-42")
            r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=60, stdin=subprocess.DEVNULL)
            run += 1
            # run --wait and wait exit with the task's status (drush is not in the test's image).
            task_status = re.search(r"\b(run --wait|run .*--wait|wait)\b", cmd) and r.returncode > 2
            self.assertTrue(r.returncode == 0 or task_status, f"{page}: {shown}: exit {r.returncode}: {r.stderr}")
            for bad in ("command not found", "Try '", "cannot connect", "invalid answer"):
                self.assertNotIn(bad, r.stderr, f"{page}: {shown}")
        self.assertGreater(run, 25)

    def test_ls_columns_reasons_filters(self):
        ok, bad, killed, slow, stuck = (self.new_id(t) for t in ("ok", "bad", "killed", "slow", "stuck"))
        long_id = "x" * 100
        self.submit_ok("echo fine", id=ok, project="p1")
        self.submit_ok("exit 3", id=bad, project="p2", name="the bad one")
        # A child killed by SIGKILL: its shell exits 137 (sh is PID 1 and would not die).
        self.submit_ok("sh -c 'kill -KILL $$'; exit $?", id=killed, project="p1")
        self.submit_ok("sleep 60", id=slow, timeout=1)
        self.submit_ok("true", id=long_id)
        for tid in (ok, bad, killed, long_id):
            self.client.wait_final(tid)
        # A task that ignores SIGTERM stays "stopping" for KillGraceSec=2.
        self.submit_ok("trap '' TERM; sleep 60", id=stuck)
        self.client.wait_status(stuck, "running")
        self.assertEqual(self.client.cancel(stuck).status, 202)
        t = self.client.task(stuck)
        self.assertEqual(t["status"], "running", t)
        self.assertRegex(t.get("stoppingAt", ""), r"^20\d\d-", t)
        rows = {line.split()[0]: line for line in self.ctl_ok("ls", "--no-trunc").stdout.splitlines()[1:]}
        self.assertRegex(rows[stuck], rf"^{stuck} +stopping +- +cli ")
        self.assertIn("stoppingAt:", self.ctl_ok("show", stuck).stdout)
        self.client.wait_final(slow)
        self.client.wait_final(stuck)

        r = self.ctl_ok("ls")
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0].split(), ["ID", "STATUS", "EXIT", "SERVICE", "AGE", "DURATION", "COMMAND"])
        rows = {line.split()[0]: line for line in lines[1:]}
        self.assertRegex(rows[ok], rf"^{ok} +complete +0 +cli +\d+s +\d+s +echo fine$")
        self.assertRegex(rows[bad], rf"^{bad} +failed +3 ")
        self.assertRegex(rows[killed], rf"^{killed} +killed \(SIGKILL\) +137 ")
        self.assertRegex(rows[slow], rf"^{slow} +timeout ")
        self.assertRegex(rows[stuck], rf"^{stuck} +cancelled ")
        # The id column is capped (24), so a long id does not push COMMAND away.
        self.assertIn("x" * 21 + "...  ", r.stdout)
        self.assertNotIn("x" * 25, r.stdout)
        self.assertIn(long_id, self.ctl_ok("ls", "--no-trunc").stdout)

        wide = self.ctl_ok("ls", "-o", "wide").stdout.splitlines()
        self.assertEqual(wide[0].split(), ["ID", "NAME", "STATUS", "EXIT", "SERVICE", "PROJECT/ENVIRONMENT", "CREATED",
                                           "AGE", "DURATION", "COMMAND"])
        self.assertRegex(next(line for line in wide if line.startswith(bad)), r" the bad one +failed +3 +cli +p2/main ")
        self.assertEqual(self.ctl_ok("ls", "--format=wide").stdout.splitlines()[0], wide[0])

        # Filters, done by the daemon (the API's query) and shown as ids.
        self.assertEqual(self.ctl_ok("ls", "-q", "--project=p1").stdout.split(), [ok, killed])
        self.assertEqual(self.ctl_ok("ls", "--quiet", "--status=failed", "--project=p1").stdout.split(), [killed])
        self.assertEqual(sorted(self.ctl_ok("ls", "--format=id", "--status=failed,cancelled").stdout.split()),
                         sorted([bad, killed, slow, stuck]))
        self.assertEqual(self.ctl_ok("ls", "-q", "--status=pending").stdout, "")
        got = json.loads(self.ctl_ok("ls", "--status=complete", "-o", "json").stdout)["tasks"]
        self.assertEqual(sorted(t["id"] for t in got), sorted([ok, long_id]))
        r = self.client.get("/v1/tasks?status=failed&environment=main&project=p2")
        self.assertEqual([t["id"] for t in r.json["tasks"]], [bad], r)
        self.assertEqual(self.client.get("/v1/tasks?project=nope").json["tasks"], [])
        for q in ("status=bogus", "status=", "status=failed,,complete"):
            r = self.client.get(f"/v1/tasks?{q}")
            self.assertEqual((r.status, r.json["error"]), (400, "bad-request"), q)
            self.assertIn("invalid status filter", r.json["message"], q)
        for args in (("--status=bogus",), ("-o", "yaml"), ("extra",)):
            r = self.taskctl("ls", *args)
            self.assertEqual(r.returncode, 2, r)
        self.assertIn("--status: unknown status 'bogus'", self.taskctl("ls", "--status=failed,bogus").stderr)

    def test_run_input(self):
        words = ("printf", "[%s]\\n", "two  words", "it's")
        r = self.taskctl("run", "--wait", "--", *words)
        self.assertNotEqual(r.returncode, 0, "joined into shell syntax, the quote is unterminated")
        r = self.ctl_ok("run", "--wait", "--argv", "--", *words)
        self.assertEqual(r.stdout, "[two  words]\n[it's]\n")
        script = os.path.join(self.tmp, "script.sh")
        with open(script, "w") as f:
            f.write("set -e\nfor i in 1 2; do\n  echo \"line $i\"\ndone\nexit 3\n")
        r = self.taskctl("run", "--wait", f"--file={script}")
        self.assertEqual((r.returncode, r.stdout), (3, "line 1\nline 2\n"), r)
        r = self.taskctl("run", "--wait", "--file=-", input="echo from stdin\n")
        self.assertEqual((r.returncode, r.stdout), (0, "from stdin\n"), r)
        n_tasks = len(self.client.tasks())

        # Refused by taskctl itself, exit 2, in the command line's terms; nothing submitted.
        bad_utf8 = os.fsdecode(b"echo \xff bad")
        for args, message in (
                (("--", bad_utf8), "run: the command is not valid UTF-8"),
                ((f"--name={os.fsdecode(b'n' + bytes([0xff]))}", "--", "true"), "run: --name: not valid UTF-8"),
                (("--timeout=abc", "--", "true"), "run: --timeout: invalid duration 'abc'"),
                (("--timeout=-5", "--", "true"), "run: --timeout: invalid duration '-5'"),
                (("--project=", "--", "true"), "run: --project: empty value"),
                (("--", "   "), "run: empty command"),
                (("--", "x" * (127 * 1024 + 1)), "more than a task takes"),
                ((f"--file={script}", "echo"), "--file and a COMMAND"),
                (("--file=/nonexistent/script",), "cannot open '/nonexistent/script'"),
        ):
            r = self.taskctl("run", *args)
            self.assertEqual(r.returncode, 2, r)
            self.assertIn(message, r.stderr)
        self.assertEqual(len(self.client.tasks()), n_tasks)

        # --timeout=0 is "no limit", as DefaultTimeoutSec=0.
        tid = self.new_id("notimeout")
        self.ctl_ok("run", f"--id={tid}", "--timeout=0", "--", "true")
        self.assertIsNone(self.client.task(tid)["timeout"])
        # The API refuses a blank command as taskctl does.
        r = self.client.submit(" \t\n ")
        self.assertEqual((r.status, r.json["error"]), (400, "bad-request"), r)
        self.assertIn("only white space", r.json["message"])
        # An unknown service: the configured ones are named.
        r = self.taskctl("run", "--service=nope", "--", "true")
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("unknown service 'nope' (configured: cli) (unknown-service)", r.stderr)

    def test_init_is_pid1(self):
        """A plain image gets Init= (catatonit) as PID 1, so a shell command reacts to
        SIGTERM at once instead of taking KillGraceSec= (30 s here)."""
        if not os.access("/usr/bin/catatonit", os.X_OK):
            self.skipTest("catatonit not installed")
        self.write_config(tasks={"KillGraceSec": 30})
        self.d.restart()
        # "; echo": a last simple command would be exec'd by sh and be PID 1 itself.
        show_pid1 = "tr '\\0' ' ' </proc/1/cmdline; echo"
        r = self.ctl_ok("run", "--wait", "--", show_pid1)
        self.assertEqual(r.stdout, f"/dev/init -- /bin/sh -c {show_pid1} \n")
        tid = self.new_id("term")
        self.submit_ok("sleep 300", id=tid)
        self.client.wait_status(tid, "running")
        t0 = time.monotonic()
        self.assertEqual(self.client.cancel(tid).status, 202)
        t = self.client.wait_final(tid, timeout=60)
        self.assertEqual(t["status"], "cancelled", t)
        self.assertLess(time.monotonic() - t0, 15, "SIGTERM ended the task, not SIGKILL after 30 s")
        # A timeout too (the issue: --timeout=2 took 12 s with KillGraceSec=10).
        t0 = time.monotonic()
        r = self.taskctl("run", "--wait", "--timeout=2", "--", "sleep 300")
        self.assertEqual(r.returncode, 124, r)
        self.assertLess(time.monotonic() - t0, 12, "the timeout's SIGTERM ended it, not SIGKILL after 30 s")
        # Init=no: the shell is PID 1, as before.
        self.write_config(tasks={"KillGraceSec": 30}, runtime={"Init": "no"})
        self.d.restart()
        r = self.ctl_ok("run", "--wait", "--", show_pid1)
        self.assertEqual(r.stdout, f"/bin/sh -c {show_pid1} \n")

    def test_check_config(self):
        r = subprocess.run([harness.TASKD, "--config", self.config_path, "--check-config"], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("Configuration is valid.", r.stderr)
        self.assertIn(f"[Service cli] Bundle={self.bundle} (default)", r.stdout)
        self.assertRegex(r.stdout, r"MaxRunning=4 .*KillGraceSec=2s")
        # Parses, but every task would fail: refused, each problem said.
        cfg = self.base_config()
        cfg["Runtime"].update({"Runtime": "nosuchruntime", "Conmon": "/no/conmon"})
        cfg["Tasks"]["DefaultService"] = "web"
        cfg["Service nocfg"] = {"Bundle": self.tmp}
        os.makedirs(os.path.join(self.tmp, "norootfs"))
        with open(os.path.join(self.tmp, "norootfs", "config.json"), "w") as f:
            json.dump({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["sh"]}}, f)
        cfg["Service norootfs"] = {"Bundle": os.path.join(self.tmp, "norootfs")}
        bad = self.write_config(config=cfg, path=os.path.join(self.tmp, "bad.conf"))
        r = subprocess.run([harness.TASKD, "--config", bad, "--check-config"], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 1, r)
        for message in ("Runtime=nosuchruntime: No such file or directory (looked up in PATH)",
                        "Conmon=/no/conmon: No such file or directory",
                        f"[Service nocfg] Bundle={self.tmp}: {self.tmp}/config.json: No such file or directory",
                        f"[Service norootfs] Bundle={self.tmp}/norootfs: its rootfs {self.tmp}/norootfs/rootfs is "
                        "missing",
                        "DefaultService=web names no [Service web] section (configured: cli, nocfg, norootfs)",
                        "parses, but 5 problems above would fail tasks"):
            self.assertIn(message, r.stderr)
        # A typo: "did you mean", and no "ignoring" for a file that is refused.
        with open(bad, "w") as f:
            f.write("[Tasks]\nMaxRuning=3\nKilGraceSec=1\nNothingLikeIt=1\n[Bogus]\n")
        r = subprocess.run([harness.TASKD, "--config", bad, "--check-config"], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn(f"{bad}:2: Unknown key MaxRuning= in section [Tasks]; did you mean MaxRunning=?", r.stderr)
        self.assertIn(f"{bad}:3: Unknown key KilGraceSec= in section [Tasks]; did you mean KillGraceSec=?", r.stderr)
        self.assertIn(f"{bad}:4: Unknown key NothingLikeIt= in section [Tasks].", r.stderr)
        self.assertIn(f"Configuration {bad} refused", r.stderr)
        self.assertNotIn("ignoring", r.stderr)
        self.assertNotIn("Invalid argument", r.stderr)

    def test_alert_rules_and_dashboard(self):
        p = promcheck.promtool("check", "rules", ALERTS)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        p = promcheck.promtool("test", "rules", os.path.join(HERE, "prometheus-alerts.test.yml"))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        # The dashboard's queries, parsed by promtool as recording rules (YAML takes JSON).
        with open(DASHBOARD) as f:
            dash = json.load(f)
        exprs = [t["expr"] for panel in dash["panels"] for t in panel["targets"]]
        self.assertGreater(len(exprs), 10)
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:query{i}", "expr": e.replace("$instance", ".*")} for i, e in enumerate(exprs)]}]}
        path = os.path.join(self.tmp, "dashboard-rules.yml")
        with open(path, "w") as f:
            json.dump(rules, f)
        p = promcheck.promtool("check", "rules", path)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        # README documents every series they use.
        with open(os.path.join(harness.SRCDIR, "README.md")) as f:
            readme = f.read()
        for doc in (DASHBOARD, ALERTS):
            for name in promcheck.referenced_names(doc):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                self.assertRegex(readme, f"`{base}[`{{]", f"{name} ({doc}) is not in README's metrics table")


if __name__ == "__main__":
    harness.main()
