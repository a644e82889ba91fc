# SPDX-License-Identifier: LGPL-2.1-or-later
"""Integration test harness for lagoon-taskd (Python 3 standard library only).

Each test file calls harness.main(). It skips (exit 77) unless run as root with runc,
conmon, journald and busybox-static present, re-executes itself in a private mount
namespace (unshare -m), starts a journald there (tmpfs on /run/systemd/journal and
/run/log), builds the demo service bundle with scripts/make-demo-bundle.sh, runs the
file's unittest cases and prints "N passed, N failed".

Per test (TaskdTestCase): a temp dir with state/runtime dirs, a config writer, Daemon
objects (the real $TASKD with a NOTIFY_SOCKET the harness reads), an HTTP client over
the API unix socket, and a cleanup that stops the daemons, removes the containers and
conmon processes the test's daemons started (only those: matched by paths under the
test's own dir), unmounts what is mounted under that dir and removes it.

Environment: TASKD, TASKCTL (binaries), TEST_SRCDIR (source root), LAGOON_IT_KEEP=1
keeps the temp dirs, LAGOON_IT_VERBOSE=1 prints daemon stderr for passing tests too.
"""

import datetime
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("TEST_SRCDIR") or os.path.dirname(os.path.dirname(HERE))
TASKD = os.environ.get("TASKD") or os.path.join(SRCDIR, "build", "lagoon-taskd")
TASKCTL = os.environ.get("TASKCTL") or os.path.join(SRCDIR, "build", "lagoon-taskctl")
MAKE_BUNDLE = os.path.join(SRCDIR, "scripts", "make-demo-bundle.sh")
JOURNALD = next((p for p in ("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald")
                 if os.access(p, os.X_OK)), None)
BUSYBOX = "/bin/busybox"
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by unprivileged users, unlike a pyenv one

MNTNS_MARKER = "LAGOON_IT_PRIVATE_MNTNS"
KEEP = os.environ.get("LAGOON_IT_KEEP") == "1"
VERBOSE = os.environ.get("LAGOON_IT_VERBOSE") == "1"

FINAL = ("complete", "failed", "cancelled")
SOCKET_GROUP = "adm"  # exists on Debian; the unprivileged test user is not in it

# Session state, set by main().
SESSION_DIR = None
JOURNAL = None
BUNDLE = None
RUNC = shutil.which("runc")
CONMON = shutil.which("conmon")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------
# Small utilities


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Polls predicate() until it returns a true value, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def parse_time(s):
    """Parses the API's RFC 3339 UTC timestamps ("2026-11-28T10:00:00.123456Z")."""
    if s is None:
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", s)
    if not m:
        raise ValueError(f"not an RFC 3339 timestamp: {s!r}")
    base = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    frac = float(m.group(2)) if m.group(2) else 0.0
    tz = m.group(3)
    off = 0
    if tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        off = sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return base.replace(tzinfo=datetime.timezone.utc).timestamp() + frac - off


def proc_state(pid):
    """The state letter of /proc/PID/stat (R, S, T, Z, ...), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie counts as dead.
    return proc_state(pid) not in (None, "Z")


def pid_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _die_with_parent():
    """preexec_fn: SIGTERM this child when the test process dies (a crash or a meson
    timeout must not leave a journald or a daemon behind)."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


def read_text(path, default=None):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return default


def ini_text(config):
    """dict → INI text. Top-level keys are section names ("Daemon", "Service cli");
    values are dicts of key → str/int/bool/list (a list repeats the key). A section
    value that is a str is appended verbatim (for broken-config tests)."""
    out = []
    for section, body in config.items():
        if isinstance(body, str):
            out.append(body if body.endswith("\n") else body + "\n")
            continue
        out.append(f"[{section}]\n")
        for key, value in body.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                if isinstance(v, bool):
                    v = "yes" if v else "no"
                out.append(f"{key}={v}\n")
        out.append("\n")
    return "".join(out)


# ---------------------------------------------------------------------------------
# journald in the private mount namespace

JOURNALD_CONF = """\
[Journal]
Storage=volatile
RateLimitIntervalSec=0
RateLimitBurst=0
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
ReadKMsg=no
RuntimeMaxUse=512M
"""


