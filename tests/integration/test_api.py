#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The control API with bad input: every bad request gets a JSON error with the right
status and the daemon keeps serving; access control by socket permissions and peer
credentials; a corrupt task record on disk is moved aside at start."""

import grp
import http.client
import json
import os
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

# Run as another user by /usr/bin/python3 (stdlib only): prints the HTTP status of
# GET /v1/health, or DENIED <errno name> when the connection itself is refused.
CLIENT_SCRIPT = r"""
import errno, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("DENIED", errno.errorcode.get(e.errno, e.errno)); sys.exit(0)
path = sys.argv[2] if len(sys.argv) > 2 else "/v1/health"
s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
data = b""
while True:
    b = s.recv(65536)
    if not b: break
    data += b
head, _, body = data.partition(b"\r\n\r\n")
print("STATUS", head.split()[1].decode(), body.decode(errors="replace").replace("\n", " "))
"""

NOBODY = 65534


class TestApi(harness.TaskdTestCase):
    def setUp(self):
        super().setUp()
        self.d = self.daemon()

    def post_raw(self, body, content_type="application/json"):
        return self.client.request("POST", "/v1/tasks", body, headers={"Content-Type": content_type})

    def test_malformed_json(self):
        for body in (b"{not json", b"{\"command\": \"true\"", b"", b"\xff\xfe\x00garbage", b"{\"command\":\"a\"} x",
                     b"[" * 10000 + b"]" * 10000):
            r = self.post_raw(body)
            self.assertErrorResponse(r, 400)
            self.assertHealthy()

    def test_nul_in_a_string(self):
        # json.dumps writes the NUL as \u0000: a C string would end there and run "true".
        for body in ({"command": "true\0; echo ran"}, {"command": "true", "name": "a\0b"}):
            r = self.client.post("/v1/tasks", body)
            self.assertErrorResponse(r, 400)
            self.assertIn("NUL byte", r.json["message"])
        self.assertEqual(self.client.tasks(), [])

    def test_field_limits(self):
        # The command is one argument of sh -c: at most 127 KiB (MAX_ARG_STRLEN less room);
        # longer was accepted and then failed as "exit-code 1".
        at_limit = ": " + "x" * (127 * 1024 - 3) + ";"
        self.assertEqual(len(at_limit), 127 * 1024)
        r = self.client.submit(at_limit, id=self.new_id("cmdmax"))
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.client.wait_final(r.json["id"], 60)["status"], "complete")
        for body, what in (({"command": "x" * (127 * 1024 + 1)}, "command is too long"),
                           ({"command": "true", "name": "n" * 1025}, "name is too long"),
                           ({"command": "true", "project": "p" * 256}, "project is too long")):
            r = self.client.post("/v1/tasks", body)
            self.assertErrorResponse(r, 400)
            self.assertIn(what, r.json["message"])
        self.assertHealthy()

    def test_not_an_object(self):
        for body in (b"[1, 2]", b"\"command\"", b"42", b"null", b"true"):
            self.assertErrorResponse(self.post_raw(body), 400)
        self.assertHealthy()

    def test_missing_or_bad_command(self):
        for body in ({"id": self.new_id("nocmd")}, {"command": 5}, {"command": None}, {"command": ["ls"]}, {}):
            self.assertErrorResponse(self.client.post("/v1/tasks", body), 400)
        self.assertHealthy()

    def test_unknown_member(self):
        r = self.client.post("/v1/tasks", {"command": "true", "bogus": 1})
        self.assertErrorResponse(r, 400)
        self.assertIn("bogus", r.json["message"])
        self.assertHealthy()

    def test_wrong_member_types(self):
        for body in ({"command": "true", "id": 5}, {"command": "true", "name": {}},
                     {"command": "true", "environment": ["x"]}):
            self.assertErrorResponse(self.client.post("/v1/tasks", body), 400)
        self.assertHealthy()

    def test_unknown_service(self):
        r = self.client.submit("true", service="nope")
        self.assertErrorResponse(r, 400)
        self.assertEqual(self.client.tasks(), [])
        self.assertHealthy()

    def test_invalid_id(self):
        for tid in (".hidden", "../etc", "a/b", "a b", "x" * 129, "", "-dash"):
            self.assertErrorResponse(self.client.submit("true", id=tid), 400)
        self.assertErrorResponse(self.client.get("/v1/tasks/..hidden"), 400)
        self.assertHealthy()

    def test_invalid_timeout(self):
        for timeout in ("bogus", -5, "1x", True, {"s": 1}, "-1s"):
            r = self.client.submit("true", timeout=timeout)
            self.assertErrorResponse(r, 400)
        self.assertEqual(self.client.tasks(), [])
        self.assertHealthy()

    def test_body_too_large(self):
        big = json.dumps({"command": "echo " + "x" * (2 << 20)}).encode()
        r = self.client.post("/v1/tasks", big)
        self.assertErrorResponse(r, 413)
        self.assertHealthy()
        # Chunked, so the size is not declared up front.
        s = self.client.connect()
        try:
            s.sendall(b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            chunk = b"x" * 65536
            try:
                for _ in range(40):
                    s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                s.sendall(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            resp = http.client.HTTPResponse(s, method="POST")
            resp.begin()
            self.assertEqual(resp.status, 413)
            resp.read()
        finally:
            s.close()
        self.assertEqual(self.client.tasks(), [])
        self.assertHealthy()

    def test_unknown_path(self):
        for path in ("/", "/v1", "/v2/tasks", "/v1/task", "/v1/tasks/x/y/z", "/v1/tasks/x/logs/more", "/v1/healthz"):
            self.assertErrorResponse(self.client.get(path), 404)
        self.assertHealthy()

    def test_wrong_method(self):
        tid = self.run_task("true")["id"]
        for method, path in (("DELETE", "/v1/tasks"), ("PUT", f"/v1/tasks/{tid}"), ("POST", f"/v1/tasks/{tid}"),
                             ("GET", f"/v1/tasks/{tid}/cancel"), ("POST", "/v1/health"),
                             ("POST", f"/v1/tasks/{tid}/logs"), ("PATCH", "/v1/tasks")):
            r = self.client.request(method, path)
            self.assertErrorResponse(r, 405)
            self.assertIn("allow", r.headers, r.headers)
        self.assertHealthy()

    def test_wrong_content_type(self):
        r = self.post_raw(b'{"command": "true"}', content_type="text/plain")
        self.assertIn(r.status, (400, 415), r)
        self.assertIn("error", r.json)
        self.assertHealthy()

    def test_unknown_task(self):
        self.assertErrorResponse(self.client.get("/v1/tasks/no-such-task"), 404)
        self.assertErrorResponse(self.client.get("/v1/tasks/no-such-task/logs"), 404)
        self.assertErrorResponse(self.client.cancel("no-such-task"), 404)
        self.assertErrorResponse(self.client.request("DELETE", "/v1/tasks/no-such-task"), 404)
        self.assertHealthy()

    def test_delete(self):
        done = self.run_task("echo bye")
        self.assertTrue(os.path.exists(self.task_log_path(done["id"])))
        r = self.client.request("DELETE", f"/v1/tasks/{done['id']}")
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json["id"], r.json["status"]), (done["id"], "complete"))
        self.assertErrorResponse(self.client.get(f"/v1/tasks/{done['id']}"), 404)
        self.assertFalse(os.path.exists(self.task_log_path(done["id"])))
        self.assertNotIn(done["id"], [t["id"] for t in self.client.tasks()])
        self.assertErrorResponse(self.client.request("DELETE", f"/v1/tasks/{done['id']}"), 404)
        # Not finished: refused, the task goes on.
        busy = self.submit_ok("sleep 300")
        self.client.wait_status(busy["id"], "running")
        r = self.client.request("DELETE", f"/v1/tasks/{busy['id']}")
        self.assertErrorResponse(r, 409)
        self.assertIn("cancel it first", r.json["message"])
        self.assertEqual(self.client.task(busy["id"])["status"], "running")
        # Gone for good: a restart does not bring it back.
        self.d.restart()
        self.assertErrorResponse(self.client.get(f"/v1/tasks/{done['id']}"), 404)
        self.assertEqual(self.client.task(busy["id"])["status"], "running")

    def test_health(self):
        r = self.client.health()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json.get("status"), "ok", r)

    def run_as(self, uid, gid, groups=None, path="/v1/health"):
        """GET path as another user; returns the client script's output line."""
        argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
        argv += [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
        argv += [harness.SYSTEM_PYTHON, "-c", CLIENT_SCRIPT, self.socket_path, path]
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r)
        return r.stdout.strip()

    def test_access_control(self):
        st = os.stat(self.socket_path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660, oct(st.st_mode))
        gid = grp.getgrnam(harness.SOCKET_GROUP).gr_gid
        self.assertEqual(st.st_gid, gid)
        # Not root, not in the group: denied by the socket's permissions.
        out = self.run_as(NOBODY, NOBODY)
        self.assertTrue(out.startswith("DENIED") or out.startswith("STATUS 403"), out)
        # Even when the socket's mode would let it in, the peer check refuses it.
        os.chmod(self.socket_path, 0o666)
        try:
            out = self.run_as(NOBODY, NOBODY)
            self.assertTrue(out.startswith("STATUS 403"), out)
            self.assertIn("error", out)
            out = self.run_as(NOBODY, NOBODY, path="/metrics")
            self.assertTrue(out.startswith("STATUS 403"), out)
        finally:
            os.chmod(self.socket_path, 0o660)
        # A member of SocketGroup= is let in.
        out = self.run_as(NOBODY, NOBODY, groups=[gid])
        self.assertTrue(out.startswith("STATUS 200"), out)
        out = self.run_as(NOBODY, NOBODY, groups=[gid], path="/metrics")
        self.assertTrue(out.startswith("STATUS 200"), out)
        self.assertIn("lagoon_taskd_build_info", out)
        self.assertHealthy()

    def test_many_connections(self):
        """Connections that send nothing or half a request do not block others."""
        idle = []
        try:
            for _ in range(20):
                s = self.client.connect()
                idle.append(s)
            half = self.client.connect()
            half.sendall(b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"comm")
            idle.append(half)
            t0 = time.monotonic()
            self.assertHealthy()
            self.assertLess(time.monotonic() - t0, 2)
        finally:
            for s in idle:
                s.close()
        self.assertHealthy()


