#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The Kubernetes test peers themselves (tests/harness/fake-kube-api.py,
fake-kubelet.py, kube_harness.py) against the real wire format, over real HTTPS with
http.client: authentication and RBAC errors, every resource and verb with its Status
errors, selectors, watches with resourceVersion, bookmarks, timeouts, compaction and
410, scripted pods, pod logs with follow/sinceTime/timestamps, merge-patch, graceful
deletion, TokenRequest, RoleBindings (validation, escalation check), injected failures,
dropped connections, the kubelet's /pods and a TLS client with the wrong CA. No root
needed; skips (77) without openssl."""

import http.client
import json
import os
import re
import shutil
import socket
import ssl
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "harness"))
import kube_harness as kh  # noqa: E402

NS = "proj-main"
RFC3339NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")

WAIT_SCRIPT = {"steps": [{"start": True}, {"wait": True}, {"exit": 0}]}
LOG_SCRIPT = {"steps": [
    {"delay": 0.2, "start": True},
    {"log": "first line"},
    {"log": "payload=${JSON_PAYLOAD}", "stream": "stdout"},
    {"wait": True},
    {"log": "after wait"},
    {"annotate": {"lagoon.sh/taskData": "eyJhIjoxfQ=="}},
    {"delay": 0.05, "exit": 3},
]}
PULL_SCRIPT = {"steps": [
    {"delay": 0.05, "waiting": "ErrImagePull", "message": 'failed to pull image "bad:1": not found'},
    {"delay": 0.05, "waiting": "ImagePullBackOff", "message": 'Back-off pulling image "bad:1"'},
]}
EVICT_SCRIPT = {"steps": [{"start": True}, {"log": "working"}, {"wait": True},
                          {"evict": "The node was low on resource: ephemeral-storage."}]}
GONE_SCRIPT = {"steps": [{"start": True}, {"wait": True}, {"delete": True}]}
CRASH_SCRIPT = {"steps": [{"start": True}, {"delay": 0.05, "waiting": "CrashLoopBackOff", "exitCode": 2}]}
SLOW_TERM_SCRIPT = {"steps": [{"start": True}, {"wait": True}], "termDelay": 0.2}


def pod(name=None, image="busybox:1.36", labels=None, generate=None, env=None, command=None, containers=None,
        node=None):
    md = {}
    if name:
        md["name"] = name
    if generate:
        md["generateName"] = generate
    if labels:
        md["labels"] = labels
    spec = {"restartPolicy": "Never", "containers": containers or [
        {"name": "task", "image": image, "command": command or ["/bin/sh", "-c", "echo hello"],
         "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec}


class KubePeerTest(unittest.TestCase):
    tmp = None
    api = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kube-peer-")
        cls.client_ca = kh.make_ca(os.path.join(cls.tmp, "client-ca"), "client-ca")
        cls.api = kh.KubeApiPeer(
            cls.tmp, tokens=(kh.DEFAULT_TOKEN, "other-token=jane"), seeds=[kh.DEPLOYMENT_CLI], seed_namespace=NS,
            namespaces=["locked"], deny=["create:pods:locked", "list:secrets:", "get:pods/log:locked",
                                            "bind:clusterroles:locked"],
            client_ca=cls.client_ca[0], bookmark_interval=0.3,
            scripts={"log:1": LOG_SCRIPT, "bad:1": PULL_SCRIPT, "wait:1": WAIT_SCRIPT}).start()

    @classmethod
    def tearDownClass(cls):
        if cls.api:
            rc = cls.api.stop()
            assert rc == 0, f"fake-kube-api exit status {rc}: {cls.api.stderr()}"
        if cls.tmp and os.environ.get("LAGOON_IT_KEEP") != "1":
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.api.clear_failures()

    # helpers
    def assertStatus(self, r, code, reason, message=None):
        self.assertEqual(r.status, code, r)
        self.assertTrue(r.headers.get("Content-Type", "").startswith("application/json"), r.headers)
        st = r.json()
        self.assertEqual(st["kind"], "Status", st)
        self.assertEqual(st["apiVersion"], "v1")
        self.assertEqual(st["metadata"], {})
        self.assertEqual(st["status"], "Failure")
        self.assertEqual(st["code"], code)
        self.assertEqual(st["reason"], reason, st)
        if message is not None:
            self.assertEqual(st["message"], message)
        return st

    def create(self, p, ns=NS):
        return self.api.create_pod(ns, p)

    def pods_path(self, ns=NS):
        return f"/api/v1/namespaces/{ns}/pods"

    # ------------------------------------------------------------------- auth, TLS
    def test_auth(self):
        self.assertStatus(self.api.get(self.pods_path(), token=None), 401, "Unauthorized", "Unauthorized")
        self.assertStatus(self.api.get(self.pods_path(), token="wrong"), 401, "Unauthorized")
        r = self.api.get(self.pods_path(), headers={"Authorization": "Basic Zm9vOmJhcg=="}, token=None)
        self.assertStatus(r, 401, "Unauthorized")
        self.assertEqual(self.api.get(self.pods_path()).status, 200)
        # A client certificate from --client-ca: user = CN.
        crt, key = kh.make_client_cert(None, "system:node:node-1", ca=self.client_ca)
        self.api.clear_requests()
        r = self.api.get(self.pods_path(), token=None, cert=crt, key=key)
        self.assertEqual(r.status, 200, r)
        reqs = self.api.requests()
        self.assertEqual(reqs[-1]["user"], "system:node:node-1")
        # A certificate from another CA is refused in the handshake or not taken as a user.
        other = kh.make_ca(os.path.join(self.tmp, "other-ca"), "other")
        crt2, key2 = kh.make_client_cert(None, "mallory", ca=other)
        try:
            r = self.api.get(self.pods_path(), token=None, cert=crt2, key=key2)
            self.assertStatus(r, 401, "Unauthorized")
        except (ssl.SSLError, ConnectionError):
            pass

    def test_tls_wrong_ca(self):
        other = kh.make_ca(os.path.join(self.tmp, "wrong-ca"), "wrong")
        with self.assertRaises(ssl.SSLCertVerificationError):
            self.api.get(self.pods_path(), ca_file=other[0])
        # Garbage instead of HTTP: Go's plain 400, and the server keeps serving.
        with socket.create_connection(("127.0.0.1", self.api.port), timeout=10) as raw:
            with self.api.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"\x00\xffgarbage \r\n\r\n")
                answer = tls.recv(4096)
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer)
        self.assertEqual(self.api.get("/version").status, 200)
        self.assertEqual(self.api.get("/version").json()["major"], "1")

    def test_forbidden(self):
        r = self.api.post(self.pods_path("locked"), pod("x"))
        self.assertStatus(r, 403, "Forbidden", 'pods is forbidden: User "system:serviceaccount:lagoon:lagoon-taskd" '
                          'cannot create resource "pods" in API group "" in the namespace "locked"')
        self.assertEqual(r.json()["details"], {"kind": "pods"})
        r = self.api.get("/api/v1/secrets")
        self.assertStatus(r, 403, "Forbidden", 'secrets is forbidden: User "system:serviceaccount:lagoon:'
                          'lagoon-taskd" cannot list resource "secrets" in API group "" at the cluster scope')
        r = self.api.get("/api/v1/namespaces/locked/pods/p1/log", token="other-token")
        self.assertStatus(r, 403, "Forbidden", 'pods "p1" is forbidden: User "jane" cannot get resource "pods/log" '
                          'in API group "" in the namespace "locked"')

    # -------------------------------------------------------------- plain objects
    def test_deployments_namespaces_serviceaccounts(self):
        r = self.api.get(f"/apis/apps/v1/namespaces/{NS}/deployments/cli")
        self.assertEqual(r.status, 200, r)
        d = r.json()
        self.assertEqual((d["kind"], d["apiVersion"]), ("Deployment", "apps/v1"))
        self.assertEqual(d["metadata"]["namespace"], NS)
        self.assertTrue(d["metadata"]["resourceVersion"].isdigit())
        self.assertIn("containers", d["spec"]["template"]["spec"])
        lst = self.api.get("/apis/apps/v1/deployments?labelSelector=lagoon.sh/service%3Dcli").json()
        self.assertEqual(lst["kind"], "DeploymentList")
        self.assertEqual([i["metadata"]["name"] for i in lst["items"]], ["cli"])
        self.assertNotIn("kind", lst["items"][0])
        r = self.api.get(f"/apis/apps/v1/namespaces/{NS}/deployments/nginx")
        st = self.assertStatus(r, 404, "NotFound", 'deployments.apps "nginx" not found')
        self.assertEqual(st["details"], {"name": "nginx", "group": "apps", "kind": "deployments"})
        self.assertEqual(self.api.get(f"/api/v1/namespaces/{NS}").json()["status"]["phase"], "Active")
        self.assertStatus(self.api.get("/api/v1/namespaces/nope"), 404, "NotFound", 'namespaces "nope" not found')
        self.assertStatus(self.api.get("/api/v1/namespaces/x/frobs"), 404, "NotFound",
                          "the server could not find the requested resource")
        self.assertEqual(self.api.get(f"/api/v1/namespaces/{NS}/serviceaccounts/default").status, 200)

    def test_token_request(self):
        path = f"/api/v1/namespaces/{NS}/serviceaccounts/default/token"
        r = self.api.post(path, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                 "spec": {"audiences": ["lagoon"], "expirationSeconds": 3600}})
        self.assertEqual(r.status, 201, r)
        tr = r.json()
        self.assertEqual(tr["kind"], "TokenRequest")
        self.assertEqual(tr["spec"]["audiences"], ["lagoon"])
        token = tr["status"]["token"]
        self.assertEqual(token.count("."), 2)
        self.assertRegex(tr["status"]["expirationTimestamp"], RFC3339NANO)
        self.assertEqual(self.api.get(self.pods_path(), token=token).status, 200)
        self.api.clear_requests()
        self.api.get(self.pods_path(), token=token)
        self.assertEqual(self.api.requests()[-1]["user"], f"system:serviceaccount:{NS}:default")
        self.assertStatus(self.api.post(f"/api/v1/namespaces/{NS}/serviceaccounts/nope/token", {}), 404,
                          "NotFound", 'serviceaccounts "nope" not found')
        r = self.api.post(path, {"spec": {"expirationSeconds": 60}})
        st = self.assertStatus(r, 422, "Invalid")
        self.assertIn("spec.expirationSeconds", st["message"])

    def test_secrets(self):
        r = self.api.post(f"/api/v1/namespaces/{NS}/secrets", {"apiVersion": "v1", "kind": "Secret",
                                                                "metadata": {"name": "s1"},
                                                                "stringData": {"k": "v"}})
        self.assertEqual(r.status, 201, r)
        s = self.api.get(f"/api/v1/namespaces/{NS}/secrets/s1").json()
        self.assertEqual(s["data"], {"k": "dg=="})
        self.assertEqual(s["type"], "Opaque")
        lst = self.api.get(f"/api/v1/namespaces/{NS}/secrets?fieldSelector=type%3DOpaque").json()
        self.assertEqual([i["metadata"]["name"] for i in lst["items"]], ["s1"])
        self.assertStatus(self.api.post(f"/api/v1/namespaces/{NS}/secrets", {"metadata": {"name": "s1"}}), 409,
                          "AlreadyExists", 'secrets "s1" already exists')

    # ------------------------------------------------------------------ pod create
    def test_pod_create_and_validation(self):
        r = self.api.post(self.pods_path(), pod(generate="task-", image="wait:1"))
        self.assertEqual(r.status, 201, r)
        p = r.json()
        md = p["metadata"]
        self.assertRegex(md["name"], r"^task-[bcdfghjklmnpqrstvwxz2456789]{5}$")
        self.assertRegex(md["uid"], r"^[0-9a-f-]{36}$")
        self.assertRegex(md["creationTimestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertTrue(md["resourceVersion"].isdigit())
        self.assertEqual(p["status"]["phase"], "Pending")
        self.assertEqual(p["spec"]["nodeName"], "node-1")
        self.assertEqual(p["status"]["containerStatuses"][0]["state"], {"waiting": {"reason": "ContainerCreating"}})
        r = self.api.post(self.pods_path(), pod(md["name"]))
        st = self.assertStatus(r, 409, "AlreadyExists", f'pods "{md["name"]}" already exists')
        self.assertEqual(st["details"], {"name": md["name"], "kind": "pods"})
        bad = pod("nocontainers")
        bad["spec"]["containers"] = []
        st = self.assertStatus(self.api.post(self.pods_path(), bad), 422, "Invalid",
                               'Pod "nocontainers" is invalid: spec.containers: Required value')
        self.assertEqual(st["details"]["causes"], [{"reason": "FieldValueRequired", "message": "Required value",
                                                    "field": "spec.containers"}])
        st = self.assertStatus(self.api.post(self.pods_path(), pod("noimage", containers=[{"name": "a"}])), 422,
                               "Invalid", 'Pod "noimage" is invalid: spec.containers[0].image: Required value')
        st = self.assertStatus(self.api.post(self.pods_path(), pod("Bad_Name")), 422, "Invalid")
        self.assertIn("metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain", st["message"])
        self.assertStatus(self.api.post(self.pods_path(), pod()), 422, "Invalid",
                          'Pod "" is invalid: metadata.name: Required value: name or generateName is required')
        self.assertStatus(self.api.post(self.pods_path(), b"{not json"), 400, "BadRequest")
        wrong = pod("w")
        wrong["metadata"]["namespace"] = "other"
        self.assertStatus(self.api.post(self.pods_path(), wrong), 400, "BadRequest",
                          "the namespace of the provided object does not match the namespace sent on the request")
        self.assertStatus(self.api.post(self.pods_path("nope"), pod("x")), 404, "NotFound",
                          'namespaces "nope" not found')
        self.assertStatus(self.api.get(self.pods_path() + "/nope"), 404, "NotFound", 'pods "nope" not found')

    # ------------------------------------------------------------------- selectors
    def test_selectors(self):
        ns = "sel"
        self.assertEqual(self.api.post("/api/v1/namespaces", {"metadata": {"name": ns}}).status, 201)
        self.create(pod("a", image="wait:1", labels={"app": "x", "tier": "web"}), ns)
        self.create(pod("b", image="wait:1", labels={"app": "y", "tier": "db"}), ns)
        self.create(pod("c", image="wait:1", labels={"app": "z"}, node="node-2"), ns)

        def names(q):
            r = self.api.get(f"/api/v1/namespaces/{ns}/pods?" + q)
            self.assertEqual(r.status, 200, r)
            j = r.json()
            self.assertEqual(j["kind"], "PodList")
            return [i["metadata"]["name"] for i in j["items"]]
        import urllib.parse as up

        def ls(s):
            return names("labelSelector=" + up.quote(s))
        self.assertEqual(ls("app=x"), ["a"])
        self.assertEqual(ls("app==y"), ["b"])
        self.assertEqual(ls("app!=x"), ["b", "c"])
        self.assertEqual(ls("app in (x, z)"), ["a", "c"])
        self.assertEqual(ls("app notin (x)"), ["b", "c"])
        self.assertEqual(ls("tier"), ["a", "b"])
        self.assertEqual(ls("!tier"), ["c"])
        self.assertEqual(ls("tier!=web"), ["b", "c"])
        self.assertEqual(ls("app in (x,y),tier=db"), ["b"])
        self.assertEqual(ls(""), ["a", "b", "c"])
        for bad in ("app in x", "app=(", "=x", "app=x,", "a b"):
            r = self.api.get(f"/api/v1/namespaces/{ns}/pods?labelSelector=" + up.quote(bad))
            st = self.assertStatus(r, 400, "BadRequest")
            self.assertTrue(st["message"].startswith("unable to parse requirement"), (bad, st))
        self.assertEqual(names("fieldSelector=" + up.quote("metadata.name=b")), ["b"])
        self.assertEqual(names("fieldSelector=" + up.quote("spec.nodeName=node-2")), ["c"])
        self.assertEqual(names("fieldSelector=" + up.quote("spec.nodeName!=node-2,metadata.name!=a")), ["b"])
        for n in ("a", "b", "c"):
            self.api.wait_phase(ns, n, "Running")
        self.assertEqual(names("fieldSelector=" + up.quote("status.phase=Running")), ["a", "b", "c"])
        self.assertEqual(names("fieldSelector=" + up.quote("status.phase=Pending")), [])
        self.assertEqual(names("fieldSelector=" + up.quote(f"metadata.namespace={ns}")), ["a", "b", "c"])
        st = self.assertStatus(self.api.get(f"/api/v1/namespaces/{ns}/pods?fieldSelector=spec.foo%3D1"), 400,
                               "BadRequest", "field label not supported: spec.foo")
        allns = self.api.get("/api/v1/pods?labelSelector=app%3Dz").json()
        self.assertEqual([(i["metadata"]["namespace"], i["metadata"]["name"]) for i in allns["items"]], [(ns, "c")])
        for n in ("a", "b", "c"):
            self.api.delete(f"/api/v1/namespaces/{ns}/pods/{n}?gracePeriodSeconds=0")

    # ----------------------------------------------------------------------- watch
    def test_watch_rv_bookmark_timeout(self):
        lst = self.api.get(self.pods_path()).json()
        rv = lst["metadata"]["resourceVersion"]
        w = self.api.stream(self.pods_path() + f"?watch=1&resourceVersion={rv}&fieldSelector=metadata.name%3Dw1"
                            "&allowWatchBookmarks=true&timeoutSeconds=30", timeout=10)
        self.assertEqual(w.status, 200)
        self.assertEqual(w.headers.get("Content-Type"), "application/json")
        self.assertEqual(w.headers.get("Transfer-Encoding"), "chunked")
        self.create(pod("w1", image="busybox:1.36", command=["true"]))
        seen = []
        last_rv = int(rv)
        while not (seen and seen[-1]["type"] == "BOOKMARK" and any(
                e["object"].get("status", {}).get("phase") == "Succeeded" for e in seen)):
            line = w.readline()
            self.assertTrue(line, seen)
            ev = json.loads(line)
            seen.append(ev)
            obj_rv = int(ev["object"]["metadata"]["resourceVersion"])
            self.assertGreaterEqual(obj_rv, last_rv)
            last_rv = obj_rv
        w.close()
        types = [e["type"] for e in seen]
        self.assertEqual(types[0], "ADDED", types)
        self.assertIn("BOOKMARK", types)
        bm = next(e for e in seen if e["type"] == "BOOKMARK")["object"]
        self.assertEqual(set(bm), {"kind", "apiVersion", "metadata"})
        self.assertEqual(set(bm["metadata"]), {"resourceVersion"})
        mods = [e["object"] for e in seen if e["type"] == "MODIFIED"]
        self.assertEqual(mods[-1]["status"]["phase"], "Succeeded")
        self.assertTrue(all(e["object"]["metadata"]["name"] == "w1" for e in seen if e["type"] != "BOOKMARK"))
        self.assertTrue(all(e["object"]["kind"] == "Pod" for e in seen))
        # rv "" → synthetic ADDED of the current state, then the stream ends at its timeout.
        w = self.api.stream(self.pods_path() + "?watch=true&fieldSelector=metadata.name%3Dw1&timeoutSeconds=1")
        evs = w.events()
        w.close()
        self.assertEqual([e["type"] for e in evs], ["ADDED"])
        self.assertEqual(evs[0]["object"]["status"]["phase"], "Succeeded")
        # A label selector: a patch moving a pod out of it is a DELETED event.
        self.create(pod("w2", image="wait:1", labels={"watch": "me"}))
        rv = self.api.get(self.pods_path()).json()["metadata"]["resourceVersion"]
        w = self.api.stream(self.pods_path() + f"?watch=1&resourceVersion={rv}&labelSelector=watch%3Dme")
        self.api.patch(self.pods_path() + "/w2", {"metadata": {"labels": {"watch": None}}})
        evs = w.events(count=1)
        w.close()
        self.assertEqual([e["type"] for e in evs], ["DELETED"])
        self.api.delete(self.pods_path() + "/w2?gracePeriodSeconds=0")

    def test_watch_compaction_and_410(self):
        self.create(pod("c1", image="wait:1"))
        self.api.wait_phase(NS, "c1", "Running")
        old_rv = self.api.get(self.pods_path()).json()["metadata"]["resourceVersion"]
        w = self.api.stream(self.pods_path() + f"?watch=1&resourceVersion={old_rv}")
        time.sleep(0.2)
        self.api.patch(self.pods_path() + "/c1", {"metadata": {"annotations": {"a": "1"}}})
        ev = json.loads(w.readline())
        self.assertEqual(ev["type"], "MODIFIED")
        self.api.compact()
        ev = json.loads(w.readline())
        self.assertEqual(ev["type"], "ERROR")
        st = ev["object"]
        self.assertEqual((st["kind"], st["status"], st["reason"], st["code"]), ("Status", "Failure", "Expired", 410))
        self.assertEqual(w.readline(), b"")  # the stream ends cleanly after the ERROR
        w.close()
        # A watch from an rv older than the compaction: 200 and one ERROR event (watch cache).
        self.api.patch(self.pods_path() + "/c1", {"metadata": {"annotations": {"a": "2"}}})
        w = self.api.stream(self.pods_path() + f"?watch=1&resourceVersion={old_rv}")
        self.assertEqual(w.status, 200)
        evs = w.events()
        w.close()
        self.assertEqual(len(evs), 1, evs)
        self.assertEqual(evs[0]["type"], "ERROR")
        self.assertEqual(evs[0]["object"]["code"], 410)
        self.assertRegex(evs[0]["object"]["message"], r"^too old resource version: \d+ \(\d+\)$")
        # Or, configured, a plain HTTP 410.
        self.api.configure(expired_watch="http")
        try:
            r = self.api.get(self.pods_path() + f"?watch=1&resourceVersion={old_rv}")
            self.assertStatus(r, 410, "Expired")
        finally:
            self.api.configure(expired_watch="event")
        # A fresh rv still works.
        rv = self.api.get(self.pods_path()).json()["metadata"]["resourceVersion"]
        w = self.api.stream(self.pods_path() + f"?watch=1&resourceVersion={rv}&timeoutSeconds=1")
        self.assertEqual(w.events(), [])
        w.close()
        self.assertStatus(self.api.get(self.pods_path() + "?watch=1&resourceVersion=abc"), 400, "BadRequest")
        self.api.delete(self.pods_path() + "/c1?gracePeriodSeconds=0")

    def test_drop_watches(self):
        w = self.api.stream(self.pods_path() + "?watch=1", timeout=5)
        w.events(count=1)  # the synthetic ADDED events start arriving
        time.sleep(0.1)
        self.assertGreaterEqual(self.api.drop_watches(), 1)
        with self.assertRaises((http.client.IncompleteRead, ConnectionError, socket.timeout, ssl.SSLError, OSError)):
            while True:
                if not w.readline():
                    raise AssertionError("clean end instead of a dropped connection")
        w.close()

    # ------------------------------------------------------------- scripted pods, logs
    def test_log_follow_since_time_and_task_data(self):
        p = self.create(pod("log1", image="log:1", env={"JSON_PAYLOAD": "eyJ4IjoxfQ=="}))
        self.assertEqual(p["status"]["phase"], "Pending")
        r = self.api.get(self.pods_path() + "/log1/log")
        self.assertStatus(r, 400, "BadRequest", 'container "task" in pod "log1" is waiting to start: '
                          'ContainerCreating')
        self.api.wait_phase(NS, "log1", "Running")
        running = self.api.pod(NS, "log1")["status"]["containerStatuses"][0]
        self.assertTrue(running["ready"])
        self.assertRegex(running["containerID"], r"^containerd://[0-9a-f]{64}$")
        self.assertIn("startedAt", running["state"]["running"])
        f = self.api.stream(self.pods_path() + "/log1/log?follow=true&timestamps=true", timeout=10)
        self.assertEqual(f.status, 200)
        self.assertTrue(f.headers["Content-Type"].startswith("text/plain"))
        first = f.readline().decode()
        stamp, _, text = first.rstrip("\n").partition(" ")
        self.assertRegex(stamp, RFC3339NANO)
        self.assertEqual(text, "first line")
        self.assertEqual(f.readline().decode().split(" ", 1)[1], "payload=eyJ4IjoxfQ==\n")
        self.api.advance(NS, "log1")
        third = f.readline().decode()
        self.assertTrue(third.endswith(" after wait\n"), third)
        self.assertEqual(f.readline(), b"")  # the container ended: the follow ends
        f.close()
        done = self.api.wait_phase(NS, "log1", "Failed")
        term = done["status"]["containerStatuses"][0]["state"]["terminated"]
        self.assertEqual((term["exitCode"], term["reason"]), (3, "Error"))
        self.assertEqual(done["metadata"]["annotations"]["lagoon.sh/taskData"], "eyJhIjoxfQ==")
        # sinceTime is inclusive, at the line's own (nanosecond) time.
        r = self.api.get(self.pods_path() + "/log1/log?sinceTime=" + stamp.replace(":", "%3A") + "&timestamps=1")
        self.assertEqual(len(r.text.splitlines()), 3, r.text)
        later = self.api.get(self.pods_path() + "/log1/log?timestamps=1").text.splitlines()[2].split(" ")[0]
        r = self.api.get(self.pods_path() + "/log1/log?sinceTime=" + later)
        self.assertEqual(r.text, "after wait\n")
        self.assertEqual(self.api.get(self.pods_path() + "/log1/log?sinceTime=2099-01-01T00:00:00Z").text, "")
        self.assertEqual(self.api.get(self.pods_path() + "/log1/log?tailLines=1").text, "after wait\n")
        self.assertEqual(self.api.get(self.pods_path() + "/log1/log?limitBytes=5").text, "first")
        self.assertStatus(self.api.get(self.pods_path() + "/log1/log?sinceTime=yesterday"), 400, "BadRequest")
        self.assertStatus(self.api.get(self.pods_path() + "/log1/log?container=other"), 400, "BadRequest",
                          "container other is not valid for pod log1")
        self.assertStatus(self.api.get(self.pods_path() + "/nope/log"), 404, "NotFound", 'pods "nope" not found')

    def test_log_needs_container_name(self):
        two = pod("two", containers=[{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}])
        self.create(two)
        self.api.wait_phase(NS, "two", "Succeeded")
        self.assertStatus(self.api.get(self.pods_path() + "/two/log"), 400, "BadRequest",
                          "a container name must be specified for pod two, choose one of: [a b]")
        self.assertEqual(self.api.get(self.pods_path() + "/two/log?container=b").text, "\n")

    def test_default_script_prints_command(self):
        self.create(pod("def1", image="unknown/image:2", command=["/bin/sh", "-c"], containers=None))
        self.api.wait_phase(NS, "def1", "Succeeded")
        self.assertEqual(self.api.get(self.pods_path() + "/def1/log").text, "/bin/sh -c\n")

    def test_image_pull_failure(self):
        self.create(pod("pull1", image="bad:1"))
        p = self.api.wait_pod(NS, "pull1", lambda p: p["status"]["containerStatuses"][0]["state"].get(
            "waiting", {}).get("reason") == "ImagePullBackOff")
        self.assertEqual(p["status"]["phase"], "Pending")
        self.assertEqual(p["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
                         'Back-off pulling image "bad:1"')
        self.assertStatus(self.api.get(self.pods_path() + "/pull1/log"), 400, "BadRequest",
                          'container "task" in pod "pull1" is waiting to start: ImagePullBackOff')

    def test_crash_loop_evict_external_delete(self):
        self.api.set_script("crash:1", CRASH_SCRIPT)
        self.api.set_script("evict:1", EVICT_SCRIPT)
        self.api.set_script("gone:1", GONE_SCRIPT)
        self.create(pod("crash1", image="crash:1"))
        p = self.api.wait_pod(NS, "crash1", lambda p: "waiting" in p["status"]["containerStatuses"][0]["state"]
                              and p["status"]["containerStatuses"][0]["restartCount"] == 1)
        cs = p["status"]["containerStatuses"][0]
        self.assertEqual(cs["state"]["waiting"]["reason"], "CrashLoopBackOff")
        self.assertEqual(cs["lastState"]["terminated"]["exitCode"], 2)
        self.assertEqual(p["status"]["phase"], "Running")
        self.create(pod("evict1", image="evict:1"))
        self.api.wait_phase(NS, "evict1", "Running")
        self.api.advance(NS, "evict1")
        p = self.api.wait_phase(NS, "evict1", "Failed")
        self.assertEqual(p["status"]["reason"], "Evicted")
        self.assertEqual(p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 137)
        self.assertEqual(self.api.get(self.pods_path() + "/evict1/log").text, "working\n")
        self.create(pod("gone1", image="gone:1"))
        self.api.wait_phase(NS, "gone1", "Running")
        rv = self.api.get(self.pods_path()).json()["metadata"]["resourceVersion"]
        w = self.api.stream(self.pods_path() + f"?watch=1&resourceVersion={rv}&fieldSelector=metadata.name%3Dgone1")
        self.api.advance(NS, "gone1")
        evs = w.events(count=1)
        w.close()
        self.assertEqual([e["type"] for e in evs], ["DELETED"])
        self.assertStatus(self.api.get(self.pods_path() + "/gone1"), 404, "NotFound")
        # A step through the control API acts at once.
        self.create(pod("step1", image="wait:1"))
        self.api.wait_phase(NS, "step1", "Running")
        self.api.step(NS, "step1", {"annotate": {"x": "y"}})
        self.api.step(NS, "step1", {"exit": 0})
        p = self.api.wait_phase(NS, "step1", "Succeeded")
        self.assertEqual(p["metadata"]["annotations"], {"x": "y"})

    # ---------------------------------------------------------------- patch, delete
    def test_merge_patch(self):
        self.create(pod("pt1", image="wait:1", labels={"a": "1"}))
        path = self.pods_path() + "/pt1"
        before = self.api.get(path).json()
        r = self.api.patch(path, {"metadata": {"annotations": {"lagoon.sh/taskData": "e30=", "k": "v"},
                                               "labels": {"b": "2"}}})
        self.assertEqual(r.status, 200, r)
        p = r.json()
        self.assertEqual(p["metadata"]["annotations"], {"lagoon.sh/taskData": "e30=", "k": "v"})
        self.assertEqual(p["metadata"]["labels"], {"a": "1", "b": "2"})
        self.assertGreater(int(p["metadata"]["resourceVersion"]), int(before["metadata"]["resourceVersion"]))
        self.assertEqual(p["metadata"]["uid"], before["metadata"]["uid"])
        p = self.api.patch(path, {"metadata": {"annotations": {"k": None}}}).json()
        self.assertEqual(p["metadata"]["annotations"], {"lagoon.sh/taskData": "e30="})
        for ct in ("application/json-patch+json", "application/json", "application/strategic-merge-patch+json"):
            r = self.api.patch(path, {"metadata": {}}, content_type=ct)
            st = self.assertStatus(r, 415, "UnsupportedMediaType")
            self.assertIn("application/merge-patch+json", st["message"])
        self.assertStatus(self.api.patch(path, b"[1"), 400, "BadRequest")
        self.assertStatus(self.api.patch(path, {"metadata": {"annotations": {"n": 1}}}), 422, "Invalid")
        self.assertStatus(self.api.patch(path, {"metadata": {"resourceVersion": "1"}}), 409, "Conflict")
        self.assertStatus(self.api.patch(self.pods_path() + "/nope", {}), 404, "NotFound")
        self.api.delete(path + "?gracePeriodSeconds=0")

    def test_role_bindings(self):
        """rbac.authorization.k8s.io/v1 RoleBindings as the active/standby switch uses
        them: 201 with the v1 defaults, 409 AlreadyExists, 404 on get/delete when absent,
        422 with ValidateRoleBinding's causes, 400 on wrong types, 422 on a changed
        roleRef, and 403 from the escalation check (no bind on the role)."""
        base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings"
        rb = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
              "metadata": {"name": "lagoon-deployer-activestandby"},
              "roleRef": {"kind": "ClusterRole", "name": "admin"},
              "subjects": [{"kind": "ServiceAccount", "name": "lagoon-deployer", "namespace": "proj-standby"}]}
        self.assertStatus(self.api.get(base + "/lagoon-deployer-activestandby"), 404, "NotFound",
                          'rolebindings.rbac.authorization.k8s.io "lagoon-deployer-activestandby" not found')
        r = self.api.post(base, rb)
        self.assertEqual(r.status, 201, r)
        out = r.json()
        self.assertEqual(out["kind"], "RoleBinding")
        self.assertEqual(out["apiVersion"], "rbac.authorization.k8s.io/v1")
        self.assertEqual(out["metadata"]["namespace"], NS)
        self.assertEqual(out["roleRef"], {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                          "name": "admin"})
        self.assertEqual(out["subjects"][0], rb["subjects"][0])
        self.assertEqual(self.api.get(base + "/lagoon-deployer-activestandby").json()["metadata"]["uid"],
                         out["metadata"]["uid"])
        self.assertStatus(self.api.post(base, rb), 409, "AlreadyExists",
                          'rolebindings.rbac.authorization.k8s.io "lagoon-deployer-activestandby" already exists')
        # The roleRef of a binding never changes (the object is deleted and made again).
        changed = json.loads(json.dumps(out))
        changed["roleRef"]["name"] = "edit"
        st = self.assertStatus(self.api.request("PUT", base + "/lagoon-deployer-activestandby", changed), 422,
                               "Invalid")
        self.assertIn("cannot change roleRef", st["message"])
        # Validation, with the causes the real server lists.
        bad = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "bad"},
               "roleRef": {"apiGroup": "example.com", "kind": "Thing"},
               "subjects": [{"kind": "ServiceAccount", "name": "Not_A_Name", "apiGroup": "x"},
                            {"kind": "Robot", "name": "r"}, {"kind": "User"}]}
        st = self.assertStatus(self.api.post(base, bad), 422, "Invalid")
        fields = [c["field"] for c in st["details"]["causes"]]
        self.assertEqual(fields, ["roleRef.apiGroup", "roleRef.kind", "roleRef.name", "subjects[0].name",
                                  "subjects[0].apiGroup", "subjects[1].kind", "subjects[2].name"])
        self.assertTrue(st["message"].startswith('RoleBinding.rbac.authorization.k8s.io "bad" is invalid: ['),
                        st["message"])
        self.assertIn('roleRef.kind: Unsupported value: "Thing": supported values: "Role", "ClusterRole"',
                      st["message"])
        self.assertStatus(self.api.post(base, dict(bad, roleRef="admin")), 400, "BadRequest")
        self.assertStatus(self.api.post(base, dict(rb, metadata={"name": "n2"}, subjects={"kind": "User"})), 400,
                          "BadRequest")
        self.assertStatus(self.api.get(base + "/bad"), 404, "NotFound")
        # Granting admin where the user may not bind it, and does not hold it all.
        locked = "/apis/rbac.authorization.k8s.io/v1/namespaces/locked/rolebindings"
        st = self.assertStatus(self.api.post(locked, rb), 403, "Forbidden")
        self.assertIn('rolebindings.rbac.authorization.k8s.io "lagoon-deployer-activestandby" is forbidden: user '
                      f'"{kh.DEFAULT_USER}" (groups=["system:serviceaccounts" "system:serviceaccounts:lagoon" '
                      '"system:authenticated"]) is attempting to grant RBAC permissions not currently held',
                      st["message"])
        self.assertStatus(self.api.get(locked + "/lagoon-deployer-activestandby"), 404, "NotFound")
        # A namespace that does not exist.
        self.assertStatus(self.api.post("/apis/rbac.authorization.k8s.io/v1/namespaces/nope/rolebindings", rb), 404,
                          "NotFound", 'namespaces "nope" not found')
        # Delete: 200 with the object, then 404.
        r = self.api.delete(base + "/lagoon-deployer-activestandby")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["metadata"]["uid"], out["metadata"]["uid"])
        self.assertStatus(self.api.delete(base + "/lagoon-deployer-activestandby"), 404, "NotFound")
        self.assertEqual(self.api.get(base).json()["items"], [])

    def test_leases(self):
        """coordination.k8s.io/v1 Leases as claims use them: create-if-absent (409
        AlreadyExists), updates that must name the version they replace (422 without
        one, 409 Conflict on a stale one), validation, delete preconditions (409 on a
        wrong uid or resourceVersion), watch events."""
        base = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": "task-1", "labels": {"lagoon.sh/taskd": "claim"}},
                 "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 30,
                          "acquireTime": "2026-12-03T10:00:00.000000Z", "renewTime": "2026-12-03T10:00:00.000000Z"}}
        rv0 = self.api.get(base).json()["metadata"]["resourceVersion"]
        w = self.api.stream(base + f"?watch=1&resourceVersion={rv0}&labelSelector=lagoon.sh%2Ftaskd%3Dclaim")
        r = self.api.post(base, lease)
        self.assertEqual(r.status, 201, r)
        first = r.json()
        self.assertEqual(first["kind"], "Lease")
        self.assertEqual(first["apiVersion"], "coordination.k8s.io/v1")
        self.assertEqual(first["spec"]["holderIdentity"], "node-1")
        # The second create loses, whoever sends it.
        other = json.loads(json.dumps(lease))
        other["spec"]["holderIdentity"] = "node-2"
        self.assertStatus(self.api.post(base, other), 409, "AlreadyExists",
                          'leases.coordination.k8s.io "task-1" already exists')
        self.assertEqual(self.api.get(base + "/task-1").json()["spec"]["holderIdentity"], "node-1")
        # Renewal: a PUT with the current resourceVersion; the old one is then stale.
        renewed = json.loads(json.dumps(first))
        renewed["spec"]["renewTime"] = "2026-12-03T10:00:10.123456Z"
        r = self.api.request("PUT", base + "/task-1", renewed)
        self.assertEqual(r.status, 200, r)
        second = r.json()
        self.assertGreater(int(second["metadata"]["resourceVersion"]), int(first["metadata"]["resourceVersion"]))
        self.assertEqual(second["metadata"]["uid"], first["metadata"]["uid"])
        stale = json.loads(json.dumps(first))
        stale["spec"]["holderIdentity"] = "node-2"
        st = self.assertStatus(self.api.request("PUT", base + "/task-1", stale), 409, "Conflict")
        self.assertIn("the object has been modified", st["message"])
        unconditional = json.loads(json.dumps(second))
        del unconditional["metadata"]["resourceVersion"]
        st = self.assertStatus(self.api.request("PUT", base + "/task-1", unconditional), 422, "Invalid")
        self.assertIn("metadata.resourceVersion: Invalid value: 0x0: must be specified for an update", st["message"])
        # Validation, as pkg/apis/coordination/validation and the decoder answer.
        bad = json.loads(json.dumps(lease))
        bad["metadata"]["name"] = "task-bad"
        bad["spec"]["leaseDurationSeconds"] = 0
        st = self.assertStatus(self.api.post(base, bad), 422, "Invalid")
        self.assertEqual(st["details"]["causes"][0]["field"], "spec.leaseDurationSeconds")
        bad["spec"]["leaseDurationSeconds"] = "30"
        self.assertStatus(self.api.post(base, bad), 400, "BadRequest")
        bad["spec"]["leaseDurationSeconds"] = 30
        bad["spec"]["renewTime"] = "yesterday"
        self.assertStatus(self.api.post(base, bad), 400, "BadRequest")
        self.assertStatus(self.api.get(base + "/task-bad"), 404, "NotFound")
        # Delete preconditions: only the claim one means goes.
        st = self.assertStatus(self.api.request("DELETE", base + "/task-1", {"preconditions": {"uid": "not-it"}}),
                               409, "Conflict")
        self.assertIn("Precondition failed: UID in precondition: not-it", st["message"])
        self.assertStatus(self.api.request("DELETE", base + "/task-1",
                                           {"preconditions": {"resourceVersion": first["metadata"]["resourceVersion"]}}),
                          409, "Conflict")
        r = self.api.request("DELETE", base + "/task-1", {"preconditions": {
            "uid": second["metadata"]["uid"], "resourceVersion": second["metadata"]["resourceVersion"]}})
        self.assertEqual(r.status, 200, r)
        self.assertStatus(self.api.get(base + "/task-1"), 404, "NotFound")
        # Once gone, the name can be claimed again.
        r = self.api.post(base, other)
        self.assertEqual(r.status, 201, r)
        self.assertNotEqual(r.json()["metadata"]["uid"], first["metadata"]["uid"])
        evs = w.events(count=4)
        w.close()
        self.assertEqual([e["type"] for e in evs], ["ADDED", "MODIFIED", "DELETED", "ADDED"])
        self.assertEqual(evs[3]["object"]["spec"]["holderIdentity"], "node-2")
        self.api.delete(base + "/task-1")

    def test_delete_graceful(self):
        self.api.set_script("slowterm:1", SLOW_TERM_SCRIPT)
        self.create(pod("del1", image="slowterm:1"))
        self.api.wait_phase(NS, "del1", "Running")
        rv = self.api.get(self.pods_path()).json()["metadata"]["resourceVersion"]
        w = self.api.stream(self.pods_path() + f"?watch=1&resourceVersion={rv}&fieldSelector=metadata.name%3Ddel1")
        r = self.api.request("DELETE", self.pods_path() + "/del1",
                             {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 5})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["metadata"]["deletionGracePeriodSeconds"], 5)
        self.assertIn("deletionTimestamp", r.json()["metadata"])
        evs = w.events(count=3)
        w.close()
        self.assertEqual([e["type"] for e in evs], ["MODIFIED", "MODIFIED", "DELETED"], evs)
        term = evs[-1]["object"]["status"]["containerStatuses"][0]["state"]["terminated"]
        self.assertEqual(term["exitCode"], 143)
        self.assertStatus(self.api.delete(self.pods_path() + "/del1"), 404, "NotFound", 'pods "del1" not found')
        # grace 0: gone at once.
        self.create(pod("del2", image="wait:1"))
        self.api.wait_phase(NS, "del2", "Running")
        self.assertEqual(self.api.delete(self.pods_path() + "/del2?gracePeriodSeconds=0").status, 200)
        self.assertEqual(self.api.get(self.pods_path() + "/del2").status, 404)
        # The same name again is a new pod (new uid, fresh log).
        self.create(pod("del2", image="busybox"))
        self.api.wait_phase(NS, "del2", "Succeeded")

    # -------------------------------------------------------------------- control API
    def test_injected_failures_and_request_log(self):
        self.api.fail(429, path=self.pods_path(), method="GET", count=2, retry_after=3)
        r = self.api.get(self.pods_path())
        st = self.assertStatus(r, 429, "TooManyRequests")
        self.assertEqual(r.headers.get("Retry-After"), "3")
        self.assertEqual(st["details"]["retryAfterSeconds"], 3)
        self.assertEqual(self.api.get(self.pods_path()).status, 429)
        self.assertEqual(self.api.get(self.pods_path()).status, 200)
        self.api.fail(500, path="/api/")
        self.assertStatus(self.api.get(self.pods_path()), 500, "InternalError")
        self.api.fail(503, path="/api/", method="POST")
        self.assertEqual(self.api.get(self.pods_path()).status, 200)
        self.assertStatus(self.api.post(self.pods_path(), pod("inj")), 503, "ServiceUnavailable")
        self.api.fail(0, path="/api/")
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self.api.get(self.pods_path())
        self.assertEqual(self.api.get(self.pods_path()).status, 200)
        self.api.clear_requests()
        self.api.post(self.pods_path() + "?dryRun=All", pod("logged", image="wait:1"))
        self.api.get(self.pods_path(), token="wrong")
        reqs = self.api.requests()
        self.assertEqual([(x["method"], x["path"]) for x in reqs],
                         [("POST", self.pods_path()), ("GET", self.pods_path())])
        self.assertEqual(reqs[0]["query"], "dryRun=All")
        self.assertEqual(reqs[0]["json"]["metadata"]["name"], "logged")
        self.assertEqual(reqs[0]["headers"]["Authorization"], "Bearer <redacted>")
        self.assertNotIn(kh.DEFAULT_TOKEN, json.dumps(reqs))
        self.assertIsNone(reqs[1]["user"])
        # Objects through the back door: a put is an event and a new rv.
        obj = self.api.get_object(self.pods_path() + "/logged")
        obj["metadata"]["annotations"] = {"put": "yes"}
        out = self.api.put_object(self.pods_path() + "/logged", obj)
        self.assertGreater(int(out["metadata"]["resourceVersion"]), int(obj["metadata"]["resourceVersion"]))
        self.assertEqual(self.api.get(self.pods_path() + "/logged").json()["metadata"]["annotations"], {"put": "yes"})
        self.api.delete_object(self.pods_path() + "/logged")
        self.assertEqual(self.api.get(self.pods_path() + "/logged").status, 404)


class KubeletPeerTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kubelet-peer-")
        self.peers = []

    def tearDown(self):
        for p in self.peers:
            self.assertEqual(p.stop(), 0, p.stderr())
        if os.environ.get("LAGOON_IT_KEEP") != "1":
            shutil.rmtree(self.tmp, ignore_errors=True)

    def test_pods_file(self):
        k = kh.KubeletPeer(self.tmp, deny=["bob"], tokens=(kh.DEFAULT_TOKEN, "bobs-token=bob")).start()
        self.peers.append(k)
        r = k.get_pods()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []})
        k.write_pods([{"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "cli-abc", "namespace": NS},
                       "spec": {"nodeName": "node-1"}, "status": {"phase": "Running"}}])
        items = k.get_pods().json()["items"]
        self.assertEqual([i["metadata"]["name"] for i in items], ["cli-abc"])
        self.assertNotIn("kind", items[0])
        r = k.get_pods(token=None)
        self.assertEqual((r.status, r.text), (401, "Unauthorized"))
        self.assertEqual(k.get_pods(token="nope").status, 401)
        r = k.get_pods(token="bobs-token")
        self.assertEqual((r.status, r.text), (403, "Forbidden (user=bob, verb=get, resource=nodes, "
                                                   "subresource=proxy)"))
        self.assertEqual(k.request("GET", "/healthz", token=None).text, "ok")
        self.assertEqual(k.request("GET", "/stats/summary").status, 404)
        other = kh.make_ca(os.path.join(self.tmp, "wrong-ca"), "wrong")
        with self.assertRaises(ssl.SSLCertVerificationError):
            k.get_pods(ca_file=other[0])

    def test_from_api_peer(self):
        api = kh.KubeApiPeer(self.tmp, node_name="node-7").start()
        self.peers.append(api)
        k = kh.KubeletPeer(self.tmp, api=api, node_name="node-7").start()
        self.peers.append(k)
        api.set_script("wait:1", WAIT_SCRIPT)
        api.create_pod("default", pod("here", image="wait:1"))
        api.create_pod("default", pod("there", image="wait:1", node="node-8"))
        api.wait_phase("default", "here", "Running")
        items = k.get_pods().json()["items"]
        self.assertEqual([i["metadata"]["name"] for i in items], ["here"])
        self.assertRegex(items[0]["status"]["containerStatuses"][0]["containerID"], r"^containerd://[0-9a-f]{64}$")


class KubeconfigTest(unittest.TestCase):
    def test_write(self):
        with tempfile.TemporaryDirectory() as d:
            ca = os.path.join(d, "ca.crt")
            with open(ca, "w") as f:
                f.write("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
            p = kh.write_kubeconfig(os.path.join(d, "kubeconfig"), "https://127.0.0.1:6443", ca_file=ca,
                                    token="t0k", namespace=NS)
            with open(p) as f:
                text = f.read()
            self.assertIn('    server: "https://127.0.0.1:6443"\n', text)
            self.assertIn(f'    certificate-authority: "{ca}"\n', text)
            self.assertIn('    token: "t0k"\n', text)
            self.assertIn(f'    namespace: "{NS}"\n', text)
            self.assertIn('current-context: "fake"\n', text)
            with open(kh.write_kubeconfig(p, "https://x", ca_file=ca, embed=True)) as f:
                text = f.read()
            self.assertIn("    certificate-authority-data: LS0tLS1CRUdJTi", text)
            try:
                import yaml
            except ImportError:
                return
            doc = yaml.safe_load(text)
            self.assertEqual(doc["clusters"][0]["cluster"]["server"], "https://x")


def main():
    why = kh.missing()
    if why:
        print(f"SKIP: {why}")
        sys.exit(77)
    start = time.monotonic()
    result = unittest.main(exit=False, verbosity=2).result
    print(f"{result.testsRun - len(result.failures) - len(result.errors)} passed, "
          f"{len(result.failures) + len(result.errors)} failed ({time.monotonic() - start:.1f}s)")
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
