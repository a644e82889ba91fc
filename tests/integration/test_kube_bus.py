#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Node mode, advanced tasks: a Lagoon advanced-task message from a real rabbitmq-server
(the fixture) runs as a pod created through the Kubernetes API test peer: the pod's
container, variables, secret mounts, service account and envFrom are checked, the
variables arrive (the peer's scripted container prints them), JSON_PAYLOAD is masked in
the log, and the pod's lagoon.sh/taskData annotation reaches Lagoon as advancedData;
taskData that is not base64 fails the task with a taskdata: reason. Project clones:
bulk claims, dynamic secrets, rootless securityContext, organization labels, and the
advancedData actions-handler needs when the task leaves none. Active/standby: the
RoleBinding before the pod, deleted after the end (across a kill -9, and on failure)."""

import base64
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "harness"))
import harness  # noqa: E402
import kube_harness as kh  # noqa: E402
import lagoon_harness as lh  # noqa: E402

NAMESPACE = "nginx-example-main"  # the advanced fixture's project and environment
RUNNER_IMAGE = "example.com/test-task-image:v0.0.1"

setUpModule = lh.start_module_broker
tearDownModule = lh.stop_module_broker


class KubeBusTest(harness.TaskdTestCase):
    def setUp(self):
        super().setUp()
        self.target = f"it-{os.urandom(3).hex()}"
        self.peer = lh.LagoonPeer(lh.BROKER, self.target)
        self.addCleanup(self.peer.close)
        self.api = kh.KubeApiPeer(os.path.join(self.tmp, "api"), namespaces=[NAMESPACE], node_name="node-1")
        self.api.start()
        self.addCleanup(self.api.stop)
        self.kubeconfig = os.path.join(self.tmp, "kubeconfig")
        kh.write_kubeconfig(self.kubeconfig, self.api.url, ca_file=self.api.ca_file, token=self.api.token)

    def start_daemon(self, **lagoon):
        self.write_config(services={"cli": None}, extra={
            "Lagoon": lh.lagoon_config(lh.BROKER, self.target, **lagoon),
            "Kubernetes": {"NodeName": "node-1", "Kubeconfig": self.kubeconfig}})
        self.daemon()
        harness.wait_until(lambda: self.queues_declared(), 30, what="the daemon's queues")

    def queues_declared(self):
        try:
            self.peer.queue_depth("misc")
            return True
        except Exception:
            self.peer.close()
            self.peer = lh.LagoonPeer(lh.BROKER, self.target)
            return False

    def message(self, task_id, name, payload, ssh_key=True, deployer_token=False):
        body, _ = lh.fixture_body("amqp-in-task-advanced.json")
        body["task"]["id"] = task_id
        body["task"]["name"] = body["task"]["taskName"] = name
        body["advancedTask"]["JSONPayload"] = payload
        body["advancedTask"]["sshKey"] = 1 if ssh_key else 0
        body["advancedTask"]["deployerToken"] = deployer_token
        return body

    def test_advanced_task_pod_variables_and_task_data(self):
        task_data = lh.b64json({"sourceNamespace": "a", "destinationNamespace": "b"})
        payload = lh.b64json({"secret": "value"})
        self.api.set_script(RUNNER_IMAGE, {"steps": [
            {"start": True},
            {"log": "payload=${JSON_PAYLOAD}"},
            {"log": "pod=${PODNAME} ns=${NAMESPACE} id=${TASK_DATA_ID} branch=${LAGOON_GIT_BRANCH}"},
            {"annotate": {"lagoon.sh/taskData": task_data}},
            {"exit": 0}]})
        self.api.put_object(f"/api/v1/namespaces/{NAMESPACE}/secrets/lagoon-env",
                            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lagoon-env"}, "data": {}})
        self.start_daemon()
        self.peer.publish(self.message("91", "lagoon-task-adv91", payload, deployer_token=True), "misc")
        complete = self.peer.wait_status("91", "complete")
        self.assertEqual(complete["meta"]["advancedData"], task_data)
        self.assertEqual(json.loads(base64.b64decode(complete["meta"]["advancedData"])),
                         {"sourceNamespace": "a", "destinationNamespace": "b"})
        log = self.peer.task_logs("91")[-1]["message"]
        self.assertIn("payload=***\n", log)
        self.assertNotIn(payload, log)
        self.assertIn(f"pod=lagoon-task-adv91 ns={NAMESPACE} id=91 branch=main\n", log)
        self.assertFalse([m for m in self.journal.task_messages("91") if payload in m])

        pod = [r for r in self.api.requests() if r["method"] == "POST" and r["path"].endswith("/pods")][0]["json"]
        spec = pod["spec"]
        self.assertEqual(pod["metadata"]["name"], "lagoon-task-adv91")
        self.assertEqual(pod["metadata"]["labels"]["lagoon.sh/jobType"], "task")
        self.assertEqual(spec["restartPolicy"], "Never")
        self.assertIs(spec["enableServiceLinks"], False)
        self.assertEqual(spec["serviceAccountName"], "lagoon-deployer")
        self.assertEqual(len(spec["containers"]), 1)
        c = spec["containers"][0]
        self.assertEqual((c["name"], c["image"], c["imagePullPolicy"]), ("lagoon-task", RUNNER_IMAGE, "Always"))
        env = {e["name"]: e["value"] for e in c["env"]}
        for k in ("JSON_PAYLOAD", "NAMESPACE", "PODNAME", "TASK_DATA_ID", "LAGOON_PROJECT", "LAGOON_GIT_BRANCH",
                  "LAGOON_PROJECT_VARIABLES"):  # the fixture has no environment variables
            self.assertIn(k, env)
        self.assertEqual(env["JSON_PAYLOAD"], payload)
        self.assertEqual(env["PODNAME"], "lagoon-task-adv91")
        self.assertEqual(c["envFrom"], [{"secretRef": {"name": "lagoon-env"}}])
        self.assertEqual(c["volumeMounts"], [{"name": "lagoon-sshkey", "readOnly": True,
                                              "mountPath": "/var/run/secrets/lagoon/ssh"}])
        self.assertEqual(spec["volumes"][0]["secret"]["secretName"], "lagoon-sshkey")

    def test_bad_task_data_fails(self):
        self.api.set_script(RUNNER_IMAGE, {"steps": [
            {"start": True}, {"annotate": {"lagoon.sh/taskData": "not base64!"}}, {"exit": 0}]})
        self.start_daemon()
        self.peer.publish(self.message("92", "lagoon-task-adv92", lh.b64json({}), ssh_key=False), "misc")
        self.peer.wait_status("92", "failed")
        t = self.client.task("92")
        self.assertTrue(t["reason"].startswith("taskdata:"), t)

        self.assertIn("\nTask failed: taskdata: ", self.peer.task_logs("92")[-1]["message"])

    def test_eviction_reason_in_lagoon_log(self):
        self.api.set_script(RUNNER_IMAGE, {"steps": [
            {"start": True}, {"evict": "The node was low on resource: memory. "}]})
        self.start_daemon()
        self.peer.publish(self.message("93", "lagoon-task-adv93", lh.b64json({}), ssh_key=False), "misc")
        self.peer.wait_status("93", "failed")
        text = self.peer.task_logs("93")[-1]["message"]
        self.assertTrue(text.endswith("========================================\nTask failed: evicted: The node was low "
                                      "on resource: memory. \n========================================\n"), text)

    def clone_message(self, key, task_id, name, clone_id):
        """As Lagoon's createMiscTask sends a project clone (commons tasks.ts): no taskName,
        no flags, the clone's id in the payload, the project's organization, and here the
        rootless feature flag as a project variable."""
        body, _ = lh.fixture_body("amqp-in-task-advanced.json")
        body["key"] = key
        body["task"] = {"id": task_id, "name": name}
        body["advancedTask"] = {"runnerImage": RUNNER_IMAGE, "JSONPayload": lh.b64json(
            {"projectName": "nginx-example", "sourceEnvironment": "main", "cloneId": clone_id})}
        body["project"]["organization"] = {"id": 5, "name": "acme"}
        body["project"]["variables"]["project"] = lh.b64json(
            [{"name": "LAGOON_FEATURE_FLAG_ROOTLESS_WORKLOAD", "value": "enabled", "scope": "build"}])
        body["environment"]["openshiftProjectName"] = NAMESPACE
        return body

    def test_projectclone_volumes_secrets_and_advanced_data(self):
        """deploytarget:task:projectclone and …restore: pods with the namespace's bulk
        claims at /storage/<name>, the dynamic secrets read-only, the deployer's account,
        the ssh key, the rootless securityContext and the organization labels; a task that
        leaves no taskData still tells actions-handler its clone's id and status, on
        complete and on failed."""
        ns = f"/api/v1/namespaces/{NAMESPACE}"
        for name, sc in (("nginx", "bulk"), ("solr", "standard")):
            self.api.put_object(f"{ns}/persistentvolumeclaims/{name}", {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
                "spec": {"storageClassName": sc, "accessModes": ["ReadWriteMany"]}})
        self.api.put_object(f"{ns}/secrets/api-keys", {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api-keys", "labels": {
                "lagoon.sh/dynamic-secret": "api-keys"}}, "data": {}})
        self.api.put_object(f"{ns}/secrets/other", {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other"}, "data": {}})
        self.api.set_script(RUNNER_IMAGE, {"steps": [{"start": True}, {"log": "clone ${JSON_PAYLOAD}"},
                                                     {"exit": 0}]})
        self.start_daemon()
        self.peer.publish(self.clone_message("deploytarget:task:projectclone", "95", "Project Clone Archive", 17),
                          "misc")
        complete = self.peer.wait_status("95", "complete")
        self.assertEqual(complete["meta"]["key"], "deploytarget:task:projectclone")
        self.assertEqual(json.loads(base64.b64decode(complete["meta"]["advancedData"])),
                         {"cloneId": 17, "status": "SOURCE_FILES_UPLOADED"})

        pod = [r for r in self.api.requests() if r["method"] == "POST" and r["path"].endswith("/pods")][0]["json"]
        spec, c = pod["spec"], pod["spec"]["containers"][0]
        self.assertEqual(pod["metadata"]["labels"]["organization.lagoon.sh/id"], "5")
        self.assertEqual(pod["metadata"]["labels"]["organization.lagoon.sh/name"], "acme")
        self.assertEqual(spec["serviceAccountName"], "lagoon-deployer")
        self.assertEqual(spec["securityContext"], {"runAsUser": 10000, "runAsGroup": 0, "fsGroup": 10001})
        self.assertEqual(c["volumeMounts"], [
            {"name": "lagoon-sshkey", "readOnly": True, "mountPath": "/var/run/secrets/lagoon/ssh"},
            {"name": "nginx", "mountPath": "/storage/nginx"},
            {"name": "dynamic-api-keys", "readOnly": True, "mountPath": "/var/run/secrets/lagoon/dynamic/api-keys"}])
        vols = {v["name"]: v for v in spec["volumes"]}
        self.assertEqual(vols["nginx"]["persistentVolumeClaim"], {"claimName": "nginx"})
        self.assertEqual(vols["dynamic-api-keys"]["secret"], {"secretName": "api-keys", "defaultMode": 0o444})
        self.assertEqual(sorted(vols), ["dynamic-api-keys", "lagoon-sshkey", "nginx"])
        # The dynamic secrets are asked for by their label.
        lists = [r for r in self.api.requests() if r["method"] == "GET" and r["path"] == f"{ns}/secrets"]
        self.assertEqual([r["params"].get("labelSelector") for r in lists], ["lagoon.sh/dynamic-secret"])

        # The restore fails: actions-handler is told the clone failed.
        self.api.set_script(RUNNER_IMAGE, {"steps": [{"start": True}, {"exit": 1}]})
        self.peer.publish(self.clone_message("deploytarget:task:projectclonerestore", "96", "Project Clone Restore",
                                             18), "misc")
        failed = self.peer.wait_status("96", "failed")
        self.assertEqual(json.loads(base64.b64decode(failed["meta"]["advancedData"])),
                         {"cloneId": 18, "status": "FAILED"})

    def test_volume_list_refused_fails_task(self):
        """Without the list of its claims the pod cannot be built as asked: the task fails
        with the API's answer (remote-controller does not create the pod either)."""
        self.api.fail(403, path=f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims", method="GET", count=5,
                      message="persistentvolumeclaims is forbidden")
        self.start_daemon()
        body = self.message("97", "lagoon-task-adv97", lh.b64json({}), ssh_key=False)
        body["advancedTask"]["volumeMounts"] = True
        self.peer.publish(body, "misc")
        self.peer.wait_status("97", "failed")
        self.assertTrue(self.client.task("97")["reason"].startswith("launch-error: "), self.client.task("97"))
        self.assertFalse([r for r in self.api.requests() if r["method"] == "POST" and r["path"].endswith("/pods")])

    def test_standard_pod_proxy_and_organization(self):
        """A standard task from the bus as an API pod: the proxy variables, as
        remote-controller's standard task pods get them, and the organization labels."""
        with open(kh.DEPLOYMENT_CLI) as f:
            dep = json.load(f)
        dep["metadata"]["namespace"] = NAMESPACE
        self.api.put_object(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/cli", dep)
        self.start_daemon(HTTPProxy="http://proxy.example:3128", HTTPSProxy="http://sproxy.example:3128",
                          NoProxy=".cluster.local")
        body, _ = lh.fixture_body("amqp-in-task-standard.json")
        body["task"]["id"] = "94"
        body["task"]["name"] = body["task"]["taskName"] = "lagoon-task-std94"
        body["task"]["service"] = "cli"
        body["environment"]["openshiftProjectName"] = NAMESPACE
        body["project"]["organization"] = {"id": 5, "name": "acme"}
        self.peer.publish(body, "jobs")
        self.peer.wait_status("94", "complete")
        pod = [r for r in self.api.requests() if r["method"] == "POST" and r["path"].endswith("/pods")][0]["json"]
        self.assertEqual(pod["metadata"]["labels"]["organization.lagoon.sh/id"], "5")
        self.assertEqual(pod["metadata"]["labels"]["organization.lagoon.sh/name"], "acme")
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        for k, v in (("HTTP_PROXY", "http://proxy.example:3128"), ("http_proxy", "http://proxy.example:3128"),
                     ("HTTPS_PROXY", "http://sproxy.example:3128"), ("https_proxy", "http://sproxy.example:3128"),
                     ("NO_PROXY", ".cluster.local"), ("no_proxy", ".cluster.local")):
            self.assertEqual(env.get(k), v, k)

    def test_activestandby_role_binding(self):
        """deploytarget:task:activestandby: RoleBinding lagoon-deployer-activestandby in the
        destination namespace (ClusterRole admin for the source's lagoon-deployer) exists
        before the pod and is deleted once the task ended, also when the daemon was killed
        meanwhile, and when the task failed before its pod."""
        src, dst = "drupal-example-main-standby", "drupal-example-main"
        for ns in (src, dst):
            self.api.put_object(f"/api/v1/namespaces/{ns}", {"apiVersion": "v1", "kind": "Namespace",
                                                             "metadata": {"name": ns}})
        rb_path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{dst}/rolebindings/lagoon-deployer-activestandby"
        self.api.set_script(RUNNER_IMAGE, {"steps": [{"start": True}, {"wait": True}, {"exit": 0}]})
        self.start_daemon()
        body, _ = lh.fixture_body("lagoon-in-task-activestandby.json")
        body["task"]["id"] = "98"
        self.peer.publish(body, "misc")
        self.peer.wait_status("98", "running")
        harness.wait_until(lambda: self.api.get(f"/api/v1/namespaces/{src}/pods/lagoon-task-98").status == 200, 30,
                           what="the switch's pod")
        rb = self.api.get(rb_path).json()
        self.assertEqual(rb["roleRef"], {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                         "name": "admin"})
        self.assertEqual(rb["subjects"], [{"kind": "ServiceAccount", "name": "lagoon-deployer", "namespace": src}])
        posts = [r["path"] for r in self.api.requests() if r["method"] == "POST"]
        self.assertLess(posts.index(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{dst}/rolebindings"),
                        posts.index(f"/api/v1/namespaces/{src}/pods"))
        # The daemon dies; the switch ends meanwhile; the next daemon finds its end and
        # removes the binding.
        self.daemons[-1].kill9()
        self.api.advance(src, "lagoon-task-98")
        self.daemon()
        self.peer.wait_status("98", "complete")
        harness.wait_until(lambda: self.api.get(rb_path).status == 404, 30, what="the RoleBinding's removal")

        # A switch whose pod cannot be made: failed, and the binding goes too.
        self.api.fail(403, path=f"/api/v1/namespaces/{src}/pods", method="POST", count=5,
                      message="pods is forbidden")
        self.api.clear_requests()
        body["task"]["id"] = "99"
        self.peer.publish(body, "misc")
        self.peer.wait_status("99", "failed")
        harness.wait_until(lambda: [r for r in self.api.requests() if r["method"] == "DELETE" and
                                    r["path"] == rb_path], 30, what="the RoleBinding's delete")
        self.assertEqual(self.api.get(rb_path).status, 404)
        self.assertTrue([r for r in self.api.requests() if r["method"] == "POST" and "rolebindings" in r["path"]])

        # A cancelled switch whose delete is refused: the record keeps the binding marked,
        # and the next start deletes it.
        self.api.clear_failures()
        self.api.set_script(RUNNER_IMAGE, {"steps": [{"start": True}, {"wait": True}, {"exit": 0}]})
        body["task"]["id"] = "100"
        self.peer.publish(body, "misc")
        self.peer.wait_status("100", "running")
        self.assertEqual(self.api.get(rb_path).status, 200)
        self.api.fail(403, path=rb_path, method="DELETE", count=1, message="rolebindings is forbidden")
        self.api.clear_requests()
        self.peer.publish({"key": "deploytarget:task:cancel", "task": {"id": "100", "name": "x"},
                           "project": body["project"], "environment": body["environment"]}, "misc")
        self.peer.wait_status("100", "cancelled")
        harness.wait_until(lambda: [r for r in self.api.requests() if r["method"] == "DELETE" and
                                    r["path"] == rb_path], 30, what="the refused delete")
        self.assertEqual(self.api.get(rb_path).status, 200)
        self.daemons[-1].stop()
        self.daemon()
        harness.wait_until(lambda: self.api.get(rb_path).status == 404, 30, what="the RoleBinding's removal at start")


if __name__ == "__main__":
    reason = lh.missing()
    if reason:
        print(f"test_kube_bus.py: SKIP: {reason}")
        sys.exit(77)
    harness.main(needs_bundle=False)
