#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Outages of Lagoon's message bus: the real rabbitmq-server stopped mid-task and started
again (same data), with and without a kill -9 of the daemon in between, and a daemon
started while the broker is down. Every status arrives exactly once, in order."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import lagoon_harness as lh  # noqa: E402
import promcheck  # noqa: E402


class TestBusOutage(harness.TaskdTestCase):
    def setUp(self):
        super().setUp()
        self.broker = lh.Broker(self.tmp)
        self.broker.start()
        self.target = f"it-{os.urandom(3).hex()}"
        self.peer = lh.LagoonPeer(self.broker, self.target)

    def tearDown(self):
        # Before the base class removes self.tmp, where the broker's state is.
        self.peer.close()
        self.broker.stop()
        super().tearDown()

    def config(self):
        self.write_config(services={"nginx": {"Bundle": self.bundle}},
                          extra={"Lagoon": lh.lagoon_config(self.broker, self.target, BrokerHeartbeatSec=2)})

    def message(self, task_id, command):
        body, _ = lh.fixture_body("amqp-in-task-standard.json")
        body["task"].update(id=task_id, command=command, service="nginx")
        return body

    def outbox_files(self):
        d = os.path.join(self.state_dir, "outbox")
        return [f for f in os.listdir(d) if f.endswith(".json")] if os.path.isdir(d) else []

    def broker_down(self):
        self.peer.close()
        lh.subprocess.run([lh.RABBITMQ_SH, "stop", self.broker.dir, "--keep"], check=True, timeout=300,
                          stdout=lh.subprocess.DEVNULL)

    def broker_up(self):
        port = self.broker.port
        self.assertEqual(self.broker.start(), port)
        # The peer's queues are durable and its messages persistent: what arrived before the
        # outage is still there.
        old = self.peer
        self.peer = lh.LagoonPeer(self.broker, self.target, suffix=old.suffix)
        self.peer.statuses, self.peer.logs = old.statuses, old.logs

    def wait_task(self, task_id, status, timeout=60):
        harness.wait_until(lambda: self.client.task(task_id).get("status") == status, timeout,
                           what=f"task {task_id} {status}")

    def test_broker_stopped_mid_task(self):
        self.config()
        d = self.daemon()
        harness.wait_until(lambda: d.stderr().count("Connected to Lagoon's message bus") >= 1, 30,
                           what="connected")
        # Outlives the broker's stop (over 2 s under load): the final messages must wait.
        self.peer.publish(self.message("1", "echo before; sleep 10; echo after"))
        self.peer.wait_status("1", "running")
        self.broker_down()
        self.wait_task("1", "complete")
        harness.wait_until(lambda: "Lost Lagoon's message bus" in d.stderr(), 30, what="loss noticed")
        self.assertTrue(self.outbox_files(), "the final messages wait in the outbox")
        self.assertHealthy()
        m = promcheck.scrape(self, self.client)
        self.assertEqual(m.value("broker_up"), 0)
        self.assertGreaterEqual(m.value("broker_disconnects_total"), 1)
        self.assertGreaterEqual(m.value("outbox_messages", sink="bus"), 1)
        self.assertGreater(m.value("outbox_oldest_age_seconds", sink="bus"), 0)
        self.assertEqual(m.value("outbox_messages", sink="api"), 0)
        self.assertFalse(m.has("lagoon_api_up"), "no APIURL=")
        self.broker_up()
        self.peer.wait_status("1", "complete", timeout=90)
        harness.wait_until(lambda: not self.outbox_files(), 30, what="outbox drained")
        m = promcheck.scrape(self, self.client)
        self.assertEqual(m.value("broker_up"), 1)
        self.assertEqual(m.value("outbox_messages", sink="bus"), 0)
        self.assertEqual(m.value("outbox_oldest_age_seconds", sink="bus"), 0)
        self.assertEqual(m.value("tasks_finished_total", status="complete"), 1)
        self.peer.settle(2)
        self.assertEqual(self.peer.status_list("1"), ["pending", "running", "complete"])
        self.assertIn("before\nafter\n", self.peer.task_logs("1")[-1]["message"])

    def test_outage_and_daemon_kill9(self):
        self.config()
        d = self.daemon()
        harness.wait_until(lambda: "Connected to Lagoon's message bus" in d.stderr(), 30, what="connected")
        # Long enough that the broker is down before task 2 ends (its stop took over 2 s
        # under load), so the final status must wait in the outbox across the kill -9.
        self.peer.publish(self.message("2", "sleep 10; echo done"))
        self.peer.publish(self.message("3", "sleep 300"))  # outlives the reconnect backoff (up to 60 s)
        self.peer.wait_status("2", "running")
        self.peer.wait_status("3", "running")
        self.broker_down()
        self.wait_task("2", "complete")
        d.kill9()
        d.start()
        self.assertEqual(self.client.task("3")["status"], "running")
        self.assertTrue(self.outbox_files())
        self.broker_up()
        self.peer.wait_status("2", "complete", timeout=90)
        harness.wait_until(lambda: "Connected to Lagoon's message bus" in d.stderr(), 60, what="reconnected")
        self.peer.publish({"key": "deploytarget:task:cancel", "task": {"id": "3", "name": "x"},
                           "project": {"name": "nginx-example"}, "environment": {"name": "main"}}, "misc")
        self.peer.wait_status("3", "cancelled", timeout=60)
        self.peer.settle(2)
        self.assertEqual(self.peer.status_list("2"), ["pending", "running", "complete"])
        self.assertEqual(self.peer.status_list("3"), ["pending", "running", "cancelled"])

    def test_daemon_starts_while_broker_down(self):
        self.config()
        self.broker_down()
        d = self.daemon()  # READY without a broker
        self.assertHealthy()
        self.broker_up()
        harness.wait_until(lambda: "Connected to Lagoon's message bus" in d.stderr(), 90, what="connected")
        self.peer.publish(self.message("4", "echo late"))
        self.peer.wait_status("4", "complete")
        self.assertEqual(self.peer.status_list("4"), ["pending", "running", "complete"])


if __name__ == "__main__":
    reason = lh.missing()
    if reason:
        print(f"test_bus_outage.py: SKIP: {reason}")
        sys.exit(77)
    harness.main()
