#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Cluster mode (issue 13): three real daemons (node-1..3, one TargetName=) consume one
real rabbitmq-server's queues and claim tasks as Leases in the Kubernetes API test peer
(ClaimNamespace=). Every task message is published twice, as the broker redelivers a
message whose ack was lost: each task must run exactly once (one pod, one final status
to Lagoon), the copies spread over the daemons, and each claim end as a done Lease held
by the daemon that ran the task. A claim left unaccepted by a daemon that died makes
the message wait, and is taken over once it expired."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "harness"))
import harness  # noqa: E402
import kube_harness as kh  # noqa: E402
import kube_it  # noqa: E402
import lagoon_harness as lh  # noqa: E402

FIXTURE = os.path.join(harness.SRCDIR, "tests", "fixtures", "kubernetes", "deployment-cli.json")
NAMESPACE = "nginx-example-main"  # the standard fixture's project and environment
with open(FIXTURE) as f:
    IMAGE = json.load(f)["spec"]["template"]["spec"]["containers"][0]["image"]
RUNNER_IMAGE = "example.com/test-task-image:v0.0.1"  # the advanced fixture's
CLAIMS = "lagoon-taskd"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{CLAIMS}/leases"
NODES = ("node-1", "node-2", "node-3")

class TcpProxy:
    """127.0.0.1:port to the broker's port, for one daemon: cut() closes every connection
    and refuses new ones (the broker unreachable, the API server not) until restore()."""

    def __init__(self, target_port):
        self.target = target_port
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.up = True
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            if not self.up:
                c.close()
                continue
            u = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        self.up = False
        for x in self.conns:
            try:
                x.shutdown(socket.SHUT_RDWR)
                x.close()
            except OSError:
                pass
        self.conns = []

    def restore(self):
        self.up = True

    def close(self):
        self.cut()
        self.lsock.close()


setUpModule = lh.start_module_broker
tearDownModule = lh.stop_module_broker


