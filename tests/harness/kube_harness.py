# SPDX-License-Identifier: LGPL-2.1-or-later
"""Helpers for tests that need a Kubernetes API server or a kubelet (Python 3 stdlib):
start/stop fake-kube-api.py and fake-kubelet.py (port read from their stdout, stopped
by PID, TLS material in the test's temp dir), an HTTPS client for the peer's API and
its /_test/ control API, client certificates signed by the peer's CA, and a minimal
kubeconfig writer for the daemon.

    api = KubeApiPeer(workdir, seeds=[DEPLOYMENT_CLI], seed_namespace="proj-main").start()
    api.set_script("busybox", {"steps": [{"start": True}, {"log": "hi"}, {"exit": 0}]})
    write_kubeconfig(path, api.url, ca_file=api.ca_file, token=api.token, namespace="proj-main")
    ...
    api.stop()
"""

import base64
import ctypes
import http.client
import json
import os
import select
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("TEST_SRCDIR") or os.path.dirname(os.path.dirname(HERE))
FAKE_KUBE_API = os.path.join(SRCDIR, "tests", "harness", "fake-kube-api.py")
FAKE_KUBELET = os.path.join(SRCDIR, "tests", "harness", "fake-kubelet.py")
FIXTURES = os.path.join(SRCDIR, "tests", "fixtures", "kubernetes")
DEPLOYMENT_CLI = os.path.join(FIXTURES, "deployment-cli.json")
DEFAULT_TOKEN = "test-token-0123456789"
DEFAULT_USER = "system:serviceaccount:lagoon:lagoon-taskd"


def missing():
    """Why the peers cannot run here, or None."""
    if not shutil.which("openssl"):
        return "openssl is not installed"
    if sys.version_info < (3, 7):
        return "python3 >= 3.7 is needed"
    return None


def _die_with_parent():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _openssl(*args):
    subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_ca(directory, cn="other-ca"):
    """A CA of its own (e.g. the "wrong CA" for TLS tests): (crt, key)."""
    os.makedirs(directory, exist_ok=True)
    crt, key = os.path.join(directory, "ca.crt"), os.path.join(directory, "ca.key")
    if not os.path.exists(crt):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650",
                 "-subj", f"/CN={cn}", "-keyout", key, "-out", crt,
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return crt, key


def make_client_cert(tls_dir, cn, name=None, ca=None):
    """A client certificate for user cn signed by the CA in tls_dir (ca.crt/ca.key, as the
    peers make them) or by ca=(crt, key): (crt, key) paths."""
    ca_crt, ca_key = ca or (os.path.join(tls_dir, "ca.crt"), os.path.join(tls_dir, "ca.key"))
    name = name or "client-" + "".join(c if c.isalnum() else "_" for c in cn)
    out_dir = os.path.dirname(ca_crt)
    crt, key, csr = (os.path.join(out_dir, name + ext) for ext in (".crt", ".key", ".csr"))
    ext = os.path.join(out_dir, name + ".ext")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={cn}",
             "-keyout", key, "-out", csr)
    with open(ext, "w") as f:
        f.write("extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-days", "3650",
             "-extfile", ext, "-out", crt)
    return crt, key


