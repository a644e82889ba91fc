#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A test peer for the Kubernetes API server, as far as lagoon-taskd uses it (issue 3):
pods (with a scripted "kubelet" that runs them), deployments, service accounts and
their tokens, secrets, namespaces, and any other object seeded from JSON files.

Modelled on kube-apiserver (k8s.io/apiserver + pkg/registry, v1.27-1.30):
  * Wire: HTTP/1.1 over TLS, application/json bodies (malformed HTTP: Go's plain-text
    "400 Bad Request" and the connection closed); errors are metav1.Status objects
    {"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message",
    "reason","details":{"name","group","kind"[,"causes"]},"code"} with the real messages
    and reasons: NotFound 404 ('pods "x" not found'), AlreadyExists 409, Conflict 409 (PUT
    with a stale resourceVersion), Invalid 422 ('Pod "x" is invalid: spec.containers:
    Required value', several causes in [..]), BadRequest 400 (bad selector, bad JSON,
    namespace mismatch, pod log errors), UnsupportedMediaType 415 (PATCH with a content
    type other than merge-patch), Unauthorized 401 (no/bad bearer token or client cert),
    Forbidden 403 (RBAC, the authorizer's exact message), Expired/Gone 410,
    MethodNotSupported 405, TooManyRequests 429 with Retry-After, InternalError 500,
    ServiceUnavailable 503 (the last three only when a test injects them).
  * Lists: {"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion"},"items"}
    (items without kind/apiVersion, as the server encodes them); labelSelector (=, ==,
    !=, in, notin, exists, !key, gt, lt) and fieldSelector (=, ==, != on metadata.name,
    metadata.namespace and, for pods, spec.nodeName, spec.restartPolicy,
    spec.serviceAccountName, spec.schedulerName, status.phase, status.podIP; secrets:
    type; others: 400 'field label not supported: x'); all-namespaces lists
    (/api/v1/pods, /apis/apps/v1/deployments, ...).
  * Watch (?watch=1|true): 200, chunked, one JSON event per line {"type":"ADDED"|
    "MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR","object":{...}}; resourceVersion ""/"0" →
    synthetic ADDED for current objects first; rv=N → every change after N; objects
    moving in/out of a selector give ADDED/DELETED as the watch cache does;
    allowWatchBookmarks → BOOKMARK events (object: kind, apiVersion, metadata.
    resourceVersion only) every --bookmark-interval; timeoutSeconds → the stream ends
    cleanly. A too-old rv (older than the last "compaction"): like the watch cache, 200
    and one ERROR event with a 410 Expired Status ('too old resource version: 5 (12)'),
    then end of stream (--expired-watch http: a plain HTTP 410 instead, as the
    uncached etcd path of old servers did). A compaction while a watch is open sends
    that ERROR event mid-stream and ends it.
  * Create: name or generateName (5 chars from the server's alphabet appended),
    RFC 1123 name validation, uid, resourceVersion (one global counter, strings),
    creationTimestamp, namespace must exist (404 'namespaces "x" not found'), 201 with
    the object. Pod defaults (restartPolicy Always, dnsPolicy, schedulerName,
    serviceAccountName default, terminationGracePeriodSeconds 30, imagePullPolicy,
    status.phase Pending, qosClass BestEffort); 422 for missing/empty containers or a
    container without name/image. Secrets: stringData is merged into data (base64).
  * Delete (query or DeleteOptions body gracePeriodSeconds): 200 with the object.
    A running pod is deleted gracefully: MODIFIED with deletionTimestamp and
    deletionGracePeriodSeconds, its container terminates (143 after the script's
    termDelay, or 137 when the grace period ends if the script sets ignoreTerm), then
    DELETED; a pod not running, or grace 0, goes at once. Namespaces get a "default"
    ServiceAccount, as the controller makes.
  * Leases (coordination.k8s.io/v1), as claims and leader election use them: create is
    create-if-absent (409 AlreadyExists), PUT must carry the resourceVersion it replaces
    (422 'metadata.resourceVersion: Invalid value: 0x0: must be specified for an update'
    without one, as leaseStrategy allows no unconditional update; 409 Conflict when
    stale), spec validation (leaseDurationSeconds > 0, leaseTransitions >= 0, MicroTime
    strings; wrong JSON types are 400 decode errors). DELETE honours
    DeleteOptions.preconditions {uid, resourceVersion}: 409 Conflict 'Precondition
    failed: UID in precondition: x, UID in object meta: y'.
  * RoleBindings (rbac.authorization.k8s.io/v1; roles, clusterroles and
    clusterrolebindings are stored as seeded, unchecked): the v1 defaults (roleRef.apiGroup,
    User/Group subjects' apiGroup), ValidateRoleBinding's 422 causes (roleRef.apiGroup,
    roleRef.kind Role|ClusterRole, roleRef.name required; subjects' kind
    ServiceAccount|User|Group, name required, a ServiceAccount's name a DNS subdomain and
    apiGroup ""), 400 on wrong JSON types, 422 'cannot change roleRef' on PUT, and the
    escalation check: with --deny bind:clusterroles:NS (bind:roles:NS) a binding of that
    role in NS is 403 'user "u" (groups=[...]) is attempting to grant RBAC permissions
    not currently held' (the fake's user holds everything else, so only bind decides).
  * PATCH with application/merge-patch+json (RFC 7386 on the whole object; metadata.
    name/namespace/uid kept); json-patch and strategic-merge also answered 415 here.
    PUT replaces (409 Conflict on a stale metadata.resourceVersion).
  * pods/log: text/plain, chunked; container (400 'a container name must be specified
    for pod y, choose one of: [a b]', 400 'container c is not valid for pod y'),
    follow (until the container terminates or the pod goes), timestamps (RFC3339Nano
    with trailing zeros trimmed, as Go prints), sinceTime (inclusive), sinceSeconds,
    tailLines, limitBytes, previous (400, no previous instance kept); a container that
    has not started: 400 'container "x" in pod "y" is waiting to start:
    ContainerCreating' (the waiting reason); a pod with no node: 400 'pod y does not
    have a host assigned'.
  * serviceaccounts/<n>/token (TokenRequest, authentication.k8s.io/v1): 201 with
    status.token (a JWT-shaped token accepted by this server as the service account
    "system:serviceaccount:<ns>:<n>" until it expires) and expirationTimestamp;
    expirationSeconds < 600 → 422.
  * Authentication: bearer tokens (--token T[=USER], --token-file), client certificates
    signed by --client-ca (user = CN). Authorization: everything allowed except
    --deny "verb:resource[/sub]:namespace" entries ("*" wildcards, an empty namespace
    is the cluster scope) → 403 with the RBAC authorizer's message ('pods "x" is
    forbidden: User "u" cannot get resource "pods/log" in API group "" in the
    namespace "ns"').
  * The scripted kubelet: a created pod is scheduled at once to --node-name (unless it
    names a node), its containers get state.waiting ContainerCreating, then it follows
    the script of its first container's image (--script IMAGE=FILE.json, PUT
    /_test/scripts/IMAGE, default: start, print the command, exit 0). Container statuses
    are the kubelet's: state.waiting.reason/message, state.running.startedAt,
    state.terminated {exitCode, reason Completed|Error|OOMKilled, startedAt,
    finishedAt, containerID}, ready, started, restartCount, image, imageID,
    containerID "containerd://<64 hex>"; pod conditions PodScheduled, Initialized,
    ContainersReady, Ready; phase Succeeded/Failed from the exit codes.

Not modelled: API discovery beyond /version, /api and /apis lists, limit/continue
pagination, resourceVersionMatch, server-side apply, strategic merge patch, JSON patch,
finalizers, ownerReferences and garbage collection, admission (quotas, pod security),
controllers (deployments do not make pods), real scheduling, init containers and
restarts by restartPolicy (the script says what happens), exec/attach/port-forward,
protobuf, HTTP/2, audit, impersonation, aggregated or field-level errors beyond those
listed, watch-list (sendInitialEvents), watches from a future resourceVersion (served
at once here, a 504 ResourceVersionTooLarge after 3 s on a real server), log rotation.

Script (JSON): {"steps": [STEP, ...], "termDelay": 0.1, "ignoreTerm": false}. Every
STEP may have "delay" (seconds before it) and "container" (default: every container):
  {"waiting": "ContainerCreating"|"ErrImagePull"|"ImagePullBackOff"|"CrashLoopBackOff",
   "message": "..."}    (CrashLoopBackOff: phase Running, restartCount+1, lastState)
  {"start": true}       running, ready
  {"log": "text ${VAR}", "stream": "stdout"|"stderr"}   one line per \\n-separated part;
                        ${VAR} is the container's env value (value only, not valueFrom)
  {"logCommand": true}  prints command + args joined by spaces
  {"annotate": {"k": "v"|null}}   merge into the pod's annotations
  {"label": {"k": "v"|null}}
  {"exit": N, "reason": "Completed"|"Error"|"OOMKilled"}   terminated; phase from codes
  {"evict": "message"}  phase Failed, reason Evicted, containers terminated 137
  {"delete": true, "grace": 0}    external deletion (as kubectl delete)
  {"wait": true}        stops until POST /_test/pods/NS/NAME/advance
  {"sleep": S}
Default script: [{"start":true},{"logCommand":true},{"exit":0}].

Control API (no auth), on the same port under /_test/:
  GET  /_test/state                 {"resourceVersion","compacted","watches","pods"}
  GET|DELETE /_test/requests        requests received so far (method, path, query,
                                    headers with the Authorization value replaced by
                                    its scheme + " <redacted>", user, body, json) / clear
  POST /_test/fail {"method":"GET","path":"/api/v1/namespaces/x/pods","count":1,
                    "status":500|429|503|..., "retryAfter":1, "message":"..."}
                                    the next count requests whose method matches ("*"
                                    any) and path starts with path (query ignored) get
                                    that Status after authentication; DELETE clears
  POST /_test/drop-watches          closes every open watch and log-follow connection
                                    abruptly (no final chunk) → {"dropped": n}
  POST /_test/compact {"notify": true}   older rvs → 410; open watches get ERROR 410
  GET|PUT|DELETE /_test/objects/<api path>   raw get (or list) / create-or-replace (an
                                    event is sent, rv bumped) / remove at once (DELETED)
  PUT  /_test/scripts/<image>       the script for pods of that image
  POST /_test/pods/NS/NAME/advance  releases a "wait" step
  POST /_test/pods/NS/NAME/step     runs one STEP on the pod now
  GET  /_test/pods?nodeName=N       PodList of the pods on node N (for fake-kubelet.py)
  POST /_test/tokens {"token","user"}   accept one more bearer token
  POST /_test/config {"expiredWatch":"event"|"http","bookmarkInterval":S}

Usage:
  fake-kube-api.py [--port 0] [--tls-dir DIR | --tls-cert PEM --tls-key PEM | --plain]
                   [--client-ca PEM] [--token T[=USER]]... [--token-file F]
                   [--user NAME] [--deny VERB:RESOURCE:NAMESPACE]... [--namespace NS]...
                   [--seed FILE.json]... [--seed-namespace NS] [--script IMAGE=FILE]...
                   [--node-name N] [--bookmark-interval S] [--expired-watch event|http]
                   [--lifetime SECONDS] [--verbose]
--tls-dir DIR makes (or reuses) DIR/ca.crt, ca.key, server.crt, server.key with the
openssl CLI (EC P-256, SAN 127.0.0.1 and localhost). Without --token/--token-file/
--client-ca every request is "system:anonymous" and allowed. A seed file holds one
object, a JSON list of objects, or a *List; objects without a namespace go to
--seed-namespace (default "default"). It binds 127.0.0.1, prints the port on a line of
its own on stdout, and serves until SIGTERM/SIGINT or --lifetime seconds (default 600).
"""

import argparse
import base64
import bisect
import copy
import datetime
import hashlib
import hmac
import json
import os
import random
import re
import signal
import socket
import ssl
import string
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY_MAX = 3 * 1024 * 1024  # the apiserver's request body limit
DEFAULT_USER = "system:serviceaccount:lagoon:lagoon-taskd"
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                 "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
                 "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")

# (api prefix, plural) → (kind, namespaced). Other kinds appear when seeded.
RESOURCES = {
    ("/api/v1", "pods"): ("Pod", True),
    ("/api/v1", "secrets"): ("Secret", True),
    ("/api/v1", "serviceaccounts"): ("ServiceAccount", True),
    ("/api/v1", "configmaps"): ("ConfigMap", True),
    ("/api/v1", "services"): ("Service", True),
    ("/api/v1", "persistentvolumeclaims"): ("PersistentVolumeClaim", True),
    ("/api/v1", "namespaces"): ("Namespace", False),
    ("/api/v1", "nodes"): ("Node", False),
    ("/apis/apps/v1", "deployments"): ("Deployment", True),
    ("/apis/apps/v1", "statefulsets"): ("StatefulSet", True),
    ("/apis/apps/v1", "replicasets"): ("ReplicaSet", True),
    ("/apis/batch/v1", "jobs"): ("Job", True),
    ("/apis/coordination.k8s.io/v1", "leases"): ("Lease", True),
    ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"): ("RoleBinding", True),
    ("/apis/rbac.authorization.k8s.io/v1", "roles"): ("Role", True),
    ("/apis/rbac.authorization.k8s.io/v1", "clusterroles"): ("ClusterRole", False),
    ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings"): ("ClusterRoleBinding", False),
}
RBAC_GROUP = "rbac.authorization.k8s.io"
CLUSTER_KINDS = {"Namespace", "Node", "PersistentVolume", "ClusterRole", "ClusterRoleBinding",
                 "StorageClass", "CustomResourceDefinition", "PriorityClass"}
POD_FIELDS = {
    "metadata.name": lambda o: o["metadata"].get("name", ""),
    "metadata.namespace": lambda o: o["metadata"].get("namespace", ""),
    "spec.nodeName": lambda o: o.get("spec", {}).get("nodeName", ""),
    "spec.restartPolicy": lambda o: o.get("spec", {}).get("restartPolicy", ""),
    "spec.schedulerName": lambda o: o.get("spec", {}).get("schedulerName", ""),
    "spec.serviceAccountName": lambda o: o.get("spec", {}).get("serviceAccountName", ""),
    "status.phase": lambda o: o.get("status", {}).get("phase", ""),
    "status.podIP": lambda o: o.get("status", {}).get("podIP", ""),
    "status.nominatedNodeName": lambda o: o.get("status", {}).get("nominatedNodeName", ""),
}
DEFAULT_SCRIPT = {"steps": [{"start": True}, {"logCommand": True}, {"exit": 0}]}


def log(*a):
    if ARGS is not None and ARGS.verbose:
        print("fake-kube-api:", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- time

def rfc3339(t=None):
    """metav1.Time: seconds precision, UTC, "Z"."""
    t = time.time() if t is None else t
    return datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339nano(ns):
    """Go's time.RFC3339Nano: fraction with trailing zeros trimmed, none when zero."""
    sec, frac = divmod(ns, 1_000_000_000)
    base = datetime.datetime.fromtimestamp(sec, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    f = f"{frac:09d}".rstrip("0")
    return base + ("." + f if f else "") + "Z"


TIME_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)$")


def parse_time_ns(s):
    m = TIME_RE.match(s)
    if not m:
        raise ApiError(status(400, "BadRequest",
                              f'parsing time "{s}" as "2006-01-02T15:04:05Z07:00": cannot parse "{s}" as "2006"'))
    y, mo, d, h, mi, se = (int(x) for x in m.groups()[:6])
    frac = int((m.group(7) or ".0")[1:].ljust(9, "0"))
    tz = m.group(8)
    off = 0
    if tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        off = sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    dt = datetime.datetime(y, mo, d, h, mi, se, tzinfo=datetime.timezone.utc)
    return (int(dt.timestamp()) - off) * 1_000_000_000 + frac


# -------------------------------------------------------------------------- status

def status(code, reason, message, name=None, kind=None, group=None, causes=None, retry_after=None):
    st = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
          "reason": reason}
    details = {}
    if name is not None:
        details["name"] = name
    if group:
        details["group"] = group
    if kind is not None:
        details["kind"] = kind
    if causes:
        details["causes"] = causes
    if retry_after is not None:
        details["retryAfterSeconds"] = retry_after
    if details or reason in ("NotFound", "AlreadyExists", "Invalid", "Conflict", "Forbidden"):
        st["details"] = details
    st["code"] = code
    return st


