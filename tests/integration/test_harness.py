#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Self-test of the integration harness, without the daemon: journald in the private
mount namespace stores and returns every line with its fields, the demo bundle runs
with plain `runc run`, the NOTIFY_SOCKET listener and the unix-socket HTTP client
work, cleanup removes leftover containers. A failure here is an environment or harness
problem, not a daemon bug."""

import http.server
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import RUNC  # noqa: E402


def journal_send(fields):
    """Native journald protocol, as sd_journal_sendv does (binary-safe form for
    values with newlines)."""
    out = b""
    for k, v in fields.items():
        v = v.encode() if isinstance(v, str) else v
        if b"\n" in v:
            out += k.encode() + b"\n" + len(v).to_bytes(8, "little") + v + b"\n"
        else:
            out += k.encode() + b"=" + v + b"\n"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.sendto(out, harness.Journald.SOCKET)
    finally:
        s.close()


class TestJournald(harness.TaskdTestCase):
    def test_fields_roundtrip(self):
        tid = self.new_id("j")
        fields = {
            "MESSAGE": "hello from the harness",
            "PRIORITY": "6",
            "SYSLOG_IDENTIFIER": "lagoon-task",
            "LAGOON_TASK_ID": tid,
            "LAGOON_STREAM": "stdout",
        }
        journal_send(fields)
        journal_send({**fields, "MESSAGE": "second\nwith newline", "PRIORITY": "4", "LAGOON_STREAM": "stderr"})
        es = self.journal.task_entries(tid, expect=2)
        self.assertEqual(len(es), 2)
        for k, v in fields.items():
            self.assertEqual(es[0][k], v)
        self.assertEqual(es[1]["MESSAGE"], "second\nwith newline")
        self.assertEqual(es[1]["PRIORITY"], "4")

    def test_many_lines_in_order_no_ratelimit(self):
        tid = self.new_id("many")
        n = 12000
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.connect(harness.Journald.SOCKET)
        for i in range(n):
            while True:
                try:
                    s.send(f"MESSAGE=line {i}\nLAGOON_TASK_ID={tid}\n".encode())
                    break
                except BlockingIOError:
                    time.sleep(0.001)
        s.close()
        t0 = time.monotonic()
        msgs = self.journal.task_messages(tid, expect=n, timeout=60)
        self.assertEqual(msgs, [f"line {i}" for i in range(n)])
        print(f"  {n} lines stored and read back in {time.monotonic() - t0:.2f}s")

    def test_long_line(self):
        tid = self.new_id("long")
        journal_send({"MESSAGE": "a" * 20000, "LAGOON_TASK_ID": tid})
        msgs = self.journal.task_messages(tid, expect=1)
        self.assertEqual(msgs, ["a" * 20000])

    def test_systemd_cat(self):
        tid = self.new_id("cat")
        r = subprocess.run(["systemd-cat", "-t", tid], input=b"via stdout stream\n")
        self.assertEqual(r.returncode, 0)
        wait = harness.wait_until(lambda: self.journal.entries(f"SYSLOG_IDENTIFIER={tid}"), 10)
        self.assertEqual(wait[0]["MESSAGE"], "via stdout stream")


class TestStartJournaldScript(harness.TaskdTestCase):
    def test_script(self):
        script = os.path.join(harness.SRCDIR, "scripts", "start-journald.sh")
        env = {k: v for k, v in os.environ.items() if k != "LAGOON_JOURNALD_NS"}
        r = subprocess.run(["sh", script, "sh", "-c",
                            "echo via-script | systemd-cat -t it-sj && journalctl --sync && "
                            "journalctl -o cat SYSLOG_IDENTIFIER=it-sj; exit 4"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60, env=env)
        self.assertEqual(r.returncode, 4, r)
        self.assertEqual(r.stdout.strip(), "via-script", r)
        # Our own journald did not see it (the script's was private).
        self.assertEqual(self.journal.entries("SYSLOG_IDENTIFIER=it-sj"), [])


class TestBundle(harness.TaskdTestCase):
    def run_bundle(self, args, name):
        """Runs the demo bundle's rootfs with other process.args via `runc run`
        (a second bundle dir whose root.path points at the demo rootfs)."""
        with open(os.path.join(self.bundle, "config.json")) as f:
            cfg = json.load(f)
        b = os.path.join(self.tmp, name)
        os.makedirs(b)
        cfg["root"]["path"] = os.path.join(self.bundle, "rootfs")
        cfg["process"]["args"] = args
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(cfg, f)
        cid = self.new_id("runc")
        return subprocess.run([RUNC, "run", "-b", b, cid], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=60)

    def test_runc_run(self):
        r = self.run_bundle(["/bin/sh", "-c",
                             "cat /srv/service.txt; echo \"cron=$CRONJOBS\"; echo \"path=$PATH\"; "
                             "id -u; grep -c root /etc/passwd; echo err >&2; exit 3"], "b1")
        self.assertEqual(r.returncode, 3, r)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0], "written by the service")
        self.assertTrue(lines[1].startswith("cron=*/15"), lines)
        self.assertIn("/bin", lines[2])
        self.assertEqual(lines[3], "0")
        self.assertEqual(r.stderr.strip(), "err")

    def test_service_process_default(self):
        with open(os.path.join(self.bundle, "config.json")) as f:
            cfg = json.load(f)
        self.assertFalse(cfg["process"]["terminal"])
        self.assertTrue(any(e.startswith("CRONJOBS=") for e in cfg["process"]["env"]))
        self.assertTrue(any(e.startswith("PATH=") for e in cfg["process"]["env"]))
        self.assertTrue(os.path.islink(os.path.join(self.bundle, "rootfs", "bin", "sh")))
        self.assertTrue(os.path.islink(os.path.join(self.bundle, "rootfs", "usr", "bin", "seq")))

    def test_script_refuses_existing(self):
        r = subprocess.run(["sh", harness.MAKE_BUNDLE, self.bundle], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        self.assertNotEqual(r.returncode, 0)


class TestNotify(harness.TaskdTestCase):
    def test_listener(self):
        n = harness.NotifyListener(os.path.join(self.tmp, "n.sock"))
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.sendto(b"READY=1\nSTATUS=0 running, 0 queued", n.path)
            s.sendto(b"WATCHDOG=1", n.path)
            s.close()
            # Also the way libsystemd would, from another process.
            subprocess.run(["systemd-notify", "--pid=self", "STATUS=from systemd-notify"],
                           env={**os.environ, "NOTIFY_SOCKET": n.path})
            i, f = n.wait_key("READY", "1")
            self.assertEqual(f["STATUS"], "0 running, 0 queued")
            n.wait_key("WATCHDOG", "1", since=i + 1)
            n.wait_key("STATUS", "from systemd-notify")
        finally:
            n.close()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def address_string(self):
        return "unix"

    def log_message(self, *a):
        pass

    def _send(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/v1/health":
            self._send(200, {"status": "ok"})
        elif self.path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for i in range(3):
                data = f"line {i}\n".encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                time.sleep(0.05)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._send(404, {"error": "not-found", "message": "no such path"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        if n > 1 << 20:
            self._send(413, {"error": "too-large", "message": "body too large"})
            self.close_connection = True
            return
        body = self.rfile.read(n)
        self._send(201, {"echo": json.loads(body)})


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class TestHttpClient(harness.TaskdTestCase):
    def setUp(self):
        super().setUp()
        self.server = UnixServer(self.socket_path, Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()
        super().tearDown()

    def test_get_post(self):
        self.assertEqual(self.client.health().status, 200)
        r = self.client.submit("echo hi", id="x")
        self.assertEqual(r.status, 201)
        self.assertEqual(r.json["echo"], {"command": "echo hi", "id": "x"})
        self.assertErrorResponse(self.client.get("/nope"), 404)

    def test_chunked(self):
        r = self.client.get("/chunked")
        self.assertEqual(r.text, "line 0\nline 1\nline 2\n")

    def test_large_body_rejected_early(self):
        r = self.client.post("/v1/tasks", b"x" * (2 << 20))
        self.assertEqual(r.status, 413)


class TestCleanup(harness.TaskdTestCase):
    def test_leftover_container_removed(self):
        with open(os.path.join(self.bundle, "config.json")) as f:
            cfg = json.load(f)
        b = os.path.join(self.tmp, "state", "containers", "x")
        os.makedirs(b)
        cfg["root"]["path"] = os.path.join(self.bundle, "rootfs")
        cfg["process"]["args"] = ["sleep", "1000"]
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(cfg, f)
        cid = self.new_id("left")
        # The container inherits stdio: a file, not a pipe (that would never close).
        with open(os.path.join(self.tmp, "runc.err"), "w+") as err:
            r = subprocess.run([RUNC, "run", "-d", "-b", b, cid], stdin=subprocess.DEVNULL,
                               stdout=err, stderr=err, timeout=30)
            err.seek(0)
            self.assertEqual(r.returncode, 0, err.read())
        cleaned = harness.cleanup_containers(self.tmp)
        self.assertTrue(any(cid in c for c in cleaned), cleaned)
        r = subprocess.run([RUNC, "state", cid], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.assertNotEqual(r.returncode, 0)

    def test_ini(self):
        text = harness.ini_text({"Daemon": {"A": 1, "B": True}, "Tasks": {"Secret": ["x", "y"]},
                                 "raw": "garbage line"})
        self.assertEqual(text, "[Daemon]\nA=1\nB=yes\n\n[Tasks]\nSecret=x\nSecret=y\n\ngarbage line\n")


if __name__ == "__main__":
    harness.main(needs_daemon=False)