class Journald:
    SOCKET = "/run/systemd/journal/socket"

    def __init__(self, workdir):
        self.workdir = workdir
        self.proc = None
        with open("/etc/machine-id") as f:
            self.machine_id = f.read().strip()
        self.directory = f"/run/log/journal/{self.machine_id}"

    def start(self):
        if os.environ.get(MNTNS_MARKER) != "1":
            raise RuntimeError("journald may only be started in the private mount namespace")
        for d in ("/run/systemd/journal", "/run/log"):
            os.makedirs(d, exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", d], check=True)
        # Our own settings (no rate limit, no forwarding) over the host's file, in
        # this namespace only.
        conf = os.path.join(self.workdir, "journald.conf")
        with open(conf, "w") as f:
            f.write(JOURNALD_CONF)
        target = "/etc/systemd/journald.conf"
        if os.path.exists(target):
            subprocess.run(["mount", "--bind", conf, target], check=True)
        self.stderr_path = os.path.join(self.workdir, "journald.log")
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([JOURNALD], stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        try:
            wait_until(lambda: os.path.exists(self.SOCKET) and os.path.isdir(self.directory)
                       or self.proc.poll() is not None, 20, what="journald socket")
        except AssertionError:
            pass
        if self.proc.poll() is not None or not os.path.exists(self.SOCKET):
            raise RuntimeError(f"journald did not start: {read_text(self.stderr_path)}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def sync(self):
        """journalctl --sync: returns once journald has processed every message queued
        on its sockets before the call and written it out."""
        r = subprocess.run(["journalctl", "--sync"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        if r.returncode != 0:
            raise AssertionError(f"journalctl --sync failed: {r.stdout.decode(errors='replace')}")

    def entries(self, *matches, sync=True):
        """Entries matching FIELD=VALUE strings, oldest first, as dicts with MESSAGE
        decoded to str (binary MESSAGE values are byte arrays in journalctl's JSON)."""
        if sync:
            self.sync()
        r = subprocess.run(["journalctl", f"--directory={self.directory}", "-o", "json", "-a",
                            "--no-pager", *matches],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        if r.returncode != 0 and r.stdout.strip():
            raise AssertionError(f"journalctl failed: {r.stderr.decode(errors='replace')}")
        out = []
        for line in r.stdout.splitlines():
            if not line.strip():
                continue
            e = json.loads(line)
            for k, v in list(e.items()):
                if isinstance(v, list) and all(isinstance(x, int) for x in v):
                    e[k] = bytes(v).decode("utf-8", errors="replace")
                elif isinstance(v, list):
                    e[k] = [bytes(x).decode("utf-8", errors="replace") if isinstance(x, list) else x
                            for x in v]
            out.append(e)
        return out

    @staticmethod
    def line_numbers(entries):
        """The line number of each of a task's entries, as lagoon-taskctl reads them: its
        LAGOON_LINE, or for an entry without one (the daemon sets it on the first entry of
        each datagram and every 256th after) the previous entry's number + 1; None
        before the first LAGOON_LINE."""
        out, prev = [], None
        for e in entries:
            v = e.get("LAGOON_LINE")
            prev = int(v) if v is not None else (prev + 1 if prev is not None else None)
            out.append(prev)
        return out

    def task_entries(self, task_id, expect=None, timeout=15):
        """A task's entries. With expect, waits (up to timeout) until that many are
        stored, and until the count stops growing in any case."""
        deadline = time.monotonic() + timeout
        last, stable = -1, 0
        while True:
            es = self.entries(f"LAGOON_TASK_ID={task_id}")
            n = len(es)
            if expect is not None and n >= expect:
                time.sleep(0.2)  # a few more (duplicates) would show up now
                return self.entries(f"LAGOON_TASK_ID={task_id}")
            stable = stable + 1 if n == last else 0
            # After --sync journald holds everything sent so far: a count that stays put
            # over a few syncs is final (the sender is done, or stuck).
            if stable >= (2 if expect is None else 4):
                return es
            if time.monotonic() >= deadline:
                return es
            last = n
            time.sleep(0.5)

    def task_messages(self, task_id, expect=None, timeout=15):
        return [e.get("MESSAGE") for e in self.task_entries(task_id, expect, timeout)]


# ---------------------------------------------------------------------------------
# sd_notify listener


class NotifyListener:
    """A datagram socket for NOTIFY_SOCKET; collects messages in arrival order as
    (monotonic time, dict of assignments, raw text)."""

    def __init__(self, path):
        self.path = path
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.messages = []
        self.cond = threading.Condition()
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop:
            r, _, _ = select.select([self.sock], [], [], 0.2)
            if not r:
                continue
            try:
                data = self.sock.recv(65536)
            except OSError:
                break
            text = data.decode("utf-8", errors="replace")
            fields = {}
            for line in text.split("\n"):
                if "=" in line:
                    k, v = line.split("=", 1)
                    fields[k] = v
            with self.cond:
                self.messages.append((time.monotonic(), fields, text))
                self.cond.notify_all()

    def mark(self):
        with self.cond:
            return len(self.messages)

    def wait_for(self, predicate, since=0, timeout=30, what="notify message"):
        """Waits for a message (from index `since`) whose fields satisfy predicate;
        returns (index, fields)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            i = since
            while True:
                while i < len(self.messages):
                    if predicate(self.messages[i][1]):
                        return i, self.messages[i][1]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; got: "
                                         + repr([m[2] for m in self.messages[since:]]))
                self.cond.wait(left)

    def wait_key(self, key, value=None, since=0, timeout=30):
        return self.wait_for(lambda f: key in f and (value is None or f[key] == value),
                             since, timeout, f"{key}={value if value is not None else '*'}")

    def fields_since(self, since=0):
        with self.cond:
            return [m[1] for m in self.messages[since:]]

    def close(self):
        self._stop = True
        self.thread.join(2)
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------------
# HTTP over the unix socket


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        self._json = None

    @property
    def text(self):
        return self.body.decode("utf-8", errors="replace")

    @property
    def json(self):
        if self._json is None:
            try:
                self._json = json.loads(self.body)
            except ValueError as e:
                raise AssertionError(f"response ({self.status}) is not JSON: {self.body[:500]!r}") from e
        return self._json

    def __repr__(self):
        return f"<Response {self.status} {self.body[:300]!r}>"


class ApiClient:
    """A minimal HTTP/1.1 client over AF_UNIX (one connection per request)."""

    def __init__(self, path, timeout=30):
        self.path = path
        self.timeout = timeout

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.settimeout(self.timeout)
        s.connect(self.path)
        return s

    def request(self, method, path, body=None, headers=None, timeout=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        hdrs = {"Host": "localhost", "Connection": "close", "User-Agent": "lagoon-it"}
        if body is not None:
            hdrs["Content-Type"] = "application/json"
            hdrs["Content-Length"] = str(len(body))
        hdrs.update(headers or {})
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        s = self.connect()
        if timeout is not None:
            s.settimeout(timeout)
        try:
            try:
                s.sendall(head.encode() + (body or b""))
            except (BrokenPipeError, ConnectionResetError):
                # The server may answer (413) and close before reading the whole body;
                # the answer can still be read.
                pass
            resp = http.client.HTTPResponse(s, method=method)
            resp.begin()
            data = resp.read()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            s.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    # Task helpers

    def submit(self, command, **fields):
        body = {"command": command}
        body.update({k: v for k, v in fields.items() if v is not None})
        return self.post("/v1/tasks", body)

    def task(self, task_id):
        r = self.get(f"/v1/tasks/{task_id}")
        if r.status != 200:
            raise AssertionError(f"GET task {task_id}: {r}")
        return r.json

    def tasks(self):
        r = self.get("/v1/tasks")
        if r.status != 200:
            raise AssertionError(f"GET tasks: {r}")
        return r.json["tasks"]

    def wait_status(self, task_id, statuses=FINAL, timeout=60):
        if isinstance(statuses, str):
            statuses = (statuses,)
        last = {}

        def check():
            nonlocal last
            r = self.get(f"/v1/tasks/{task_id}")
            if r.status == 404:  # not submitted yet (by another process)
                return None
            if r.status != 200:
                raise AssertionError(f"GET task {task_id}: {r}")
            last = r.json
            return last if last.get("status") in statuses else None

        try:
            return wait_until(check, timeout, 0.05, f"task {task_id} in {statuses}")
        except AssertionError as e:
            raise AssertionError(f"{e}; last: {last}") from None

    def wait_final(self, task_id, timeout=60):
        return self.wait_status(task_id, FINAL, timeout)

    def logs(self, task_id, follow=False, timeout=None):
        r = self.get(f"/v1/tasks/{task_id}/logs" + ("?follow=1" if follow else ""), timeout=timeout)
        if r.status != 200:
            raise AssertionError(f"GET logs {task_id}: {r}")
        return r.text

    def cancel(self, task_id):
        return self.post(f"/v1/tasks/{task_id}/cancel")

    def health(self):
        return self.get("/v1/health")


# ---------------------------------------------------------------------------------
# The daemon


class Daemon:
    """The real lagoon-taskd, started with a NOTIFY_SOCKET the harness reads. One
    object can be started several times on the same config/state (restart)."""

    def __init__(self, testcase, config_path, name="taskd", env=None, args=None, wrapper=None):
        self.t = testcase
        self.config_path = config_path
        self.name = name
        self.env = env or {}
        self.args = args or ["--log-level", "debug"]
        self.wrapper = wrapper  # a prefix argv (e.g. to set WATCHDOG_PID)
        self.proc = None
        self.starts = 0
        self.notify = NotifyListener(os.path.join(testcase.tmp, f"{name}.notify"))
        self.stderr_paths = []
        self.returncode = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def stderr_path(self):
        return self.stderr_paths[-1] if self.stderr_paths else None

    def stderr(self, all_runs=False):
        paths = self.stderr_paths if all_runs else self.stderr_paths[-1:]
        return "".join(read_text(p, "") for p in paths)

    def start(self, wait_ready=True, timeout=30, extra_env=None):
        assert self.proc is None or self.proc.poll() is not None, "daemon already running"
        self.starts += 1
        path = os.path.join(self.t.tmp, f"{self.name}.{self.starts}.stderr")
        self.stderr_paths.append(path)
        env = dict(os.environ)
        env.pop("LISTEN_FDS", None)
        env.pop("LISTEN_PID", None)
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
        env["NOTIFY_SOCKET"] = self.notify.path
        env["SYSTEMD_LOG_LEVEL"] = "debug"
        env.update(self.env)
        env.update(extra_env or {})
        argv = (self.wrapper or []) + [TASKD, "--config", self.config_path] + self.args
        self.mark = self.notify.mark()
        with open(path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=subprocess.STDOUT, env=env, cwd=self.t.tmp,
                                         preexec_fn=_die_with_parent)
        self.t.track_process(self.proc)
        self.returncode = None
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.notify.wait_key("READY", "1", since=self.mark, timeout=0.2)
            except AssertionError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode} before READY=1:\n"
                                     + self.stderr()[-6000:])
            if time.monotonic() > deadline:
                raise AssertionError(f"no READY=1 from the daemon within {timeout}s:\n"
                                     + self.stderr()[-6000:])

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        assert self.running(), "daemon not running"
        os.kill(self.proc.pid, sig)

    def stop(self, timeout=30):
        """SIGTERM and wait; returns the exit status."""
        if not self.running():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon did not exit within {timeout}s of SIGTERM")
        return self.returncode

    def kill9(self):
        assert self.running(), "daemon not running"
        self.proc.kill()
        self.returncode = self.proc.wait(30)
        return self.returncode

    def restart(self, **kw):
        self.stop()
        return self.start(**kw)

    def wait_exit(self, timeout=30):
        self.returncode = self.proc.wait(timeout)
        return self.returncode

    def close(self):
        """Stops the daemon; returns a problem description or None."""
        problem = None
        if self.running():
            try:
                rc = self.stop(15)
                if rc != 0:
                    problem = f"{self.name} exited with status {rc} on SIGTERM at the end of the test"
            except AssertionError as e:
                problem = str(e)
        self.notify.close()
        return problem

    SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                         "ERROR: UndefinedBehaviorSanitizer")

    def sanitizer_reports(self):
        out = []
        for p in self.stderr_paths:
            text = read_text(p, "")
            if any(m in text for m in self.SANITIZER_MARKERS):
                out.append(p)
        return out


# ---------------------------------------------------------------------------------
# Cleanup of what a test's daemons left behind


def mounts_under(path):
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == path or mp.startswith(path.rstrip("/") + "/"):
                out.append(mp)
    return out


def runc_roots(extra=()):
    roots = ["/run/runc"]
    roots += [r for r in extra if r not in roots]
    return roots


def cleanup_containers(tmpdir, runc_root_dirs=()):
    """Removes containers and conmon processes whose files live under tmpdir (and so
    were started by this test's daemons). Returns a list of what it had to clean."""
    cleaned = []
    # Containers whose bundle is under tmpdir.
    if RUNC:
        for root in runc_roots(runc_root_dirs):
            if not os.path.isdir(root):
                continue
            r = subprocess.run([RUNC, "--root", root, "list", "-f", "json"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, timeout=30)
            try:
                items = json.loads(r.stdout or b"null") or []
            except ValueError:
                items = []
            for c in items:
                bundle = c.get("bundle") or ""
                if bundle.startswith(tmpdir.rstrip("/") + "/"):
                    cleaned.append(f"container {c['id']} ({c.get('status')})")
                    subprocess.run([RUNC, "--root", root, "delete", "--force", c["id"]],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    # conmon processes: by their pid files under tmpdir, and confirmed by a command
    # line that names tmpdir (a pid may have been reused).
    pids = set()
    for dirpath, dirnames, filenames in os.walk(tmpdir):
        for fn in filenames:
            if fn == "conmon.pid":
                try:
                    pids.add(int(read_text(os.path.join(dirpath, fn), "").strip()))
                except ValueError:
                    pass
    # Also by a scan of /proc for conmon with our dir in its argv (pid file not yet written).
    for d in os.listdir("/proc"):
        if d.isdigit():
            cmd = pid_cmdline(int(d))
            if cmd and os.path.basename(cmd[0]) == b"conmon" and any(tmpdir.encode() in a for a in cmd):
                pids.add(int(d))
    for pid in pids:
        cmd = pid_cmdline(pid)
        if pid_alive(pid) and cmd and any(tmpdir.encode() in a for a in cmd):
            cleaned.append(f"conmon {pid}")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    # Mounts (task overlays) under tmpdir, deepest first.
    for mp in sorted(mounts_under(tmpdir), key=len, reverse=True):
        cleaned.append(f"mount {mp}")
        subprocess.run(["umount", "-l", mp], stderr=subprocess.DEVNULL)
    return cleaned


# ---------------------------------------------------------------------------------
# Test case base


class TaskdTestCase(unittest.TestCase):
    """Base class: per-test temp dir, config, daemon(s), client, cleanup."""

    # Defaults a test class may override.
    tasks_config = {}
    runtime_args = []

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix=f"{self._testMethodName[:40]}.", dir=SESSION_DIR)
        os.chmod(self.tmp, 0o755)  # unprivileged clients must reach the socket
        self.state_dir = os.path.join(self.tmp, "state")
        self.runtime_dir = os.path.join(self.tmp, "run")
        self.socket_path = os.path.join(self.tmp, "api.sock")
        self.config_path = os.path.join(self.tmp, "taskd.conf")
        self.client = ApiClient(self.socket_path)
        self.daemons = []
        self._procs = []
        self.extra_logs = []  # more files to print when the test fails
        self._failures_before = self._failure_count()
        self.journal = JOURNAL
        self.bundle = BUNDLE
        self._t0 = time.monotonic()

    # -- failure detection, so daemon stderr is printed only when useful
    def _failure_count(self):
        outcome = getattr(self, "_outcome", None)
        result = getattr(outcome, "result", None)
        if result is not None:
            return len(result.failures) + len(result.errors)
        return None

    def _failed(self):
        outcome = getattr(self, "_outcome", None)
        errs = getattr(outcome, "errors", None)  # Python < 3.11
        if errs is not None:
            return any(exc for _, exc in errs)
        before, now = self._failures_before, self._failure_count()
        if before is None or now is None:
            return True
        return now > before or not getattr(outcome, "success", True)

    def tearDown(self):
        failed = self._failed()
        print(f"[{time.monotonic() - self._t0:.1f}s] ", end="", flush=True)
        problems = []
        for d in self.daemons:
            try:
                problem = d.close()
                if problem:
                    problems.append(problem)
                for p in d.sanitizer_reports():
                    problems.append(f"sanitizer report in {os.path.basename(p)}")
            except Exception:
                traceback.print_exc()
        if problems:
            failed = True
        for p in self._procs:
            if p.poll() is None:
                try:
                    p.kill()
                    p.wait(10)
                except Exception:
                    pass
        cleaned = cleanup_containers(self.tmp, getattr(self, "extra_runc_roots", ()))
        if failed or VERBOSE:
            for d in self.daemons:
                for i, p in enumerate(d.stderr_paths):
                    text = read_text(p, "")
                    lines = text.splitlines()
                    print(f"----- {d.name} run {i + 1} stderr ({len(lines)} lines, last 150) -----",
                          file=sys.stdout)
                    print("\n".join(lines[-150:]), file=sys.stdout)
                if d.notify.messages:
                    print(f"----- {d.name} notify messages -----")
                    for _, _, raw in d.notify.messages[-40:]:
                        print("  " + raw.replace("\n", " | "))
            for p in self.extra_logs:
                lines = read_text(p, "").splitlines()
                print(f"----- {os.path.basename(p)} ({len(lines)} lines, last 150) -----")
                print("\n".join(lines[-150:]))
            sys.stdout.flush()
        if cleaned and VERBOSE:
            print(f"cleanup: {cleaned}")
        if KEEP or (failed and os.environ.get("LAGOON_IT_KEEP_FAILED") == "1"):
            print(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if problems:
            self.fail("; ".join(problems))

    # -- processes
    def track_process(self, proc):
        self._procs.append(proc)

    # -- ids
    def new_id(self, tag="t"):
        return f"it-{tag}-{uuid.uuid4().hex[:10]}"

    # -- config
    def base_config(self):
        return {
            "Daemon": {
                "StateDirectory": self.state_dir,
                "RuntimeDirectory": self.runtime_dir,
                "ListenSocket": self.socket_path,
                "SocketGroup": SOCKET_GROUP,
            },
            "Runtime": {
                "Runtime": RUNC,
                "Conmon": CONMON,
            },
            "Tasks": {
                "MaxRunning": 4,
                "KillGraceSec": 2,
                "DefaultService": "cli",
                "DefaultProject": "demo",
                "DefaultEnvironment": "main",
            },
            "Service cli": {
                "Bundle": self.bundle,
            },
        }

    def write_config(self, tasks=None, daemon=None, runtime=None, services=None, extra=None,
                     path=None, config=None):
        """Writes a config (the base one updated per section) and returns its path."""
        cfg = config if config is not None else self.base_config()
        for sec, upd in (("Daemon", daemon), ("Runtime", runtime), ("Tasks", {**self.tasks_config, **(tasks or {})})):
            if upd:
                cfg.setdefault(sec, {}).update(upd)
        if self.runtime_args and "RuntimeArguments" not in cfg["Runtime"]:
            cfg["Runtime"]["RuntimeArguments"] = " ".join(self.runtime_args)
        for name, body in (services or {}).items():
            if body is None:
                cfg.pop(f"Service {name}", None)
            else:
                cfg[f"Service {name}"] = body
        for k, v in (extra or {}).items():
            cfg[k] = v
        path = path or self.config_path
        with open(path, "w") as f:
            f.write(ini_text(cfg))
        return path

    # -- daemon
    def daemon(self, config_path=None, start=True, name=None, **kw):
        if config_path is None:
            config_path = self.config_path if os.path.exists(self.config_path) else self.write_config()
        d = Daemon(self, config_path, name=name or f"taskd{len(self.daemons) or ''}", **kw)
        self.daemons.append(d)
        if start:
            d.start()
        return d

    # -- assertions and helpers
    def submit_ok(self, command, expect_status=201, **fields):
        r = self.client.submit(command, **fields)
        self.assertEqual(r.status, expect_status, f"submit {command!r}: {r}")
        return r.json

    def run_task(self, command, timeout=60, **fields):
        """Submits and waits for the final state; returns the task JSON."""
        t = self.submit_ok(command, **fields)
        return self.client.wait_final(t["id"], timeout)

    def assertErrorResponse(self, r, status):
        self.assertEqual(r.status, status, f"expected {status}: {r}")
        body = r.json
        self.assertIsInstance(body, dict, r)
        self.assertIn("error", body, r)
        self.assertIn("message", body, r)
        self.assertTrue(body["error"], r)

    def assertHealthy(self):
        r = self.client.health()
        self.assertEqual(r.status, 200, f"health: {r}")

    def task_log_path(self, task_id):
        return os.path.join(self.state_dir, "logs", f"{task_id}.log")

    def container_dir(self, task_id):
        return os.path.join(self.state_dir, "containers", task_id)

    def conmon_pid(self, task_id):
        txt = read_text(os.path.join(self.container_dir(task_id), "conmon.pid"))
        return int(txt.strip()) if txt and txt.strip() else None

    def taskctl(self, *args, timeout=120, env=None, socket_path=None, input=None):
        """Runs $TASKCTL with the socket of this test; returns CompletedProcess (text;
        stdin is `input`, else empty)."""
        e = dict(os.environ)
        e["LAGOON_TASKD_SOCKET"] = socket_path or self.socket_path
        e.update(env or {})
        argv = [TASKCTL, "--socket", socket_path or self.socket_path, *args]
        try:
            return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  timeout=timeout, env=e, input=input or "")
        except subprocess.TimeoutExpired as ex:
            raise AssertionError(f"{' '.join(argv)} did not end within {timeout}s; output: "
                                 f"{ex.stdout!r} {ex.stderr!r}") from None


# ---------------------------------------------------------------------------------
# Entry point


def missing_requirements(needs_daemon=True):
    if os.geteuid() != 0:
        return "needs root"
    for name, path in (("runc", RUNC), ("conmon", CONMON), ("systemd-journald", JOURNALD),
                       ("journalctl", shutil.which("journalctl")), ("unshare", shutil.which("unshare"))):
        if not path:
            return f"{name} not found"
    if not os.access(BUSYBOX, os.X_OK):
        return "busybox-static not installed"
    if needs_daemon and not os.access(TASKD, os.X_OK):
        return f"daemon binary {TASKD} not built"
    if not os.path.exists(MAKE_BUNDLE):
        return f"{MAKE_BUNDLE} missing"
    return None


def make_bundle(dirpath):
    r = subprocess.run(["sh", MAKE_BUNDLE, dirpath], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env={**os.environ, "RUNTIME": RUNC})
    if r.returncode != 0:
        raise RuntimeError(f"make-demo-bundle.sh failed: {r.stdout.decode(errors='replace')}")
    return dirpath


def main(needs_journal=True, needs_bundle=True, needs_daemon=True):
    global SESSION_DIR, JOURNAL, BUNDLE
    name = os.path.basename(sys.argv[0])
    reason = missing_requirements(needs_daemon)
    if reason:
        print(f"{name}: SKIP: {reason}")
        sys.exit(77)
    if os.environ.get(MNTNS_MARKER) != "1":
        env = dict(os.environ)
        env[MNTNS_MARKER] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        argv = ["unshare", "-m", "--propagation", "private", "--", sys.executable, os.path.abspath(sys.argv[0]),
                *sys.argv[1:]]
        sys.stdout.flush()
        os.execvpe("unshare", argv, env)

    base = os.environ.get("LAGOON_IT_TMPDIR", "/var/tmp")
    SESSION_DIR = tempfile.mkdtemp(prefix=f"lagoon-it-{name[:-3]}.", dir=base)
    os.chmod(SESSION_DIR, 0o755)
    ok = False
    all_skipped = False
    try:
        if needs_journal:
            JOURNAL = Journald(SESSION_DIR)
            JOURNAL.start()
        if needs_bundle:
            BUNDLE = make_bundle(os.path.join(SESSION_DIR, "bundle-cli"))
        loader = unittest.TestLoader()
        main_mod = sys.modules["__main__"]
        names = [a for a in sys.argv[1:] if not a.startswith("-")]
        suite = loader.loadTestsFromNames(names, main_mod) if names else loader.loadTestsFromModule(main_mod)
        runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2)
        t0 = time.monotonic()
        result = runner.run(suite)
        failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
        skipped = len(result.skipped)
        passed = result.testsRun - failed - skipped
        print(f"{name}: {passed} passed, {failed} failed, {skipped} skipped "
              f"({time.monotonic() - t0:.1f}s)")
        if failed:
            print(f"{name}: failed: " + ", ".join(t.id().split(".", 1)[-1] for t, _ in result.failures + result.errors))
        ok = failed == 0
        all_skipped = result.testsRun > 0 and skipped == result.testsRun
    finally:
        if JOURNAL:
            JOURNAL.stop()
        for mp in sorted(mounts_under(SESSION_DIR), key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], stderr=subprocess.DEVNULL)
        if KEEP:
            print(f"kept {SESSION_DIR}")
        else:
            shutil.rmtree(SESSION_DIR, ignore_errors=True)
    sys.stdout.flush()
    if ok and all_skipped:
        sys.exit(77)
    sys.exit(0 if ok else 1)
