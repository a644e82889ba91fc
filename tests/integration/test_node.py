#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Node mode, local clone: the real daemon with a kubelet peer whose /pods lists a
Running+Ready pod of the "cli" service on node-1 whose container runs in a private
containerd (tests/harness/containerd.sh, a sandbox + service container as the CRI plugin
makes a pod). A standard task of that service runs as a clone of the container (runc +
conmon): it sees the file the service wrote, its writes stay out of the service's rootfs,
exit codes pass through, it is in the service's network namespace, and its JSON has no
"pod". When the kubelet lists the service only on another node, or not at all (idled),
the task runs as an API pod built from the Deployment instead."""

import os
import signal
import sys
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import kube_it  # noqa: E402

NAMESPACE = "proj-main"  # Lagoon's rule for project "proj", environment "main"


class NodeCloneTest(harness.TaskdTestCase):
    ctd = None

    @classmethod
    def setUpClass(cls):
        why = kube_it.containerd_missing() or kube_it.kh.missing()
        if why:
            raise unittest.SkipTest(why)
        cls.ctd = kube_it.Containerd(os.path.join(harness.SESSION_DIR, "containerd"))
        try:
            cls.ctd.start()
            tag = uuid.uuid4().hex[:8]
            cls.sandbox_id, cls.service_id = f"sandbox-{tag}", f"cli-{tag}"
            cls.ctd.run_pod(cls.sandbox_id, cls.service_id, "echo service-data > /app/file; exec sleep 900")
        except Exception:
            cls.ctd.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.ctd:
            cls.ctd.stop()

    def setUp(self):
        super().setUp()
        self.peers = kube_it.NodePeers(self.tmp, NAMESPACE)
        self.peers.start()

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self.peers.stop()

    def start_daemon(self, pods):
        self.peers.kubelet.write_pods(pods)
        self.write_config(services={"cli": None},
                          extra={"Kubernetes": self.peers.section(containerd=self.ctd)})
        return self.daemon()

    def submit(self, command, name, **kw):
        return self.submit_ok(command, id=name, name=name, service="cli", project="proj", environment="main", **kw)

    def local_pod(self, **kw):
        return kube_it.service_pod("cli-7d9f8c6b5-n1abc", NAMESPACE, kube_it.NODE, self.service_id, **kw)

    # ------------------------------------------------------------------------------

    def test_clone_holds_the_network_namespace_it_found(self):
        """The clone joined the pod's network by /proc/<pid>/ns/net, a path runc read later,
        when the service's process might be gone and its PID another process's (issue 15,
        9). The namespace is held from the lookup on: the service's process killed while
        the daemon is stopped between the lookup and the launch, the task still runs in
        the pod's network namespace (before: launch-error, or another process's)."""
        tag = uuid.uuid4().hex[:8]
        sandbox, service = f"sandbox-{tag}", f"cli-{tag}"
        self.ctd.run_pod(sandbox, service, "exec sleep 900")
        for cid in (sandbox, service):  # run last first
            self.addCleanup(self.ctd.sh, "ctr", "container", "rm", cid, check=False)
            self.addCleanup(self.ctd.sh, "ctr", "task", "rm", "-f", cid, check=False)
        net = os.readlink(f"/proc/{self.ctd.pid(service)}/ns/net")
        self.peers.kubelet.write_pods([kube_it.service_pod("cli-7d9f8c6b5-n9tmp", NAMESPACE, kube_it.NODE, service)])
        self.write_config(services={"cli": None}, extra={"Kubernetes": self.peers.section(containerd=self.ctd)})
        d = self.daemon(start=False)
        d.start(extra_env={"LAGOON_TASKD_DEBUG_STOP_AT": "prepared"})
        self.submit("echo net=$(readlink /proc/self/ns/net)", "lagoon-task-netns")
        harness.wait_until(lambda: harness.proc_state(d.pid) == "T", 30, what="the daemon to stop after the lookup")
        pid = self.ctd.pid(service)
        os.kill(pid, signal.SIGKILL)
        harness.wait_until(lambda: not os.path.exists(f"/proc/{pid}/ns"), 10, what="the service's process gone")
        d.signal(signal.SIGCONT)
        t = self.client.wait_final("lagoon-task-netns", 60)
        self.assertEqual((t["status"], t.get("exitCode")), ("complete", 0), t)
        self.assertEqual(self.client.logs("lagoon-task-netns").splitlines(), [f"net={net}"])
        # The clean-up after the end lets the namespace go (no mount left).
        harness.wait_until(lambda: harness.mounts_under(self.state_dir) == [], 15, what="the task's mounts gone")

    def test_clone_of_the_local_service_container(self):
        other = kube_it.service_pod("cli-7d9f8c6b5-n2xyz", NAMESPACE, "node-2", "elsewhere")
        self.start_daemon([other, self.local_pod()])
        self.submit("cat /app/file; echo from-task > /app/task-wrote; cat /app/task-wrote; "
                    "echo net=$(readlink /proc/self/ns/net)", "lagoon-task-clone1")
        t = self.client.wait_final("lagoon-task-clone1", 60)
        self.assertEqual((t["status"], t.get("exitCode")), ("complete", 0), t)
        self.assertNotIn("pod", t)
        net = os.readlink(f"/proc/{self.ctd.pid(self.service_id)}/ns/net")
        want = ["service-data", "from-task", f"net={net}"]
        self.assertEqual(self.client.logs("lagoon-task-clone1").splitlines(), want)
        self.assertEqual(self.journal.task_messages("lagoon-task-clone1", expect=len(want)), want)
        # The task's write is in its own upper layer, not in the service.
        rootfs = os.path.join(self.ctd.bundle(self.service_id), "rootfs")
        self.assertTrue(os.path.exists(os.path.join(rootfs, "app", "file")))
        self.assertFalse(os.path.exists(os.path.join(rootfs, "app", "task-wrote")))
        out = self.ctd.sh("ctr", "task", "exec", "--exec-id", "chk1", self.service_id, "/bin/sh", "-c",
                          "cat /app/file; test -e /app/task-wrote && echo leaked || echo clean")
        self.assertEqual(out.split(), ["service-data", "clean"])
        # Nothing went to the API server: no pod created, no Deployment read.
        self.assertEqual(self.peers.created_pods(), [])

        # Exit codes pass through; the service keeps running.
        self.submit("echo bye; exit 3", "lagoon-task-clone2")
        t = self.client.wait_final("lagoon-task-clone2", 60)
        self.assertEqual((t["status"], t.get("reason"), t.get("exitCode")), ("failed", "exit-code 3", 3), t)
        self.assertNotIn("pod", t)
        self.assertEqual(self.client.logs("lagoon-task-clone2").splitlines(), ["bye"])
        os.kill(self.ctd.pid(self.service_id), 0)

    def test_no_local_pod_runs_an_api_pod(self):
        image = kube_it.image_of_fixture()
        self.peers.api.set_script(image, {"steps": [{"start": True}, {"log": "in a pod"}, {"exit": 0}]})
        # The service runs only on another node: an API pod.
        other = kube_it.service_pod("cli-7d9f8c6b5-n2xyz", NAMESPACE, "node-2", "elsewhere")
        self.start_daemon([other])
        self.submit("echo in a pod", "lagoon-task-remote")
        t = self.client.wait_final("lagoon-task-remote", 60)
        self.assertEqual(t["status"], "complete", t)
        self.assertEqual(t.get("pod"), "lagoon-task-remote")
        self.assertEqual(self.client.logs("lagoon-task-remote").splitlines(), ["in a pod"])
        # A pod of this node that is not Ready is not cloned either.
        self.peers.kubelet.write_pods([self.local_pod(ready=False)])
        self.submit("echo in a pod", "lagoon-task-notready")
        t = self.client.wait_final("lagoon-task-notready", 60)
        self.assertEqual((t["status"], t.get("pod")), ("complete", "lagoon-task-notready"), t)
        # Idled: no pod of the service at all.
        self.peers.kubelet.write_pods([])
        self.submit("echo in a pod", "lagoon-task-idled")
        t = self.client.wait_final("lagoon-task-idled", 60)
        self.assertEqual((t["status"], t.get("pod")), ("complete", "lagoon-task-idled"), t)
        names = [p["metadata"]["name"] for p in self.peers.created_pods()]
        self.assertEqual(names, ["lagoon-task-remote", "lagoon-task-notready", "lagoon-task-idled"])
        for p in self.peers.created_pods():
            self.assertEqual(p["metadata"]["labels"]["taskd.lagoon.sh/node"], "node-1")
        # A service name goes into the Deployment's path: "." and "Cli" are no DNS labels.
        for i, svc in enumerate((".", "Cli")):
            self.submit_ok("true", id=f"lagoon-task-bad{i}", service=svc, project="proj", environment="main")
            t = self.client.wait_final(f"lagoon-task-bad{i}", 60)
            self.assertEqual((t["status"], t.get("reason")),
                             ("failed", f'service-not-found: "{svc}" is not a DNS label'), t)
        self.assertEqual(len(self.peers.created_pods()), 3)


if __name__ == "__main__":
    harness.main(needs_bundle=False)