class TestState(harness.TaskdTestCase):
    def test_corrupt_record_moved_aside(self):
        d = self.daemon()
        good = self.run_task("echo kept", id=self.new_id("good"))
        self.assertEqual(good["status"], "complete")
        self.assertEqual(d.stop(), 0)
        tasks_dir = os.path.join(self.state_dir, "tasks")
        self.assertTrue(os.path.exists(os.path.join(tasks_dir, f"{good['id']}.json")))
        with open(os.path.join(tasks_dir, f"{good['id']}.json")) as f:
            record = f.read()
        bad = {
            "garbage-1": b"\x00\x01 this is not json \xff",
            "empty-1": b"",
            "truncated-1": record[: len(record) // 2].encode(),
            "wrongtype-1": b'{"id": 5, "command": []}',
        }
        for name, data in bad.items():
            with open(os.path.join(tasks_dir, f"{name}.json"), "wb") as f:
                f.write(data)
        d.start()
        self.assertHealthy()
        t = self.client.task(good["id"])
        self.assertEqual(t["status"], "complete", t)
        self.assertEqual(self.client.logs(good["id"]), "kept\n")
        corrupt = os.listdir(os.path.join(tasks_dir, "corrupt"))
        for name in bad:
            self.assertFalse(os.path.exists(os.path.join(tasks_dir, f"{name}.json")), name)
            self.assertTrue(any(c.startswith(name) for c in corrupt), (name, corrupt))
            self.assertErrorResponse(self.client.get(f"/v1/tasks/{name}"), 404)
        self.assertEqual([x["id"] for x in self.client.tasks()], [good["id"]])
        # And it still runs tasks.
        t = self.run_task("echo after")
        self.assertEqual(t["status"], "complete", t)

    def containers_of_this_test(self):
        out = subprocess.run([harness.RUNC, "--root", "/run/runc", "list", "-f", "json"], check=True,
                             stdout=subprocess.PIPE, timeout=30).stdout
        return [c["id"] for c in json.loads(out or b"null") or []
                if (c.get("bundle") or "").startswith(self.tmp + "/")]

    def test_corrupt_record_of_running_task_stops_its_container(self):
        """A running task's record that cannot be read back must not leave its container
        running unseen (issue 15, point 6): the restarted daemon stops and removes it."""
        d = self.daemon()
        t = self.submit_ok("echo started; exec sleep 300")
        self.client.wait_status(t["id"], ("running",), 30)
        harness.wait_until(lambda: self.client.logs(t["id"]) == "started\n", 15, what="the task's first line")
        d.kill9()
        self.assertEqual(self.containers_of_this_test(), [f"lagoon-task-{t['id']}"])
        with open(os.path.join(self.state_dir, "tasks", f"{t['id']}.json"), "w") as f:
            f.write('{"id": "' + t["id"])
        d.start()
        self.assertHealthy()
        harness.wait_until(lambda: not self.containers_of_this_test(), 30, what="the orphaned container's removal")
        harness.wait_until(lambda: not os.path.exists(os.path.join(self.state_dir, "containers", t["id"])), 30,
                           what="the orphaned container's directory removed")
        self.assertIn(f"Task {t['id']} has a container but no record", d.stderr())
        self.assertErrorResponse(self.client.get(f"/v1/tasks/{t['id']}"), 404)
        self.assertTrue(os.path.exists(os.path.join(self.state_dir, "tasks", "corrupt", f"{t['id']}.json")))
        self.assertEqual(harness.read_text(os.path.join(self.state_dir, "logs", f"{t['id']}.log")), "started\n")


if __name__ == "__main__":
    harness.main()
