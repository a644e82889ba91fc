#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A stand-in for lagoon-taskd's control API, for developing and testing lagoon-taskctl.

It serves the contract of daemon/control/api.h on a unix socket (HTTP/1.1, keep-alive): the
routes, status codes, {"error","message"} bodies, the task JSON of task_to_json() and
chunked `logs?follow=1` streams. Tasks really run, but as `/bin/sh -c COMMAND` on this
host (no containers), with stdout+stderr appended to a log file, a FIFO queue limited
by --max-running, per-task timeouts and cancellation. It is a development peer only:
the real daemon is tested in tests/integration/.

Knobs for error paths:
  service "missing"            task fails with reason "service-not-found", no exit code
  service "broken"             task fails with reason "launch-error: ...", no exit code
  --forbid                     every request gets 403
  --drop-first-follow-after N  the first follow stream is cut after N bytes (no final
                               chunk), as when the daemon dies mid-stream
  --garbage                    answers with wrong member types, lists with non-objects,
                               text that is not JSON: clients must not crash
  SIGUSR1                      toggles "stopping": 503 for everything (health with its
                               usual body), follow streams cut
Stop it with SIGTERM or SIGINT; it removes its socket.
"""

import argparse
import json
import os
import re
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler

ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
BODY_MAX = 1024 * 1024
REQUEST_MEMBERS = {"id", "name", "service", "project", "environment", "command", "timeout"}
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def rfc3339(t):
    if not t:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % int((t % 1) * 1e6)


def namespace_of(project, environment):
    return re.sub(r"[^a-z0-9-]", "-", f"{project}-{environment}".lower())[:63]


def parse_timeout(v):
    """Seconds (None = infinity) from a number or a systemd-style duration string."""
    if isinstance(v, bool):
        raise ValueError("timeout must be a number or a duration string")
    if isinstance(v, (int, float)):
        if v < 0:
            raise ValueError("timeout must not be negative")
        return v
    if not isinstance(v, str):
        raise ValueError("timeout must be a number or a duration string")
    s = v.strip()
    if s == "infinity":
        return None
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    total = 0.0
    pos = 0
    for m in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)", s):
        if m.start() != pos or m.group(2) not in UNITS:
            raise ValueError(f"invalid duration '{v}'")
        total += float(m.group(1)) * UNITS[m.group(2)]
        pos = m.end()
    if pos == 0 or s[pos:].strip():
        raise ValueError(f"invalid duration '{v}'")
    return total


class ApiError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Task:
    def __init__(self, seq, req, args):
        self.seq = seq
        self.id = req.get("id") or "task-" + uuid.uuid4().hex[:12]
        self.name = req.get("name") or self.id
        self.project = req.get("project") or args.default_project
        self.environment = req.get("environment") or args.default_environment
        self.service = req.get("service") or args.default_service
        self.command = req["command"]
        # Like TaskRequest.timeout_usec: 0 or absent means the default; None is infinity.
        t = parse_timeout(req["timeout"]) if "timeout" in req else 0
        self.timeout = args.default_timeout if t == 0 else t
        self.status = "pending"
        self.reason = None
        self.exit_code = None
        self.created = time.time()
        self.started = None
        self.finished = None
        self.proc = None
        self.cancel_requested = False
        self.timed_out = False
        self.log_path = None

    def to_json(self, queue_position=0):
        d = {
            "id": self.id,
            "name": self.name,
            "project": self.project,
            "environment": self.environment,
            "namespace": namespace_of(self.project, self.environment),
            "service": self.service,
            "command": self.command,
            "status": self.status,
            "reason": self.reason,
            "exitCode": self.exit_code,
            "createdAt": rfc3339(self.created),
            "startedAt": rfc3339(self.started),
            "finishedAt": rfc3339(self.finished),
            "timeout": None if self.timeout is None else int(self.timeout),
        }
        if queue_position > 0:
            d["queuePosition"] = queue_position
        return d

    @property
    def final(self):
        return self.status in ("complete", "failed", "cancelled")


class Manager:
    def __init__(self, args):
        self.args = args
        self.cond = threading.Condition()
        self.tasks = {}
        self.seq = 0
        self.stopping = False
        self.follow_drops_left = 1 if args.drop_first_follow_after is not None else 0
        self.log_dir = tempfile.mkdtemp(prefix="fake-api-logs-")

    # All methods below are called with self.cond held.
    def queue_position(self, t):
        if t.status != "pending":
            return 0
        pending = sorted((x for x in self.tasks.values() if x.status == "pending"), key=lambda x: x.seq)
        return pending.index(t) + 1

    def submit(self, req):
        if not isinstance(req, dict):
            raise ApiError(400, "bad-request", "request body must be a JSON object")
        unknown = set(req) - REQUEST_MEMBERS
        if unknown:
            raise ApiError(400, "bad-request", f"unknown member '{sorted(unknown)[0]}'")
        for k in REQUEST_MEMBERS - {"timeout"}:
            if k in req and not isinstance(req[k], str):
                raise ApiError(400, "bad-request", f"'{k}' must be a string")
        if not req.get("command", "").strip():
            raise ApiError(400, "bad-request", "'command' is required")
        if "id" in req and not ID_RE.match(req["id"]):
            raise ApiError(400, "bad-request", f"invalid task id '{req['id']}'")
        if req.get("id") in self.tasks:
            t = self.tasks[req["id"]]
            for k, v in (("command", t.command), ("name", t.name), ("service", t.service),
                         ("project", t.project), ("environment", t.environment)):
                if k in req and req[k] != v:
                    raise ApiError(409, "conflict", f"a different task with id '{t.id}' exists")
            return t, False
        try:
            self.seq += 1
            t = Task(self.seq, req, self.args)
        except ValueError as e:
            raise ApiError(400, "bad-request", f"invalid timeout: {e}")
        t.log_path = os.path.join(self.log_dir, t.id + ".log")
        open(t.log_path, "wb").close()
        self.tasks[t.id] = t
        self.schedule()
        return t, True

    def schedule(self):
        running = sum(1 for t in self.tasks.values() if t.status == "running")
        for t in sorted(self.tasks.values(), key=lambda x: x.seq):
            if running >= self.args.max_running:
                break
            if t.status == "pending":
                self.start(t)
                running += t.status == "running"
        self.cond.notify_all()

    def finish(self, t, status, reason=None):
        t.status, t.reason, t.finished = status, reason, time.time()
        self.cond.notify_all()

    def start(self, t):
        t.started = time.time()
        if t.service == "missing":
            return self.finish(t, "failed", "service-not-found")
        if t.service == "broken":
            return self.finish(t, "failed", "launch-error: fake runtime refused to create the container")
        log = open(t.log_path, "ab")
        t.proc = subprocess.Popen(["/bin/sh", "-c", t.command], stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        t.status = "running"
        threading.Thread(target=self.reap, args=(t,), daemon=True).start()
        if t.timeout is not None:
            timer = threading.Timer(t.timeout, self.on_timeout, args=(t,))
            timer.daemon = True
            timer.start()

    def kill(self, t):
        try:
            os.killpg(t.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

        def escalate():
            try:
                os.killpg(t.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        timer = threading.Timer(self.args.kill_grace, escalate)
        timer.daemon = True
        timer.start()

    def on_timeout(self, t):
        with self.cond:
            if t.status == "running" and not t.cancel_requested:
                t.timed_out = True
                self.kill(t)

    def reap(self, t):
        rc = t.proc.wait()
        with self.cond:
            t.exit_code = rc if rc >= 0 else 128 - rc
            if t.cancel_requested:
                self.finish(t, "cancelled")
            elif t.timed_out:
                self.finish(t, "failed", "timeout")
            elif rc == 0:
                self.finish(t, "complete")
            else:
                self.finish(t, "failed", f"exit-code {t.exit_code}")
            self.schedule()

    def cancel(self, t):
        if t.final:
            raise ApiError(409, "conflict", f"task '{t.id}' already finished")
        if t.status == "pending":
            self.finish(t, "cancelled")
        else:
            t.cancel_requested = True
            self.kill(t)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-lagoon-taskd"
    manager: Manager = None

    def log_message(self, format, *args):
        if self.server.verbose:
            sys.stderr.write("fake-api: " + (format % args) + "\n")

    def send_json(self, status, obj, extra_headers=()):
        if self.server.garbage and status < 300:
            obj = self.garble(obj)
        body = obj if isinstance(obj, bytes) else (json.dumps(obj) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    @staticmethod
    def garble(obj):
        if isinstance(obj, dict) and "tasks" in obj:
            weird = {"id": 5, "status": None, "exitCode": "x", "createdAt": 7, "command": ["a"], "service": {},
                     "queuePosition": -1}
            return {"tasks": obj["tasks"] + [weird, 3, "str", None, {"createdAt": "not a time", "exitCode": 1e300}]}
        if isinstance(obj, dict) and "id" in obj:
            # Odd ids get text that is not JSON, even ones wrong member types.
            if len(obj["id"]) % 2:
                return b"not JSON {"
            return {"id": 5, "status": ["running"], "exitCode": "x", "timeout": -3, "createdAt": None,
                    "command": "echo \x1b[31mred\nsecond line", "nested": {"a": [1, 2.5e3, True]}}
        return obj

    def send_error_json(self, e, extra_headers=()):
        self.send_json(e.status, {"error": e.code, "message": e.message}, extra_headers)

    def route(self):
        path, _, query = self.path.partition("?")
        parts = path.split("/")
        if path == "/v1/tasks":
            return "tasks", None, query
        if path == "/v1/health":
            return "health", None, query
        if len(parts) in (4, 5) and parts[:3] == ["", "v1", "tasks"] and ID_RE.match(parts[3]):
            if len(parts) == 4:
                return "task", parts[3], query
            if parts[4] in ("logs", "cancel"):
                return parts[4], parts[3], query
        raise ApiError(404, "not-found", "unknown path")

    def handle_any(self, method):
        m = self.manager
        try:
            body = b""
            if "Content-Length" in self.headers:
                n = int(self.headers["Content-Length"])
                if n > BODY_MAX:
                    self.close_connection = True
                    raise ApiError(413, "payload-too-large", f"request body exceeds {BODY_MAX} bytes")
                body = self.rfile.read(n)
            if self.server.forbid:
                raise ApiError(403, "forbidden", f"access denied: uid {os.getuid()} is not root and not in group "
                                                 "lagoon-task")
            what, tid, query = self.route()
            with m.cond:
                stopping = m.stopping
            if stopping and what != "health":
                raise ApiError(503, "unavailable", "the daemon is stopping")
            allowed = {"tasks": ("GET", "POST"), "task": ("GET",), "logs": ("GET",), "cancel": ("POST",),
                       "health": ("GET",)}[what]
            if method not in allowed:
                e = ApiError(405, "method-not-allowed", f"{method} not allowed here")
                return self.send_error_json(e, [("Allow", ", ".join(allowed))])
            if what == "health":
                with m.cond:
                    running = sum(t.status == "running" for t in m.tasks.values())
                    pending = sum(t.status == "pending" for t in m.tasks.values())
                return self.send_json(503 if stopping else 200,
                                      {"status": "stopping" if stopping else "ok", "version": "fake",
                                       "running": running, "queued": pending})
            if what == "tasks" and method == "GET":
                with m.cond:
                    tasks = [t.to_json(m.queue_position(t)) for t in sorted(m.tasks.values(), key=lambda x: x.seq)]
                return self.send_json(200, {"tasks": tasks})
            if what == "tasks":
                ctype = self.headers.get("Content-Type", "application/json").split(";")[0].strip()
                if ctype != "application/json":
                    raise ApiError(415, "unsupported-media-type", "Content-Type must be application/json")
                try:
                    req = json.loads(body)
                except ValueError as e:
                    raise ApiError(400, "bad-request", f"invalid JSON: {e}")
                with m.cond:
                    t, new = m.submit(req)
                    obj = t.to_json(m.queue_position(t))
                return self.send_json(201 if new else 200, obj)
            with m.cond:
                t = m.tasks.get(tid)
                if not t:
                    raise ApiError(404, "not-found", f"no task with id '{tid}'")
                if what == "task":
                    obj = t.to_json(m.queue_position(t))
                elif what == "cancel":
                    m.cancel(t)
                    obj = t.to_json(m.queue_position(t))
            if what in ("task", "cancel"):
                return self.send_json(200 if what == "task" else 202, obj)
            if "follow=1" in query.split("&"):
                return self.follow(t)
            with open(t.log_path, "rb") as f:
                data = f.read()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except ApiError as e:
            self.send_error_json(e)

    def follow(self, t):
        m = self.manager
        with m.cond:
            drop_after = None
            if m.follow_drops_left > 0:
                m.follow_drops_left -= 1
                drop_after = m.args.drop_first_follow_after
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0
        with open(t.log_path, "rb") as f:
            while True:
                with m.cond:
                    final = t.final
                    stopping = m.stopping
                data = f.read(65536)
                if data:
                    if drop_after is not None and sent + len(data) > drop_after:
                        data = data[:max(drop_after - sent, 0)]
                        if data:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                        # Cut like a dying daemon: no terminating chunk.
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                    sent += len(data)
                    continue
                if stopping:
                    # The real daemon aborts followers when it stops.
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if final:
                    break
                with m.cond:
                    m.cond.wait(0.2)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_DELETE(self):
        self.handle_any("DELETE")


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that goes away mid-answer (Ctrl-C, `| head`) is normal.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket", required=True)
    p.add_argument("--mode", default="0660", help="socket file mode (octal)")
    p.add_argument("--max-running", type=int, default=2)
    p.add_argument("--default-timeout", type=float, default=3600)
    p.add_argument("--kill-grace", type=float, default=2)
    p.add_argument("--default-service", default="cli")
    p.add_argument("--default-project", default="local")
    p.add_argument("--default-environment", default="main")
    p.add_argument("--forbid", action="store_true")
    p.add_argument("--drop-first-follow-after", type=int)
    p.add_argument("--garbage", action="store_true")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()

    try:
        os.unlink(args.socket)
    except FileNotFoundError:
        pass
    Handler.manager = Manager(args)
    server = Server(args.socket, Handler)
    os.chmod(args.socket, int(args.mode, 8))
    server.forbid = args.forbid
    server.verbose = args.verbose
    server.garbage = args.garbage

    def stop(sig, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    def toggle_stopping(sig, frame):
        with Handler.manager.cond:
            Handler.manager.stopping = not Handler.manager.stopping
            Handler.manager.cond.notify_all()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGUSR1, toggle_stopping)
    try:
        server.serve_forever()
    finally:
        os.unlink(args.socket)
        with Handler.manager.cond:
            for t in Handler.manager.tasks.values():
                if t.status == "running":
                    try:
                        os.killpg(t.proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


if __name__ == "__main__":
    main()
