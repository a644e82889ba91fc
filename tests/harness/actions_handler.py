# SPDX-License-Identifier: LGPL-2.1-or-later
"""A test peer of how Lagoon's actions-handler consumes task status messages
(uselagoon/lagoon services/actions-handler: main.go, handler/handler.go,
handler/controller_tasks.go):

* it consumes a queue bound to exchange lagoon-tasks with routing key "controller"
  (Lagoon's queue is lagoon-tasks:controller; a test gives it a name of its own), with
  RABBITMQ_WORKERS=2 workers, so two messages are taken at a time (prefetch 2) and
  handled in parallel, each acknowledged when handled;
* for a message of type "task" it calls updateTask with status = upper(jobStatus) and
  remoteId, started, completed each only when not empty; the API applies the patch
  whatever the task's status was: last writer wins (services/api task/resolvers.ts);
* the time a handler takes (token, GraphQL round trip) is a random delay here.

state[task_id] is the task as Lagoon's API would have it; applied lists every update
in the order it was written. Runs its own pika connection on a thread; stop() ends it."""

import json
import random
import threading
import time

import pika


class ActionsHandler:
    WORKERS = 2

    def __init__(self, port, queue, delay=lambda body: random.uniform(0, 0.5), exchange="lagoon-tasks",
                 routing_key="controller"):
        self.port, self.queue, self.delay = port, queue, delay
        self.exchange, self.routing_key = exchange, routing_key
        self.lock = threading.Lock()
        self.state = {}
        self.applied = []
        self.busy = 0
        self.max_busy = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error = None
        self.thread = threading.Thread(target=self._run, name="actions-handler", daemon=True)
        self.thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"actions-handler peer did not start: {self._error}")
        if self._error:
            raise RuntimeError(f"actions-handler peer failed: {self._error}")

    def _run(self):
        try:
            self.conn = pika.BlockingConnection(pika.ConnectionParameters(
                host="127.0.0.1", port=self.port, credentials=pika.PlainCredentials("guest", "guest")))
            ch = self.conn.channel()
            ch.exchange_declare(self.exchange, "direct", durable=True)
            ch.queue_declare(self.queue, durable=True)
            ch.queue_bind(self.queue, self.exchange, self.routing_key)
            ch.basic_qos(prefetch_count=self.WORKERS)
            ch.basic_consume(self.queue, self._on_message)
        except Exception as e:  # reported by __init__
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        while not self._stop.is_set():
            self.conn.process_data_events(time_limit=0.1)
        self.conn.close()

    def _on_message(self, ch, method, props, body):
        # Each message goes to a worker of its own; at most WORKERS are unacknowledged.
        threading.Thread(target=self._handle, args=(ch, method.delivery_tag, body), daemon=True).start()

    def _handle(self, ch, tag, body):
        with self.lock:
            self.busy += 1
            self.max_busy = max(self.max_busy, self.busy)
        msg = json.loads(body)
        time.sleep(self.delay(msg))
        with self.lock:
            self.busy -= 1
            if msg.get("type") == "task":
                meta = msg["meta"]
                patch = {"status": meta["jobStatus"].upper()}
                for src, dst in (("remoteId", "remoteId"), ("startTime", "started"), ("endTime", "completed")):
                    if meta.get(src):
                        patch[dst] = meta[src]
                task_id = meta["task"]["id"]
                self.state.setdefault(task_id, {}).update(patch)
                self.applied.append((task_id, patch["status"]))
        self.conn.add_callback_threadsafe(lambda: ch.basic_ack(tag))

    def status(self, task_id):
        with self.lock:
            return self.state.get(task_id, {}).get("status")

    def stop(self):
        self._stop.set()
        self.thread.join(10)