class ApiError(Exception):
    def __init__(self, st, headers=None):
        super().__init__(st["message"])
        self.status = st
        self.headers = headers or {}


def group_of(prefix):
    return "" if prefix == "/api/v1" else prefix.split("/")[2]


def not_found(res, name):
    return ApiError(status(404, "NotFound", f'{res.plural}{"." + res.group if res.group else ""} "{name}" not found',
                           name=name, kind=res.plural, group=res.group))


def invalid(kind, name, causes, group=""):
    """causes: [(field, type, message)], message as field/validation.Error prints it."""
    msgs = [f"{f}: {m}" for f, _, m in causes]
    text = msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
    qual = f"{kind}.{group}" if group else kind
    return ApiError(status(422, "Invalid", f'{qual} "{name}" is invalid: {text}', name=name, kind=kind, group=group,
                           causes=[{"reason": t, "message": m, "field": f} for f, t, m in causes]))


MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")


def validate_lease(obj):
    """coordination/v1 Lease validation (pkg/apis/coordination/validation): the spec
    fields' types and ranges; acquireTime/renewTime are MicroTime strings (a bad one is
    a decode error, 400, in the real server)."""
    spec = obj.get("spec") or {}
    if not isinstance(spec, dict):
        raise bad_request("json: cannot unmarshal into Go struct field Lease.spec of type v1.LeaseSpec")
    causes = []
    for f in ("holderIdentity", "leaseTransitions", "leaseDurationSeconds", "acquireTime", "renewTime"):
        v = spec.get(f)
        if v is None:
            continue
        if f == "holderIdentity" and not isinstance(v, str):
            raise bad_request(f"json: cannot unmarshal {type(v).__name__} into Go struct field "
                              f"LeaseSpec.spec.{f} of type string")
        if f in ("leaseTransitions", "leaseDurationSeconds") and (not isinstance(v, int) or isinstance(v, bool)):
            raise bad_request(f"json: cannot unmarshal {type(v).__name__} into Go struct field "
                              f"LeaseSpec.spec.{f} of type int32")
        if f in ("acquireTime", "renewTime") and (not isinstance(v, str) or not MICROTIME.match(v)):
            raise bad_request(f'parsing time "{v}" as "2006-01-02T15:04:05.000000Z07:00": cannot parse')
    d = spec.get("leaseDurationSeconds")
    if d is not None and d <= 0:
        causes.append(("spec.leaseDurationSeconds", "FieldValueInvalid", f"Invalid value: {d}: must be greater "
                       "than 0"))
    t = spec.get("leaseTransitions")
    if t is not None and t < 0:
        causes.append(("spec.leaseTransitions", "FieldValueInvalid", f"Invalid value: {t}: must be greater than "
                       "or equal to 0"))
    return causes


def bad_request(msg):
    return ApiError(status(400, "BadRequest", msg))


def not_supported(value, supported):
    """field.NotSupported's text."""
    return f'Unsupported value: "{value}": supported values: ' + ", ".join(f'"{v}"' for v in supported)