class ClusterTest(harness.TaskdTestCase):
    def setUp(self):
        super().setUp()
        self.target = f"it-{os.urandom(3).hex()}"
        self.peer = lh.LagoonPeer(lh.BROKER, self.target)
        self.addCleanup(self.peer.close)
        self.api = kh.KubeApiPeer(os.path.join(self.tmp, "api"), seeds=[FIXTURE], seed_namespace=NAMESPACE,
                                  namespaces=[NAMESPACE, CLAIMS], node_name="node-1")
        self.api.start()
        self.addCleanup(self.api.stop)
        self.kubeconfig = os.path.join(self.tmp, "kubeconfig")
        kh.write_kubeconfig(self.kubeconfig, self.api.url, ca_file=self.api.ca_file, token=self.api.token)

    def node_config(self, node, claim_duration="60s", tasks=None, services=None, lagoon=None):
        d = os.path.join(self.tmp, node)
        os.makedirs(d, exist_ok=True)
        cfg = self.base_config()
        cfg["Daemon"].update({"StateDirectory": os.path.join(d, "state"), "RuntimeDirectory": os.path.join(d, "run"),
                              "ListenSocket": os.path.join(d, "api.sock")})
        cfg.pop("Service cli", None)
        cfg["Tasks"]["MaxRunning"] = 8
        cfg["Tasks"].update(tasks or {})
        for name, body in (services or {}).items():
            cfg[f"Service {name}"] = body
        cfg["Lagoon"] = lh.lagoon_config(lh.BROKER, self.target, **(lagoon or {}))
        cfg["Kubernetes"] = {"NodeName": node, "Kubeconfig": self.kubeconfig, "ClaimNamespace": CLAIMS,
                             "ClaimDurationSec": claim_duration}
        return self.write_config(config=cfg, path=os.path.join(d, "taskd.conf"))

    def start_node(self, node, **kw):
        d = self.daemon(config_path=self.node_config(node, **kw), name=node)
        harness.wait_until(self.queues_declared, 30, what="the daemons' queues")
        return d

    def queues_declared(self, queue="jobs"):
        try:
            self.peer.queue_depth(queue)
            return True
        except Exception:
            self.peer.close()
            self.peer = lh.LagoonPeer(lh.BROKER, self.target)
            return False

    def message(self, task_id):
        body, _ = lh.fixture_body("amqp-in-task-standard.json")
        body["task"]["id"] = task_id
        body["task"]["name"] = body["task"]["taskName"] = f"lagoon-task-c{task_id}"
        body["task"]["service"] = "cli"
        body["task"]["command"] = f"echo task {task_id}"
        return body

    def pod_creates(self):
        return [r for r in self.api.requests() if r["method"] == "POST" and r["path"].endswith("/pods")]

    def final_statuses(self, task_id):
        return [s for s in self.peer.status_list(task_id) if s in ("complete", "failed", "cancelled")]

    def test_each_task_runs_once_across_three_daemons(self):
        daemons = [self.start_node(n) for n in NODES]
        ids = [str(1000 + i) for i in range(30)]
        for tid in ids:
            # The second copy is what the broker sends again when an ack was lost.
            self.peer.publish(self.message(tid))
            self.peer.publish(self.message(tid))

        def all_final():
            self.peer.poll()
            return all(self.final_statuses(t) for t in ids)
        harness.wait_until(all_final, 120, interval=0.2, what="a final status for every task")
        self.peer.settle(2)
        for tid in ids:
            self.assertEqual(self.final_statuses(tid), ["complete"], f"task {tid}: {self.peer.status_list(tid)}")
        # One pod per task, never two (a clone here and a pod there would be a second run).
        names = [r["json"]["metadata"].get("name") for r in self.pod_creates()]
        for tid in ids:
            self.assertEqual(names.count(f"lagoon-task-c{tid}"), 1, names)
        self.assertEqual(self.peer.queue_depth("jobs"), 0)

        # The claims: one done Lease per task, held by the daemon that ran it.
        leases = {ls["metadata"]["annotations"]["lagoon.sh/task-id"]: ls for ls in self.api.get(LEASES).json()["items"]}
        self.assertEqual(sorted(leases), sorted(ids))
        holders = set()
        for tid, ls in leases.items():
            self.assertEqual(ls["metadata"]["name"], f"lagoon-task-{tid}")
            self.assertEqual(ls["metadata"]["annotations"]["lagoon.sh/taskd-claim"], "done", ls)
            self.assertEqual(ls["metadata"]["labels"]["lagoon.sh/taskd-target"], self.target)
            self.assertEqual(ls["spec"]["leaseDurationSeconds"], 60)
            holder = ls["spec"]["holderIdentity"]
            self.assertIn(holder, NODES)
            holders.add(holder)
            d = daemons[NODES.index(holder)]
            self.assertIn(f"Task {tid}: accepted from Lagoon", d.stderr(), f"{holder} ran {tid}")
            for other in daemons:
                if other is not d:
                    self.assertNotIn(f"Task {tid}: accepted from Lagoon", other.stderr())
        self.assertGreater(len(holders), 1, "the tasks were not shared between the daemons")
        dropped = sum(d.stderr().count("acknowledged and left to it") for d in daemons)
        self.assertGreaterEqual(dropped, 1, "no copy reached a daemon that did not hold its claim")

    def test_max_running_per_environment_counts_every_daemon(self):
        """MaxRunningPerEnvironment=1 on two daemons: one task of the environment runs at a
        time between them (a slot Lease), not one per daemon; the others wait for the
        cluster's limit and say so; every slot is deleted at the end."""
        self.api.set_script(IMAGE, {"steps": [{"start": True}, {"log": "x", "delay": 0.8}, {"exit": 0}]})
        daemons = [self.daemon(config_path=self.node_config(n, tasks={"MaxRunningPerEnvironment": 1}), name=n)
                   for n in NODES[:2]]
        harness.wait_until(self.queues_declared, 30, what="the daemons' queues")
        clients = [harness.ApiClient(os.path.join(self.tmp, n, "api.sock")) for n in NODES[:2]]
        ids = [str(5000 + i) for i in range(6)]
        for tid in ids:
            self.peer.publish(self.message(tid))
        reasons = set()

        def all_final():
            self.peer.poll()
            for c in clients:
                reasons.update(t.get("waitReason", "") for t in c.tasks())
            return all(self.final_statuses(t) for t in ids)
        harness.wait_until(all_final, 120, interval=0.1, what="a final status for every task")
        runs = []
        for tid in ids:
            self.assertEqual(self.final_statuses(tid), ["complete"], f"task {tid}: {self.peer.status_list(tid)}")
            t = [c.task(tid) for c in clients if c.get(f"/v1/tasks/{tid}").status == 200]
            self.assertEqual(len(t), 1, tid)
            runs.append((harness.parse_time(t[0]["startedAt"]), harness.parse_time(t[0]["finishedAt"]), tid))
        runs.sort()
        for (_, end, a), (start, _, b) in zip(runs, runs[1:]):
            self.assertGreaterEqual(start, end, f"task {b} started before task {a} ended: {runs}")
        ran = {n: sum(f"Task {tid}: accepted from Lagoon" in d.stderr() for tid in ids) for n, d in zip(NODES, daemons)}
        self.assertTrue(all(ran.values()), f"both daemons must have run tasks: {ran}")
        self.assertTrue(any("across the cluster" in r for r in reasons), reasons)
        slots = [ls for ls in self.api.get(LEASES).json()["items"] if ls["metadata"]["name"].startswith("lagoon-taskd-slot-")]
        harness.wait_until(lambda: not [ls for ls in self.api.get(LEASES).json()["items"]
                                        if ls["metadata"]["name"].startswith("lagoon-taskd-slot-")], 10,
                           what=f"the slots deleted: {slots}")

    def test_a_dead_daemons_slot_is_taken_over_a_restarted_one_keeps_it(self):
        """The slot of a running task stays its own across a restart of its daemon (the
        other daemon's task keeps waiting), and is taken over once its daemon is gone for
        two lease durations."""
        self.api.set_script(IMAGE, {"steps": [{"start": True}, {"log": "working"}, {"wait": True}, {"exit": 0}]})
        tasks = {"MaxRunningPerEnvironment": 1}
        a = self.daemon(config_path=self.node_config("node-1", claim_duration="3s", tasks=tasks), name="node-1")
        harness.wait_until(self.queues_declared, 30, what="the daemons' queues")
        self.peer.publish(self.message("6000"))
        self.peer.wait_status("6000", "running", 60)
        b = self.daemon(config_path=self.node_config("node-2", claim_duration="3s", tasks=tasks), name="node-2")
        client_b = harness.ApiClient(os.path.join(self.tmp, "node-2", "api.sock"))
        harness.wait_until(lambda: self.queues_declared("node:node-2:jobs"), 30, what="node-2's own queue")
        self.peer.publish(self.message("6001"), "node:node-2:jobs")  # to node-2's own queue
        harness.wait_until(lambda: client_b.get("/v1/tasks/6001").status == 200 and "across the cluster" in
                           client_b.task("6001").get("waitReason", ""), 30, what="6001 waiting for the cluster's limit")
        a.kill9()
        a.start()
        self.peer.settle(8)  # well past two lease durations: the restarted daemon renews its slot
        self.assertEqual(client_b.task("6001")["status"], "pending")
        self.assertIn("Task 6000: holds slot", a.stderr())
        a.kill9()
        self.peer.wait_status("6001", "running", 60)
        self.assertIn("was held by a daemon that is gone; taken over", b.stderr())

    def test_standard_tasks_go_to_the_node_of_their_service(self):
        # cli runs on node-2 only (Ready); node-1's pod of it is not Ready.
        for name, node, ready in (("cli-a", "node-2", True), ("cli-b", "node-1", False)):
            self.api.put_object(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}",
                                {"apiVersion": "v1", "kind": "Pod",
                                 **kube_it.service_pod(name, NAMESPACE, node, os.urandom(32).hex(), ready=ready)})
        daemons = {n: self.start_node(n, claim_duration="10s") for n in NODES}
        ids = [str(4000 + i) for i in range(12)]
        for tid in ids:
            self.peer.publish(self.message(tid))
        for tid in ids:
            self.peer.wait_status(tid, "complete", 60)
        self.peer.settle(1)
        for tid in ids:
            self.assertEqual(self.final_statuses(tid), ["complete"], f"task {tid}: {self.peer.status_list(tid)}")
            ran = [n for n, d in daemons.items() if f"Task {tid}: accepted from Lagoon" in d.stderr()]
            self.assertEqual(ran, ["node-2"], f"task {tid}")
            ls = self.api.get(LEASES + f"/lagoon-task-{tid}").json()
            self.assertEqual(ls["spec"]["holderIdentity"], "node-2")
        handed = sum(d.stderr().count("runs on node-2; handed to that node") for n, d in daemons.items())
        self.assertGreater(handed, 0, "no task came to node-2 through another daemon")
        self.assertNotIn("handed to that node", daemons["node-2"].stderr())
        self.assertEqual(self.peer.queue_depth("node:node-2:jobs"), 0)

    def test_300_tasks_each_once_on_the_node_of_their_service(self):
        """The issue's scale: 300 standard tasks published once each to the shared queue
        of three daemons that all could clone the service locally ([Service cli]); cli's
        only Ready pod is on node-2, so every task is handed to node-2 and cloned there:
        each runs once, none as an API pod, and Lagoon gets one final status each."""
        for name, node, ready in (("cli-a", "node-2", True), ("cli-b", "node-1", False)):
            self.api.put_object(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}",
                                {"apiVersion": "v1", "kind": "Pod",
                                 **kube_it.service_pod(name, NAMESPACE, node, os.urandom(32).hex(), ready=ready)})
        daemons = {n: self.start_node(n, claim_duration="10s", services={"cli": {"Bundle": self.bundle}})
                   for n in NODES}
        ids = [str(20000 + i) for i in range(300)]
        for tid in ids:
            self.peer.publish(self.message(tid))

        def all_final():
            self.peer.poll()
            return all(self.final_statuses(t) for t in ids)
        harness.wait_until(all_final, 400, interval=0.5, what="a final status for every task")
        self.peer.settle(2)
        logs = {n: d.stderr() for n, d in daemons.items()}
        for tid in ids:
            self.assertEqual(self.final_statuses(tid), ["complete"], f"task {tid}: {self.peer.status_list(tid)}")
            ran = [n for n, text in logs.items() if f"Task {tid}: accepted from Lagoon" in text]
            self.assertEqual(ran, ["node-2"], f"task {tid}")
        self.assertEqual(self.pod_creates(), [], "an API pod while the service is Ready on node-2")
        self.assertGreater(sum(text.count("runs on node-2; handed to that node") for text in logs.values()), 0)
        for q in ("jobs", "node:node-2:jobs"):
            self.assertEqual(self.peer.queue_depth(q), 0)

    def cut_broker_connection(self, daemon):
        """Closes the daemon's AMQP connection at the broker (rabbitmqctl), as a network
        cut does: its unacknowledged deliveries go back to the queue."""
        out = subprocess.run(["ss", "-Htnp", "state", "established", f"dport = :{lh.BROKER.port}"],
                             stdout=subprocess.PIPE, text=True, check=True).stdout
        port = next(line.split()[2].rsplit(":", 1)[1] for line in out.splitlines() if f"pid={daemon.pid}," in line)
        conns = subprocess.run([lh.RABBITMQ_SH, "ctl", lh.BROKER.dir, "list_connections", "pid", "peer_port", "-q"],
                               stdout=subprocess.PIPE, text=True, check=True, timeout=120).stdout
        name = next(line.split("\t")[0] for line in conns.splitlines() if line.split("\t")[-1].strip() == port)
        subprocess.run([lh.RABBITMQ_SH, "ctl", lh.BROKER.dir, "close_connection", name, "test: cut"],
                       stdout=subprocess.DEVNULL, check=True, timeout=120)

    def test_a_cut_broker_connection_runs_nothing_twice(self):
        daemons = [self.start_node(n, claim_duration="3s") for n in NODES]
        ids = [str(6000 + i) for i in range(40)]
        for tid in ids[:20]:
            self.peer.publish(self.message(tid))
        # Cut node-1 while it holds deliveries it has not acknowledged yet.
        self.cut_broker_connection(daemons[0])
        for tid in ids[20:]:
            self.peer.publish(self.message(tid))

        def all_final():
            self.peer.poll()
            return all(self.final_statuses(t) for t in ids)
        harness.wait_until(all_final, 120, interval=0.2, what="a final status for every task")
        self.peer.settle(2)
        for tid in ids:
            self.assertEqual(self.final_statuses(tid), ["complete"], f"task {tid}: {self.peer.status_list(tid)}")
            ran = [d for d in daemons if f"Task {tid}: accepted from Lagoon" in d.stderr()]
            self.assertEqual(len(ran), 1, f"task {tid} accepted by {[d.name for d in ran]}")
        names = [r["json"]["metadata"].get("name") for r in self.pod_creates()]
        self.assertEqual(sorted(names), sorted(f"lagoon-task-c{t}" for t in ids))
        self.assertIn("Lost Lagoon's message bus", daemons[0].stderr())

    def test_cancels_reach_the_daemon_that_holds_the_claim(self):
        # The tasks run until their pod is deleted (the cancel).
        self.api.set_script(IMAGE, {"steps": [{"start": True}, {"log": "working"}, {"wait": True}, {"exit": 0}]})
        daemons = [self.start_node(n, claim_duration="10s", tasks={"MaxRunning": 12}) for n in NODES]
        for n in NODES:
            harness.wait_until(lambda: self.queues_declared(f"node:{n}:misc"), 30, what=f"{n}'s own queues")
        ids = [str(3000 + i) for i in range(30)]
        for tid in ids:
            self.peer.publish(self.message(tid))
        for tid in ids:
            self.peer.wait_status(tid, "running", 60)
        body, _ = lh.fixture_body("amqp-in-task-standard.json")
        rng = random.Random(13)
        for i, tid in enumerate(ids):
            # To a random daemon's own queue, or the shared one (whichever daemon takes it).
            queue = "misc" if i % 3 == 0 else f"node:{rng.choice(NODES)}:misc"
            self.peer.publish({"key": "deploytarget:task:cancel", "task": {"id": tid, "name": "x", "taskName": "x"},
                               "project": body["project"], "environment": body["environment"]}, queue)
        for tid in ids:
            self.peer.wait_status(tid, "cancelled", 60)
        self.peer.settle(2)
        for tid in ids:
            self.assertEqual(self.final_statuses(tid), ["cancelled"], f"task {tid}: {self.peer.status_list(tid)}")
        logs = [d.stderr() for d in daemons]
        handed = sum(text.count("cancel requested by Lagoon; handed to") for text in logs)
        self.assertGreater(handed, 0, "no cancel reached a daemon other than the task's")
        self.assertFalse(any("answering cancelled" in text for text in logs), "a cancel was answered without the task")
        for tid in ids:
            ran = [d for d in daemons if f"Task {tid}: accepted from Lagoon" in d.stderr()]
            self.assertEqual(len(ran), 1)
            self.assertIn(f"Task {tid}: cancel requested by Lagoon.", ran[0].stderr())
        # A cancel for a task nobody claimed is still answered at once.
        self.peer.publish({"key": "deploytarget:task:cancel", "task": {"id": "3999", "name": "x", "taskName": "x"},
                           "project": body["project"], "environment": body["environment"]}, "misc")
        self.peer.wait_status("3999", "cancelled", 30)

    def advanced_message(self, task_id):
        body, _ = lh.fixture_body("amqp-in-task-advanced.json")
        body["task"]["id"] = task_id
        body["task"]["name"] = body["task"]["taskName"] = f"lagoon-task-c{task_id}"
        body["advancedTask"]["JSONPayload"] = lh.b64json({"task": task_id})
        body["advancedTask"]["sshKey"] = 0
        body["advancedTask"]["deployerToken"] = False
        return body

    def test_a_dead_daemons_pods_are_adopted_its_other_tasks_reported_node_lost(self):
        """node-1 is kill -9ed while it runs two standard tasks and an advanced one as API
        pods, a local clone, and holds two queued tasks (MaxRunning=4 there). Once its
        claims expired, a survivor takes them over: it adopts the pods, which end with
        their real exit code (and taskData) and are reported once, with the remoteId and
        the whole log; the clone and the queued tasks are reported failed, node-lost, once.
        None stays running. node-1 started again runs and reports nothing a second time:
        its clone is stopped, its queued tasks never launch."""
        task_data = lh.b64json({"adopted": True})
        self.api.set_script(IMAGE, {"steps": [{"start": True}, {"log": "working ${TASK_DATA_ID}"}, {"wait": True},
                                              {"log": "done"}, {"exit": 0}]})
        self.api.set_script(RUNNER_IMAGE, {"steps": [{"start": True}, {"log": "advanced"}, {"wait": True},
                                                     {"annotate": {"lagoon.sh/taskData": task_data}}, {"exit": 0}]})
        self.api.put_object(f"/api/v1/namespaces/{NAMESPACE}/secrets/lagoon-env",
                            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lagoon-env"}, "data": {}})
        victim = self.daemon(config_path=self.node_config("node-1", claim_duration="3s", tasks={"MaxRunning": 4},
                                                          services={"local": {"Bundle": self.bundle}}), name="node-1")
        harness.wait_until(lambda: self.queues_declared("node:node-1:misc"), 30, what="node-1's own queues")
        others = {n: self.start_node(n, claim_duration="3s") for n in NODES[1:]}
        pods, advanced, clone, queued = ["7000", "7001"], "7002", "7003", ["7004", "7005"]
        for tid in pods:
            self.peer.publish(self.message(tid), "node:node-1:jobs")
        # The same image for 7001, but it leaves with 3 once released.
        self.peer.publish(self.advanced_message(advanced), "node:node-1:misc")
        local = self.message(clone)
        local["task"]["service"], local["task"]["command"] = "local", "echo cloned; exec sleep 600"
        self.peer.publish(local, "node:node-1:jobs")
        for tid in pods + [advanced, clone]:
            self.peer.wait_status(tid, "running", 60)
        for tid in queued:
            m = self.message(tid)
            m["task"]["service"] = "local"
            self.peer.publish(m, "node:node-1:jobs")
        for tid in queued:
            self.peer.wait_status(tid, "pending", 60)
        running = {tid: self.peer.wait_status(tid, "running", 1) for tid in pods + [advanced, clone]}
        for tid in pods + [advanced, clone] + queued:
            harness.wait_until(lambda: self.api.get(LEASES + f"/lagoon-task-{tid}").json()["metadata"]
                               ["annotations"].get("lagoon.sh/taskd-claim") == "accepted", 10,
                               what=f"the claim of {tid} accepted")
            ls = self.api.get(LEASES + f"/lagoon-task-{tid}").json()
            self.assertEqual(ls["spec"]["holderIdentity"], "node-1")
            report = json.loads(ls["metadata"]["annotations"]["lagoon.sh/taskd-report"])
            self.assertEqual(report["pod"], f"lagoon-task-c{tid}")
            self.assertNotIn("command", report["task"])
            self.assertNotIn("JSONPayload", json.dumps(report))
        victim.kill9()

        def adopted():
            return all(any(f"Task {tid}: adopting pod {NAMESPACE}/lagoon-task-c{tid}, started by node-1" in d.stderr()
                           for d in others.values()) for tid in pods + [advanced])
        harness.wait_until(adopted, 40, what="the pods adopted by a survivor")
        for tid in [pods[0], advanced]:
            self.api.advance(NAMESPACE, f"lagoon-task-c{tid}")
        self.api.step(NAMESPACE, f"lagoon-task-c{pods[1]}", {"exit": 3})  # its own exit code
        for tid in [pods[0], advanced]:
            final = self.peer.wait_status(tid, "complete", 60)
            self.assertEqual(final["meta"]["remoteId"], running[tid]["meta"]["remoteId"], tid)
            self.assertEqual(final["meta"]["project"], "nginx-example")
        self.assertEqual(self.peer.wait_status(advanced, "complete", 1)["meta"]["advancedData"], task_data)
        log = self.peer.task_logs(pods[0])[-1]["message"]
        self.assertIn(f"working {pods[0]}\ndone\n", log)  # the whole log, from the pod's start
        self.peer.wait_status(pods[1], "failed", 60)
        adopter = next(n for n, d in others.items() if f"Task {pods[1]}: adopting pod" in d.stderr())
        t = harness.ApiClient(os.path.join(self.tmp, adopter, "api.sock")).task(pods[1])
        self.assertEqual((t["exitCode"], t["reason"]), (3, "exit-code 3"), t)
        for tid in [clone] + queued:
            failed = self.peer.wait_status(tid, "failed", 60)
            self.assertEqual(failed["meta"]["task"]["id"], tid)
            logs = "".join(m["message"] for m in self.peer.task_logs(tid))
            self.assertIn("node-lost: node node-1 stopped renewing its claim", logs)
            ls = self.api.get(LEASES + f"/lagoon-task-{tid}").json()
            self.assertNotEqual(ls["spec"]["holderIdentity"], "node-1")
            self.assertEqual(ls["metadata"]["annotations"]["lagoon.sh/taskd-claim"], "done")

        # Back again: what was taken over is not run or reported a second time.
        victim.start()
        harness.wait_until(lambda: all(f"Task {tid}: another daemon took its claim over" in victim.stderr()
                                       for tid in [clone] + queued), 30, what="node-1 seeing its claims taken")
        self.peer.settle(8)  # past two lease durations
        expect = {pods[0]: "complete", pods[1]: "failed", advanced: "complete",
                  **{t: "failed" for t in [clone] + queued}}
        for tid, status in expect.items():
            self.assertEqual(self.final_statuses(tid), [status], f"task {tid}: {self.peer.status_list(tid)}")
            self.assertLessEqual(self.peer.status_list(tid).count("running"), 1, tid)
        client = harness.ApiClient(os.path.join(self.tmp, "node-1", "api.sock"))
        harness.wait_until(lambda: client.task(clone)["status"] == "cancelled", 30, what="the clone stopped on node-1")
        for tid in queued:  # dropped, never launched
            t = client.task(tid)
            self.assertEqual(t["status"], "cancelled", t)
            self.assertIsNone(t.get("startedAt"), t)
        # One pod per task: adopted, never created again.
        names = [r["json"]["metadata"].get("name") for r in self.pod_creates()]
        self.assertEqual(sorted(names), sorted(f"lagoon-task-c{t}" for t in pods + [advanced]))

    def test_a_frozen_daemon_reports_nothing_whose_claim_was_taken_over(self):
        """node-1 is frozen (SIGSTOP: a long pause, a partition) for longer than two lease
        durations while it runs an API pod and a local clone: node-2 adopts the pod and
        reports the clone lost. node-1 thawed finds its claims taken when it renews them:
        it stops the clone and reports neither task; node-2 reports the pod's end."""
        self.api.set_script(IMAGE, {"steps": [{"start": True}, {"log": "working"}, {"wait": True}, {"log": "done"},
                                              {"exit": 0}]})
        victim = self.daemon(config_path=self.node_config("node-1", claim_duration="3s",
                                                          services={"local": {"Bundle": self.bundle}}), name="node-1")
        harness.wait_until(lambda: self.queues_declared("node:node-1:jobs"), 30, what="node-1's own queues")
        survivor = self.start_node("node-2", claim_duration="3s")
        pod, clone = "8000", "8001"
        self.peer.publish(self.message(pod), "node:node-1:jobs")
        local = self.message(clone)
        local["task"]["service"], local["task"]["command"] = "local", "exec sleep 600"
        self.peer.publish(local, "node:node-1:jobs")
        for tid in (pod, clone):
            self.peer.wait_status(tid, "running", 60)
        victim.signal(signal.SIGSTOP)
        try:
            harness.wait_until(lambda: f"Task {pod}: adopting pod" in survivor.stderr(), 40, what="the pod adopted")
            self.peer.wait_status(clone, "failed", 30)
        finally:
            victim.signal(signal.SIGCONT)
        harness.wait_until(lambda: all(f"claim lagoon-task-{t} was taken by node-2" in victim.stderr()
                                       for t in (pod, clone)), 30, what="node-1 finding its claims taken")
        client = harness.ApiClient(os.path.join(self.tmp, "node-1", "api.sock"))
        harness.wait_until(lambda: client.task(clone)["status"] == "cancelled", 30, what="the clone stopped on node-1")
        self.api.advance(NAMESPACE, f"lagoon-task-c{pod}")
        self.peer.wait_status(pod, "complete", 60)
        self.peer.settle(5)
        self.assertEqual(self.final_statuses(pod), ["complete"], self.peer.status_list(pod))
        self.assertEqual(self.final_statuses(clone), ["failed"], self.peer.status_list(clone))
        harness.wait_until(lambda: client.task(pod)["status"] in ("complete", "failed"), 30,
                           what="node-1 seeing the pod end too")
        self.peer.settle(2)
        self.assertEqual(self.final_statuses(pod), ["complete"], self.peer.status_list(pod))

    def test_a_returning_daemon_drops_what_its_outbox_held_for_a_task_taken_over(self):
        """node-1 loses the broker (the API server stays reachable) while its API pod
        writes more: the log update waits in its outbox. node-1 is kill -9ed; node-2
        adopts the pod and reports its end with the whole log. node-1 back with the broker
        drops the stale update instead of sending it after node-2's final status."""
        self.api.set_script(IMAGE, {"steps": [{"start": True}, {"log": "working"}, {"wait": True}, {"log": "done"},
                                              {"exit": 0}]})
        proxy = TcpProxy(lh.BROKER.port)
        self.addCleanup(proxy.close)
        victim = self.daemon(config_path=self.node_config(
            "node-1", claim_duration="3s", lagoon={"BrokerURL": f"amqp://127.0.0.1:{proxy.port}/"}), name="node-1")
        harness.wait_until(lambda: self.queues_declared("node:node-1:jobs"), 30, what="node-1's own queues")
        survivor = self.start_node("node-2", claim_duration="3s")
        tid, pod = "8100", "lagoon-task-c8100"
        self.peer.publish(self.message(tid), "node:node-1:jobs")
        self.peer.wait_status(tid, "running", 60)
        proxy.cut()
        harness.wait_until(lambda: "Lost Lagoon's message bus" in victim.stderr(), 30, what="node-1 off the bus")
        self.api.step(NAMESPACE, pod, {"log": "stale"})
        outbox = os.path.join(self.tmp, "node-1", "state", "outbox")

        def queued():
            for name in os.listdir(outbox):
                if name.endswith(".json"):
                    with open(os.path.join(outbox, name)) as f:
                        if "stale" in f.read():
                            return True
            return False
        harness.wait_until(queued, 30, what="the log update in node-1's outbox")
        victim.kill9()
        harness.wait_until(lambda: f"Task {tid}: adopting pod" in survivor.stderr(), 40, what="the pod adopted")
        self.api.advance(NAMESPACE, pod)
        self.peer.wait_status(tid, "complete", 60)
        proxy.restore()
        victim.start()
        harness.wait_until(lambda: "Connected to Lagoon's message bus" in victim.stderr() and not queued(), 30,
                           what="node-1 on the bus again, its outbox without the stale update")
        self.peer.settle(4)
        self.assertEqual(self.final_statuses(tid), ["complete"], self.peer.status_list(tid))
        last = self.peer.task_logs(tid)[-1]["message"]
        self.assertIn("stale\ndone\n", last)  # the survivor's whole log stays the last one
        self.assertIn(f"Task {tid}: its claim was taken over while this daemon was away; its unsent logs message is "
                      "dropped.", victim.stderr())

    def test_unaccepted_claim_of_a_dead_daemon_is_taken_over(self):
        # node-9 "died" right after creating the claim, before it stored the task.
        now = int(time.time())  # the stamp below has whole seconds
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(now))
        r = self.api.post(LEASES, {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "lagoon-task-2001",
                         "annotations": {"lagoon.sh/taskd-claim": "claimed", "lagoon.sh/task-id": "2001"}},
            "spec": {"holderIdentity": "node-9", "leaseDurationSeconds": 4, "acquireTime": stamp,
                     "renewTime": stamp}})
        self.assertEqual(r.status, 201, r)
        d = self.start_node("node-1")
        self.peer.publish(self.message("2001"))
        # Not dropped and not run while the claim may still be node-9's ...
        time.sleep(2)
        self.peer.poll()
        self.assertEqual(self.final_statuses("2001"), [])
        self.assertNotIn("Task 2001: accepted from Lagoon", d.stderr())
        # ... and taken over once it expired.
        self.peer.wait_status("2001", "complete", 60)
        self.assertGreaterEqual(time.time() - now, 4)
        ls = self.api.get(LEASES + "/lagoon-task-2001").json()
        self.assertEqual(ls["spec"]["holderIdentity"], "node-1")
        self.assertEqual(ls["spec"]["leaseTransitions"], 1)
        self.assertIn("taking it over", d.stderr())
        self.assertEqual(len(self.pod_creates()), 1)


if __name__ == "__main__":
    harness.main()
