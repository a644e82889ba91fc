#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Attacks against the real daemon (issue 15): a task's taskData as a symlink to a host
file or as a FIFO; a task record near the size limit across a restart, one over it; a
multi-line secret and one printed JSON-escaped, masked everywhere; the records' file
system full mid-run; one group member's idle connections and log followers against
root's health check."""

import errno
import grp
import json
import os
import shutil
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import lagoon_harness as lh  # noqa: E402

RUNNER_IMAGE = "example.com/test-task-image:v0.0.1"


class BusTestCase(harness.TaskdTestCase):
    """A daemon connected to the file's broker (started on first use)."""

    @classmethod
    def setUpClass(cls):
        if lh.missing():
            raise unittest.SkipTest(lh.missing())
        if lh.BROKER is None:
            lh.start_module_broker()

    def setUp(self):
        super().setUp()
        self.target = f"it-{os.urandom(3).hex()}"
        self.peer = lh.LagoonPeer(lh.BROKER, self.target)
        self.addCleanup(self.peer.close)

    def start_daemon(self, tasks=None, lagoon=None, extra=None, daemon=None):
        self.write_config(tasks=tasks, daemon=daemon, services={"nginx": {"Bundle": self.bundle}},
                          extra={"Lagoon": lh.lagoon_config(lh.BROKER, self.target, **(lagoon or {})),
                                 **(extra or {})})
        d = self.daemon()
        lh.wait_for_queues(self)
        return d

    def make_image_bundle(self, script, name="runner-image"):
        with open(os.path.join(self.bundle, "config.json")) as f:
            cfg = json.load(f)
        cfg["process"]["args"] = ["/bin/sh", "-c", script]
        root = cfg["root"]["path"]
        cfg["root"]["path"] = root if root.startswith("/") else os.path.join(self.bundle, root)
        d = os.path.join(self.tmp, name)
        os.makedirs(d)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        return d

    def advanced_message(self, task_id):
        body, _ = lh.fixture_body("amqp-in-task-advanced.json")
        body["task"]["id"] = task_id
        body["advancedTask"]["JSONPayload"] = lh.b64json({})
        body["advancedTask"]["sshKey"] = False
        return body


class TestTaskData(BusTestCase):
    """taskData is a file the task controls: the daemon reads it as root, so a symlink
    must not reach a host file and a FIFO must not block the loop."""

    def test_symlink_to_host_file_is_refused(self):
        secret = os.path.join(self.tmp, "host-secret.b64")
        stolen = lh.b64json({"stolen": "host-only"})
        with open(secret, "w") as f:
            f.write(stolen)
        os.chmod(secret, 0o600)
        # The same path exists only on the host: the symlink resolves there when root
        # follows it outside the container.
        image = self.make_image_bundle(f'ln -s {secret} "$LAGOON_TASK_DATA_FILE"; echo linked')
        self.start_daemon(extra={f"Image {RUNNER_IMAGE}": {"Bundle": image}})
        self.peer.publish(self.advanced_message("s1"), "misc")
        failed = self.peer.wait_status("s1", "failed")
        self.assertNotIn("advancedData", failed["meta"])
        t = self.client.task("s1")
        self.assertEqual(t["reason"], "taskdata: not a regular file", t)
        self.assertNotIn("taskData", t)
        self.assertNotIn(stolen, json.dumps(t))
        self.assertIn("linked", self.peer.task_logs("s1")[-1]["message"])

    def test_fifo_does_not_block_the_loop(self):
        # The task leaves a FIFO and ends; with a blocking open() the daemon would wait
        # for a writer forever (and again after every restart).
        image = self.make_image_bundle('mkfifo "$LAGOON_TASK_DATA_FILE" && echo made-fifo')
        d = self.start_daemon(extra={f"Image {RUNNER_IMAGE}": {"Bundle": image}})
        self.peer.publish(self.advanced_message("f1"), "misc")
        self.peer.wait_status("f1", "failed", timeout=60)
        self.assertEqual(self.client.task("f1")["reason"], "taskdata: not a regular file")
        t0 = time.monotonic()
        self.assertHealthy()
        self.assertLess(time.monotonic() - t0, 2)
        # Still answering signals: a clean stop.
        d.stop()