def write_kubeconfig(path, server, ca_file=None, token=None, token_file=None, client_cert=None, client_key=None,
                     namespace=None, embed=False, insecure=False, context="fake", cluster="fake", user="fake"):
    """A kubeconfig (YAML) with one cluster, user and context, current. embed=True puts
    the CA and client certificate/key inline as *-data (base64), as kind and k3s do."""
    def data(p):
        with open(p, "rb") as f:
            return base64.b64encode(f.read()).decode()

    def q(s):
        return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar
    lines = ["apiVersion: v1", "kind: Config", "preferences: {}", "clusters:", f"- name: {q(cluster)}",
             "  cluster:", f"    server: {q(server)}"]
    if ca_file:
        lines.append(f"    certificate-authority-data: {data(ca_file)}" if embed else
                     f"    certificate-authority: {q(ca_file)}")
    if insecure:
        lines.append("    insecure-skip-tls-verify: true")
    lines += ["users:", f"- name: {q(user)}", "  user:"]
    ulines = []
    if token:
        ulines.append(f"    token: {q(token)}")
    if token_file:
        ulines.append(f"    tokenFile: {q(token_file)}")
    if client_cert:
        ulines.append(f"    client-certificate-data: {data(client_cert)}" if embed else
                      f"    client-certificate: {q(client_cert)}")
    if client_key:
        ulines.append(f"    client-key-data: {data(client_key)}" if embed else f"    client-key: {q(client_key)}")
    if not ulines:
        lines[-1] = "  user: {}"
    lines += ulines
    lines += ["contexts:", f"- name: {q(context)}", "  context:", f"    cluster: {q(cluster)}",
              f"    user: {q(user)}"]
    if namespace:
        lines.append(f"    namespace: {q(namespace)}")
    lines.append(f"current-context: {q(context)}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.body[:300]!r}>"


class Stream:
    """An open streaming response (watch, log follow): lines() / events() as they come.
    The chunked framing is read here, so a connection cut without the final 0-chunk
    (a dropped watch) raises http.client.IncompleteRead instead of looking like a
    clean end."""

    def __init__(self, conn, resp):
        self.conn, self.resp = conn, resp
        self.status, self.headers = resp.status, dict(resp.getheaders())
        self.chunked = resp.chunked
        self.buf = b""
        self.done = False

    def _fill(self):
        fp = self.resp.fp
        line = fp.readline(1024) if fp else b""
        if not line:
            self.done = True
            raise http.client.IncompleteRead(self.buf)
        size = int(line.split(b";")[0].strip() or b"x", 16)
        if size == 0:
            while fp.readline(1024) not in (b"\r\n", b"\n", b""):
                pass
            self.done = True
            return
        data = fp.read(size)
        if len(data) < size:
            self.done = True
            raise http.client.IncompleteRead(data)
        fp.read(2)
        self.buf += data

    def readline(self):
        """One line (bytes, with "\\n"), b"" at a clean end. Raises IncompleteRead on a
        cut connection, socket.timeout on a timeout."""
        if not self.chunked:
            return self.resp.readline()
        while b"\n" not in self.buf and not self.done:
            self._fill()
        i = self.buf.find(b"\n")
        line, self.buf = (self.buf[:i + 1], self.buf[i + 1:]) if i >= 0 else (self.buf, b"")
        return line

    def events(self, count=None):
        """Decoded watch events until the stream ends (or count of them)."""
        out = []
        while count is None or len(out) < count:
            line = self.readline()
            if not line:
                break
            out.append(json.loads(line))
        return out

    def read_all(self):
        out = []
        while True:
            line = self.readline()
            if not line:
                return b"".join(out)
            out.append(line)

    def close(self):
        self.resp.close()
        self.conn.close()


class _Peer:
    name = "peer"

    def __init__(self, workdir, lifetime=300):
        self.workdir = workdir
        self.lifetime = lifetime
        self.proc = None
        self.port = None
        self.stderr_path = None

    def _start(self, cmd, timeout=30):
        os.makedirs(self.workdir, exist_ok=True)
        self.stderr_path = os.path.join(self.workdir, f"{self.name}.stderr")
        err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen([sys.executable, *cmd, "--lifetime", str(self.lifetime)],
                                     stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        err.close()
        end = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = end - time.monotonic()
            r, _, _ = select.select([self.proc.stdout], [], [], max(0, left))
            if not r:
                self.stop()
                raise RuntimeError(f"{self.name} printed no port in {timeout}s: {self.stderr()}")
            b = os.read(self.proc.stdout.fileno(), 1)
            if not b:
                self.proc.wait()
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.stderr()}")
            line += b
        self.port = int(line)
        return self

    def stderr(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10):
        """SIGTERM by PID, SIGKILL after timeout; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        rc = self.proc.returncode
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- HTTPS
    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}"

    def ssl_context(self, ca_file=None, cert=None, key=None):
        ctx = ssl.create_default_context(cafile=ca_file or self.ca_file)
        if cert:
            ctx.load_cert_chain(cert, key)
        return ctx

    def connection(self, timeout=30, **tls):
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=self.ssl_context(**tls))

    def request(self, method, path, body=None, token=..., content_type=None, headers=None, timeout=30, **tls):
        """One request on a new connection. token=... is the peer's first token; None sends
        none. body: bytes, str, or a JSON value."""
        conn = self.connection(timeout=timeout, **tls)
        try:
            hdrs = self._headers(token, content_type, body, headers)
            if body is not None and not isinstance(body, (bytes, str)):
                body = json.dumps(body)
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return Response(resp.status, dict(resp.getheaders()), resp.read())
        finally:
            conn.close()

    def stream(self, path, token=..., timeout=30, **tls):
        """GET path and hand back the open response (chunked watch or log follow)."""
        conn = self.connection(timeout=timeout, **tls)
        conn.request("GET", path, headers=self._headers(token, None, None, None))
        return Stream(conn, conn.getresponse())

    def _headers(self, token, content_type, body, headers):
        hdrs = {"Accept": "application/json"}
        if token is ...:
            token = self.token
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        if body is not None:
            hdrs["Content-Type"] = content_type or "application/json"
        hdrs.update(headers or {})
        return hdrs


class KubeApiPeer(_Peer):
    """fake-kube-api.py. tokens: accepted bearer tokens ("T" or "T=USER"); the first is
    .token. scripts: {image: script}. Other arguments map to its options."""
    name = "fake-kube-api"

    def __init__(self, workdir, tokens=(DEFAULT_TOKEN,), user=None, deny=(), namespaces=(), seeds=(),
                 seed_namespace=None, scripts=None, node_name=None, client_ca=None, tls_dir=None,
                 bookmark_interval=None, expired_watch=None, lifetime=300, extra_args=()):
        super().__init__(workdir, lifetime)
        self.tls_dir = tls_dir or os.path.join(workdir, "kube-tls")
        self.tokens = list(tokens)
        self.token = self.tokens[0].split("=", 1)[0] if self.tokens else None
        self.args = ["--tls-dir", self.tls_dir]
        for t in self.tokens:
            self.args += ["--token", t]
        if user:
            self.args += ["--user", user]
        for d in deny:
            self.args += ["--deny", d]
        for n in namespaces:
            self.args += ["--namespace", n]
        for s in seeds:
            self.args += ["--seed", s]
        if seed_namespace:
            self.args += ["--seed-namespace", seed_namespace]
        for image, script in (scripts or {}).items():
            p = os.path.join(workdir, f"script-{len(self.args)}.json")
            with open(p, "w") as f:
                json.dump(script, f)
            self.args += ["--script", f"{image}={p}"]
        if node_name:
            self.args += ["--node-name", node_name]
        if client_ca:
            self.args += ["--client-ca", client_ca]
        if bookmark_interval is not None:
            self.args += ["--bookmark-interval", str(bookmark_interval)]
        if expired_watch:
            self.args += ["--expired-watch", expired_watch]
        self.args += list(extra_args)

    def start(self, timeout=30):
        return self._start([FAKE_KUBE_API, *self.args], timeout)

    @property
    def ca_file(self):
        return os.path.join(self.tls_dir, "ca.crt")

    # -- API conveniences
    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def patch(self, path, body, content_type="application/merge-patch+json", **kw):
        return self.request("PATCH", path, body, content_type=content_type, **kw)

    def create_pod(self, namespace, pod):
        r = self.post(f"/api/v1/namespaces/{namespace}/pods", pod)
        if r.status != 201:
            raise AssertionError(f"pod create failed: {r}")
        return r.json()

    # -- control API (/_test/, no auth)
    def control(self, method, path, body=None):
        r = self.request(method, "/_test" + path, body, token=None)
        if r.status >= 300:
            raise AssertionError(f"control {method} {path}: {r}")
        return r.json()

    def state(self):
        return self.control("GET", "/state")

    def requests(self, clear=False):
        items = self.control("GET", "/requests")["items"]
        if clear:
            self.clear_requests()
        return items

    def clear_requests(self):
        self.control("DELETE", "/requests")

    def fail(self, status, path="/", method="*", count=1, retry_after=None, message=None):
        """The next count requests (method, path prefix) get that Status (0: connection closed)."""
        body = {"status": status, "path": path, "method": method, "count": count}
        if retry_after is not None:
            body["retryAfter"] = retry_after
        if message:
            body["message"] = message
        return self.control("POST", "/fail", body)

    def clear_failures(self):
        self.control("DELETE", "/fail")

    def drop_watches(self):
        return self.control("POST", "/drop-watches")["dropped"]

    def compact(self, notify=True):
        return self.control("POST", "/compact", {"notify": notify})

    def configure(self, expired_watch=None, bookmark_interval=None):
        body = {}
        if expired_watch:
            body["expiredWatch"] = expired_watch
        if bookmark_interval is not None:
            body["bookmarkInterval"] = bookmark_interval
        return self.control("POST", "/config", body)

    def add_token(self, token, user=None):
        self.control("POST", "/tokens", {"token": token, **({"user": user} if user else {})})

    def get_object(self, path):
        """path as in the API, e.g. /api/v1/namespaces/ns/pods/x; a collection lists."""
        return self.control("GET", "/objects" + path)

    def put_object(self, path, obj):
        return self.control("PUT", "/objects" + path, obj)

    def delete_object(self, path):
        return self.control("DELETE", "/objects" + path)

    def set_script(self, image, script):
        return self.control("PUT", "/scripts/" + urllib.parse.quote(image, safe=""), script)

    def advance(self, namespace, name, count=1):
        return self.control("POST", f"/pods/{namespace}/{name}/advance", {"count": count})

    def step(self, namespace, name, step):
        return self.control("POST", f"/pods/{namespace}/{name}/step", step)

    def pod(self, namespace, name):
        r = self.request("GET", f"/_test/objects/api/v1/namespaces/{namespace}/pods/{name}", token=None)
        return r.json() if r.status == 200 else None

    def wait_pod(self, namespace, name, predicate=lambda p: p is not None, timeout=10, what="pod condition"):
        end = time.monotonic() + timeout
        while True:
            p = self.pod(namespace, name)
            if predicate(p):
                return p
            if time.monotonic() > end:
                raise AssertionError(f"timeout waiting for {what} on {namespace}/{name}: {p}")
            time.sleep(0.05)

    def wait_phase(self, namespace, name, phase, timeout=10):
        return self.wait_pod(namespace, name, lambda p: p and p.get("status", {}).get("phase") == phase,
                             timeout, f"phase {phase}")


class KubeletPeer(_Peer):
    """fake-kubelet.py: pods from pods_file (write_pods()) or from api (a KubeApiPeer)."""
    name = "fake-kubelet"

    def __init__(self, workdir, api=None, pods_file=None, node_name=None, tokens=(DEFAULT_TOKEN,), tls_dir=None,
                 client_ca=None, deny=(), lifetime=300):
        super().__init__(workdir, lifetime)
        self.tls_dir = tls_dir or (api.tls_dir if api else os.path.join(workdir, "kubelet-tls"))
        self.tokens = list(tokens)
        self.token = self.tokens[0].split("=", 1)[0] if self.tokens else None
        self.pods_file = None
        if api is not None:
            self.args = ["--api-url", api.url, "--api-ca", api.ca_file]
        else:
            self.pods_file = pods_file or os.path.join(workdir, "kubelet-pods.json")
            self.args = ["--pods-file", self.pods_file]
        self.args += ["--tls-dir", self.tls_dir]
        if node_name:
            self.args += ["--node-name", node_name]
        for t in self.tokens:
            self.args += ["--token", t]
        if client_ca:
            self.args += ["--client-ca", client_ca]
        for d in deny:
            self.args += ["--deny", d]

    def start(self, timeout=30):
        return self._start([FAKE_KUBELET, *self.args], timeout)

    @property
    def ca_file(self):
        return os.path.join(self.tls_dir, "ca.crt")

    def write_pods(self, pods):
        """Atomically replaces what GET /pods answers (pods: a list of Pod objects)."""
        tmp = self.pods_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods}, f)
        os.rename(tmp, self.pods_file)

    def get_pods(self, **kw):
        return self.request("GET", "/pods", **kw)