def validate_role_binding(obj):
    """rbac/v1 RoleBinding as the server takes it: the decoder's type checks (400), the
    v1 defaults (roleRef.apiGroup, and a User/Group subject's apiGroup, default to
    rbac.authorization.k8s.io), then pkg/apis/rbac/validation ValidateRoleBinding (a
    ServiceAccount subject of a RoleBinding needs no namespace: it defaults to the
    binding's). Returns the causes for a 422."""
    ref = obj.get("roleRef")
    if ref is None:
        ref = obj["roleRef"] = {}
    if not isinstance(ref, dict):
        raise bad_request("json: cannot unmarshal into Go struct field RoleBinding.roleRef of type v1.RoleRef")
    subjects = obj.get("subjects")
    if subjects is not None and (not isinstance(subjects, list) or not all(isinstance(x, dict) for x in subjects)):
        raise bad_request("json: cannot unmarshal into Go struct field RoleBinding.subjects of type []v1.Subject")
    for where, d in [("RoleRef", ref)] + [("Subject", x) for x in subjects or []]:
        for f in ("apiGroup", "kind", "name", "namespace"):
            if d.get(f) is not None and not isinstance(d[f], str):
                raise bad_request(f"json: cannot unmarshal {type(d[f]).__name__} into Go struct field "
                                  f"{where}.{f} of type string")
    if not ref.get("apiGroup"):
        ref["apiGroup"] = RBAC_GROUP
    causes = []
    if ref["apiGroup"] != RBAC_GROUP:
        causes.append(("roleRef.apiGroup", "FieldValueNotSupported", not_supported(ref["apiGroup"], [RBAC_GROUP])))
    if ref.get("kind", "") not in ("Role", "ClusterRole"):
        causes.append(("roleRef.kind", "FieldValueNotSupported",
                       not_supported(ref.get("kind", ""), ["Role", "ClusterRole"])))
    if not ref.get("name"):
        causes.append(("roleRef.name", "FieldValueRequired", "Required value"))
    elif "/" in ref["name"] or "%" in ref["name"] or ref["name"] in (".", ".."):
        causes.append(("roleRef.name", "FieldValueInvalid", f'Invalid value: "{ref["name"]}": may not contain '
                       "'/' or '%' or be '.' or '..'"))
    for i, sub in enumerate(subjects or []):
        path = f"subjects[{i}]"
        kind, name = sub.get("kind", ""), sub.get("name", "")
        if kind in ("User", "Group") and not sub.get("apiGroup"):
            sub["apiGroup"] = RBAC_GROUP
        if not name:
            causes.append((path + ".name", "FieldValueRequired", "Required value"))
        if kind == "ServiceAccount":
            if name and (len(name) > 253 or not DNS1123_SUBDOMAIN.match(name)):
                causes.append((path + ".name", "FieldValueInvalid", f'Invalid value: "{name}": {SUBDOMAIN_MSG}'))
            if sub.get("apiGroup"):
                causes.append((path + ".apiGroup", "FieldValueNotSupported", not_supported(sub["apiGroup"], [""])))
        elif kind in ("User", "Group"):
            if sub["apiGroup"] != RBAC_GROUP:
                causes.append((path + ".apiGroup", "FieldValueNotSupported",
                               not_supported(sub["apiGroup"], [RBAC_GROUP])))
        else:
            causes.append((path + ".kind", "FieldValueNotSupported",
                           not_supported(kind, ["ServiceAccount", "User", "Group"])))
    return causes


# ------------------------------------------------------------------------ selectors

LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                       r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def parse_label_selector(s):
    """→ list of (key, op, values). Grammar of k8s.io/apimachinery/pkg/labels."""
    reqs = []
    i, n = 0, len(s)

    def err(msg):
        raise bad_request(f"unable to parse requirement: {msg}")

    def skip_ws():
        nonlocal i
        while i < n and s[i] == " ":
            i += 1

    def ident():
        nonlocal i
        skip_ws()
        j = i
        while i < n and s[i] not in " ,()!=<>":
            i += 1
        return s[j:i]

    while True:
        skip_ws()
        if i >= n:
            if reqs or not s.strip():
                break
        neg = False
        if i < n and s[i] == "!":
            neg = True
            i += 1
        key = ident()
        if not key:
            err(f"found '{s[i] if i < n else ''}', expected: !, identifier, or 'end of string'")
        if len(key) > 316 or not LABEL_KEY.match(key):
            err(f'invalid label key "{key}": name part must consist of alphanumeric characters, \'-\', \'_\' '
                f"or '.', and must start and end with an alphanumeric character")
        skip_ws()
        if neg:
            reqs.append((key, "!", []))
        elif i >= n or s[i] == ",":
            reqs.append((key, "exists", []))
        elif s.startswith("==", i) or s.startswith("!=", i):
            op = s[i:i + 2]
            i += 2
            reqs.append((key, "!=" if op == "!=" else "=", [value_of(ident(), err)]))
        elif s[i] == "=":
            i += 1
            reqs.append((key, "=", [value_of(ident(), err)]))
        elif s[i] in "<>":
            op = "gt" if s[i] == ">" else "lt"
            i += 1
            v = ident()
            if not re.match(r"^-?\d+$", v):
                err(f"for 'Gt', 'Lt' operators, the value must be an integer")
            reqs.append((key, op, [v]))
        else:
            word = ident()
            if word not in ("in", "notin"):
                err(f"found '{word}', expected: in, notin, =, ==, !=, gt, lt")
            skip_ws()
            if i >= n or s[i] != "(":
                err(f"found '{s[i:i + 1]}', expected: '('")
            i += 1
            vals = []
            while True:
                v = ident()
                vals.append(value_of(v, err))
                skip_ws()
                if i < n and s[i] == ",":
                    i += 1
                    continue
                if i < n and s[i] == ")":
                    i += 1
                    break
                err(f"found '{s[i:i + 1]}', expected: ',', ')' or identifier")
            reqs.append((key, word, [v for v in vals if v != ""] or [""]))
        skip_ws()
        if i >= n:
            break
        if s[i] != ",":
            err(f"found '{s[i]}', expected: ',' or 'end of string'")
        i += 1
        if i >= n:
            err("found '', expected: !, identifier, or 'end of string'")
    return reqs


def value_of(v, err):
    if len(v) > 63 or not LABEL_VALUE.match(v):
        err(f'invalid label value: "{v}": at key: must be no more than 63 characters')
    return v


def labels_match(reqs, labels):
    labels = labels or {}
    for key, op, vals in reqs:
        has = key in labels
        v = labels.get(key)
        if op == "exists" and not has:
            return False
        if op == "!" and has:
            return False
        if op in ("=", "in") and (not has or v not in vals):
            return False
        if op in ("!=", "notin") and has and v in vals:
            return False
        if op in ("gt", "lt"):
            try:
                lv = int(v)
            except (TypeError, ValueError):
                return False
            if (op == "gt" and not lv > int(vals[0])) or (op == "lt" and not lv < int(vals[0])):
                return False
    return True


def parse_field_selector(s, kind):
    reqs = []
    fields = POD_FIELDS if kind == "Pod" else {
        "metadata.name": POD_FIELDS["metadata.name"], "metadata.namespace": POD_FIELDS["metadata.namespace"]}
    if kind == "Secret":
        fields = dict(fields, type=lambda o: o.get("type", ""))
    for part in s.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.match(r"^([^!=]+)(==|!=|=)(.*)$", part)
        if not m:
            raise bad_request(f"invalid selector: '{s}'; can't understand '{part}'")
        key, op, val = m.group(1).strip(), m.group(2), m.group(3).strip()
        if key not in fields:
            raise bad_request(f"field label not supported: {key}")
        reqs.append((fields[key], op != "!=", val))
    return reqs


def fields_match(reqs, obj):
    return all((get(obj) == val) == eq for get, eq, val in reqs)


# ---------------------------------------------------------------------------- store

class Resource:
    def __init__(self, prefix, plural, kind, namespaced):
        self.prefix, self.plural, self.kind, self.namespaced = prefix, plural, kind, namespaced
        self.group = group_of(prefix)
        self.api_version = prefix[len("/api/"):] if prefix.startswith("/api/") else prefix[len("/apis/"):]


def plural_of(kind):
    k = kind.lower()
    if k.endswith("s") or k.endswith("x") or k.endswith("ch"):
        return k + "es"
    if k.endswith("y") and k[-2:-1] not in "aeiou":
        return k[:-1] + "ies"
    return k + "s"


def prefix_of(api_version):
    return "/api/v1" if api_version == "v1" else "/apis/" + api_version


class Watch:
    def __init__(self, conn):
        self.conn = conn
        self.dropped = False
        self.expired = None  # a Status to send before ending


class PodRun:
    """The scripted kubelet's state for one pod (by uid)."""

    def __init__(self, ns, name, uid, script):
        self.ns, self.name, self.uid, self.script = ns, name, uid, script
        self.gone = False          # pod deleted: the runner stops
        self.killing = False       # graceful deletion in progress
        self.finished = False      # containers terminated
        self.advance = 0           # released "wait" steps
        self.logs = {}             # container → [(ns_time, stream, text)]
        self.started = set()       # containers that ran at least once
        self.container_ids = {}


