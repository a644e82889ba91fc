#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A task's output on disk: about once while it runs (the forwarded part of conmon's CRI
log is punched out), the task log capped at TaskLogSizeMax= with a marker line, and
journald holding every line exactly once, in order, also across kill -9 of the daemon
before and after the cap."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

CAP = 16 * 1024 * 1024
LINE = 1000  # bytes per output line, newline included
MARKER = "lagoon-taskd: the task log stops here"


def printer(chunks, per_chunk=1000, pause="0.1"):
    """chunks × per_chunk lines of LINE bytes: an 8-digit number, a space, x's."""
    return ("awk -v c=%d -v n=%d -v p=%s 'BEGIN { s = sprintf(\"%%%ds\", \"\"); gsub(/ /, \"x\", s); "
            "for (k = 0; k < c; k++) { for (i = 1; i <= n; i++) printf \"%%08d %%s\\n\", k * n + i, s; "
            "fflush(); system(\"sleep \" p) } }'" % (chunks, per_chunk, pause, LINE - 10))


def expected_line(i):
    return "%08d %s" % (i, "x" * (LINE - 10))


class _Missing:
    st_size = st_blocks = 0


def stat(path):
    try:
        return os.stat(path)
    except FileNotFoundError:
        return _Missing


def used(path):
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def size(path):
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def cursor_offset(path):
    """The CRI log offset in the daemon's cursor ("<offset> <lines>"), 0 without one."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return 0


def allocated_before(fd, end):
    """Bytes of the file's data (not holes) before offset end."""
    total, off = 0, 0
    while off < end:
        try:
            data = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after off
            break
        if data >= end:
            break
        hole = os.lseek(fd, data, os.SEEK_HOLE)
        total += min(hole, end) - data
        off = hole
    return total


def cri_offset_after_line(f, k, rec, cri_size):
    """Offset in the CRI log of the first record of output line k+1 (the end of the CRI log
    if it ends with line k), found by content near where k lines of rec bytes end; None if
    not found."""
    if k == 0:
        return 0
    guess = k * rec
    start = max(0, guess - 256 * 1024)
    f.seek(start)
    buf = f.read(512 * 1024)
    i = -1
    for tag in (b" stdout F %08d " % (k + 1), b" stdout P %08d " % (k + 1)):
        j = buf.find(tag)
        if j >= 0 and (i < 0 or j < i):
            i = j
    if i >= 0:
        return start + buf.rfind(b"\n", 0, i) + 1
    if start + len(buf) == cri_size and buf.endswith(b"%08d %s\n" % (k, b"x" * (LINE - 10))):
        return cri_size
    return None


