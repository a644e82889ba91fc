#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Lagoon's message bus, for real: a rabbitmq-server started here, Lagoon's fixture
messages published to lagoon-tasks:<target>:jobs|misc, and the daemon's status and log
messages read back from the broker and checked field by field against the fixtures
and DESIGN.md. Malformed, duplicate and cancel messages; unknown services; advanced
tasks with JSON_PAYLOAD masking and taskData."""

import base64
import copy
import hashlib
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "harness"))
import harness  # noqa: E402
import lagoon_harness as lh  # noqa: E402
from lagoon_harness import pika  # noqa: E402

RUNNER_IMAGE = "example.com/test-task-image:v0.0.1"


setUpModule = lh.start_module_broker
tearDownModule = lh.stop_module_broker


class BusTestCase(harness.TaskdTestCase):
    """A daemon on the test's broker, and Lagoon's end of the bus (self.peer)."""

    def setUp(self):
        super().setUp()
        self.target = f"it-{os.urandom(3).hex()}"
        self.peer = lh.LagoonPeer(lh.BROKER, self.target)
        self.addCleanup(self.peer.close)

    def start_daemon(self, tasks=None, lagoon=None, extra=None):
        self.write_config(tasks=tasks, services={"nginx": {"Bundle": self.bundle}},
                          extra={"Lagoon": lh.lagoon_config(lh.BROKER, self.target, **(lagoon or {})), **(extra or {})})
        d = self.daemon()
        lh.wait_for_queues(self)  # consuming: the daemon declared its queues
        return d

    def standard_message(self, task_id="1", command="env", service="nginx"):
        body, routing_key = lh.fixture_body("amqp-in-task-standard.json")
        self.assertTrue(routing_key.endswith(":jobs"))
        body["task"]["id"] = task_id
        body["task"]["command"] = command
        body["task"]["service"] = service
        return body

    def cancel_message(self, task_id):
        body, _ = lh.fixture_body("amqp-in-task-standard.json")
        return {"key": "deploytarget:task:cancel", "task": {"id": task_id, "name": "x", "taskName": "x"},
                "project": body["project"], "environment": body["environment"]}


class TestBus(BusTestCase):
    def assert_status_shape(self, msg, fixture_name, task_id, status, body):
        """Field by field against fixtures/lagoon/amqp-out-controller-<fixture>.json."""
        fixture = lh.fixture_json(fixture_name)
        self.assertEqual(set(msg), set(fixture), msg)
        self.assertEqual(msg["type"], "task")
        self.assertEqual(msg["namespace"], "nginx-example-main")
        meta = msg["meta"]
        expected_keys = set(fixture["meta"])
        # remote-controller also sends the message's key (Go omitempty), and advancedData.
        self.assertEqual(set(meta) - {"advancedData", "key"}, expected_keys, meta)
        self.assertEqual(meta.get("key"), body.get("key"))
        for k in expected_keys:
            self.assertIsInstance(meta[k], type(fixture["meta"][k]), f"{k}: {meta}")
        self.assertEqual(meta["jobStatus"], status)
        self.assertEqual(meta["environment"], "main")
        self.assertEqual(meta["environmentId"], 1)
        self.assertEqual(meta["project"], "nginx-example")
        self.assertEqual(meta["projectId"], 1)
        self.assertEqual(meta["jobName"], body["task"]["taskName"])
        self.assertEqual(meta["clusterName"], self.target)
        self.assertRegex(meta["remoteId"], lh.UUID)
        self.assertEqual(meta["task"]["id"], task_id)
        for k in ("name", "taskName", "service", "command"):
            if k in body["task"]:
                self.assertEqual(meta["task"][k], body["task"][k], k)
        for k in ("startTime", "endTime"):
            if k in meta:
                self.assertRegex(meta[k], lh.LAGOON_TIME, k)

    def test_standard_task_from_fixture(self):
        self.start_daemon(lagoon={"APIHost": "api.example", "SSHHost": "ssh.example", "SSHPort": "22",
                                  "TokenHost": "token.example", "TokenPort": "2222",
                                  "HTTPProxy": "http://proxy.example:3128", "NoProxy": ".cluster.local"})
        body = self.standard_message(command="echo lagoon says hi; env")
        self.peer.publish(body, "jobs")
        complete = self.peer.wait_status("1", "complete")
        self.peer.settle()
        self.assertEqual(self.peer.status_list("1"), ["pending", "running", "complete"])
        st = {s["meta"]["jobStatus"]: s for s in self.peer.statuses}
        self.assert_status_shape(st["pending"], "amqp-out-controller-taskpending.json", "1", "pending", body)
        self.assert_status_shape(st["running"], "amqp-out-controller-taskrunning.json", "1", "running", body)
        self.assert_status_shape(complete, "amqp-out-controller-taskcomplete.json", "1", "complete", body)
        self.assertEqual(len({s["meta"]["remoteId"] for s in self.peer.statuses}), 1)
        self.assertLessEqual(complete["meta"]["startTime"], complete["meta"]["endTime"])
        self.assertEqual(st["running"]["meta"]["startTime"], complete["meta"]["startTime"])

        # Status events and the log, on lagoon-logs.
        events = self.peer.events("1")
        self.assertEqual([e["event"] for e in events],
                         ["task:job-kubernetes:pending", "task:job-kubernetes:running", "task:job-kubernetes:complete"])
        for e in events:
            self.assertEqual(e["severity"], "info")
            self.assertEqual(e["project"], "nginx-example")
        logs = self.peer.task_logs("1")
        self.assertTrue(logs)
        last = logs[-1]
        self.assertEqual(last["event"], "task-logs:job-kubernetes:lagoon-task-7m5zypx")
        self.assertEqual(last["meta"]["jobStatus"], "complete")
        self.assertEqual(last["meta"]["clusterName"], self.target)
        text = last["message"]
        self.assertIn("lagoon says hi\n", text)
        for var in ("TASK_DATA_ID=1", "LAGOON_PROJECT=nginx-example", "LAGOON_GIT_BRANCH=main",
                    "NAMESPACE=nginx-example-main", "LAGOON_PROJECT_ID=1", "LAGOON_ENVIRONMENT_ID=1",
                    # remote-controller's: TASK_SSH_* name the token service, LAGOON_CONFIG_SSH_* the SSH one.
                    "TASK_API_HOST=api.example", "TASK_SSH_HOST=token.example", "TASK_SSH_PORT=2222",
                    "LAGOON_CONFIG_SSH_HOST=ssh.example", "LAGOON_CONFIG_SSH_PORT=22",
                    "LAGOON_CONFIG_TOKEN_HOST=token.example", "LAGOON_CONFIG_TOKEN_PORT=2222",
                    "HTTP_PROXY=http://proxy.example:3128", "http_proxy=http://proxy.example:3128",
                    "NO_PROXY=.cluster.local", "no_proxy=.cluster.local",
                    "LAGOON_PROJECT_VARIABLES="
                    + base64.b64decode(body["project"]["variables"]["project"]).decode()):
            self.assertIn(var + "\n", text)
        # An empty list ("[]") and an unset proxy are not passed, as remote-controller does.
        for var in ("LAGOON_ENVIRONMENT_VARIABLES=", "HTTPS_PROXY=", "https_proxy="):
            self.assertNotIn("\n" + var, text)
        # The daemon's own task record links the two.
        t = self.client.task("1")
        self.assertEqual(t["status"], "complete")
        self.assertEqual(t["remoteId"], complete["meta"]["remoteId"])
        self.assertEqual(t["name"], "lagoon-task-7m5zypx")
        self.assertEqual(self.peer.queue_depth("jobs"), 0)

    def test_failed_task_and_log_while_running(self):
        self.start_daemon()
        body = self.standard_message("41", "for i in 1 2 3; do echo line $i; sleep 1; done; exit 3")
        self.peer.publish(body)
        failed = self.peer.wait_status("41", "failed")
        self.assertIn("endTime", failed["meta"])
        logs = self.peer.task_logs("41")
        # Sent while it ran (LogUpdateIntervalSec=1), then once more at the end.
        running_logs = [m for m in logs if m["meta"]["jobStatus"] == "running"]
        self.assertTrue(running_logs, [m["meta"]["jobStatus"] for m in logs])
        self.assertTrue(all("line 1" in m["message"] for m in running_logs))
        self.assertEqual(logs[-1]["meta"]["jobStatus"], "failed")
        self.assertIn("line 1\nline 2\nline 3\n", logs[-1]["message"])

    def test_growing_log_is_sent_within_budget(self):
        """A task writing steadily for 8 s (1 KB every 0.2 s; LogUpdateIntervalSec=1):
        logs while it runs, and the final one, and all of them together at most 4× the
        final log (every tick: 5.5×)."""
        self.start_daemon()
        self.peer.publish(self.standard_message(
            "43", "i=0; while [ $i -lt 40 ]; do head -c 1000 /dev/zero | tr '\\0' x; echo \" $i\"; sleep 0.2; "
                  "i=$((i+1)); done"))
        self.peer.wait_status("43", "complete", timeout=60)
        self.peer.settle()
        logs = self.peer.task_logs("43")
        running = [m["message"] for m in logs if m["meta"]["jobStatus"] == "running"]
        final = logs[-1]["message"]
        self.assertEqual(logs[-1]["meta"]["jobStatus"], "complete")
        self.assertIn("x 39\n", final)
        self.assertGreaterEqual(len(running), 3, [len(m) for m in running])
        self.assertEqual(running, sorted(running, key=len))
        self.assertTrue(all(final.startswith(m) for m in running))
        self.assertLessEqual(sum(len(m["message"]) for m in logs), 4 * len(final), [len(m) for m in running])

    def test_final_status_wins_with_two_workers(self):
        """Against a peer that consumes statuses as actions-handler does (2 workers in
        parallel, prefetch 2, last writer wins, tests/harness/actions_handler.py), every
        short task, whose pending, running and final status come back to back, ends shown
        with its final status."""
        import actions_handler

        # The peer itself: two statuses in flight together, the one written last wins,
        # even when it was published first (the race the daemon must not lose).
        check = actions_handler.ActionsHandler(
            lh.BROKER.port, f"test-ah-check-{self.target}",
            delay=lambda m: 0.6 if m["meta"]["jobStatus"] == "running" else 0)
        for status in ("running", "complete"):
            self.peer.ch.basic_publish("lagoon-tasks", "controller", json.dumps(
                {"type": "task", "meta": {"jobStatus": status, "task": {"id": "check"}}}))
        harness.wait_until(lambda: len(check.applied) == 2, 10, what="the peer's two updates")
        check.stop()
        self.assertEqual(check.applied, [("check", "COMPLETE"), ("check", "RUNNING")])
        self.assertEqual(check.status("check"), "RUNNING")
        self.assertEqual(check.max_busy, 2)

        ah = actions_handler.ActionsHandler(lh.BROKER.port, f"test-ah-{self.target}")
        self.addCleanup(ah.stop)
        self.start_daemon(lagoon={"FinalStatusDelaySec": 1}, tasks={"MaxRunning": 16})
        ids = [str(500 + i) for i in range(16)]
        for tid in ids:
            self.peer.publish(self.standard_message(tid, "true"))
        for tid in ids:
            self.peer.wait_status(tid, "complete", timeout=60)
        harness.wait_until(lambda: len(ah.applied) == 3 * len(ids), 30, what="every update applied")
        self.assertEqual({tid: ah.status(tid) for tid in ids}, {tid: "COMPLETE" for tid in ids}, ah.applied)

    def test_queued_while_waiting_on_limits(self):
        """A task waiting for room under MaxRunningPerEnvironment= is Lagoon's "queued",
        with its place in the queue as its log, as remote-controller's task QoS says it."""
        self.start_daemon(tasks={"MaxRunningPerEnvironment": 1})
        self.peer.publish(self.standard_message("44", "sleep 3"))
        self.peer.wait_status("44", "running")
        self.peer.publish(self.standard_message("45", "echo second"))
        self.peer.publish(self.standard_message("46", "echo third"))
        queued = self.peer.wait_status("46", "queued", timeout=10)
        self.peer.wait_status("46", "complete", timeout=60)
        self.peer.settle()
        self.assertEqual(self.peer.status_list("44"), ["pending", "running", "complete"])
        for tid in ("45", "46"):  # 46 is told again (1/1) if a tick sees it alone in the queue
            statuses = [s for i, s in enumerate(self.peer.status_list(tid))
                        if s != "queued" or self.peer.status_list(tid)[i - 1] != "queued"]
            self.assertEqual(statuses, ["pending", "queued", "running", "complete"], tid)
        self.assertEqual(queued["meta"]["task"]["id"], "46")
        self.assertNotIn("startTime", queued["meta"])
        self.assertEqual(len({s["meta"]["remoteId"] for s in self.peer.statuses if s["meta"]["task"]["id"] == "46"}), 1)
        self.assertIn("task:job-kubernetes:queued", [e["event"] for e in self.peer.events("46")])
        logs = self.peer.task_logs("46")
        first = [m["message"] for m in logs if m["meta"]["jobStatus"] == "queued"][0]
        self.assertIn("\n========================================\nThis task is currently queued in position 2/2\n"
                      "========================================\n", first)
        self.assertEqual(logs[-1]["meta"]["jobStatus"], "complete")
        self.assertIn("third", logs[-1]["message"])

    def test_timeout_reason_in_lagoon_log(self):
        self.start_daemon(tasks={"DefaultTimeoutSec": 1, "KillGraceSec": 1})
        self.peer.publish(self.standard_message("42", "echo before the deadline; sleep 30"))
        self.peer.wait_status("42", "failed", timeout=30)
        text = self.peer.task_logs("42")[-1]["message"]
        self.assertTrue(text.endswith("before the deadline\n========================================\n"
                                      "Task failed: timeout\n========================================\n"), text)
        self.assertNotIn("Task failed", "".join(m["message"] for m in self.peer.task_logs("42")[:-1]))

    def test_duplicate_delivery_runs_once(self):
        self.start_daemon()
        body = self.standard_message("7", "echo once >> /tmp/count; sleep 1; cat /tmp/count")
        self.peer.publish(body)
        self.peer.publish(body)
        self.peer.wait_status("7", "complete")
        self.peer.publish(body)  # after it finished, too
        self.peer.settle(3)
        self.assertEqual(self.peer.status_list("7"), ["pending", "running", "complete"])
        self.assertEqual(self.peer.task_logs("7")[-1]["message"].count("once\n"), 1)
        self.assertEqual(self.peer.queue_depth("jobs"), 0)
        self.assertEqual(len([t for t in self.client.tasks() if t["id"] == "7"]), 1)

    def test_malformed_messages_rejected_and_reported(self):
        d = self.start_daemon()
        self.peer.publish(b"this is not json", "jobs")
        self.peer.publish(b'{"task": {"name": "no id"}}', "jobs")
        no_project = self.standard_message("51")
        del no_project["project"]
        self.peer.publish(no_project, "jobs")
        unknown_key = self.standard_message("52")
        unknown_key["key"] = "deploytarget:task:doesnotexist"
        self.peer.publish(unknown_key, "misc")
        bad_vars = self.standard_message("53")
        bad_vars["project"]["variables"]["project"] = "%%% not base64"
        self.peer.publish(bad_vars, "jobs")

        for tid in ("51", "52", "53"):
            failed = self.peer.wait_status(tid, "failed")
            self.assertEqual(failed["meta"]["startTime"], failed["meta"]["endTime"])
        self.peer.settle()
        for tid in ("51", "52", "53"):
            self.assertEqual(self.peer.status_list(tid), ["failed"], tid)
        reasons = {tid: self.peer.task_logs(tid)[-1]["message"] for tid in ("51", "52", "53")}
        self.assertIn("project", reasons["51"])
        self.assertIn("deploytarget:task:doesnotexist", reasons["52"])
        self.assertIn("variables", reasons["53"])
        # Rejected without requeue: the queues are empty, nothing ran.
        self.assertEqual(self.peer.queue_depth("jobs"), 0)
        self.assertEqual(self.peer.queue_depth("misc"), 0)
        self.assertEqual(self.client.tasks(), [])
        err = d.stderr()
        self.assertIn("Rejecting a message from the jobs queue", err)
        self.assertIn("task.id", err)
        self.assertHealthy()

    def test_unknown_service_reported_failed(self):
        self.start_daemon()
        self.peer.publish(self.standard_message("61", "true", service="solr"))
        self.peer.wait_status("61", "failed")
        self.assertIn("service-not-found", self.peer.task_logs("61")[-1]["message"])
        self.assertEqual(self.peer.queue_depth("jobs"), 0)

    def test_cancel_running_queued_unknown(self):
        self.start_daemon(tasks={"MaxRunning": 1})
        self.peer.publish(self.standard_message("71", "sleep 60"))
        self.peer.wait_status("71", "running")
        self.peer.publish(self.standard_message("72", "echo never"))
        self.peer.wait_status("72", "pending")
        self.peer.publish(self.cancel_message("72"), "misc")
        self.peer.wait_status("72", "cancelled")
        self.peer.publish(self.cancel_message("71"), "misc")
        self.peer.wait_status("71", "cancelled", timeout=30)
        self.peer.publish(self.cancel_message("9999"), "misc")
        unknown = self.peer.wait_status("9999", "cancelled")
        self.assertEqual(unknown["meta"]["startTime"], unknown["meta"]["endTime"])
        # remote-controller's answer for a task it does not have: no remoteId (Lagoon keeps
        # the task's: its S3 log is <taskId>-<remoteId>), key, ids or clusterName; no event.
        self.assertEqual(set(unknown["meta"]), {"environment", "jobName", "jobStatus", "project", "task",
                                                "startTime", "endTime"}, unknown)
        self.assertEqual(unknown["meta"]["task"], {"id": "9999", "name": "x", "taskName": "x"})
        # A task that ended here: its final status again, with its own remoteId and times.
        self.peer.publish(self.standard_message("73", "true"))
        done = self.peer.wait_status("73", "complete")
        self.peer.publish(self.cancel_message("73"), "misc")
        harness.wait_until(lambda: self.peer.poll() or self.peer.status_list("73").count("complete") == 2, 30,
                           what="the answer to the cancel of a finished task")
        self.peer.settle()
        again = [s for s in self.peer.statuses if s["meta"]["task"]["id"] == "73"][-1]
        self.assertEqual(again["meta"], done["meta"])
        self.assertEqual(self.peer.status_list("71"), ["pending", "running", "cancelled"])
        # 72 waited on MaxRunning=1: "queued" once a tick (LogUpdateIntervalSec=1) saw it waiting.
        self.assertIn(self.peer.status_list("72"), (["pending", "cancelled"], ["pending", "queued", "cancelled"]))
        self.assertEqual(self.peer.status_list("9999"), ["cancelled"])
        # The cancel below the output, as remote-controller appends it.
        for tid in ("71", "72"):
            self.assertTrue(self.peer.task_logs(tid)[-1]["message"].endswith(
                "========================================\nTask cancelled\n"
                "========================================\n"), self.peer.task_logs(tid)[-1]["message"])
        self.assertEqual(self.peer.events("9999"), [])
        self.assertEqual(self.peer.task_logs("9999"), [])
        self.assertNotIn("never", self.peer.task_logs("72")[-1]["message"])
        self.assertEqual(self.client.task("71")["status"], "cancelled")

    def make_image_bundle(self, script):
        """A runner image: the demo bundle's rootfs with its own entrypoint."""
        with open(os.path.join(self.bundle, "config.json")) as f:
            cfg = json.load(f)
        cfg["process"]["args"] = ["/bin/sh", "-c", script]
        root = cfg["root"]["path"]
        cfg["root"]["path"] = root if root.startswith("/") else os.path.join(self.bundle, root)
        d = os.path.join(self.tmp, "runner-image")
        os.makedirs(d)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        return d

    def advanced_message(self, task_id, payload):
        body, routing_key = lh.fixture_body("amqp-in-task-advanced.json")
        self.assertTrue(routing_key.endswith(":misc"))
        body["task"]["id"] = task_id
        body["advancedTask"]["JSONPayload"] = payload
        body["advancedTask"]["sshKey"] = 1
        return body

    def test_advanced_task_payload_and_task_data(self):
        task_data = lh.b64json({"sourceNamespace": "a", "destinationNamespace": "b"})
        image = self.make_image_bundle(
            'echo "payload=$JSON_PAYLOAD"; echo "pod=$PODNAME ns=$NAMESPACE"; '
            'echo "vars=$LAGOON_PROJECT_VARIABLES"; sha256sum /var/run/secrets/lagoon/ssh/ssh-privatekey; '
            f'printf %s {task_data} > "$LAGOON_TASK_DATA_FILE"')
        key = os.path.join(self.tmp, "ssh-key")
        with open(key, "w") as f:
            f.write("-----BEGIN FAKE KEY-----\n")
        self.start_daemon(lagoon={"SSHKeyFile": key}, extra={f"Image {RUNNER_IMAGE}": {"Bundle": image}})
        payload = lh.b64json({"secret": "value"})
        body = self.advanced_message("81", payload)
        self.peer.publish(body, "misc")
        complete = self.peer.wait_status("81", "complete")
        self.assertEqual(complete["meta"]["advancedData"], task_data)
        self.assertEqual(json.loads(base64.b64decode(complete["meta"]["advancedData"])),
                         {"sourceNamespace": "a", "destinationNamespace": "b"})
        log = self.peer.task_logs("81")[-1]["message"]
        self.assertIn("payload=***\n", log)
        self.assertNotIn(payload, log)
        self.assertIn("pod=lagoon-task-81 ns=nginx-example-main\n", log)
        # Decoded, as remote-controller passes it.
        self.assertIn("vars=" + base64.b64decode(body["project"]["variables"]["project"]).decode() + "\n", log)
        # The key reached the task (its digest); its text is masked in the output.
        self.assertIn(hashlib.sha256(b"-----BEGIN FAKE KEY-----\n").hexdigest(), log)
        self.assertNotIn("BEGIN FAKE KEY", log)
        # And never in journald either.
        msgs = self.journal.task_messages("81")
        self.assertIn("payload=***", msgs)  # one message per line
        self.assertFalse([m for m in msgs if payload in m])

    def test_active_standby_gets_token_and_key(self):
        image = self.make_image_bundle(
            "sha256sum /var/run/secrets/kubernetes.io/serviceaccount/token /var/run/secrets/lagoon/deployer/token "
            "/var/run/secrets/lagoon/ssh/ssh-privatekey; (echo x >> /var/run/secrets/lagoon/ssh/ssh-privatekey) 2>/dev/null "
            "|| echo read-only")
        files = {}
        for name, text in (("key", "KEY-CONTENT"), ("token", "TOKEN-CONTENT")):
            files[name] = os.path.join(self.tmp, name)
            with open(files[name], "w") as f:
                f.write(text + "\n")
        self.start_daemon(lagoon={"SSHKeyFile": files["key"], "DeployerTokenFile": files["token"]},
                          extra={f"Image {RUNNER_IMAGE}": {"Bundle": image}})
        body = self.advanced_message("84", lh.b64json({"sourceNamespace": "a", "destinationNamespace": "b"}))
        body["key"] = "deploytarget:task:activestandby"
        del body["advancedTask"]["sshKey"]  # forced on for this key
        self.peer.publish(body, "misc")
        self.peer.wait_status("84", "complete")
        log = self.peer.task_logs("84")[-1]["message"]
        # Digests: the files' text is masked in task output (DeployerTokenFile=, SSHKeyFile=).
        self.assertEqual(log.count(hashlib.sha256(b"TOKEN-CONTENT\n").hexdigest()), 2, log)
        self.assertIn(hashlib.sha256(b"KEY-CONTENT\n").hexdigest(), log)
        self.assertIn("read-only\n", log)
        self.assertNotIn("TOKEN-CONTENT", log)
        self.assertNotIn("KEY-CONTENT", log)

    def test_advanced_task_bad_task_data(self):
        image = self.make_image_bundle('printf "not base64!" > "$LAGOON_TASK_DATA_FILE"')
        self.start_daemon(extra={f"Image {RUNNER_IMAGE}": {"Bundle": image}})
        body = self.advanced_message("82", lh.b64json({}))
        body["advancedTask"]["sshKey"] = False
        self.peer.publish(body, "misc")
        self.peer.wait_status("82", "failed")
        t = self.client.task("82")
        self.assertTrue(t["reason"].startswith("taskdata:"), t)
        self.assertIn("\nTask failed: taskdata: ", self.peer.task_logs("82")[-1]["message"])

    def test_advanced_task_unknown_image(self):
        self.start_daemon()
        body = self.advanced_message("83", lh.b64json({}))
        self.peer.publish(body, "misc")
        self.peer.wait_status("83", "failed")
        self.assertIn("image-pull", self.peer.task_logs("83")[-1]["message"])

    def test_lagoon_shaped_advanced_task(self):
        """fixtures/lagoon/lagoon-in-task-advanced.json is shaped as Lagoon's
        createAdvancedTask sends it (advancedTask.RunnerImage, 0/1 flags, no project or
        environment ids, a long branch): it runs, with its payload, its namespace and the
        deployer token it asks for, and its final status goes back with the task's ids."""
        expected_ns = "drupal-example-feature-long-branch-name-for-the-new-se-83df"
        image = self.make_image_bundle(
            'echo "payload=$(echo "$JSON_PAYLOAD" | base64 -d)"; echo "pod=$PODNAME ns=$NAMESPACE"; '
            "sha256sum /var/run/secrets/lagoon/deployer/token; "
            "test -e /var/run/secrets/lagoon/ssh/ssh-privatekey && echo key || echo no-key")
        token = os.path.join(self.tmp, "token")
        with open(token, "w") as f:
            f.write("TOKEN-CONTENT")
        self.start_daemon(lagoon={"DeployerTokenFile": token}, extra={f"Image {RUNNER_IMAGE}": {"Bundle": image}})
        body, routing_key = lh.fixture_body("lagoon-in-task-advanced.json")
        self.assertTrue(routing_key.endswith(":misc"))
        self.assertEqual(body["advancedTask"]["RunnerImage"], RUNNER_IMAGE)
        self.assertEqual((body["advancedTask"]["deployerToken"], body["advancedTask"]["sshKey"]), (1, 0))
        self.peer.publish(body, "misc")
        complete = self.peer.wait_status("43", "complete")
        self.assertEqual(complete["namespace"], expected_ns)
        self.assertEqual(complete["meta"]["jobName"], "lagoon-task-a9d3mm")
        log = self.peer.task_logs("43")[-1]["message"]
        self.assertIn('payload={"target":"db"}\n', log)
        self.assertIn(f"pod=lagoon-task-43 ns={expected_ns}\n", log)  # local mode: named after the id
        self.assertIn(hashlib.sha256(b"TOKEN-CONTENT").hexdigest(), log)
        self.assertIn("no-key\n", log)

    def test_lagoon_shaped_standard_task_and_long_namespace(self):
        """fixtures/lagoon/lagoon-in-task-standard.json is shaped as Lagoon's createTaskTask
        sends it (no key, full DB rows, only project.variables.environment, a long branch).
        The namespace is Lagoon's: openshiftProjectName when sent, else the same value by
        Lagoon's shortening rule (58 - len(project), sha1 of the made-safe name)."""
        expected_ns = "drupal-example-feature-long-branch-name-for-the-new-se-83df"
        self.write_config(services={"cli": {"Bundle": self.bundle}},
                          extra={"Lagoon": lh.lagoon_config(lh.BROKER, self.target)})
        self.daemon()
        lh.wait_for_queues(self)
        body, routing_key = lh.fixture_body("lagoon-in-task-standard.json")
        self.assertTrue(routing_key.endswith(":jobs"))
        self.assertNotIn("key", body)
        self.assertEqual(body["environment"]["openshiftProjectName"], expected_ns)
        body["task"]["command"] = 'echo "ns=$NAMESPACE"; echo "vars=$LAGOON_ENVIRONMENT_VARIABLES"'
        self.peer.publish(body)
        derived = copy.deepcopy(body)
        derived["task"]["id"] = "420"
        del derived["environment"]["openshiftProjectName"]
        self.peer.publish(derived)
        for tid in ("42", "420"):
            complete = self.peer.wait_status(tid, "complete")
            self.assertEqual(complete["namespace"], expected_ns)
            self.assertEqual(complete["meta"]["environmentId"], 7)
            self.assertEqual(complete["meta"]["projectId"], 3)
            self.assertEqual(complete["meta"]["jobName"], "lagoon-task-x7k2pq")
            self.assertNotIn("key", complete["meta"])
            log = self.peer.task_logs(tid)[-1]["message"]
            self.assertIn(f"ns={expected_ns}\n", log)
            # Lagoon sends a standard task's variables as project.variables.environment;
            # the secret one among them is masked.
            vars_line = [ln for ln in log.split("\n") if ln.startswith("vars=")][0]
            self.assertIn('"LAGOON_FEATURE_FLAG_ROOTLESS_WORKLOAD"', vars_line)
            self.assertNotIn("s3cr3t-from-lagoon", log)
            self.assertIn('"DB_PASSWORD"', vars_line)
            # The project row's privateKey is never kept or shown.
            self.assertNotIn("FAKE-PROJECT-KEY", log)
        self.assertNotIn("FAKE-PROJECT-KEY", json.dumps(self.client.task("42")))

    def test_secret_variables_masked(self):
        self.start_daemon()
        body = self.standard_message("91", "echo pw=s3cr3t-value ok")
        body["project"]["variables"]["environment"] = lh.b64json(
            [{"name": "DB_PASSWORD", "value": "s3cr3t-value", "scope": "runtime"}])
        self.peer.publish(body)
        self.peer.wait_status("91", "complete")
        # The value of a variable named like a secret is masked wherever it shows.
        log = self.peer.task_logs("91")[-1]["message"]
        self.assertIn("pw=*** ok\n", log)
        self.assertNotIn("s3cr3t-value", log)
        self.assertIn("pw=*** ok", self.journal.task_messages("91"))


