#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A test peer for the kubelet's HTTPS API (port 10250), as far as lagoon-taskd uses it
for discovery: GET /pods, the pods the kubelet runs on its node.

Modelled on kubernetes pkg/kubelet/server (v1.27-1.30):
  * GET /pods: 200, Content-Type application/json, a v1 PodList {"kind":"PodList",
    "apiVersion":"v1","metadata":{},"items":[...]} (items without kind/apiVersion; no
    resourceVersion: the kubelet's pod manager is not the API server's store).
  * Authentication (--authentication-token-webhook): a bearer token (--token T[=USER],
    --token-file) or a client certificate signed by --client-ca; none or a wrong one →
    401 with the plain-text body "Unauthorized", as the kubelet's auth filter answers.
    Authorization: users given with --deny USER get 403 "Forbidden (user=USER,
    verb=get, resource=nodes, subresource=proxy)" (the kubelet maps /pods to
    nodes/proxy).
  * GET /healthz: 200 "ok" without auth. Other paths: 404 "404 page not found".
Not modelled: /stats, /metrics, /logs, /exec, /containerLogs, /runningpods, the
read-only port 10255 (insecure; tests use the secure port only), webhook round trips.

Pods come from one of:
  --pods-file F   read on every request (the test rewrites it): a PodList, a list of
                  pods, or {"items": [...]}; a missing file is an empty list.
  --api-url URL   fake-kube-api.py's control API: GET URL/_test/pods?nodeName=N, so
                  the pods created through the API peer and scheduled to --node-name
                  show up, with the scripted statuses (--api-ca PEM: its CA).

Usage:
  fake-kubelet.py (--pods-file F | --api-url URL [--api-ca PEM]) [--node-name node-1]
                  [--tls-dir DIR | --tls-cert PEM --tls-key PEM] [--client-ca PEM]
                  [--token T[=USER]]... [--token-file F] [--deny USER]... [--port 0]
                  [--lifetime SECONDS] [--verbose]
It binds 127.0.0.1, prints the port on a line of its own on stdout, and serves until
SIGTERM/SIGINT or --lifetime seconds (default 600) have passed.
"""

import argparse
import importlib.util
import json
import os
import socket
import ssl
import sys
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("fake_kube_api", os.path.join(HERE, "fake-kube-api.py"))
api = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(api)

ARGS = None
TOKENS = {}


def load_pods():
    if ARGS.api_url:
        url = ARGS.api_url.rstrip("/") + "/_test/pods?nodeName=" + urllib.parse.quote(ARGS.node_name)
        ctx = ssl.create_default_context(cafile=ARGS.api_ca) if ARGS.api_ca else None
        with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
            items = json.load(r).get("items", [])
    else:
        try:
            with open(ARGS.pods_file) as f:
                data = json.load(f)
        except FileNotFoundError:
            data = []
        items = data if isinstance(data, list) else data.get("items", [])
    return [{k: v for k, v in p.items() if k not in ("kind", "apiVersion")} for p in items]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = ""

    def setup(self):
        super().setup()
        # Like Go's net/http (the real kubelet and API server): no Nagle delay on answers.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.settimeout(10)
            self.connection.do_handshake()  # a failure ends this connection only
            self.connection.settimeout(None)

    def handle(self):
        try:
            super().handle()
        except (ConnectionError, ssl.SSLError, OSError):
            pass

    def log_message(self, fmt, *args):
        if ARGS.verbose:
            print("fake-kubelet:", fmt % args, file=sys.stderr, flush=True)

    def send(self, code, body, ctype):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def user(self):
        auth = self.headers.get("Authorization")
        if auth:
            parts = auth.split(" ")
            if len(parts) == 2 and parts[0].lower() == "bearer":
                return TOKENS.get(parts[1])
            return None
        if isinstance(self.connection, ssl.SSLSocket):
            cert = self.connection.getpeercert()
            for rdn in (cert or {}).get("subject", ()):
                for k, v in rdn:
                    if k == "commonName":
                        return v
        return None

    def do_GET(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        path = self.path.split("?")[0]
        if path == "/healthz":
            return self.send(200, "ok", "text/plain; charset=utf-8")
        if path not in ("/pods", "/pods/"):
            return self.send(404, "404 page not found\n", "text/plain; charset=utf-8")
        user = self.user()
        if user is None:
            return self.send(401, "Unauthorized", "text/plain; charset=utf-8")
        if user in ARGS.deny:
            return self.send(403, f"Forbidden (user={user}, verb=get, resource=nodes, subresource=proxy)",
                             "text/plain; charset=utf-8")
        try:
            items = load_pods()
        except (OSError, ValueError) as e:
            return self.send(500, f"failed to list pods: {e}", "text/plain; charset=utf-8")
        self.send(200, json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}) + "\n",
                  "application/json")


def main():
    global ARGS
    p = argparse.ArgumentParser(description="Fake kubelet /pods for lagoon-taskd tests.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--pods-file")
    g.add_argument("--api-url")
    p.add_argument("--api-ca")
    p.add_argument("--node-name", default="node-1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls-dir")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--client-ca")
    p.add_argument("--token", action="append", default=[])
    p.add_argument("--token-file")
    p.add_argument("--deny", action="append", default=[])
    p.add_argument("--lifetime", type=float, default=600)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    args.plain = False
    if not args.tls_cert and not args.tls_dir:
        p.error("one of --tls-dir or --tls-cert/--tls-key is needed")
    ARGS = args
    api.ARGS = args
    tokens = list(args.token)
    if args.token_file:
        with open(args.token_file) as f:
            tokens += [ln.strip() for ln in f if ln.strip()]
    for t in tokens:
        tok, _, user = t.partition("=")
        TOKENS[tok] = user or "system:serviceaccount:lagoon:lagoon-taskd"
    ctx = api.server_context(args)
    server = api.Server(("127.0.0.1", args.port), Handler)
    api.serve(server, ctx, args.lifetime)


if __name__ == "__main__":
    main()
