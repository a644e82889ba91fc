#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The broker's refusals, for real: a rabbitmq-server of this file's own with
max_message_size = 1 MiB (rabbitmq.conf), and a task whose log is small in bytes but
grows six-fold in JSON (ESC is \\u001b). The broker refuses the message (406, channel
closed); the daemon lowers its limit to the size the broker named, encodes the log again
with less of it, and goes on: the status arrives, the next task is reported, nothing is
retried forever. With BrokerMessageSizeMax= at the broker's size nothing is refused.
A publish the broker nacks (a full queue) is sent again with backoff."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import lagoon_harness as lh  # noqa: E402

BROKER_MAX = 1024 * 1024
# 400 000 ESC bytes in lines of 100: 2.4 MB once JSON-escaped.
ESCAPES = "echo head-marker; head -c 400000 /dev/zero | tr '\\0' '\\033' | fold -w 100; echo; echo tail-marker"


def setUpModule():
    lh.start_module_broker(conf=f"max_message_size = {BROKER_MAX}\n")


tearDownModule = lh.stop_module_broker


class TestBusSize(harness.TaskdTestCase):
    def setUp(self):
        super().setUp()
        self.target = f"it-{os.urandom(3).hex()}"
        self.peer = lh.LagoonPeer(lh.BROKER, self.target)
        self.addCleanup(self.peer.close)

    def start_daemon(self, **lagoon):
        self.write_config(services={"nginx": {"Bundle": self.bundle}},
                          extra={"Lagoon": lh.lagoon_config(lh.BROKER, self.target, **lagoon)})
        d = self.daemon()
        lh.wait_for_queues(self)
        return d

    def message(self, task_id, command):
        body, _ = lh.fixture_body("amqp-in-task-standard.json")
        body["task"]["id"] = task_id
        body["task"]["command"] = command
        body["task"]["service"] = "nginx"
        return body

    def check_log(self, task_id):
        raw = [body for q, props, body in self.peer.raw if q == self.peer.logs_queue and b'"task-logs:' in body]
        self.assertTrue(raw, "no log message")
        for body in raw:
            self.assertLessEqual(len(body), BROKER_MAX)
        last = self.peer.task_logs(task_id)[-1]
        self.assertEqual(last["meta"]["jobStatus"], "complete")
        text = last["message"]
        self.assertIn("head-marker", text)
        self.assertIn("tail-marker", text)
        self.assertIn("bytes omitted", text)
        self.assertGreater(text.count("\x1b"), 50000)  # cut to fit, not to nothing

    def test_refused_publish_is_encoded_again(self):
        d = self.start_daemon()
        self.peer.publish(self.message("1", ESCAPES))
        self.peer.wait_status("1", "complete", timeout=60)
        # The outbox goes on: the next task is reported.
        self.peer.publish(self.message("2", "echo second"))
        self.peer.wait_status("2", "complete", timeout=60)
        self.peer.settle()
        self.assertEqual(self.peer.status_list("1"), ["pending", "running", "complete"])
        self.check_log("1")
        err = d.stderr()
        self.assertIn("refused a message as too large", err)
        self.assertIn(f"max size {BROKER_MAX}", err)
        self.assertIn("encoded again with less of the log", err)

    def test_nacked_publish_backs_off(self):
        """A queue full with overflow reject-publish on lagoon-logs: the broker nacks every
        message there (the other queues bound get a copy all the same). They are sent again
        with backoff (one warning each; a busy loop sent thousands), the statuses go on
        meanwhile, and once the queue is gone they are confirmed and sent no more."""
        full = f"test-full-{self.peer.suffix}"
        self.peer.ch.queue_declare(full, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
        self.peer.ch.queue_bind(full, "lagoon-logs", "")
        d = self.start_daemon()
        self.peer.publish(self.message("4", "echo refused for a while"))
        self.peer.wait_status("4", "complete", timeout=60)
        self.peer.settle(3)
        copies = len(self.peer.task_logs("4"))
        self.assertLessEqual(copies, 10, [m["meta"]["jobStatus"] for m in self.peer.task_logs("4")])
        err = d.stderr()
        refused = err.count("sending it again with backoff")
        self.assertGreater(refused, 0, err)
        self.assertLessEqual(refused, 8, err)  # once per message, not once per try
        self.peer.ch.queue_delete(full)
        outbox = os.path.join(self.state_dir, "outbox")
        harness.wait_until(lambda: not [f for f in os.listdir(outbox) if f.endswith(".json")], 30,
                           what="every message confirmed")
        self.peer.settle(1)
        copies = len(self.peer.task_logs("4"))
        self.peer.settle(2)
        self.assertEqual(len(self.peer.task_logs("4")), copies, "still sent after the queue is gone")
        self.assertIn("refused for a while", self.peer.task_logs("4")[-1]["message"])

    def test_limit_configured(self):
        d = self.start_daemon(BrokerMessageSizeMax="1M")
        self.peer.publish(self.message("3", ESCAPES))
        self.peer.wait_status("3", "complete", timeout=60)
        self.peer.settle()
        self.check_log("3")
        err = d.stderr()
        self.assertNotIn("refused", err)
        self.assertNotIn("Lost Lagoon's message bus", err)


if __name__ == "__main__":
    reason = lh.missing()
    if reason:
        print(f"test_bus_size.py: SKIP: {reason}")
        sys.exit(77)
    harness.main()
