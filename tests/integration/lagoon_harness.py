# SPDX-License-Identifier: LGPL-2.1-or-later
"""Lagoon's side of the integration tests: a real rabbitmq-server (tests/harness/rabbitmq.sh),
a peer that publishes Lagoon's task messages and collects what lagoon-taskd sends back
(pika, from Debian's python3-pika), and the fixture messages.

Used by test_bus*.py, which run under /usr/bin/python3 (pika is not in pyenv's)."""

import base64
import json
import os
import re
import subprocess
import time

import harness

FIXTURES = os.path.join(harness.SRCDIR, "tests", "fixtures")
RABBITMQ_SH = os.path.join(harness.SRCDIR, "tests", "harness", "rabbitmq.sh")
LAGOON_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

try:
    import pika
except ImportError:  # the test skips, see missing()
    pika = None


def missing():
    """Why the bus tests cannot run here, or None."""
    if pika is None:
        return "python3-pika is not installed"
    if not os.path.exists("/usr/sbin/rabbitmq-server"):
        return "rabbitmq-server is not installed"
    return None


def fixture_body(name):
    """The message body of fixtures/lagoon/<name>: its "payload" string. The fixture
    files hold it with raw newlines, which strict JSON refuses."""
    with open(os.path.join(FIXTURES, "lagoon", name)) as f:
        outer = json.loads(f.read(), strict=False)
    return json.loads(outer["payload"], strict=False), outer["routing_key"]


def fixture_json(name):
    with open(os.path.join(FIXTURES, "lagoon", name)) as f:
        return json.load(f)


def b64json(value):
    return base64.b64encode(json.dumps(value).encode()).decode()


class Broker:
    """A rabbitmq-server of the test's own, on 127.0.0.1, stopped by stop()."""

    def __init__(self, workdir, conf=None):
        self.dir = os.path.join(workdir, "rabbitmq")
        os.makedirs(self.dir, exist_ok=True)
        self.port = None
        if conf:  # rabbitmq.conf lines of this broker's own (rabbitmq.sh: DIR/extra.conf)
            with open(os.path.join(self.dir, "extra.conf"), "w") as f:
                f.write(conf)

    def start(self):
        r = subprocess.run([RABBITMQ_SH, "start", self.dir], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"rabbitmq.sh start failed ({r.returncode}): {r.stdout} {r.stderr}")
        self.port = int(r.stdout.strip().splitlines()[-1])
        return self.port

    def stop(self):
        r = subprocess.run([RABBITMQ_SH, "stop", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, timeout=300)
        if r.returncode != 0:  # a broker left running would outlive the test
            raise RuntimeError(f"rabbitmq.sh stop failed ({r.returncode}): {r.stderr}")

    @property
    def url(self):
        return f"amqp://127.0.0.1:{self.port}/"


class LagoonPeer:
    """Lagoon's end of the bus: publishes task messages, collects status messages
    (lagoon-tasks / controller) and logs (lagoon-logs)."""

    def __init__(self, broker, target, suffix=None):
        self.target = target
        self.conn = pika.BlockingConnection(pika.ConnectionParameters(
            host="127.0.0.1", port=broker.port, credentials=pika.PlainCredentials("guest", "guest"),
            heartbeat=30, blocked_connection_timeout=30))
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()
        for ex in ("lagoon-tasks", "lagoon-logs"):
            self.ch.exchange_declare(ex, "direct", durable=True)
        self.suffix = suffix = suffix or os.urandom(4).hex()
        self.status_queue = f"test-status-{suffix}"
        self.logs_queue = f"test-logs-{suffix}"
        self.ch.queue_declare(self.status_queue, durable=True)
        self.ch.queue_bind(self.status_queue, "lagoon-tasks", "controller")
        self.ch.queue_declare(self.logs_queue, durable=True)
        self.ch.queue_bind(self.logs_queue, "lagoon-logs", "")
        self.statuses = []  # parsed bodies, in arrival order
        self.logs = []      # lagoon-logs bodies (task logs and status events)
        self.raw = []       # (queue, properties, body bytes)

    def close(self):
        try:
            self.conn.close()
        except Exception:
            pass

    def publish(self, body, queue="jobs"):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        self.ch.basic_publish("lagoon-tasks", f"{self.target}:{queue}", data,
                              pika.BasicProperties(delivery_mode=2, content_type="application/json"))

    def queue_depth(self, queue):
        name = f"lagoon-tasks:{self.target}:{queue}"
        return self.ch.queue_declare(name, durable=True, passive=True).method.message_count

    def poll(self):
        for q, sink in ((self.status_queue, self.statuses), (self.logs_queue, self.logs)):
            while True:
                method, props, body = self.ch.basic_get(q, auto_ack=True)
                if method is None:
                    break
                self.raw.append((q, props, body))
                sink.append(json.loads(body))
        self.conn.process_data_events(0)

    def status_list(self, task_id):
        return [s["meta"]["jobStatus"] for s in self.statuses if s["meta"]["task"]["id"] == task_id]

    def wait_status(self, task_id, status, timeout=60):
        def check():
            self.poll()
            return status in self.status_list(task_id)
        harness.wait_until(check, timeout, interval=0.1, what=f"status {status} of task {task_id} "
                                                               f"(have {self.status_list(task_id)})")
        return [s for s in self.statuses if s["meta"]["task"]["id"] == task_id and s["meta"]["jobStatus"] == status][0]

    def task_logs(self, task_id):
        return [m for m in self.logs if m["meta"]["task"]["id"] == task_id and m["event"].startswith("task-logs:")]

    def events(self, task_id):
        return [m for m in self.logs if m["meta"]["task"]["id"] == task_id and m["event"].startswith("task:")]

    def settle(self, seconds=1.5):
        """Collects for a while, to see that nothing more (no duplicate) arrives."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll()
            time.sleep(0.1)


def wait_for_queues(test, timeout=30):
    """Waits until the daemon declared the target's jobs and misc queues (it consumes
    then). A passive declare of a missing queue closes the peer's channel, so test.peer
    (a LagoonPeer of test.target on BROKER) is opened again after each miss."""
    def exists(q):
        try:
            test.peer.queue_depth(q)
            return True
        except Exception:
            test.peer.close()
            test.peer = LagoonPeer(BROKER, test.target)
            return False
    harness.wait_until(lambda: exists("jobs") and exists("misc"), timeout, what="the daemon's queues")


# One broker for a whole test file: setUpModule = lagoon_harness.start_module_broker, and
# tearDownModule = lagoon_harness.stop_module_broker; tests read lagoon_harness.BROKER.
BROKER = None


def start_module_broker(conf=None):
    global BROKER
    BROKER = Broker(harness.SESSION_DIR, conf)
    BROKER.start()


def stop_module_broker():
    if BROKER:
        BROKER.stop()


def lagoon_config(broker, target, **extra):
    # No gap before final statuses (test_bus' ordering test sets its own), to keep tests quick.
    cfg = {"TargetName": target, "BrokerURL": broker.url, "BrokerHeartbeatSec": 5, "LogUpdateIntervalSec": 1,
           "FinalStatusDelaySec": 0}
    cfg.update(extra)
    return cfg
