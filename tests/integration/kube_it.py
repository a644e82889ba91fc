# SPDX-License-Identifier: LGPL-2.1-or-later
"""Shared setup of the node-mode integration tests (test_node.py): the kubelet and API
server test peers per test, a private containerd per test class
(tests/harness/containerd.sh) running a "cli" service container as a CRI pod would,
the [Kubernetes] config section that points the daemon at them, and the pods the
daemon created as the API peer saw them."""

import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "harness"))
import harness  # noqa: E402
import kube_harness as kh  # noqa: E402

CONTAINERD_SH = os.path.join(harness.SRCDIR, "tests", "harness", "containerd.sh")
FIXTURE = os.path.join(harness.SRCDIR, "tests", "fixtures", "kubernetes", "deployment-cli.json")
NODE = "node-1"


def containerd_missing():
    """Why a private containerd cannot run here, or None."""
    for tool in ("containerd", "ctr", "umoci"):
        if not shutil.which(tool):
            return f"{tool} not found"
    if not os.path.exists("/bin/busybox"):
        return "busybox-static not installed"
    return None


class Containerd:
    """A private containerd under directory (containerd.sh), namespace k8s.io."""

    def __init__(self, directory):
        self.dir = directory

    def sh(self, *args, check=True):
        r = subprocess.run(["sh", CONTAINERD_SH, args[0], self.dir, *args[1:]], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if check and r.returncode != 0:
            raise AssertionError(f"containerd.sh {' '.join(args)}: {r.stdout}")
        return r.stdout

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        self.sh("start")

    def stop(self):
        self.sh("stop", check=False)

    @property
    def state(self):
        """What ContainerdState= is on a node (/run/containerd)."""
        return os.path.join(self.dir, "state")

    def bundle(self, cid):
        return os.path.join(self.state, "io.containerd.runtime.v2.task", "k8s.io", cid)

    def pid(self, cid):
        with open(os.path.join(self.bundle(cid), "init.pid")) as f:
            return int(f.read().strip())

    def run_pod(self, sandbox_id, cid, command):
        """A sandbox holding the network, ipc and uts namespaces and a service container
        joining them by path, as the CRI plugin makes a pod."""
        self.sh("run", sandbox_id, "exec sleep 900")
        pid = self.pid(sandbox_id)
        self.sh("run", cid, command, "--with-ns", f"network:/proc/{pid}/ns/net", "--with-ns",
                f"ipc:/proc/{pid}/ns/ipc", "--with-ns", f"uts:/proc/{pid}/ns/uts", "--annotation",
                "io.kubernetes.cri.container-type=container", "--annotation",
                f"io.kubernetes.cri.sandbox-id={sandbox_id}")


def service_pod(name, namespace, node, container_id, service="cli", ready=True):
    """A pod of the service as the kubelet's /pods shows it."""
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                     "labels": {"lagoon.sh/service": service}},
        "spec": {"nodeName": node, "containers": [{"name": service, "image": "lagoon-test/busybox:latest"}]},
        "status": {
            "phase": "Running", "startTime": "2026-11-28T06:00:00Z",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": service, "ready": ready, "containerID": f"containerd://{container_id}",
                                   "state": {"running": {"startedAt": "2026-11-28T06:00:01Z"}}}],
        },
    }


class NodePeers:
    """An API server peer (seeded with the cli Deployment in namespace) and a kubelet
    peer serving a pods file, both for node NODE; .section() is the [Kubernetes] config."""

    def __init__(self, tmp, namespace):
        self.tmp = tmp
        self.namespace = namespace
        self.api = kh.KubeApiPeer(os.path.join(tmp, "api"), seeds=[FIXTURE], seed_namespace=namespace,
                                  namespaces=[namespace], node_name=NODE)
        self.kubelet = kh.KubeletPeer(os.path.join(tmp, "kubelet"), node_name=NODE)
        self.kubeconfig = os.path.join(tmp, "kubeconfig")
        self.kubelet_token = os.path.join(tmp, "kubelet-token")

    def start(self):
        self.api.start()
        os.makedirs(os.path.dirname(self.kubelet.pods_file), exist_ok=True)
        self.kubelet.write_pods([])
        self.kubelet.start()
        kh.write_kubeconfig(self.kubeconfig, self.api.url, ca_file=self.api.ca_file, token=self.api.token)
        with open(self.kubelet_token, "w") as f:
            f.write(self.kubelet.token + "\n")

    def stop(self):
        for p in (self.kubelet, self.api):
            try:
                p.stop()
            except Exception:
                pass

    def section(self, containerd=None, **extra):
        s = {"NodeName": NODE, "KubeletURL": self.kubelet.url, "KubeletCAFile": self.kubelet.ca_file,
             "KubeletTokenFile": self.kubelet_token, "Kubeconfig": self.kubeconfig,
             "APINamespaces": self.namespace}
        if containerd:
            s["ContainerdState"] = containerd.state
            s["ContainerdNamespace"] = "k8s.io"
        s.update({k: str(v) for k, v in extra.items()})
        return s

    def created_pods(self):
        """The pod bodies the daemon POSTed to the API peer."""
        return [r["json"] for r in self.api.requests() if r["method"] == "POST" and r["path"].endswith("/pods")]


def image_of_fixture():
    with open(FIXTURE) as f:
        return json.load(f)["spec"]["template"]["spec"]["containers"][0]["image"]
