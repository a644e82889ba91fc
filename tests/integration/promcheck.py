# SPDX-License-Identifier: LGPL-2.1-or-later
"""GET /metrics read as Prometheus reads it: Debian's python3-prometheus-client parser for
the values, promtool (package prometheus) for the format and the naming conventions.
Both are test dependencies (scripts/install-deps.sh); a missing one fails the test."""

import re
import shutil
import subprocess

from prometheus_client.parser import text_string_to_metric_families

CONTENT_TYPE = "text/plain; version=0.0.4"
PREFIX = "lagoon_taskd_"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


class Metrics:
    def __init__(self, text):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = {}
        for f in self.families.values():
            for s in f.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(self, name, **labels):
        key = (PREFIX + name, tuple(sorted(labels.items())))
        if key not in self.samples:
            raise AssertionError(f"no sample {key} in:\n{self.text}")
        return self.samples[key]

    def has(self, name):
        return any(n == PREFIX + name for n, _ in self.samples)

    def sample_names(self):
        return {n for n, _ in self.samples}


def promtool(*args, input=None):
    return subprocess.run([PROMTOOL, *args], input=input, capture_output=True, text=True, timeout=120)


def scrape(tc, client):
    """GET /metrics through the test's client; checks the answer's type, every family's
    HELP and TYPE, promtool's lint, and returns the parsed Metrics."""
    r = client.get("/metrics")
    tc.assertEqual(r.status, 200, r)
    tc.assertTrue(r.headers.get("content-type", "").startswith(CONTENT_TYPE), r.headers)
    text = r.body.decode()
    p = promtool("check", "metrics", input=text)
    tc.assertEqual(p.returncode, 0, f"promtool check metrics: {p.stdout}{p.stderr}\n{text}")
    m = Metrics(text)
    tc.assertTrue(m.families, text)
    for f in m.families.values():
        tc.assertTrue(f.name.startswith(PREFIX), f.name)
        tc.assertNotEqual(f.type, "unknown", f"{f.name}: no # TYPE")
        tc.assertTrue(f.documentation, f"{f.name}: no # HELP")
    for name in re.findall(r"^# TYPE (\S+) counter$", text, re.M):
        tc.assertTrue(name.endswith("_total"), name)
    return m


def check_histogram(tc, m, name):
    """Cumulative buckets ending in +Inf = _count; returns (count, sum)."""
    full = PREFIX + name
    buckets = sorted(((float(dict(lb)["le"]), v) for (n, lb), v in m.samples.items() if n == full + "_bucket"))
    tc.assertTrue(buckets and buckets[-1][0] == float("inf"), buckets)
    values = [v for _, v in buckets]
    tc.assertEqual(values, sorted(values), f"{name}: buckets not cumulative")
    count = m.value(name + "_count")
    tc.assertEqual(values[-1], count)
    return count, m.value(name + "_sum")


def referenced_names(path):
    """The lagoon_taskd_ series a dashboard or rule file queries."""
    with open(path) as f:
        return set(re.findall(PREFIX + r"[a-z_]+", f.read()))