class Store:
    def __init__(self):
        self.cond = threading.Condition()
        self.rv = 100
        self.compacted = 0
        self.objects = {}          # (prefix, plural, ns, name) → object
        self.events = []           # (rv, prefix, plural, type, obj, old)
        self.event_rvs = []
        self.watches = set()
        self.runs = {}             # pod uid → PodRun
        self.scripts = {}          # image → script
        self.tokens = {}           # token → (user, expiry or None)
        self.fail = []             # injected failures
        self.requests = []
        self.resources = {k: Resource(k[0], k[1], v[0], v[1]) for k, v in RESOURCES.items()}
        self.expired_watch = "event"
        self.bookmark_interval = 1.0

    # Called with cond held.
    def next_rv(self):
        self.rv += 1
        return self.rv

    def resource(self, prefix, plural):
        return self.resources.get((prefix, plural))

    def resource_for(self, obj):
        kind = obj.get("kind")
        api_version = obj.get("apiVersion")
        if not kind or not api_version:
            raise ValueError("object without kind/apiVersion")
        prefix = prefix_of(api_version)
        for r in self.resources.values():
            if r.prefix == prefix and r.kind == kind:
                return r
        r = Resource(prefix, plural_of(kind), kind, kind not in CLUSTER_KINDS)
        self.resources[(prefix, r.plural)] = r
        return r

    def emit(self, res, typ, obj, old=None):
        rv = int(obj["metadata"]["resourceVersion"])
        self.events.append((rv, res.prefix, res.plural, typ, copy.deepcopy(obj), old))
        self.event_rvs.append(rv)
        self.cond.notify_all()

    def typed(self, res, obj):
        o = {"kind": res.kind, "apiVersion": res.api_version}
        o.update({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})
        return o

    def put(self, res, obj, typ=None):
        """Stores obj (typed, with metadata) under a new rv and emits its event."""
        md = obj["metadata"]
        key = (res.prefix, res.plural, md.get("namespace", "") if res.namespaced else "", md["name"])
        old = self.objects.get(key)
        md["resourceVersion"] = str(self.next_rv())
        obj = self.typed(res, obj)
        self.objects[key] = obj
        self.emit(res, typ or ("MODIFIED" if old is not None else "ADDED"), obj, old)
        return obj

    def remove(self, res, key):
        obj = self.objects.pop(key)
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.next_rv())
        self.emit(res, "DELETED", obj)
        if res.kind == "Pod":
            run = self.runs.get(obj["metadata"].get("uid"))
            if run:
                run.gone = True
        return obj

    def new_metadata(self, md, ns):
        md = dict(md)
        if ns is not None:
            md["namespace"] = ns
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = rfc3339()
        md.pop("resourceVersion", None)
        md.pop("deletionTimestamp", None)
        return md

    def ensure_namespace(self, ns):
        res = self.resources[("/api/v1", "namespaces")]
        if ("/api/v1", "namespaces", "", ns) in self.objects:
            return
        self.put(res, {"metadata": self.new_metadata({"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                                                     None),
                       "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
        self.ensure_default_sa(ns)

    def ensure_default_sa(self, ns):
        sa = self.resources[("/api/v1", "serviceaccounts")]
        if ("/api/v1", "serviceaccounts", ns, "default") not in self.objects:
            self.put(sa, {"metadata": self.new_metadata({"name": "default"}, ns)})

    def namespace_exists(self, ns):
        return ("/api/v1", "namespaces", "", ns) in self.objects


STORE = Store()
ARGS = None
SERVER = None
TOKEN_KEY = os.urandom(32)


# ------------------------------------------------------------------------ kubelet

def pod_key(ns, name):
    return ("/api/v1", "pods", ns, name)


def container_names(pod):
    return [c.get("name") for c in pod.get("spec", {}).get("containers", [])]


def set_container_status(pod, cname, state, ready=None, started=None, run=None):
    st = pod.setdefault("status", {})
    cs_list = st.setdefault("containerStatuses", [])
    cs = next((c for c in cs_list if c["name"] == cname), None)
    spec = next((c for c in pod["spec"]["containers"] if c.get("name") == cname), {})
    if cs is None:
        cs = {"name": cname, "state": {}, "lastState": {}, "ready": False, "restartCount": 0,
              "image": spec.get("image", ""), "imageID": "", "started": False}
        cs_list.append(cs)
    cs["state"] = state
    if ready is not None:
        cs["ready"] = ready
    if started is not None:
        cs["started"] = started
    if run is not None and cname in run.container_ids:
        cs["containerID"] = run.container_ids[cname]
        cs["imageID"] = spec.get("image", "").split(":")[0] + "@sha256:" + \
            hashlib.sha256(spec.get("image", "").encode()).hexdigest()
    return cs


def set_condition(pod, typ, value, reason=None):
    conds = pod["status"].setdefault("conditions", [])
    c = next((c for c in conds if c["type"] == typ), None)
    if c is None:
        c = {"type": typ}
        conds.append(c)
    c.update({"status": "True" if value else "False", "lastProbeTime": None,
              "lastTransitionTime": rfc3339()})
    if reason:
        c["reason"] = reason
    else:
        c.pop("reason", None)


def env_of(pod, cname):
    spec = next((c for c in pod["spec"]["containers"] if c.get("name") == cname), {})
    return {e["name"]: e.get("value", "") for e in spec.get("env", []) or [] if "name" in e}


def add_log(run, cname, text, stream="stdout"):
    lines = run.logs.setdefault(cname, [])
    if text.endswith("\n"):
        text = text[:-1]
    for line in text.split("\n"):
        t = time.time_ns()
        if lines and t <= lines[-1][0]:
            t = lines[-1][0] + 1
        lines.append((t, stream, line))
    STORE.cond.notify_all()


def apply_step(run, step):
    """Runs one script step with STORE.cond held. Returns False when the pod is gone."""
    pod = STORE.objects.get(pod_key(run.ns, run.name))
    if pod is None or pod["metadata"]["uid"] != run.uid:
        run.gone = True
        return False
    res = STORE.resources[("/api/v1", "pods")]
    pod = copy.deepcopy(pod)
    names = container_names(pod)
    targets = [step["container"]] if step.get("container") else names
    st = pod.setdefault("status", {})
    now = rfc3339()
    if "waiting" in step:
        reason = step["waiting"]
        for c in targets:
            cs = set_container_status(pod, c, {"waiting": {"reason": reason, **(
                {"message": step["message"]} if step.get("message") else {})}}, ready=False, started=False, run=run)
            if reason == "CrashLoopBackOff":
                cs["restartCount"] += 1
                cs["lastState"] = {"terminated": {"exitCode": step.get("exitCode", 1), "reason": "Error",
                                                  "startedAt": now, "finishedAt": now,
                                                  "containerID": run.container_ids.get(c, "")}}
                cs["state"]["waiting"].setdefault(
                    "message", f"back-off 10s restarting failed container={c} pod={run.name}_{run.ns}({run.uid})")
                st["phase"] = "Running"
        set_condition(pod, "ContainersReady", False, "ContainersNotReady")
        set_condition(pod, "Ready", False, "ContainersNotReady")
    elif step.get("start"):
        for c in targets:
            seed = f"{run.uid}/{c}/{time.time_ns()}".encode()
            run.container_ids[c] = "containerd://" + hashlib.sha256(seed).hexdigest()
            run.started.add(c)
            set_container_status(pod, c, {"running": {"startedAt": now}}, ready=True, started=True, run=run)
        st["phase"] = "Running"
        st["podIP"] = "10.42.0.%d" % (int(hashlib.md5(run.uid.encode()).hexdigest()[:2], 16) % 250 + 2)
        st["podIPs"] = [{"ip": st["podIP"]}]
        set_condition(pod, "Initialized", True)
        set_condition(pod, "ContainersReady", True)
        set_condition(pod, "Ready", True)
    elif "log" in step or step.get("logCommand"):
        for c in targets:
            if step.get("logCommand"):
                spec = next((x for x in pod["spec"]["containers"] if x.get("name") == c), {})
                text = " ".join((spec.get("command") or []) + (spec.get("args") or []))
            else:
                text = string.Template(step["log"]).safe_substitute(env_of(pod, c))
            add_log(run, c, text, step.get("stream", "stdout"))
        return True  # no object change
    elif "annotate" in step or "label" in step:
        field = "annotations" if "annotate" in step else "labels"
        patch = step.get("annotate") if field == "annotations" else step.get("label")
        md = pod["metadata"]
        md[field] = merge_patch(md.get(field) or {}, patch)
    elif "exit" in step:
        codes = {}
        for c in targets:
            cs = set_container_status(pod, c, {}, run=run)
            started = cs["state"].get("running", {}).get("startedAt", now)
            code = int(step["exit"])
            codes[c] = code
            cs["state"] = {"terminated": {"exitCode": code, "reason": step.get("reason") or (
                "Completed" if code == 0 else "Error"), "startedAt": started, "finishedAt": now,
                "containerID": run.container_ids.get(c, "")}}
            cs["ready"] = False
            cs["started"] = False
        finish_pod(pod, run)
    elif "evict" in step:
        for c in names:
            cs = set_container_status(pod, c, {}, run=run)
            started = cs["state"].get("running", {}).get("startedAt", now)
            cs["state"] = {"terminated": {"exitCode": step.get("exitCode", 137), "reason": "Error",
                                          "startedAt": started, "finishedAt": now,
                                          "containerID": run.container_ids.get(c, "")}}
            cs["ready"] = False
            cs["started"] = False
        st["phase"] = "Failed"
        st["reason"] = "Evicted"
        st["message"] = step["evict"] or "The node was low on resource: memory. "
        set_condition(pod, "DisruptionTarget", True, "TerminationByKubelet")
        finish_pod(pod, run, phase="Failed")
    elif step.get("delete"):
        begin_delete(res, pod_key(run.ns, run.name), int(step.get("grace", 0)))
        return not run.gone
    else:
        return True
    STORE.put(res, pod)
    return True


def finish_pod(pod, run, phase=None):
    """All targeted containers ended: phase from the exit codes (restartPolicy Never)."""
    st = pod["status"]
    css = st.get("containerStatuses", [])
    if all("terminated" in cs["state"] for cs in css):
        run.finished = True
        if phase is None:
            phase = "Succeeded" if all(cs["state"]["terminated"]["exitCode"] == 0 for cs in css) else "Failed"
        st["phase"] = phase
        set_condition(pod, "ContainersReady", False, "PodCompleted")
        set_condition(pod, "Ready", False, "PodCompleted")
        STORE.cond.notify_all()


def wait_for(run, seconds):
    """Sleeps with STORE.cond held (released while waiting); False when the pod went."""
    end = time.monotonic() + seconds
    while not run.gone and not run.killing:
        left = end - time.monotonic()
        if left <= 0:
            return True
        STORE.cond.wait(left)
    return False


def run_pod(run):
    steps = run.script.get("steps", DEFAULT_SCRIPT["steps"])
    with STORE.cond:
        for step in steps:
            if not wait_for(run, float(step.get("delay", 0)) + float(step.get("sleep", 0))):
                return
            if step.get("wait"):
                while run.advance == 0 and not run.gone and not run.killing:
                    STORE.cond.wait(1)
                if run.gone or run.killing:
                    return
                run.advance -= 1
                continue
            if not apply_step(run, step) or run.finished:
                return


def schedule_pod(pod, script):
    """With STORE.cond held, right after create: bind to a node, ContainerCreating."""
    md = pod["metadata"]
    run = PodRun(md["namespace"], md["name"], md["uid"], script)
    STORE.runs[md["uid"]] = run
    spec = pod["spec"]
    spec.setdefault("nodeName", ARGS.node_name)
    st = pod["status"]
    st["hostIP"] = "127.0.0.1"
    st["hostIPs"] = [{"ip": "127.0.0.1"}]
    st["startTime"] = rfc3339()
    set_condition(pod, "PodScheduled", True)
    set_condition(pod, "Initialized", True)
    set_condition(pod, "ContainersReady", False, "ContainersNotReady")
    set_condition(pod, "Ready", False, "ContainersNotReady")
    for c in container_names(pod):
        set_container_status(pod, c, {"waiting": {"reason": "ContainerCreating"}}, ready=False, started=False)
    threading.Thread(target=run_pod, args=(run,), daemon=True).start()


def begin_delete(res, key, grace):
    """Pod deletion with STORE.cond held: at once, or graceful through the kubelet."""
    pod = STORE.objects[key]
    run = STORE.runs.get(pod["metadata"]["uid"])
    running = run is not None and not run.finished and any(
        "running" in cs["state"] for cs in pod.get("status", {}).get("containerStatuses", []))
    if grace == 0 or not running:
        return STORE.remove(res, key)
    if pod["metadata"].get("deletionTimestamp"):
        return pod
    pod = copy.deepcopy(pod)
    pod["metadata"]["deletionTimestamp"] = rfc3339(time.time() + grace)
    pod["metadata"]["deletionGracePeriodSeconds"] = grace
    obj = STORE.put(res, pod)
    run.killing = True
    STORE.cond.notify_all()
    threading.Thread(target=kill_pod, args=(res, key, run, grace), daemon=True).start()
    return obj


def kill_pod(res, key, run, grace):
    ignore = bool(run.script.get("ignoreTerm"))
    delay = grace if ignore else min(float(run.script.get("termDelay", 0.1)), grace)
    time.sleep(delay)
    with STORE.cond:
        pod = STORE.objects.get(key)
        if pod is None or pod["metadata"]["uid"] != run.uid:
            return
        pod = copy.deepcopy(pod)
        now = rfc3339()
        for cs in pod["status"].get("containerStatuses", []):
            if "running" in cs["state"]:
                cs["state"] = {"terminated": {"exitCode": 137 if ignore else 143, "reason": "Error",
                                              "startedAt": cs["state"]["running"]["startedAt"], "finishedAt": now,
                                              "containerID": run.container_ids.get(cs["name"], "")}}
                cs["ready"] = False
                cs["started"] = False
            elif "waiting" in cs["state"]:
                cs["state"] = {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                              "message": "The container could not be located when the pod was "
                                                         "terminated", "startedAt": None, "finishedAt": now}}
        finish_pod(pod, run)
        STORE.put(res, pod)
        STORE.remove(res, key)


# -------------------------------------------------------------------------- patches

def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# ------------------------------------------------------------------------ handlers

class Conn:
    """Lets /_test/drop-watches cut a streaming connection."""

    def __init__(self, sock):
        self.sock = sock

    def drop(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-apiserver"

    def setup(self):
        super().setup()
        # Like Go's net/http (the real kubelet and API server): no Nagle delay on answers.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.settimeout(10)
            try:
                self.connection.do_handshake()
            except (ssl.SSLError, OSError) as e:
                log("TLS handshake failed:", e)
                self.close_connection = True
                raise
            self.connection.settimeout(None)

    def handle(self):
        try:
            super().handle()
        except (ConnectionError, ssl.SSLError, OSError):
            pass

    def log_message(self, fmt, *args):
        log(fmt % args)

    def send_error(self, code, message=None, explain=None):
        """Malformed HTTP: Go's net/http answer, not Python's HTML page."""
        self.close_connection = True
        body = f"{code} {self.responses.get(code, ('Error',))[0]}".encode()
        try:
            self.wfile.write(b"HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n%s"
                             % (body, body))
        except OSError:
            pass

    # -- plumbing
    def send_json(self, code, obj, headers=None):
        data = (json.dumps(obj) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_status(self, e):
        self.send_json(e.status["code"], e.status, e.headers)

    def start_chunked(self, content_type):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def chunk(self, data):
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def end_chunked(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0] or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        if n > BODY_MAX:
            raise ApiError(status(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728"))
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def dispatch(self):
        url = urllib.parse.urlsplit(self.path)
        self.url_path = url.path
        self.query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        self.raw_query = url.query
        try:
            self.body = self.read_body()
        except ApiError as e:
            self.close_connection = True
            return self.send_status(e)
        if self.url_path.startswith("/_test/"):
            return self.control()
        try:
            entry = self.record()
            user = entry["user"] = self.authenticate()
            self.inject()
            self.api(user)
        except ApiError as e:
            self.send_status(e)
        except (BrokenPipeError, ConnectionError):
            self.close_connection = True

    def q(self, name, default=None):
        v = self.query.get(name)
        return v[0] if v else default

    def qbool(self, name):
        return self.q(name, "false").lower() in ("1", "true", "t")

    def record(self):
        headers = {}
        for k, v in self.headers.items():
            if k.lower() == "authorization":
                v = (v.split(" ", 1)[0] + " <redacted>") if v else v
            headers[k] = v
        entry = {"method": self.command, "path": self.url_path, "query": self.raw_query,
                 "params": {k: v[0] if len(v) == 1 else v for k, v in self.query.items()},
                 "headers": headers, "user": None, "body": self.body.decode("utf-8", "replace"),
                 "time": time.time()}
        try:
            entry["json"] = json.loads(self.body) if self.body else None
        except ValueError:
            entry["json"] = None
        with STORE.cond:
            STORE.requests.append(entry)
        return entry

    # -- authn, authz, injected failures
    def authenticate(self):
        need = bool(STORE.tokens) or bool(ARGS.client_ca)
        auth = self.headers.get("Authorization")
        if auth:
            parts = auth.split(" ")
            if len(parts) == 2 and parts[0].lower() == "bearer" and parts[1]:
                with STORE.cond:
                    ent = STORE.tokens.get(parts[1])
                if ent and (ent[1] is None or ent[1] > time.time()):
                    return ent[0]
            raise ApiError(status(401, "Unauthorized", "Unauthorized"))
        if isinstance(self.connection, ssl.SSLSocket):
            cert = self.connection.getpeercert()
            if cert:
                for rdn in cert.get("subject", ()):
                    for k, v in rdn:
                        if k == "commonName":
                            return v
        if need:
            raise ApiError(status(401, "Unauthorized", "Unauthorized"))
        return "system:anonymous"

    def authorize(self, user, verb, res, ns, name, sub=None):
        resource = res.plural + ("/" + sub if sub else "")
        for d in ARGS.deny:
            dv, dr, dns = (d.split(":") + ["*", "*"])[:3]
            if dv not in ("*", verb) or dr not in ("*", resource):
                continue
            if dns != "*" and dns != (ns or ""):  # "" is the cluster scope
                continue
            who = f'{res.plural}{"." + res.group if res.group else ""}'
            subject = f'{who} "{name}"' if name else who
            where = f'in the namespace "{ns}"' if ns else "at the cluster scope"
            raise ApiError(status(403, "Forbidden",
                                  f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
                                  f'in API group "{res.group}" {where}', name=name, kind=res.plural,
                                  group=res.group))

    def confirm_no_escalation(self, res, ns, obj):
        """A RoleBinding grants its role: the RBAC registry lets it through when the user
        may "bind" that role, or already holds every permission in it. Here the user holds
        everything not --deny'd, so a --deny of bind on the role (bind:clusterroles: for a
        ClusterRole, bind:roles:NS for a Role) stands for "neither": 403 with the
        registry's escalation message. As in the registry, this comes before validation."""
        ref = obj.get("roleRef") or {}
        cluster = ref.get("kind") == "ClusterRole"
        target = Resource("/apis/rbac.authorization.k8s.io/v1", "clusterroles" if cluster else "roles",
                          ref.get("kind"), not cluster)
        try:
            # BindingAuthorized asks in the binding's namespace, for either kind of role.
            self.authorize(self.user, "bind", target, ns, ref.get("name"))
        except ApiError:
            user = self.user
            groups = ["system:authenticated"]
            if user.startswith("system:serviceaccount:"):
                sa_ns = user.split(":")[2]
                groups = ["system:serviceaccounts", "system:serviceaccounts:" + sa_ns, "system:authenticated"]
            name = obj["metadata"].get("name", "")
            raise ApiError(status(403, "Forbidden", f'{res.plural}.{res.group} "{name}" is forbidden: user "{user}" '
                                  "(groups=[" + " ".join(f'"{g}"' for g in groups) + "]) is attempting to grant "
                                  "RBAC permissions not currently held:\n"
                                  '{APIGroups:["*"], Resources:["*"], Verbs:["*"]}', name=name, kind=res.plural,
                                  group=res.group))

    def inject(self):
        with STORE.cond:
            for f in STORE.fail:
                if f["count"] > 0 and f["method"] in ("*", self.command) and self.url_path.startswith(f["path"]):
                    f["count"] -= 1
                    code = f["status"]
                    break
            else:
                return
            STORE.fail = [f for f in STORE.fail if f["count"] > 0]
        headers = {}
        msg = f.get("message")
        if code == 429:
            ra = f.get("retryAfter", 1)
            headers["Retry-After"] = ra
            raise ApiError(status(429, "TooManyRequests", msg or "Too many requests, please try again later.",
                                  retry_after=ra), headers)
        if code == 503:
            if "retryAfter" in f:
                headers["Retry-After"] = f["retryAfter"]
            raise ApiError(status(503, "ServiceUnavailable", msg or "the server is currently unable to handle the "
                                  "request"), headers)
        if code == 504:
            raise ApiError(status(504, "Timeout", msg or "the server was unable to return a response in the time "
                                  "allotted, but may still be processing the request"))
        if code == 500:
            raise ApiError(status(500, "InternalError", "Internal error occurred: " + (msg or "scripted failure")))
        if code == 0:  # connection closed with no answer
            self.close_connection = True
            raise ConnectionError("scripted close")
        raise ApiError(status(code, "Unknown" if code >= 400 else "", msg or f"scripted failure: HTTP {code}"))

    # -- routing
    def api(self, user):
        self.user = user
        p = self.url_path.rstrip("/")
        if p == "/version":
            return self.send_json(200, {"major": "1", "minor": "29", "gitVersion": "v1.29.0-fake",
                                        "platform": "linux/amd64"})
        if p == "/api":
            return self.send_json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:%d" % SERVER.server_address[1]}]})
        if p == "/apis":
            with STORE.cond:
                groups = sorted({r.prefix for r in STORE.resources.values() if r.group})
            return self.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g.split("/")[2], "versions": [{"groupVersion": g[6:], "version": g.split("/")[3]}],
                 "preferredVersion": {"groupVersion": g[6:], "version": g.split("/")[3]}} for g in groups]})
        if p in ("/healthz", "/livez", "/readyz"):
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", "2")
            self.end_headers()
            return self.wfile.write(data)
        segs = p.split("/")[1:]
        if len(segs) >= 2 and segs[0] == "api" and segs[1] == "v1":
            prefix, rest = "/api/v1", segs[2:]
        elif len(segs) >= 3 and segs[0] == "apis":
            prefix, rest = "/" + "/".join(segs[:3]), segs[3:]
        else:
            raise ApiError(status(404, "NotFound", "the server could not find the requested resource", kind=None))
        ns = name = sub = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise self.unknown()
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        with STORE.cond:
            res = STORE.resource(prefix, plural)
        if res is None or (ns is not None and not res.namespaced) or (
                res.namespaced and ns is None and name is not None):
            raise self.unknown()
        m = self.command
        if sub:
            if res.kind == "Pod" and sub == "log" and m == "GET":
                self.authorize(user, "get", res, ns, name, sub)
                return self.pod_log(res, ns, name)
            if res.kind == "ServiceAccount" and sub == "token" and m == "POST":
                self.authorize(user, "create", res, ns, name, sub)
                return self.token_request(res, ns, name)
            raise self.unknown()
        if name is None:
            if m in ("GET", "HEAD"):
                watch = self.qbool("watch")
                self.authorize(user, "watch" if watch else "list", res, ns, None)
                return self.watch(res, ns) if watch else self.list(res, ns)
            if m == "POST":
                self.authorize(user, "create", res, ns, None)
                return self.create(res, ns)
            if m == "DELETE":
                raise self.not_allowed()
            raise self.not_allowed()
        verb = {"GET": "get", "HEAD": "get", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}.get(m)
        if verb is None:
            raise self.not_allowed()
        self.authorize(user, verb, res, ns, name)
        return getattr(self, "obj_" + verb)(res, ns, name)

    def unknown(self):
        return ApiError(status(404, "NotFound", "the server could not find the requested resource", kind=None))

    def not_allowed(self):
        return ApiError(status(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                               "resource", kind=None))

    def key(self, res, ns, name):
        return (res.prefix, res.plural, ns or "" if res.namespaced else "", name)

    def parse_body(self, kind):
        try:
            obj = json.loads(self.body)
        except ValueError as e:
            raise bad_request(f"couldn't get version/kind; json parse error: {e}")
        if not isinstance(obj, dict):
            raise bad_request("couldn't get version/kind; json parse error: json: cannot unmarshal "
                              f"{type(obj).__name__} into Go value of type struct {{ APIVersion string "
                              '"json:\\"apiVersion,omitempty\\""; Kind string "json:\\"kind,omitempty\\"" }')
        return obj

    # -- verbs
    def selectors(self, res):
        lsel = parse_label_selector(self.q("labelSelector", "") or "")
        fsel = parse_field_selector(self.q("fieldSelector", "") or "", res.kind)
        return lambda o: labels_match(lsel, o["metadata"].get("labels")) and fields_match(fsel, o)

    def matching(self, res, ns, match):
        out = []
        for (pr, pl, ons, _), o in STORE.objects.items():
            if pr == res.prefix and pl == res.plural and (ns is None or ons == ns) and match(o):
                out.append(o)
        out.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return out

    def list(self, res, ns):
        match = self.selectors(res)
        with STORE.cond:
            rv = self.q("resourceVersion")
            if rv and self.q("resourceVersionMatch") == "Exact" and rv.isdigit() and int(rv) <= STORE.compacted:
                raise ApiError(status(410, "Expired", f"too old resource version: {rv} ({STORE.compacted + 1})"))
            items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
                     for o in self.matching(res, ns, match)]
            body = {"kind": res.kind + "List", "apiVersion": res.api_version,
                    "metadata": {"resourceVersion": str(STORE.rv)}, "items": copy.deepcopy(items)}
        self.send_json(200, body)

    def obj_get(self, res, ns, name):
        with STORE.cond:
            o = STORE.objects.get(self.key(res, ns, name))
            o = copy.deepcopy(o)
        if o is None:
            raise not_found(res, name)
        self.send_json(200, o)

    def create(self, res, ns):
        obj = self.parse_body(res.kind)
        md = obj.get("metadata") or {}
        if not isinstance(md, dict):
            raise bad_request("metadata must be an object")
        if ns is not None and md.get("namespace") not in (None, "", ns):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        if obj.get("kind") not in (None, "", res.kind):
            raise bad_request(f'the kind of the provided object "{obj.get("kind")}" does not match the resource '
                              f'"{res.plural}"')
        with STORE.cond:
            name = md.get("name") or ""
            if not name and md.get("generateName"):
                base = md["generateName"][:58]
                for _ in range(100):
                    name = base + "".join(random.choice(NAME_ALPHABET) for _ in range(5))
                    if self.key(res, ns, name) not in STORE.objects:
                        break
            causes = []
            if not name:
                causes.append(("metadata.name", "FieldValueRequired", "Required value: name or generateName is "
                               "required"))
            elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
                causes.append(("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {SUBDOMAIN_MSG}'))
            if res.kind == "Pod":
                causes += self.validate_pod(obj)
            elif res.kind == "Lease":
                causes += validate_lease(obj)
            elif res.kind == "RoleBinding":
                causes += validate_role_binding(obj)
                obj.setdefault("metadata", md)["name"] = name
                self.confirm_no_escalation(res, ns, obj)
            if causes:
                raise invalid(res.kind, name, causes, res.group)
            if res.namespaced and not STORE.namespace_exists(ns):
                raise ApiError(status(404, "NotFound", f'namespaces "{ns}" not found', name=ns, kind="namespaces"))
            if self.key(res, ns, name) in STORE.objects:
                raise ApiError(status(409, "AlreadyExists", f'{res.plural}{"." + res.group if res.group else ""} '
                                      f'"{name}" already exists', name=name, kind=res.plural, group=res.group))
            md = STORE.new_metadata(md, ns if res.namespaced else None)
            md["name"] = name
            obj["metadata"] = md
            if res.kind == "Pod":
                self.default_pod(obj)
                script = STORE.scripts.get(obj["spec"]["containers"][0].get("image"), DEFAULT_SCRIPT)
                schedule_pod(obj, script)
            elif res.kind == "Secret":
                sd = obj.pop("stringData", None) or {}
                data = obj.setdefault("data", {})
                for k, v in sd.items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
                obj.setdefault("type", "Opaque")
            elif res.kind == "Namespace":
                md.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
                obj["spec"] = {"finalizers": ["kubernetes"]}
                obj["status"] = {"phase": "Active"}
            out = STORE.put(res, obj, "ADDED")
            if res.kind == "Namespace":
                STORE.ensure_default_sa(name)
            out = copy.deepcopy(out)
        self.send_json(201, out)

    def validate_pod(self, obj):
        spec = obj.get("spec")
        containers = spec.get("containers") if isinstance(spec, dict) else None
        if not isinstance(containers, list) or not containers:
            return [("spec.containers", "FieldValueRequired", "Required value")]
        causes = []
        seen = set()
        for i, c in enumerate(containers):
            if not isinstance(c, dict):
                causes.append((f"spec.containers[{i}]", "FieldValueInvalid", "Invalid value: not an object"))
                continue
            n = c.get("name")
            if not n:
                causes.append((f"spec.containers[{i}].name", "FieldValueRequired", "Required value"))
            elif n in seen:
                causes.append((f"spec.containers[{i}].name", "FieldValueDuplicate", f'Duplicate value: "{n}"'))
            seen.add(n)
            if not c.get("image"):
                causes.append((f"spec.containers[{i}].image", "FieldValueRequired", "Required value"))
        rp = spec.get("restartPolicy")
        if rp not in (None, "Always", "OnFailure", "Never"):
            causes.append(("spec.restartPolicy", "FieldValueNotSupported", f'Unsupported value: "{rp}": supported '
                           'values: "Always", "OnFailure", "Never"'))
        return causes

    def default_pod(self, obj):
        spec = obj["spec"]
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("securityContext", {})
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        for c in spec["containers"]:
            img = c["image"]
            tag = img.rsplit("/", 1)[-1]
            c.setdefault("imagePullPolicy", "Always" if ":" not in tag or tag.endswith(":latest") else
                         "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("resources", {})
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}

    def grace(self):
        g = self.q("gracePeriodSeconds")
        if g is None and self.body:
            try:
                opts = json.loads(self.body)
                g = opts.get("gracePeriodSeconds") if isinstance(opts, dict) else None
            except ValueError as e:
                raise bad_request(f"couldn't get version/kind; json parse error: {e}")
        if g is None:
            return None
        try:
            return max(0, int(g))
        except (TypeError, ValueError):
            raise bad_request(f'strconv.ParseInt: parsing "{g}": invalid syntax')

    def preconditions(self):
        if not self.body:
            return {}
        try:
            opts = json.loads(self.body)
        except ValueError as e:
            raise bad_request(f"couldn't get version/kind; json parse error: {e}")
        pre = opts.get("preconditions") if isinstance(opts, dict) else None
        return pre if isinstance(pre, dict) else {}

    def obj_delete(self, res, ns, name):
        grace = self.grace()
        pre = self.preconditions()
        with STORE.cond:
            key = self.key(res, ns, name)
            o = STORE.objects.get(key)
            if o is None:
                raise not_found(res, name)
            # DeleteOptions.preconditions (uid, resourceVersion): 409 Conflict with the
            # registry's message when the object is not the one the client means.
            for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                want = pre.get(field)
                if want is not None and want != o["metadata"].get(field):
                    raise ApiError(status(409, "Conflict", f"Operation cannot be fulfilled on {res.plural}"
                                          f'{"." + res.group if res.group else ""} "{name}": Precondition failed: '
                                          f"{label} in precondition: {want}, {label} in object meta: "
                                          f'{o["metadata"].get(field)}', name=name, kind=res.plural,
                                          group=res.group))
            if res.kind == "Pod":
                if grace is None:
                    grace = int(o["spec"].get("terminationGracePeriodSeconds", 30))
                out = begin_delete(res, key, grace)
            else:
                out = STORE.remove(res, key)
            out = copy.deepcopy(out)
        self.send_json(200, out)

    def obj_patch(self, res, ns, name):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype != "application/merge-patch+json":
            raise ApiError(status(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                  "accepted media types include: application/json-patch+json, "
                                  "application/merge-patch+json, application/apply-patch+yaml"
                                  + (", application/strategic-merge-patch+json" if res.group in ("", "apps", "batch")
                                     else ""), kind=None))
        try:
            patch = json.loads(self.body)
        except ValueError as e:
            raise bad_request(f"error decoding patch: {e}")
        if not isinstance(patch, dict):
            raise bad_request("error decoding patch: json: cannot unmarshal into Go value of type map[string]"
                              "interface {}")
        with STORE.cond:
            key = self.key(res, ns, name)
            o = STORE.objects.get(key)
            if o is None:
                raise not_found(res, name)
            want_rv = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(
                patch.get("metadata"), dict) else None
            if want_rv and want_rv != o["metadata"]["resourceVersion"]:
                raise self.conflict(res, name)
            new = merge_patch(o, patch)
            if not isinstance(new.get("metadata"), dict):
                new["metadata"] = {}
            for k in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp"):
                if k in o["metadata"]:
                    new["metadata"][k] = o["metadata"][k]
                else:
                    new["metadata"].pop(k, None)
            for k in ("annotations", "labels"):
                v = new["metadata"].get(k)
                if v is not None and (not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values())):
                    raise invalid(res.kind, name, [(f"metadata.{k}", "FieldValueInvalid", "Invalid value: "
                                                    "must be a map of strings")], res.group)
            if new == o:  # a no-op patch keeps the resourceVersion and sends no event
                out = copy.deepcopy(o)
            else:
                out = copy.deepcopy(STORE.put(res, new, "MODIFIED"))
        self.send_json(200, out)

    def conflict(self, res, name):
        return ApiError(status(409, "Conflict", f'Operation cannot be fulfilled on {res.plural}'
                               f'{"." + res.group if res.group else ""} "{name}": the object has been modified; '
                               "please apply your changes to the latest version and try again",
                               name=name, kind=res.plural, group=res.group))

    def obj_update(self, res, ns, name):
        obj = self.parse_body(res.kind)
        md = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        if md.get("name") not in (None, name):
            raise bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                              % (md.get("name"), name))
        with STORE.cond:
            key = self.key(res, ns, name)
            o = STORE.objects.get(key)
            if o is None:
                raise not_found(res, name)
            if not md.get("resourceVersion") and res.kind == "Lease":
                # leaseStrategy.AllowUnconditionalUpdate() is false: an update must say
                # which version it replaces.
                raise invalid(res.kind, name, [("metadata.resourceVersion", "FieldValueInvalid",
                                                "Invalid value: 0x0: must be specified for an update")], res.group)
            if md.get("resourceVersion") and md["resourceVersion"] != o["metadata"]["resourceVersion"]:
                raise self.conflict(res, name)
            if res.kind == "Lease":
                causes = validate_lease(obj)
                if causes:
                    raise invalid(res.kind, name, causes, res.group)
            if res.kind == "RoleBinding":
                causes = validate_role_binding(obj)
                if not causes and obj["roleRef"] != o.get("roleRef"):
                    r = obj["roleRef"]
                    causes = [("roleRef", "FieldValueInvalid", "Invalid value: rbac.RoleRef{APIGroup:"
                               f'"{r.get("apiGroup", "")}", Kind:"{r.get("kind", "")}", Name:"{r.get("name", "")}"'
                               "}: cannot change roleRef")]
                self.confirm_no_escalation(res, ns, obj)
                if causes:
                    raise invalid(res.kind, name, causes, res.group)
            md = dict(md)
            for k in ("name", "namespace", "uid", "creationTimestamp"):
                if k in o["metadata"]:
                    md[k] = o["metadata"][k]
            obj["metadata"] = md
            if res.kind == "Pod":
                obj["status"] = o.get("status", {})
            out = copy.deepcopy(STORE.put(res, obj, "MODIFIED"))
        self.send_json(200, out)

    # -- watch
    def watch(self, res, ns):
        match = self.selectors(res)
        rv_s = self.q("resourceVersion", "") or ""
        if rv_s and not rv_s.isdigit():
            raise bad_request(f'invalid resource version "{rv_s}"')
        timeout = self.q("timeoutSeconds")
        deadline = time.monotonic() + float(timeout) if timeout else None
        bookmarks = self.qbool("allowWatchBookmarks")
        w = Watch(Conn(self.connection))
        with STORE.cond:
            if rv_s not in ("", "0") and int(rv_s) < STORE.compacted:
                expired = status(410, "Expired", f"too old resource version: {rv_s} ({STORE.compacted + 1})")
                if STORE.expired_watch == "http":
                    raise ApiError(expired)
                w.expired = expired
                pending = []
                pos = STORE.rv
            elif rv_s in ("", "0"):
                pending = [("ADDED", copy.deepcopy(o)) for o in self.matching(res, ns, match)]
                pos = STORE.rv
            else:
                pending = []
                pos = int(rv_s)
            STORE.watches.add(w)
        try:
            self.start_chunked("application/json")
            next_bookmark = time.monotonic() + STORE.bookmark_interval
            while True:
                for typ, obj in pending:
                    self.chunk((json.dumps({"type": typ, "object": obj}) + "\n").encode())
                pending = []
                if w.expired is not None:
                    self.chunk((json.dumps({"type": "ERROR", "object": w.expired}) + "\n").encode())
                    self.end_chunked()
                    return
                with STORE.cond:
                    while True:
                        if w.dropped:
                            self.close_connection = True
                            return
                        if w.expired is not None:
                            break
                        i = bisect.bisect_right(STORE.event_rvs, pos)
                        if i < len(STORE.events):
                            for rv, pr, pl, typ, obj, old in STORE.events[i:]:
                                pos = rv
                                if pr != res.prefix or pl != res.plural:
                                    continue
                                if ns is not None and obj["metadata"].get("namespace") != ns:
                                    continue
                                now_m = match(obj)
                                was_m = old is not None and match(old)
                                if typ == "MODIFIED" and now_m and not was_m:
                                    typ = "ADDED"
                                elif typ == "MODIFIED" and was_m and not now_m:
                                    typ, now_m = "DELETED", True
                                if now_m:
                                    pending.append((typ, obj))
                            if pending:
                                break
                        now = time.monotonic()
                        if deadline is not None and now >= deadline:
                            self.end_chunked()
                            return
                        if bookmarks and now >= next_bookmark:
                            pending.append(("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version,
                                                         "metadata": {"resourceVersion": str(STORE.rv)}}))
                            pos = max(pos, STORE.rv)
                            next_bookmark = now + STORE.bookmark_interval
                            break
                        waits = [1.0]
                        if deadline is not None:
                            waits.append(deadline - now)
                        if bookmarks:
                            waits.append(next_bookmark - now)
                        STORE.cond.wait(max(0.01, min(waits)))
        except (BrokenPipeError, ConnectionError, OSError):
            self.close_connection = True
        finally:
            with STORE.cond:
                STORE.watches.discard(w)

    # -- pod log
    def pod_log(self, res, ns, name):
        with STORE.cond:
            pod = STORE.objects.get(self.key(res, ns, name))
            if pod is None:
                raise not_found(res, name)
            names = container_names(pod)
            cname = self.q("container")
            if not cname:
                if len(names) != 1:
                    raise bad_request(f"a container name must be specified for pod {name}, choose one of: "
                                      f"[{' '.join(names)}]")
                cname = names[0]
            if cname not in names:
                raise bad_request(f"container {cname} is not valid for pod {name}")
            if not pod["spec"].get("nodeName"):
                raise bad_request(f"pod {name} does not have a host assigned")
            run = STORE.runs.get(pod["metadata"]["uid"])
            if self.qbool("previous"):
                raise bad_request(f'previous terminated container "{cname}" in pod "{name}" not found')
            if run is None or cname not in run.started:
                cs = next((c for c in pod.get("status", {}).get("containerStatuses", []) if c["name"] == cname), {})
                reason = cs.get("state", {}).get("waiting", {}).get("reason", "ContainerCreating")
                raise bad_request(f'container "{cname}" in pod "{name}" is waiting to start: {reason}')
        follow = self.qbool("follow")
        stamps = self.qbool("timestamps")
        since = None
        if self.q("sinceTime"):
            since = parse_time_ns(self.q("sinceTime"))
        if self.q("sinceSeconds"):
            try:
                since = time.time_ns() - int(self.q("sinceSeconds")) * 1_000_000_000
            except ValueError:
                raise bad_request("sinceSeconds: Invalid value")
        tail = self.q("tailLines")
        limit = self.q("limitBytes")
        try:
            tail = int(tail) if tail is not None else None
            limit = int(limit) if limit is not None else None
        except ValueError:
            raise bad_request("tailLines/limitBytes: Invalid value")
        w = Watch(Conn(self.connection))
        with STORE.cond:
            STORE.watches.add(w)
            lines = run.logs.setdefault(cname, [])  # the list add_log() appends to, also before the first line
            idx = 0
            if since is not None:
                idx = next((i for i, ln in enumerate(lines) if ln[0] >= since), len(lines))
            if tail is not None:
                idx = max(idx, len(lines) - max(tail, 0))
        sent = 0
        try:
            self.start_chunked("text/plain")
            while True:
                with STORE.cond:
                    while True:
                        if w.dropped:
                            self.close_connection = True
                            return
                        batch = lines[idx:]
                        idx = len(lines)
                        done = not follow or run.gone or self.container_done(run, cname)
                        if batch or done:
                            break
                        STORE.cond.wait(1)
                out = b""
                for t, _, text in batch:
                    line = ((rfc3339nano(t) + " ") if stamps else "") + text + "\n"
                    out += line.encode()
                if limit is not None and sent + len(out) > limit:
                    out = out[:max(0, limit - sent)]
                    done = True
                sent += len(out)
                self.chunk(out)
                if done:
                    self.end_chunked()
                    return
        except (BrokenPipeError, ConnectionError, OSError):
            self.close_connection = True
        finally:
            with STORE.cond:
                STORE.watches.discard(w)

    def container_done(self, run, cname):
        pod = STORE.objects.get(pod_key(run.ns, run.name))
        if pod is None or pod["metadata"]["uid"] != run.uid:
            return True
        cs = next((c for c in pod.get("status", {}).get("containerStatuses", []) if c["name"] == cname), {})
        return "terminated" in cs.get("state", {})

    # -- TokenRequest
    def token_request(self, res, ns, name):
        req = self.parse_body("TokenRequest") if self.body else {}
        spec = req.get("spec") or {}
        exp = spec.get("expirationSeconds", 3600)
        if not isinstance(exp, int) or exp < 600 or exp > 2 ** 32:
            raise invalid("TokenRequest", name, [("spec.expirationSeconds", "FieldValueInvalid",
                                                  f"Invalid value: {exp}: may not specify a duration less than "
                                                  "10 minutes")], "authentication.k8s.io")
        auds = spec.get("audiences") or ["https://kubernetes.default.svc.cluster.local"]
        with STORE.cond:
            sa = STORE.objects.get(self.key(res, ns, name))
            if sa is None:
                raise not_found(res, name)
            now = int(time.time())
            user = f"system:serviceaccount:{ns}:{name}"
            claims = {"aud": auds, "exp": now + exp, "iat": now, "iss": "https://kubernetes.default.svc.cluster.local",
                      "kubernetes.io": {"namespace": ns,
                                        "serviceaccount": {"name": name, "uid": sa["metadata"]["uid"]}},
                      "nbf": now, "sub": user}
            token = jwt_hs256(claims)
            STORE.tokens[token] = (user, now + exp)
        self.send_json(201, {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                             "metadata": {"name": name, "namespace": ns, "creationTimestamp": None},
                             "spec": {"audiences": auds, "expirationSeconds": exp, "boundObjectRef":
                                      spec.get("boundObjectRef")},
                             "status": {"token": token, "expirationTimestamp": rfc3339(now + exp)}})

    # -- control API
    def control(self):
        try:
            self._control()
        except ApiError as e:
            self.send_status(e)
        except (ValueError, KeyError, TypeError) as e:
            self.send_json(400, {"error": f"{type(e).__name__}: {e}"})

    def _control(self):
        p = self.url_path[len("/_test"):]
        m = self.command
        body = json.loads(self.body) if self.body else {}
        if p == "/state" and m == "GET":
            with STORE.cond:
                return self.send_json(200, {"resourceVersion": str(STORE.rv), "compacted": STORE.compacted,
                                            "watches": len(STORE.watches), "pods": len(
                                                [k for k in STORE.objects if k[1] == "pods"])})
        if p == "/requests":
            with STORE.cond:
                if m == "DELETE":
                    STORE.requests = []
                    return self.send_json(200, {"items": []})
                return self.send_json(200, {"items": list(STORE.requests)})
        if p == "/fail":
            with STORE.cond:
                if m == "DELETE":
                    STORE.fail = []
                elif m == "POST":
                    STORE.fail.append({"method": body.get("method", "*").upper(), "path": body.get("path", "/"),
                                       "count": int(body.get("count", 1)), "status": int(body["status"]),
                                       **({"retryAfter": body["retryAfter"]} if "retryAfter" in body else {}),
                                       **({"message": body["message"]} if "message" in body else {})})
                return self.send_json(200, {"items": STORE.fail})
        if p == "/drop-watches" and m == "POST":
            with STORE.cond:
                ws = list(STORE.watches)
                for w in ws:
                    w.dropped = True
                    w.conn.drop()
                STORE.cond.notify_all()
            return self.send_json(200, {"dropped": len(ws)})
        if p == "/compact" and m == "POST":
            with STORE.cond:
                STORE.compacted = STORE.rv
                n = 0
                if body.get("notify", True):
                    for w in STORE.watches:
                        w.expired = status(410, "Expired", "The resourceVersion for the provided watch is too old.")
                        n += 1
                STORE.cond.notify_all()
                return self.send_json(200, {"compacted": STORE.compacted, "notified": n})
        if p == "/config" and m == "POST":
            with STORE.cond:
                if "expiredWatch" in body:
                    STORE.expired_watch = body["expiredWatch"]
                if "bookmarkInterval" in body:
                    STORE.bookmark_interval = float(body["bookmarkInterval"])
            return self.send_json(200, {"expiredWatch": STORE.expired_watch,
                                        "bookmarkInterval": STORE.bookmark_interval})
        if p == "/tokens" and m == "POST":
            with STORE.cond:
                STORE.tokens[body["token"]] = (body.get("user", ARGS.user), None)
            return self.send_json(200, {})
        if p.startswith("/scripts/"):
            image = urllib.parse.unquote(p[len("/scripts/"):])
            with STORE.cond:
                if m == "PUT":
                    STORE.scripts[image] = body
                elif m == "DELETE":
                    STORE.scripts.pop(image, None)
                return self.send_json(200, STORE.scripts.get(image, DEFAULT_SCRIPT))
        if p == "/pods" and m == "GET":
            node = self.q("nodeName")
            with STORE.cond:
                items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
                         for (pr, pl, _, _), o in sorted(STORE.objects.items())
                         if pl == "pods" and pr == "/api/v1" and (node is None or o["spec"].get("nodeName") == node)]
                return self.send_json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                            "items": copy.deepcopy(items)})
        mm = re.match(r"^/pods/([^/]+)/([^/]+)/(advance|step)$", p)
        if mm and m == "POST":
            ns, name, what = mm.groups()
            with STORE.cond:
                pod = STORE.objects.get(pod_key(ns, name))
                if pod is None:
                    raise not_found(STORE.resources[("/api/v1", "pods")], name)
                run = STORE.runs.get(pod["metadata"]["uid"])
                if run is None:  # a pod put through /_test/objects: give it a kubelet
                    run = PodRun(ns, name, pod["metadata"]["uid"], {"steps": []})
                    STORE.runs[run.uid] = run
                if what == "advance":
                    run.advance += int(body.get("count", 1))
                    STORE.cond.notify_all()
                else:
                    apply_step(run, body)
                return self.send_json(200, copy.deepcopy(STORE.objects.get(pod_key(ns, name))))
        if p.startswith("/objects/"):
            return self.control_objects(p[len("/objects"):], m, body)
        self.send_json(404, {"error": f"no control endpoint {m} {p}"})

    def control_objects(self, path, m, body):
        segs = path.strip("/").split("/")
        if segs[0] == "api" and len(segs) >= 2:
            prefix, rest = "/" + "/".join(segs[:2]), segs[2:]
        elif segs[0] == "apis" and len(segs) >= 3:
            prefix, rest = "/" + "/".join(segs[:3]), segs[3:]
        else:
            raise self.unknown()
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        if not rest:
            raise self.unknown()
        with STORE.cond:
            res = STORE.resource(prefix, rest[0])
            if res is None and m == "PUT":
                res = STORE.resource_for(body)
            if res is None:
                raise self.unknown()
            name = rest[1] if len(rest) > 1 else None
            if name is None and m == "GET":
                items = self.matching(res, ns, lambda o: True)
                return self.send_json(200, {"kind": res.kind + "List", "apiVersion": res.api_version,
                                            "metadata": {"resourceVersion": str(STORE.rv)},
                                            "items": copy.deepcopy(items)})
            key = self.key(res, ns, name)
            if m == "GET":
                o = STORE.objects.get(key)
                if o is None:
                    raise not_found(res, name)
                return self.send_json(200, copy.deepcopy(o))
            if m == "DELETE":
                if key not in STORE.objects:
                    raise not_found(res, name)
                return self.send_json(200, copy.deepcopy(STORE.remove(res, key)))
            if m == "PUT":
                md = dict(body.get("metadata") or {})
                md["name"] = name
                if res.namespaced:
                    md["namespace"] = ns or md.get("namespace") or "default"
                    STORE.ensure_namespace(md["namespace"])
                old = STORE.objects.get(self.key(res, md.get("namespace"), name))
                md.setdefault("uid", old["metadata"]["uid"] if old else str(uuid.uuid4()))
                md.setdefault("creationTimestamp", old["metadata"]["creationTimestamp"] if old else rfc3339())
                body["metadata"] = md
                return self.send_json(200, copy.deepcopy(STORE.put(res, body)))
        self.send_json(405, {"error": "method not allowed"})


