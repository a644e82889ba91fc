#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Lagoon's API sink: tasks from the real broker are reported to the GraphQL test peer
(tests/harness/fake-lagoon-api.py), which verifies every HS256 token and the
updateTask mutation. Updates arrive once each and in order, also when the API is down
for a while (500s, closed connections, the peer stopped and started again); refused
updates (GraphQL errors) are logged with the answer and not retried forever; a 401 (a
token refused) is retried with a new token."""

import json
import os
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import lagoon_harness as lh  # noqa: E402

FAKE_API = os.path.join(harness.SRCDIR, "tests", "harness", "fake-lagoon-api.py")


setUpModule = lh.start_module_broker
tearDownModule = lh.stop_module_broker


class TestBusApi(harness.TaskdTestCase):
    def setUp(self):
        super().setUp()
        self.target = f"it-{os.urandom(3).hex()}"
        self.peer = lh.LagoonPeer(lh.BROKER, self.target)
        self.addCleanup(self.peer.close)
        self.secret_file = os.path.join(self.tmp, "jwtsecret")
        with open(self.secret_file, "w") as f:
            f.write("super-secret-jwt-key\n")
        self.record = os.path.join(self.tmp, "api-record.jsonl")
        self.api_port = 0
        self.api = None

    def start_api(self, *args):
        self.api = subprocess.Popen([sys.executable, FAKE_API, "--secret-file", self.secret_file, "--record",
                                     self.record, "--port", str(self.api_port), *args],
                                    stdout=subprocess.PIPE, stderr=open(os.path.join(self.tmp, "api.err"), "a"),
                                    text=True)
        self.track_process(self.api)
        self.extra_logs.append(os.path.join(self.tmp, "api.err"))
        self.api_port = int(self.api.stdout.readline().strip())

    def stop_api(self):
        self.api.terminate()
        self.api.wait(10)

    def control(self, body):
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}/control", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def start_daemon(self, **lagoon):
        self.write_config(services={"nginx": {"Bundle": self.bundle}},
                          extra={"Lagoon": lh.lagoon_config(lh.BROKER, self.target,
                                                            APIURL=f"http://127.0.0.1:{self.api_port}/graphql",
                                                            JWTSecretFile=self.secret_file, **lagoon)})
        d = self.daemon()
        harness.wait_until(lambda: "Connected to Lagoon's message bus" in d.stderr(), 30, what="connected")
        return d

    def records(self, task_id=None):
        out = []
        if os.path.exists(self.record):
            with open(self.record) as f:
                for line in f:
                    if line.strip():
                        out.append(json.loads(line))
        return [r for r in out if task_id is None or r["id"] == task_id]

    def wait_updates(self, task_id, statuses, timeout=60):
        harness.wait_until(lambda: [r["patch"]["status"] for r in self.records(task_id)] == statuses, timeout,
                           what=f"updates {statuses} (have {[r['patch']['status'] for r in self.records(task_id)]})")

    def message(self, task_id, command):
        body, _ = lh.fixture_body("amqp-in-task-standard.json")
        body["task"].update(id=task_id, command=command, service="nginx")
        return body

    def test_updates_in_order_with_valid_tokens(self):
        self.start_api()
        self.start_daemon(FinalStatusDelaySec=1)
        self.peer.publish(self.message("11", "echo hi"))
        self.wait_updates(11, ["PENDING", "RUNNING", "COMPLETE"])
        time.sleep(1)
        recs = self.records(11)
        self.assertEqual(len(recs), 3)
        # The API's final update is the last write: FinalStatusDelaySec= after the bus's
        # final status, which waited as long after the running one.
        complete = self.peer.wait_status("11", "complete")
        self.assertGreaterEqual(recs[2]["time"] - recs[1]["time"], 1.8)
        remote = {r["patch"]["remoteId"] for r in recs}
        self.assertEqual(len(remote), 1)
        self.assertRegex(remote.pop(), lh.UUID)
        self.assertNotIn("started", recs[0]["patch"])
        self.assertRegex(recs[1]["patch"]["started"], lh.LAGOON_TIME)
        self.assertRegex(recs[2]["patch"]["completed"], lh.LAGOON_TIME)
        self.assertEqual(recs[1]["patch"]["started"], recs[2]["patch"]["started"])
        for r in recs:
            claims = r["token"]
            self.assertEqual(claims["role"], "admin")
            self.assertEqual(claims["aud"], "api.dev")
            self.assertLessEqual(claims["exp"] - claims["iat"], 3600)
            self.assertLessEqual(abs(claims["iat"] - r["time"]), 60)
        # The status on the bus agrees.
        complete = self.peer.wait_status("11", "complete")
        self.assertEqual(complete["meta"]["remoteId"], recs[0]["patch"]["remoteId"])

    def test_api_down_then_up(self):
        self.start_api()
        d = self.start_daemon()
        self.control({"fail": [500, "close", 503, 429]})
        self.peer.publish(self.message("12", "sleep 1; echo a"))
        self.peer.wait_status("12", "running")
        self.stop_api()  # down for a while, the task finishes meanwhile
        self.peer.wait_status("12", "complete")
        self.peer.publish(self.message("13", "echo b"))
        self.peer.wait_status("13", "complete")
        so_far = [r["patch"]["status"] for r in self.records(12)]
        self.assertEqual(so_far, ["PENDING", "RUNNING", "COMPLETE"][:len(so_far)])
        self.assertNotIn("COMPLETE", so_far)
        time.sleep(2)
        self.start_api()  # same port
        self.wait_updates(12, ["PENDING", "RUNNING", "COMPLETE"], timeout=120)
        self.wait_updates(13, ["PENDING", "RUNNING", "COMPLETE"], timeout=60)
        order = [(r["id"], r["patch"]["status"]) for r in self.records()]
        self.assertEqual(order, [(12, "PENDING"), (12, "RUNNING"), (12, "COMPLETE"), (13, "PENDING"),
                                 (13, "RUNNING"), (13, "COMPLETE")])
        self.assertIn("Lagoon's API is not answering", d.stderr())
        self.assertNotIn("super-secret-jwt-key", d.stderr())

    def test_refused_updates_are_dropped_not_retried(self):
        self.start_api()
        d = self.start_daemon()
        self.control({"fail": ["errors", 401]})
        self.peer.publish(self.message("14", "echo c"))
        self.peer.wait_status("14", "complete")
        # PENDING refused for good (GraphQL errors); RUNNING's 401 retried, then delivered.
        self.wait_updates(14, ["RUNNING", "COMPLETE"], timeout=60)
        err = d.stderr()
        self.assertIn("Lagoon's API refused an update of task 14", err)
        self.assertEqual(err.count("Lagoon's API refused an update"), 1)
        state = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/control", timeout=10).read())
        self.assertEqual(state["requests"], 4)


if __name__ == "__main__":
    reason = lh.missing()
    if reason:
        print(f"test_bus_api.py: SKIP: {reason}")
        sys.exit(77)
    harness.main()