def cri_record_len(path):
    """Length of the CRI log's last complete record (timestamp, stream, tag, line)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 3 * LINE))
            recs = f.read().split(b"\n")
    except FileNotFoundError:
        return None
    full = [r for r in recs[1:-1] if r.endswith(b"x")]
    return len(full[-1]) + 1 if full else None


class TestOutputOnDisk(harness.TaskdTestCase):
    tasks_config = {"TaskLogSizeMax": "16M"}

    def paths(self, tid):
        log = self.task_log_path(tid)
        return os.path.join(self.container_dir(tid), "ctr.log"), log, log + ".cursor"

    def sample(self, tid):
        """(disk used by the task's files, the same less the part in flight, output so far
        in bytes, task log size) at one instant, or None.

        The files are stat'ed one after the other, and whatever conmon or the daemon wrote
        in between would count twice: so the CRI log's size and blocks come from one stat
        (output and disk of the same moment), and the task log is stat'ed before and after,
        the sample kept only if the daemon wrote nothing to it in between (then it punched
        nothing beyond what the task log holds either). In flight: the CRI log past the
        cursor, not yet forwarded (read after the CRI log's stat, so it can only be less)."""
        cri, log, cursor = self.paths(tid)
        rec = cri_record_len(cri)
        try:
            f = open(cri, "rb")
        except FileNotFoundError:
            return None
        with f:
            log1, st, cur = stat(log), os.fstat(f.fileno()), stat(cursor)
            cur_off = cursor_offset(cursor)
            log2 = stat(log)
            if not rec or (log1.st_size, log1.st_blocks) != (log2.st_size, log2.st_blocks):
                return None
            # Under the cap: the CRI log up to the task log's last line was forwarded.
            fwd_end = cur_off
            if log1.st_size < CAP - LINE:
                fwd_end = cri_offset_after_line(f, log1.st_size // LINE, rec, st.st_size)
                if fwd_end is None:
                    return None
            fwd_cri = allocated_before(f.fileno(), fwd_end)
        written = st.st_size * LINE // rec
        disk = (st.st_blocks + log1.st_blocks + cur.st_blocks) * 512
        detail = (f"CRI log {st.st_size} bytes, {st.st_blocks * 512} on disk, {fwd_cri} of them before "
                  f"{fwd_end}, cursor at {cur_off}; task log {log1.st_size} bytes, {log1.st_blocks * 512} on disk")
        return disk, fwd_cri + (log1.st_blocks + cur.st_blocks) * 512, max(written, log1.st_size), log1.st_size, \
            cur_off, detail

    def check_output(self, tid, n):
        with open(self.task_log_path(tid), "rb") as f:
            data = f.read()
        self.assertLessEqual(len(data), CAP + 200, "task log over its cap")
        lines = data.decode().split("\n")
        self.assertEqual(lines[-1], "", "task log ends in a newline")
        self.assertTrue(lines[-2].startswith(MARKER), f"no cap marker at the end: {lines[-2][:80]!r}")
        self.assertIn("TaskLogSizeMax=16777216", lines[-2])
        head = lines[:-2]
        self.assertEqual(len(head), CAP // LINE, "lines before the marker: as many as fit under the cap")
        self.assertEqual(head, [expected_line(i) for i in range(1, len(head) + 1)])

        es = self.journal.task_entries(tid, expect=n, timeout=60)
        msgs = [e["MESSAGE"] for e in es]
        self.assertEqual(len(msgs), n, f"journald has {len(msgs)} entries of {n} ({len(msgs) - len(set(msgs))} "
                                       "duplicates)")
        self.assertEqual(msgs, [expected_line(i) for i in range(1, n + 1)])
        self.assertEqual(self.journal.line_numbers(es), list(range(1, n + 1)))
        self.assertEqual(es[0].get("LAGOON_LINE"), "1")

    def test_50mb_once_on_disk_and_capped(self):
        self.write_config()
        self.daemon()
        tid = self.new_id("big")
        chunks = 50  # 50 MB
        self.submit_ok(printer(chunks), id=tid)
        self.client.wait_status(tid, ("running",) + harness.FINAL)
        # What the daemon is held to: the output it forwarded is on disk once (the task log),
        # its blocks in the CRI log freed but for a step. The part in flight (in the CRI log,
        # not yet forwarded) is on disk once too, with the CRI framing (~4.5% for these
        # lines): it is reported with the total, and bounded by how far the daemon lags.
        worst_fwd, worst_total, worst_after_cap, max_cursor, max_cri = 0.0, 0.0, 0, 0, 0
        n_samples, n_after_cap, n_moving, worst_at = 0, 0, 0, None
        while self.client.task(tid)["status"] == "running":
            max_cri = max(max_cri, size(self.paths(tid)[0]))
            s = self.sample(tid)
            if s is None:
                n_moving += 1
                time.sleep(0.005)
                continue
            disk, forwarded_on_disk, out, log, cur_off, detail = s
            if log >= 2 * 1024 * 1024 and log < CAP - LINE:
                if forwarded_on_disk / log > worst_fwd:
                    worst_fwd, worst_at = forwarded_on_disk / log, f"{forwarded_on_disk} bytes for {log}: {detail}"
                worst_total = max(worst_total, disk / out)
                n_samples += 1
            elif log >= CAP - LINE:
                # Past the cap the task log stops; the lines go on to journald only, and
                # the CRI log may hold only what is past the cursor (not yet forwarded).
                worst_after_cap = max(worst_after_cap, forwarded_on_disk)
                max_cursor = max(max_cursor, cur_off)
                n_after_cap += 1
            time.sleep(0.02)
        t = self.client.wait_final(tid, 60)
        self.assertEqual(t["status"], "complete", t)
        print(f"  {n_samples} samples under the cap ({n_moving} dropped: written to while sampled), "
              f"worst forwarded on disk / forwarded {worst_fwd:.3f} (all on disk / output {worst_total:.3f}); "
              f"past the cap {n_after_cap} samples, worst on disk less the part in flight "
              f"{worst_after_cap / 2**20:.1f} MiB; CRI log reached {max_cri / 2**20:.0f} MB",
              end=" ", flush=True)
        self.assertGreater(n_samples, 5, "too few samples while running under the cap")
        self.assertGreater(n_after_cap, 5, "too few samples while running past the cap")
        self.assertGreater(max_cri, 40 * 2**20, "the CRI log should have grown to nearly the whole output")
        self.assertLessEqual(worst_fwd, 1.1, f"forwarded output on disk more than 1.1 times while running: {worst_at}")
        self.assertGreater(max_cursor, 2 * CAP, "the cursor (where the part in flight starts) stopped past the cap")
        self.assertLessEqual(worst_after_cap, 1.1 * CAP, "output on disk over the cap while running")
        self.assertLessEqual(used(self.task_log_path(tid)), CAP + 64 * 1024)
        # The container directory goes after the final status (clean-up off the critical path).
        harness.wait_until(lambda: not os.path.exists(self.paths(tid)[0]), 30, what="the CRI log removed")
        self.check_output(tid, chunks * 1000)

    def test_kill9_before_and_after_the_cap(self):
        self.write_config()
        d = self.daemon()
        tid = self.new_id("kill")
        chunks = 30
        self.submit_ok(printer(chunks, pause="0.15"), id=tid)
        harness.wait_until(lambda: size(self.task_log_path(tid)) >= 5 * 2**20, 60, what="5 MB in the task log")
        d.kill9()
        time.sleep(0.3)  # more output while the daemon is down
        d.start()
        harness.wait_until(lambda: size(self.task_log_path(tid)) >= CAP - LINE, 60, what="the cap")
        self.assertEqual(self.client.task(tid)["status"], "running", "the task should still print after the cap")
        d.kill9()
        time.sleep(0.3)
        d.start()
        t = self.client.wait_final(tid, 90)
        self.assertEqual(t["status"], "complete", t)
        self.check_output(tid, chunks * 1000)


if __name__ == "__main__":
    harness.main()