def jwt_hs256(claims):
    def b64(d):
        return base64.urlsafe_b64encode(d).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "kid": "fake", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = b64(hmac.new(TOKEN_KEY, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


# ---------------------------------------------------------------------------- TLS

def make_tls(tls_dir):
    """CA + server certificate for 127.0.0.1/localhost, made once per dir with openssl."""
    os.makedirs(tls_dir, exist_ok=True)
    ca_crt, ca_key = os.path.join(tls_dir, "ca.crt"), os.path.join(tls_dir, "ca.key")
    crt, key = os.path.join(tls_dir, "server.crt"), os.path.join(tls_dir, "server.key")
    if all(os.path.exists(p) for p in (ca_crt, ca_key, crt, key)):
        return crt, key, ca_crt

    def run(*a):
        subprocess.run(["openssl", *a], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650",
        "-subj", "/CN=fake-kube-ca", "-keyout", ca_key, "-out", ca_crt,
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    csr = os.path.join(tls_dir, "server.csr")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=kube-apiserver",
        "-keyout", key, "-out", csr)
    ext = os.path.join(tls_dir, "server.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
                "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n")
    run("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-days", "3650",
        "-extfile", ext, "-out", crt)
    return crt, key, ca_crt


def server_context(args):
    if args.plain:
        return None
    if args.tls_cert:
        crt, key = args.tls_cert, args.tls_key
    else:
        crt, key, _ = make_tls(args.tls_dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    if args.client_ca:
        ctx.load_verify_locations(args.client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def handle_error(self, request, client_address):
        log("connection from %s failed: %s" % (client_address, sys.exc_info()[1]))


def serve(server, ctx, lifetime):
    if ctx is not None:
        # Handshake in the handler thread, so a stuck client cannot block accept().
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    timer = threading.Timer(lifetime, stop)
    timer.daemon = True
    timer.start()
    print(server.server_address[1], flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()


# ---------------------------------------------------------------------------- seed

def load_seed(path, default_ns):
    with open(path) as f:
        data = json.load(f)
    objs = data if isinstance(data, list) else data.get("items", []) if str(data.get("kind", "")).endswith(
        "List") else [data]
    for obj in objs:
        if str(obj.get("kind", "")).endswith("List") and "items" in obj:
            objs.extend(obj["items"])
            continue
        res = STORE.resource_for(obj)
        md = dict(obj.get("metadata") or {})
        if res.namespaced:
            md["namespace"] = md.get("namespace") or default_ns
            STORE.ensure_namespace(md["namespace"])
        md.setdefault("uid", str(uuid.uuid4()))
        md.setdefault("creationTimestamp", rfc3339())
        if res.kind == "Deployment":
            md.setdefault("generation", 1)
        obj = dict(obj, metadata=md)
        STORE.put(res, obj, "ADDED")
        if res.kind == "Namespace":
            STORE.ensure_default_sa(md["name"])


def main():
    global ARGS, SERVER
    p = argparse.ArgumentParser(description="Fake Kubernetes API server for lagoon-taskd tests.")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls-dir")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--plain", action="store_true", help="plain HTTP (for debugging only)")
    p.add_argument("--client-ca")
    p.add_argument("--token", action="append", default=[])
    p.add_argument("--token-file")
    p.add_argument("--user", default=DEFAULT_USER)
    p.add_argument("--deny", action="append", default=[])
    p.add_argument("--namespace", action="append", default=[])
    p.add_argument("--seed", action="append", default=[])
    p.add_argument("--seed-namespace", default="default")
    p.add_argument("--script", action="append", default=[])
    p.add_argument("--node-name", default="node-1")
    p.add_argument("--bookmark-interval", type=float, default=1.0)
    p.add_argument("--expired-watch", choices=("event", "http"), default="event")
    p.add_argument("--lifetime", type=float, default=600)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    if not args.plain and not args.tls_cert and not args.tls_dir:
        p.error("one of --tls-dir, --tls-cert/--tls-key or --plain is needed")
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    ARGS = args
    tokens = list(args.token)
    if args.token_file:
        with open(args.token_file) as f:
            tokens += [ln.strip() for ln in f if ln.strip()]
    for t in tokens:
        tok, _, user = t.partition("=")
        STORE.tokens[tok] = (user or args.user, None)
    STORE.bookmark_interval = args.bookmark_interval
    STORE.expired_watch = args.expired_watch
    with STORE.cond:
        for ns in ["default", "kube-system"] + args.namespace:
            STORE.ensure_namespace(ns)
        for s in args.seed:
            load_seed(s, args.seed_namespace)
    for s in args.script:
        image, _, path = s.partition("=")
        with open(path) as f:
            STORE.scripts[image] = json.load(f)
    ctx = server_context(args)
    SERVER = Server(("127.0.0.1", args.port), Handler)
    serve(SERVER, ctx, args.lifetime)


if __name__ == "__main__":
    main()