# The misc messages remote-controller handles and lagoon-taskd does not run: Lagoon's own
# shapes, handed to remote-controller's misc queue unchanged.
RC_FIXTURES = ("lagoon-in-build-cancel.json", "lagoon-in-restic-restore.json", "lagoon-in-environment-idling.json",
               "lagoon-in-environment-service.json", "lagoon-in-harborpolicy-update.json")


class TestCoexistence(BusTestCase):
    """RemoteControllerTarget=: remote-controller runs under a second target name and keeps
    builds and the non-task misc messages; lagoon-taskd runs every task."""

    def setUp(self):
        super().setUp()
        self.rc = f"rc-{os.urandom(3).hex()}"

    def start_coexisting(self):
        d = self.start_daemon(lagoon={"RemoteControllerTarget": self.rc})
        harness.wait_until(lambda: all(self._rc_depth(q) is not None for q in ("builddeploy", "remove", "misc")), 30,
                           what="remote-controller's queues")
        return d

    def _rc_depth(self, q):
        try:
            return self.peer.ch.queue_declare(f"lagoon-tasks:{self.rc}:{q}", durable=True,
                                              passive=True).method.message_count
        except Exception:
            self.peer.close()
            self.peer = lh.LagoonPeer(lh.BROKER, self.target)
            return None

    def publish_raw(self, key, body, props):
        self.peer.ch.basic_publish("lagoon-tasks", key, body, props)

    def rc_get(self, q, n, timeout=15):
        """The next n messages of remote-controller's queue q: [(properties, body)]."""
        got = []

        def check():
            while len(got) < n:
                method, props, body = self.peer.ch.basic_get(f"lagoon-tasks:{self.rc}:{q}", auto_ack=True)
                if method is None:
                    return False
                got.append((props, body))
            return True
        harness.wait_until(check, timeout, interval=0.1, what=f"{n} message(s) in {self.rc}:{q} (have {len(got)})")
        return got

    @staticmethod
    def props_dict(p):
        return {k: getattr(p, k) for k in ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
                                            "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
                                            "type", "user_id", "app_id", "cluster_id")}

    def ctl(self, *args):
        subprocess.run([lh.RABBITMQ_SH, "ctl", lh.BROKER.dir, *args], stdout=subprocess.DEVNULL, check=True,
                       timeout=120)

    def test_builds_and_misc_go_to_remote_controller(self):
        d = self.start_coexisting()
        sent = []
        for i, name in enumerate(RC_FIXTURES):
            with open(os.path.join(lh.FIXTURES, "lagoon", name)) as f:
                outer = json.loads(f.read(), strict=False)
            self.assertTrue(outer["routing_key"].endswith(":misc"), name)
            # Every property AMQP has (user_id: the broker lets only that user publish it).
            props = pika.BasicProperties(user_id="guest",
                content_type=outer["properties"]["content_type"], delivery_mode=outer["properties"]["delivery_mode"],
                content_encoding="identity", headers={"x-lagoon": name, "n": i, "nested": {"a": [1, "b"]}},
                priority=3, correlation_id=f"corr-{i}", reply_to="nobody", expiration="600000",
                message_id=f"msg-{i}", timestamp=1700000000 + i, type="misc", app_id="lagoon-api")
            sent.append((props, outer["payload"].encode()))
        # A key nobody knows, and a message without one: remote-controller's too.
        sent.append((pika.BasicProperties(delivery_mode=2), b'{"key": "deploytarget:route:migrate", "misc": {}}'))
        sent.append((pika.BasicProperties(), b'{"project": {"name": "p"}}'))
        # The cancel of a task unknown here: remote-controller may run it (from before the
        # switch), and answers it otherwise.
        with open(os.path.join(lh.FIXTURES, "lagoon", "lagoon-in-task-cancel.json")) as f:
            cancel = json.loads(f.read(), strict=False)
        sent.append((pika.BasicProperties(delivery_mode=2), cancel["payload"].encode()))
        cancel_id = json.loads(cancel["payload"], strict=False)["task"]["id"]
        for props, body in sent:
            self.publish_raw(f"{self.target}:misc", body, props)
        # Published by another user with its user_id: left out of the copy (the broker would
        # refuse it from lagoon-taskd's login and close the channel), the rest unchanged.
        self.ctl("add_user", "lagoon-other", "other-pw")
        self.ctl("set_permissions", "-p", "/", "lagoon-other", ".*", ".*", ".*")
        other = pika.BlockingConnection(pika.ConnectionParameters(
            host="127.0.0.1", port=lh.BROKER.port, credentials=pika.PlainCredentials("lagoon-other", "other-pw")))
        self.addCleanup(other.close)
        foreign = (pika.BasicProperties(user_id="lagoon-other", delivery_mode=2, message_id="foreign"),
                   b'{"key": "deploytarget:environment:idling", "misc": {}}')
        other.channel().basic_publish("lagoon-tasks", f"{self.target}:misc", foreign[1], foreign[0])
        # Builds and removals published for the target land in remote-controller's queues.
        build = b'{"name": "lagoon-build-abc", "spec": {"project": {"name": "drupal-example"}}}'
        remove = b'{"projectName": "drupal-example", "branch": "main", "type": "branch"}'
        self.publish_raw(f"{self.target}:builddeploy", build, pika.BasicProperties(delivery_mode=2))
        self.publish_raw(f"{self.target}:remove", remove, pika.BasicProperties(delivery_mode=2))
        # Tasks still run here.
        self.peer.publish(self.standard_message("101", "echo task here"), "jobs")

        got = self.rc_get("misc", len(sent) + 1)
        for (props, body), (gprops, gbody) in zip(sent, got):
            self.assertEqual(gbody, body)  # byte for byte
            self.assertEqual(self.props_dict(gprops), self.props_dict(props))
        self.assertEqual(got[-1][1], foreign[1])
        self.assertEqual((got[-1][0].user_id, got[-1][0].message_id, got[-1][0].delivery_mode), (None, "foreign", 2))
        self.assertEqual(self.rc_get("builddeploy", 1)[0][1], build)
        self.assertEqual(self.rc_get("remove", 1)[0][1], remove)
        self.peer.wait_status("101", "complete")
        # The cancel of a task known here is answered here (its final status again).
        self.peer.publish(self.cancel_message("101"), "misc")
        harness.wait_until(lambda: self.peer.poll() or self.peer.status_list("101").count("complete") == 2, 15,
                           what="the answer to the cancel of a finished task")
        self.peer.settle(1)
        self.assertEqual(self.peer.queue_depth("misc"), 0)
        for q in ("misc", "builddeploy", "remove"):
            self.assertEqual(self._rc_depth(q), 0, q)  # each once
        # None of them was a task or reported as one.
        self.assertEqual([t["id"] for t in self.client.tasks()], ["101"])
        self.assertEqual({s["meta"]["task"]["id"] for s in self.peer.statuses}, {"101"})
        self.assertIn(f"Task {cancel_id}: cancel requested by Lagoon for a task unknown here; handed to "
                      "remote-controller.", d.stderr())
        self.assertIn("Handing a deploytarget:build:cancel message to remote-controller", d.stderr())
        self.assertNotIn("Rejecting", d.stderr())

    def test_refused_or_unroutable_forward_is_kept(self):
        """The broker refuses the copy (remote-controller's queue full, reject-publish), then
        routes it nowhere (the queue deleted): the message stays unacknowledged here and
        reaches remote-controller once its queue takes it, once."""
        d = self.start_coexisting()
        rc_misc = f"lagoon-tasks:{self.rc}:misc"
        policy = f"full-{self.rc}"
        self.ctl("set_policy", "--apply-to", "queues", policy, f"^{rc_misc}$",
                 '{"max-length": 0, "overflow": "reject-publish"}')
        body, _ = lh.fixture_body("lagoon-in-environment-idling.json")
        raw = json.dumps(body).encode()
        self.publish_raw(f"{self.target}:misc", raw, pika.BasicProperties(delivery_mode=2, message_id="idle-1"))
        harness.wait_until(lambda: "refused the message handed on" in d.stderr(), 15, what="the refused forward")
        self.assertEqual(self._rc_depth("misc"), 0)
        self.assertEqual(self.peer.queue_depth("misc"), 0)  # not ready: delivered, unacknowledged
        # Remote-controller's queue gone: the copy is returned, not confirmed away.
        self.peer.ch.queue_delete(rc_misc)
        self.ctl("clear_policy", policy)
        harness.wait_until(lambda: "found no queue for the message handed on" in d.stderr(), 15,
                           what="the returned forward")
        # Remote-controller starts and declares its queue: the message arrives there, once.
        self.peer.ch.queue_declare(rc_misc, durable=True)
        self.peer.ch.queue_bind(rc_misc, "lagoon-tasks", f"{self.rc}:misc")
        props, got = self.rc_get("misc", 1)[0]
        self.assertEqual(got, raw)
        self.assertEqual(props.message_id, "idle-1")
        harness.wait_until(lambda: "The broker takes the messages handed on again" in d.stderr(), 5,
                           what="the all-clear")
        # Said once at info, once as a warning while held (and retried every second).
        err = d.stderr()
        self.assertEqual(err.count("info: Handing a deploytarget:environment:idling message"), 1, err)
        self.assertEqual(err.count("warning: The broker "), 1, err)
        self.peer.settle(2)
        self.assertEqual(self._rc_depth("misc"), 0)
        # Acknowledged only now: nothing left in the target's queue, redelivered or not.
        self.peer.close()
        self.peer = lh.LagoonPeer(lh.BROKER, self.target)
        self.assertEqual(self.peer.queue_depth("misc"), 0)
        self.assertHealthy()

    def test_without_remote_controller_says_how(self):
        d = self.start_daemon()
        body, _ = lh.fixture_body("lagoon-in-build-cancel.json")
        self.peer.publish(body, "misc")
        harness.wait_until(lambda: "Rejecting a message from the misc queue" in d.stderr(), 15, what="the rejection")
        self.assertIn("set [Lagoon] RemoteControllerTarget= to hand such messages to remote-controller", d.stderr())
        self.assertEqual(self.peer.queue_depth("misc"), 0)


if __name__ == "__main__":
    reason = lh.missing()
    if reason:
        print(f"test_bus.py: SKIP: {reason}")
        sys.exit(77)
    harness.main()