class TestRecordLimit(BusTestCase):
    """store_save wrote any size, store_load_all refused over 1 MiB: a large task vanished
    on restart. New records are capped at 640 KiB (room to grow to the 1 MiB both sides
    use), refused at submission. A Lagoon task's biggest parts (its command, its two
    variable lists, each one environment entry) are each capped at 127 KiB, so the
    largest it can be comes close to the cap and survives a restart; a list over it is
    refused by name."""

    NEW_MAX = 640 * 1024
    ENTRY_MAX = 127 * 1024

    def message(self, task_id, per_list):
        body, _ = lh.fixture_body("amqp-in-task-standard.json")
        body["task"]["id"] = task_id
        body["task"]["command"] = "sleep 3 #" + "c" * (self.ENTRY_MAX - 4096)
        body["task"]["service"] = "nginx"
        # Values of secret-named variables are kept in the record (to mask output after
        # a restart too), besides the list they came in (LAGOON_PROJECT_VARIABLES,
        # LAGOON_ENVIRONMENT_VARIABLES in the task's environment).
        n = 8
        for k, where in enumerate(("project", "environment")):
            body["project"]["variables"][where] = lh.b64json(
                [{"name": f"BIG_{k}{i}_PASSWORD", "value": chr(ord("a") + i) * (per_list // n), "scope": "runtime"}
                 for i in range(n)])
        return body

    def test_large_record_survives_restart_oversized_refused(self):
        d = self.start_daemon()
        self.peer.publish(self.message("r1", self.ENTRY_MAX - 4096))
        self.peer.wait_status("r1", "running")
        record = os.path.join(self.state_dir, "tasks", "r1.json")
        size = os.path.getsize(record)
        self.assertTrue(0.7 * self.NEW_MAX < size <= self.NEW_MAX, size)
        d.restart()
        self.assertEqual(self.client.wait_final("r1", 60)["status"], "complete")
        self.assertEqual(os.listdir(os.path.join(self.state_dir, "tasks", "corrupt"))
                         if os.path.isdir(os.path.join(self.state_dir, "tasks", "corrupt")) else [], [])

        self.peer.publish(self.message("r2", self.ENTRY_MAX + 1024))
        self.peer.wait_status("r2", "failed")
        self.assertIn("LAGOON_PROJECT_VARIABLES is too long", self.peer.task_logs("r2")[-1]["message"])
        self.assertEqual(self.client.get("/v1/tasks/r2").status, 404)


class TestSecretForms(BusTestCase):
    def test_multiline_and_json_escaped_secrets_masked(self):
        key = "-----BEGIN TEST KEY-----\nkeylineAAAA1111\nkeylineBBBB2222\n-----END TEST KEY-----"
        token = 'pa"ss\\word'
        # The output: the key as a file shows it, the token as a JSON encoder writes it.
        command = "cat <<'EOF'\n" + key + '\n{"t":' + json.dumps(token) + "}\nEOF"
        self.start_daemon()
        body, _ = lh.fixture_body("amqp-in-task-standard.json")
        body["task"].update(id="m1", command=command, service="nginx")
        body["project"]["variables"]["environment"] = lh.b64json(
            [{"name": "DEPLOY_SSH_KEY", "value": key, "scope": "runtime"},
             {"name": "API_TOKEN", "value": token, "scope": "runtime"}])
        self.peer.publish(body)
        self.peer.wait_status("m1", "complete")
        want = ["***"] * 4 + ['{"t":"***"}']
        self.assertEqual(self.client.logs("m1").splitlines(), want)
        self.assertEqual(self.journal.task_messages("m1", expect=len(want)), want)
        self.assertEqual(self.peer.task_logs("m1")[-1]["message"].splitlines()[-len(want):], want)


class TestCredentialFiles(BusTestCase):
    def test_deployer_token_and_ssh_key_contents_masked(self):
        # Both are mounted into advanced tasks, which can print them.
        token, key = "deployer-token-Zq81x", "-----BEGIN OPENSSH PRIVATE KEY-----\nkeybody-Zq81x\n-----END OPENSSH PRIVATE KEY-----"
        paths = {}
        for name, text in (("DeployerTokenFile", token + "\n"), ("SSHKeyFile", key + "\n")):
            paths[name] = os.path.join(self.tmp, name)
            with open(paths[name], "w") as f:
                f.write(text)
            os.chmod(paths[name], 0o600)
        self.start_daemon(lagoon=paths)
        t = self.submit_ok(f"echo {token}; cat <<'EOF'\n{key}\nEOF", service="nginx")
        self.assertEqual(self.client.wait_final(t["id"], 60)["status"], "complete")
        self.assertEqual(self.client.logs(t["id"]).splitlines(), ["***"] * 4)


class TestStateFull(BusTestCase):
    """The records' file system fills up while a task runs: its end is not announced
    (API, Lagoon, STATUS=) before it is on disk, nothing is launched meanwhile, and once
    there is room again the end is recorded as it was and the queued task runs once."""

    def fill(self, path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            for chunk in (65536, 4096, 512, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError as e:
                    self.assertEqual(e.errno, errno.ENOSPC)
        finally:
            os.close(fd)

    def record(self, task_id):
        with open(os.path.join(self.state_dir, "tasks", f"{task_id}.json")) as f:
            return json.load(f)["status"]

    def state(self):
        return self.client.health().json.get("state")

    def message(self, task_id, command):
        body, _ = lh.fixture_body("amqp-in-task-standard.json")
        body["task"].update(id=task_id, command=command, service="nginx")
        return body

    def assert_held(self, seconds):
        """For longer than a retry round: the disk's word is the only one given."""
        self.peer.settle(seconds)
        self.assertEqual((self.client.task("d1")["status"], self.record("d1")), ("running", "running"))
        self.assertEqual((self.client.task("d2")["status"], self.record("d2")), ("pending", "pending"))
        self.assertEqual(self.peer.status_list("d1").count("complete"), 0, self.peer.status_list("d1"))
        self.assertNotIn("running", self.peer.status_list("d2"))

    def test_full_state_file_system_mid_run(self):
        tasks_dir = os.path.join(self.state_dir, "tasks")
        os.makedirs(tasks_dir)
        self.addCleanup(shutil.rmtree, self.tmp, True)  # after the unmount below
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "lagoon-it-state", tasks_dir],
                       check=True)
        # (tearDown unmounts what is under the test's directory; this is for a failed start)
        self.addCleanup(lambda: os.path.ismount(tasks_dir) and subprocess.run(["umount", tasks_dir]))
        d = self.start_daemon(tasks={"MaxRunning": 1, "MinFreeSpace": "64K"})
        self.peer.publish(self.message("d1", "echo one-ran; sleep 3"))
        self.peer.wait_status("d1", "running")
        self.peer.publish(self.message("d2", "echo two-ran"))
        harness.wait_until(lambda: self.client.get("/v1/tasks/d2").status == 200, 30, what="d2 queued")
        filler = os.path.join(tasks_dir, ".filler")
        self.fill(filler)

        # d1 ends, its record cannot take it: nothing is told, nothing launched.
        harness.wait_until(lambda: self.state() == "write-failed", 30, what="health to say write-failed")
        h = self.client.health().json
        self.assertEqual(h["stateError"], os.strerror(errno.ENOSPC), h)
        metrics = self.client.get("/metrics").text
        self.assertIn("lagoon_taskd_state_writable 0\n", metrics)
        self.assertRegex(metrics, r"lagoon_taskd_state_write_failures_total [1-9]")
        # STATUS= may reach the test's notify socket a moment after health changed.
        d.notify.wait_for(lambda f: "State not writable" in f.get("STATUS", ""), timeout=10,
                          what="STATUS= saying the state is not writable")
        self.assert_held(2.5)

        # A restart while full: d1 is adopted (its container kept), ends again, still
        # unwritten; d2 waits (no room for a launch).
        d.restart()
        harness.wait_until(lambda: self.state() == "write-failed", 30, what="write-failed after the restart")
        self.assert_held(2.5)

        os.unlink(filler)
        f1, f2 = self.client.wait_final("d1", 30), self.client.wait_final("d2", 30)
        self.assertEqual((f1["status"], f1.get("exitCode")), ("complete", 0), f1)
        self.assertEqual((f2["status"], f2.get("exitCode")), ("complete", 0), f2)
        self.assertEqual((self.record("d1"), self.record("d2")), ("complete", "complete"))
        self.assertEqual(self.state(), "ok")
        self.assertIn("lagoon_taskd_state_writable 1\n", self.client.get("/metrics").text)
        self.peer.wait_status("d2", "complete")
        self.peer.settle(1)
        for tid in ("d1", "d2"):
            statuses = self.peer.status_list(tid)
            self.assertEqual((statuses.count("running"), [s for s in statuses if s in harness.FINAL]),
                             (1, ["complete"]), (tid, statuses))
        # Each ran once: one launch in all of the daemon's runs, its output once.
        log = d.stderr(all_runs=True)
        for tid, line in (("d1", "one-ran"), ("d2", "two-ran")):
            self.assertEqual(log.count(f"Task {tid}: running."), 1, tid)
            self.assertEqual(self.client.logs(tid).splitlines(), [line])


# Run as a group member: opens N connections, sends REQUEST on each, reports how many
# were refused (503 too-many-connections) and how many are held; holds them until stdin
# closes.
HOG_SCRIPT = r"""
import json, socket, sys, time
path, n, req = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode().decode("unicode_escape").encode()
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    try:
        s.sendall(req)
    except OSError:
        pass  # refused and closed already: its answer is still there to read
    socks.append(s)
time.sleep(1)
refused = held = 0
for s in socks:
    s.setblocking(False)
    try:
        b = s.recv(4096)
    except BlockingIOError:
        b = None
    if b and b.startswith(b"HTTP/1.1 503") and b"too-many-connections" in b:
        refused += 1
    elif b is None or b.startswith(b"HTTP/1.1 200"):
        held += 1
print(json.dumps({"refused": refused, "held": held}), flush=True)
sys.stdin.read()
"""


class TestApiCommandMasked(harness.TaskdTestCase):
    def test_secret_not_returned_in_command(self):
        self.write_config(tasks={"Secret": "hunter2-secret"})
        self.daemon()
        t = self.submit_ok("echo hunter2-secret")
        self.assertEqual(t["command"], "echo ***")
        self.client.wait_final(t["id"], 60)
        self.assertEqual(self.client.task(t["id"])["command"], "echo ***")
        self.assertNotIn("hunter2-secret", self.client.get("/v1/tasks").text)
        self.assertEqual(self.client.logs(t["id"]), "***\n")


class TestApiLockout(harness.TaskdTestCase):
    """One member of SocketGroup= held every connection (idle ones, log followers:
    suspended, never timed out) and root's health check timed out. Per-uid caps, slots
    kept for root."""

    PER_UID = 32

    def hog(self, n, request):
        gid = grp.getgrnam(harness.SOCKET_GROUP).gr_gid
        p = subprocess.Popen(["setpriv", "--reuid=65534", f"--regid={gid}", "--clear-groups", harness.SYSTEM_PYTHON,
                              "-c", HOG_SCRIPT, self.socket_path, str(n), request],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.track_process(p)
        return p, json.loads(p.stdout.readline())

    def test_idle_connections_and_followers_leave_root_room(self):
        self.write_config()
        self.daemon()
        tid = self.submit_ok("sleep 120")["id"]
        self.client.wait_status(tid, "running")
        followers, f = self.hog(300, f"GET /v1/tasks/{tid}/logs?follow=1 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        idle, i = self.hog(300, "GET /v1/health HTTP/1.1\\r\\nHost: x\\r\\n")
        self.assertEqual((f["held"], f["refused"]), (self.PER_UID, 300 - self.PER_UID), f)
        self.assertEqual((i["held"], i["refused"]), (0, 300), i)
        worst = 0
        for _ in range(20):
            t0 = time.monotonic()
            self.assertHealthy()
            worst = max(worst, time.monotonic() - t0)
        self.assertLess(worst, 0.1, f"root's /v1/health took {worst * 1000:.0f} ms")
        harness.log(f"root's /v1/health: worst of 20 {worst * 1000:.1f} ms with 600 connections tried by a member")
        # The member's share comes back once its connections are gone.
        for p in (followers, idle):
            p.stdin.close()
            p.wait(10)
        harness.wait_until(lambda: self.hog_once(), 15, what="the member's connections to be let in again")
        self.client.cancel(tid)

    def hog_once(self):
        p, r = self.hog(1, "GET /v1/health HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        p.stdin.close()
        p.wait(10)
        return r["held"] == 1


tearDownModule = lh.stop_module_broker

if __name__ == "__main__":
    harness.main()
