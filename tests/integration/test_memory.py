#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The optional integrations' libraries are loaded only when configured: a local-mode
daemon maps neither libcurl, librabbitmq, libyaml nor a crypto library, also after a
task; [Lagoon] BrokerURL= loads librabbitmq, APIURL= libcurl, and a Kubeconfig= libyaml,
each when the daemon starts."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

OPTIONAL = ("libcurl", "librabbitmq", "libyaml", "libcrypto", "libssl")


def mapped_libraries(pid):
    """Base names of the files mapped into the process."""
    with open(f"/proc/{pid}/maps") as f:
        return {os.path.basename(l.split()[5]) for l in f if len(l.split()) > 5 and l.split()[5].startswith("/")}


def has(libs, prefix):
    return any(n.startswith(prefix + ".") or n.startswith(prefix + "-") for n in libs)


class TestOptionalLibraries(harness.TaskdTestCase):
    def test_local_mode_maps_none(self):
        self.write_config()
        d = self.daemon()
        libs = mapped_libraries(d.pid)
        self.assertTrue(has(libs, "libsystemd") and has(libs, "libmicrohttpd"), sorted(libs))
        for lib in OPTIONAL:
            self.assertFalse(has(libs, lib), f"{lib} mapped in local mode: {sorted(libs)}")
        t = self.run_task("echo hello")
        self.assertEqual(t["status"], "complete", t)
        libs = mapped_libraries(d.pid)
        for lib in OPTIONAL:
            self.assertFalse(has(libs, lib), f"{lib} mapped after a task: {sorted(libs)}")

    def test_configured_loads_them(self):
        token = os.path.join(self.tmp, "api-token")
        with open(token, "w") as f:
            f.write("not-a-real-token\n")
        # Nothing listens there: the daemon starts and keeps trying, which is enough.
        lagoon = {"TargetName": "memtest", "BrokerURL": "amqp://127.0.0.1:9/", "APIURL": "http://127.0.0.1:9/graphql",
                  "APITokenFile": token}
        self.write_config(extra={"Lagoon": {"TargetName": "memtest", "BrokerURL": "amqp://127.0.0.1:9/"}})
        d = self.daemon()
        libs = mapped_libraries(d.pid)
        self.assertTrue(has(libs, "librabbitmq"), sorted(libs))
        self.assertFalse(has(libs, "libcurl") or has(libs, "libyaml"), sorted(libs))
        d.stop()

        self.write_config(extra={"Lagoon": lagoon})
        d = self.daemon(name="taskd-api")
        libs = mapped_libraries(d.pid)
        self.assertTrue(has(libs, "librabbitmq") and has(libs, "libcurl"), sorted(libs))
        self.assertFalse(has(libs, "libyaml"), sorted(libs))
        d.stop()

        kubeconfig = os.path.join(self.tmp, "kubeconfig")
        with open(kubeconfig, "w") as f:
            f.write("apiVersion: v1\nkind: Config\ncurrent-context: c\n"
                    "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:9'}}]\n"
                    "users: [{name: u, user: {token: not-a-real-token}}]\n"
                    "contexts: [{name: c, context: {cluster: k, user: u}}]\n")
        self.write_config(extra={"Kubernetes": {"Kubeconfig": kubeconfig, "NodeName": "node-1"}})
        d = self.daemon(name="taskd-kube")
        libs = mapped_libraries(d.pid)
        self.assertTrue(has(libs, "libyaml") and has(libs, "libcurl"), sorted(libs))
        self.assertFalse(has(libs, "librabbitmq"), sorted(libs))


if __name__ == "__main__":
    harness.main()
