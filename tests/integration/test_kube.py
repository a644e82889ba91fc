#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Node mode, API pods: the real daemon against the Kubernetes API test peer
(tests/harness/fake-kube-api.py, HTTPS, bearer token, seeded with the real Lagoon cli
Deployment of tests/fixtures). A standard task whose service has no container on this
node runs as a pod built from the Deployment: every field of that pod is checked, its
log lines arrive once and in order (logs API and journald), its exit code passes
through; image pull failures, external deletion, cancel, API 500s, dropped watches with
a compaction (410), a bad TLS certificate and a kill -9 of the daemon mid-task are each
handled as DESIGN.md says."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "harness"))
import harness  # noqa: E402
import kube_harness as kh  # noqa: E402

FIXTURE = os.path.join(harness.SRCDIR, "tests", "fixtures", "kubernetes", "deployment-cli.json")
NAMESPACE = "proj-main"  # Lagoon's rule for project "proj", environment "main"
with open(FIXTURE) as f:
    DEPLOYMENT = json.load(f)
IMAGE = DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]["image"]


class KubeTest(harness.TaskdTestCase):
    def setUp(self):
        super().setUp()
        self.api = kh.KubeApiPeer(os.path.join(self.tmp, "api"), seeds=[FIXTURE], seed_namespace=NAMESPACE,
                                  namespaces=[NAMESPACE], node_name="node-1")
        self.api.start()
        self.kubeconfig = os.path.join(self.tmp, "kubeconfig")
        kh.write_kubeconfig(self.kubeconfig, self.api.url, ca_file=self.api.ca_file, token=self.api.token)

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self.api.stop()

    def start_daemon(self, keep_task_pods=None, kubeconfig=None, tasks=None, start=True):
        kube = {"NodeName": "node-1", "Kubeconfig": kubeconfig or self.kubeconfig, "APINamespaces": "proj-* other-?"}
        if keep_task_pods is not None:
            kube["KeepTaskPods"] = str(keep_task_pods)
        self.write_config(tasks=tasks, services={"cli": None}, extra={"Kubernetes": kube})
        return self.daemon(start=start)

    def script(self, *steps):
        self.api.set_script(IMAGE, {"steps": list(steps)})

    def submit(self, command, name, **kw):
        return self.submit_ok(command, id=name, name=name, service="cli", project="proj", environment="main", **kw)

    def created_pods(self):
        return [r for r in self.api.requests() if r["method"] == "POST" and r["path"].endswith("/pods")]

    def deletes(self, name):
        return [r for r in self.api.requests() if r["method"] == "DELETE" and r["path"].endswith("/pods/" + name)]

    # ------------------------------------------------------------------------------

    def test_api_tasks_only_in_allowed_namespaces(self):
        """A member of SocketGroup= chose the namespace (project-environment) and got a pod
        of any Deployment there; now only in APINamespaces=, refused before any API call."""
        self.start_daemon()
        self.api.requests(clear=True)
        for project, env in (("kube", "system"), ("other", "xx"), ("lagoon", "core")):
            r = self.client.submit("id", service="cli", project=project, environment=env)
            self.assertEqual((r.status, r.json["error"]), (403, "forbidden"), r)
            self.assertIn(f"namespace {project}-{env} is not open to tasks from the control API (APINamespaces=)",
                          r.json["message"])
        self.assertEqual([q["path"] for q in self.api.requests() if "/namespaces/" in q["path"]], [])
        self.assertEqual(self.client.get("/v1/tasks").json["tasks"], [])

    def test_standard_task_pod_from_the_deployment(self):
        lines = [f"line {i} of the task" for i in range(20)]
        self.script({"start": True}, *({"log": l} for l in lines), {"exit": 0})
        self.start_daemon()
        self.submit("drush cr && echo 'done'", "lagoon-task-abc1")
        t = self.client.wait_final("lagoon-task-abc1", 60)
        self.assertEqual(t["status"], "complete", t)
        self.assertEqual(t["exitCode"], 0)
        self.assertEqual(t["pod"], "lagoon-task-abc1")
        self.assertEqual(self.client.logs("lagoon-task-abc1").splitlines(), lines)
        self.assertEqual(self.journal.task_messages("lagoon-task-abc1", expect=len(lines)), lines)

        posts = self.created_pods()
        self.assertEqual(len(posts), 1, posts)
        pod = posts[0]["json"]
        tmpl = DEPLOYMENT["spec"]["template"]["spec"]
        meta = pod["metadata"]
        self.assertEqual(meta["name"], "lagoon-task-abc1")
        self.assertEqual(meta["namespace"], NAMESPACE)
        self.assertEqual(meta["labels"], {
            "lagoon.sh/jobType": "task", "lagoon.sh/taskName": "lagoon-task-abc1",
            "app.kubernetes.io/managed-by": "lagoon-taskd", "taskd.lagoon.sh/node": "node-1"})
        self.assertEqual(meta["annotations"], {
            "cluster-autoscaler.kubernetes.io/safe-to-evict": "false", "taskd.lagoon.sh/task-id": "lagoon-task-abc1"})
        spec = pod["spec"]
        self.assertEqual(spec["restartPolicy"], "Never")
        for key in ("volumes", "imagePullSecrets", "priorityClassName", "enableServiceLinks",
                    "automountServiceAccountToken"):
            self.assertEqual(spec[key], tmpl[key], key)
        c, tc = spec["containers"][0], tmpl["containers"][0]
        self.assertEqual(c["command"], ["/sbin/tini", "--", "/lagoon/entrypoints.sh", "/bin/sh", "-c",
                                        "drush cr && echo 'done'"])
        for key in ("image", "imagePullPolicy", "envFrom", "volumeMounts", "resources"):
            self.assertEqual(c[key], tc[key], key)
        self.assertNotIn("readinessProbe", c)
        env = {e["name"]: e.get("value") for e in c["env"]}
        self.assertNotIn("CRONJOBS", env)
        self.assertEqual(env["SERVICE_NAME"], "cli")
        self.assertEqual(env["TASK_DATA_ID"], "lagoon-task-abc1")
        self.assertEqual(env["LAGOON_PROJECT"], "proj")
        self.assertEqual(env["LAGOON_GIT_BRANCH"], "main")
        self.assertEqual(env["NAMESPACE"], NAMESPACE)

    def test_exit_code_and_unknown_service(self):
        self.script({"start": True}, {"log": "failing"}, {"exit": 3})
        self.start_daemon()
        self.submit("exit 3", "lagoon-task-exit3")
        t = self.client.wait_final("lagoon-task-exit3", 60)
        self.assertEqual((t["status"], t["reason"], t["exitCode"]), ("failed", "exit-code 3", 3), t)

        t = self.submit_ok("true", id="nosvc", service="nginx", project="proj", environment="main")
        t = self.client.wait_final("nosvc", 60)
        self.assertEqual(t["status"], "failed", t)
        self.assertTrue(t["reason"].startswith("service-not-found"), t)
        self.assertIn("no deployment nginx", t["reason"])

    def test_image_pull_failure(self):
        self.script({"waiting": "ErrImagePull", "message": "pull access denied", "delay": 0.2})
        self.start_daemon()
        self.submit("true", "lagoon-task-pull")
        t = self.client.wait_final("lagoon-task-pull", 60)
        self.assertEqual(t["status"], "failed", t)
        self.assertTrue(t["reason"].startswith("image-pull: ErrImagePull"), t)
        harness.wait_until(lambda: self.deletes("lagoon-task-pull"), 10,
                           what=f"the pod deleted: {[(r['method'], r['path']) for r in self.api.requests()]}")

    def test_external_deletion_and_cancel(self):
        self.script({"start": True}, {"log": "started"}, {"wait": True}, {"exit": 0})
        self.start_daemon()
        self.submit("sleep 100", "lagoon-task-del")
        self.api.wait_pod(NAMESPACE, "lagoon-task-del",
                          lambda p: p and p.get("status", {}).get("phase") == "Running", timeout=20)
        self.api.delete_object(f"/api/v1/namespaces/{NAMESPACE}/pods/lagoon-task-del")
        t = self.client.wait_final("lagoon-task-del", 60)
        self.assertEqual(t["status"], "failed", t)
        self.assertTrue(t["reason"].startswith("pod-deleted"), t)

        self.submit("sleep 100", "lagoon-task-cancel")
        self.api.wait_pod(NAMESPACE, "lagoon-task-cancel",
                          lambda p: p and p.get("status", {}).get("phase") == "Running", timeout=20)
        self.assertEqual(self.client.cancel("lagoon-task-cancel").status, 202)
        t = self.client.wait_final("lagoon-task-cancel", 60)
        self.assertEqual(t["status"], "cancelled", t)
        self.assertTrue(self.deletes("lagoon-task-cancel"))

    def test_api_errors_dropped_watches_and_compaction(self):
        lines = [f"n{i}" for i in range(30)]
        steps = [{"start": True}]
        for i, l in enumerate(lines):
            steps.append({"log": l, "delay": 0.05})
            if i == 10:
                steps.append({"wait": True})
        steps.append({"exit": 0})
        self.script(*steps)
        self.api.fail(500, path=f"/api/v1/namespaces/{NAMESPACE}/pods", method="POST", count=1)
        self.api.fail(429, path=f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", method="GET", count=1,
                      retry_after=1)
        self.start_daemon()
        self.submit("seq", "lagoon-task-flaky")
        harness.wait_until(lambda: "n10" in self.client.logs("lagoon-task-flaky"), 30, what="the first lines")
        self.api.drop_watches()
        self.api.compact(notify=True)
        time.sleep(1.5)
        self.api.advance(NAMESPACE, "lagoon-task-flaky")
        t = self.client.wait_final("lagoon-task-flaky", 60)
        self.assertEqual(t["status"], "complete", t)
        self.assertEqual(self.client.logs("lagoon-task-flaky").splitlines(), lines)
        self.assertEqual(self.journal.task_messages("lagoon-task-flaky", expect=len(lines)), lines)
        # the refused create was retried: two POSTs, one pod
        self.assertEqual(len(self.created_pods()), 2)

    def test_bad_tls_certificate(self):
        other_ca, _ = kh.make_ca(os.path.join(self.tmp, "other-ca"))
        bad = os.path.join(self.tmp, "kubeconfig-bad")
        kh.write_kubeconfig(bad, self.api.url, ca_file=other_ca, token=self.api.token)
        self.start_daemon(kubeconfig=bad)
        self.submit("true", "lagoon-task-tls")
        t = self.client.wait_final("lagoon-task-tls", 90)
        self.assertEqual(t["status"], "failed", t)
        self.assertTrue(t["reason"].startswith("launch-error"), t)
        self.assertRegex(t["reason"].lower(), "certificate|ssl|tls")
        self.assertHealthy()
        self.assertEqual(self.created_pods(), [])

    def test_kill_9_mid_task_loses_and_doubles_nothing(self):
        lines = [f"slow {i}" for i in range(40)]
        self.script({"start": True}, *({"log": l, "delay": 0.1} for l in lines), {"exit": 0})
        d = self.start_daemon()
        self.submit("seq", "lagoon-task-restart")
        harness.wait_until(lambda: "slow 8" in self.client.logs("lagoon-task-restart"), 30, what="some lines")
        d.kill9()
        time.sleep(1.0)
        self.daemon()
        t = self.client.wait_final("lagoon-task-restart", 60)
        self.assertEqual(t["status"], "complete", t)
        self.assertEqual(self.client.logs("lagoon-task-restart").splitlines(), lines)
        self.assertEqual(self.journal.task_messages("lagoon-task-restart", expect=len(lines)), lines)
        self.assertEqual(len(self.created_pods()), 1)

    def test_kill9_at_each_pod_launch_step(self):
        """kill -9 of the daemon at each step of an API pod's launch, deterministically (it
        stops itself there: LAGOON_TASKD_DEBUG_STOP_AT): recorded but the create not sent,
        the pod created by the API server but not recorded, recorded running. The restart
        gives each task exactly one pod (the create sent again is answered 409 for the pod
        the first one made, which is taken over), its real exit code, each line once."""
        lines = ["first line", "second line"]
        self.script({"start": True}, *({"log": l} for l in lines), {"exit": 3})
        d = self.start_daemon(keep_task_pods=5, start=False)
        # step: (status and launchStep recorded at the stop, the pod exists then, POSTs in all)
        steps = {"pod-prepared": ("pending", "prepared", False, 1),
                 "pod-created": ("pending", "prepared", True, 2),
                 "pod-started": ("running", "started", True, 1)}
        for step, (status, launch_step, exists, n_posts) in steps.items():
            with self.subTest(step=step):
                try:
                    name = f"lagoon-task-{step}"
                    pod_path = f"/api/v1/namespaces/{NAMESPACE}/pods/{name}"
                    self.api.requests(clear=True)
                    d.start(extra_env={"LAGOON_TASKD_DEBUG_STOP_AT": step})
                    self.submit("exit 3", name)
                    harness.wait_until(lambda: harness.proc_state(d.pid) == "T", 30,
                                       what=f"the daemon to stop at {step}")
                    self.assertIn(f"stopping at {step}", d.stderr())
                    with open(os.path.join(self.state_dir, "tasks", f"{name}.json")) as f:
                        rec = json.load(f)
                    self.assertEqual((rec["status"], rec.get("launchStep"), rec.get("pod")),
                                     (status, launch_step, name), rec)
                    r = self.api.get(pod_path)
                    self.assertEqual(r.status, 200 if exists else 404, r.text)
                    uid = r.json()["metadata"]["uid"] if exists else None
                    d.kill9()
                    d.start()
                    t = self.client.wait_final(name, 60)
                    self.assertEqual((t["status"], t["exitCode"], t["reason"]), ("failed", 3, "exit-code 3"), t)
                    self.assertEqual(self.client.logs(name).splitlines(), lines)
                    self.assertEqual(self.journal.task_messages(name, expect=len(lines)), lines)
                    posts = [q for q in self.created_pods()
                             if (q["json"] or {}).get("metadata", {}).get("name") == name]
                    self.assertEqual(len(posts), n_posts, posts)
                    self.assertEqual(self.deletes(name), [])
                    r = self.api.get(pod_path)
                    self.assertEqual(r.status, 200, r.text)
                    if uid:
                        self.assertEqual(r.json()["metadata"]["uid"], uid, "a second pod replaced the first")
                    if step != "pod-started":
                        self.assertIn("its create was not answered before the restart", d.stderr())
                    if step == "pod-created":
                        self.assertIn("exists already for this task, taking it over", d.stderr())
                    d.stop()
                finally:
                    if d.running():
                        d.kill9()  # a failed step leaves it stopped

    def test_corrupt_record_of_running_pod_deletes_it(self):
        """A pod task whose record cannot be read back is not left running unseen: the
        restarted daemon deletes the pod named in its container directory (issue 15, 6)."""
        self.script({"start": True}, {"log": "started"}, {"wait": True}, {"exit": 0})
        d = self.start_daemon()
        self.run_until_running("lagoon-task-orphan", "sleep 100")
        d.kill9()
        with open(os.path.join(self.state_dir, "tasks", "lagoon-task-orphan.json"), "w") as f:
            f.write("{")
        d.start()
        harness.wait_until(lambda: self.deletes("lagoon-task-orphan"), 15, what="the orphaned pod deleted")
        harness.wait_until(lambda: not os.path.exists(os.path.join(self.state_dir, "containers", "lagoon-task-orphan")),
                           15, what="its container directory removed")
        self.assertIn("Task lagoon-task-orphan has a pod but no record", d.stderr())
        self.assertEqual(self.client.get("/v1/tasks/lagoon-task-orphan").status, 404)

    def test_environment_limit_holds_while_services_are_looked_up(self):
        """MaxRunningPerEnvironment=1 with API pods: a task whose service lookup is in
        flight holds its environment's place (before, every queued task of the
        environment passed the check while the first one's lookup was under way)."""
        self.script({"start": True}, {"log": "x", "delay": 0.5}, {"exit": 0})
        self.start_daemon(tasks={"MaxRunningPerEnvironment": 1, "MaxRunning": 4})
        names = [f"lagoon-task-env{i}" for i in range(3)]
        for n in names:
            self.submit("true", n)
        runs = sorted((harness.parse_time(t["startedAt"]), harness.parse_time(t["finishedAt"]), t["id"])
                      for t in (self.client.wait_final(n, 60) for n in names))
        for (_, end, a), (start, _, b) in zip(runs, runs[1:]):
            self.assertGreaterEqual(start, end, f"{b} started before {a} ended: {runs}")

    def test_retention_keeps_the_newest_task_pods(self):
        self.script({"start": True}, {"log": "x"}, {"exit": 0})
        self.start_daemon(keep_task_pods=1)
        for i in range(3):
            self.submit("true", f"lagoon-task-keep{i}")
            self.client.wait_final(f"lagoon-task-keep{i}", 60)
            time.sleep(1.1)  # creationTimestamp has whole seconds

        def left():
            pods = self.api.get(f"/api/v1/namespaces/{NAMESPACE}/pods").json()["items"]
            return sorted(p["metadata"]["name"] for p in pods)
        harness.wait_until(lambda: left() == ["lagoon-task-keep2"], 15, what="only the newest pod left")


    def run_until_running(self, name, command="true", **kw):
        self.submit(command, name, **kw)
        self.api.wait_pod(NAMESPACE, name, lambda p: p and p.get("status", {}).get("phase") == "Running",
                          timeout=20)

    def pod_step(self, name, step):
        """Runs one script step on the pod now (the peer's /_test/pods/NS/NAME/step)."""
        self.api.control("POST", f"/pods/{NAMESPACE}/{name}/step", step)

    def test_crash_loop_and_timeout(self):
        self.script({"start": True}, {"log": "up"}, {"wait": True}, {"exit": 0})
        self.start_daemon()
        # CrashLoopBackOff: failed "crash-loop: …", the pod deleted.
        self.run_until_running("lagoon-task-crash")
        self.pod_step("lagoon-task-crash", {"waiting": "CrashLoopBackOff",
                                            "message": "back-off 10s restarting failed container"})
        t = self.client.wait_final("lagoon-task-crash", 60)
        self.assertEqual(t["status"], "failed", t)
        self.assertTrue(t["reason"].startswith("crash-loop:"), t)
        harness.wait_until(lambda: self.deletes("lagoon-task-crash"), 10, what="the crash-looping pod deleted")
        # Timeout (seconds in the submission): the pod deleted, failed "timeout".
        self.run_until_running("lagoon-task-timeout", "sleep 100", timeout=3)
        t = self.client.wait_final("lagoon-task-timeout", 60)
        self.assertEqual((t["status"], t["reason"]), ("failed", "timeout"), t)
        self.assertTrue(self.deletes("lagoon-task-timeout"), "timeout: no DELETE of the pod")

    def test_eviction(self):
        # As the kubelet evicts: phase Failed, reason Evicted, the containers killed (137).
        self.script({"start": True}, {"log": "up"}, {"wait": True}, {"exit": 0})
        self.start_daemon()
        self.run_until_running("lagoon-task-evict")
        self.pod_step("lagoon-task-evict", {"evict": "The node was low on resource: memory."})
        t = self.client.wait_final("lagoon-task-evict", 60)
        self.assertEqual(t["status"], "failed", t)
        self.assertTrue(t["reason"].startswith("evicted:"), t)
        self.assertIn("low on resource", t["reason"])

if __name__ == "__main__":
    harness.main(needs_bundle=False)
