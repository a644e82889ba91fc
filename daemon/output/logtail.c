/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Following a task's CRI log (written by conmon) on the daemon's event loop and turning
 * it into the task log file and journald entries.
 *
 * Wake-ups: inotify on the file (IN_MODIFY, IN_CLOSE_WRITE), inotify on its directory
 * while the file does not exist yet, and a 1 s timer as a fallback for anything inotify
 * misses. Wake-ups only enable a low-priority defer source, so a burst of inotify events
 * costs one read pass. A pass reads 64 KiB chunks (bounded per dispatch, so a huge
 * backlog does not starve the loop); each chunk goes through the CriLogStream splitter
 * (crilog.h), lines get their secrets masked, each is sent to journald (with its line
 * number as LAGOON_LINE) and then appended to one batch buffer, and the batch goes to
 * the task log with one write() per chunk. So at any instant journald holds at least
 * the lines the task log holds (J >= N), and both sinks hold a prefix of the output.
 *
 * Restart safety, exactly once in both sinks across a kill -9 at any instant: each sink
 * is asked how far it got. The task log: its complete lines, N (a torn last line, from
 * a kill during write(), is cut off and written again in full). journald: the highest
 * LAGOON_LINE it holds for the task, J (journal_last_line(), which first makes sure
 * journald has processed what the dead daemon left in its socket queue). Lines up to N
 * are dropped; lines N+1..J go to the task log only; later lines to both. When J cannot
 * be known (journald not running or not answering) it is taken as N: the task log is
 * the truth, journald may then miss or repeat what it missed. A brand-new task (no task
 * log file, no cursor) needs no asking.
 *
 * "<task_log>.cursor" holds "<cri offset> <line count>" for a point where no partial
 * line was pending and every line before it was in the task log (and journald). It is
 * rewritten at most once a second, each time the clean point passed another punch step,
 * at the end of the output (logtail_finish(); the store removes it with the record),
 * and when the LogTail is freed (atomically by rename, no fsync: a kill -9 keeps the
 * page cache). A new LogTail resumes reading at the cursor (or at 0 when the cursor is
 * missing, unparsable or claims more than N lines) and numbers the lines it produces
 * from the cursor's count. The splitter's output does not depend on chunking, so the
 * lines reproduced are exactly those, with the same numbers, that were produced before.
 *
 * The task log is the record (the API, followers and Lagoon read it; journald has the
 * same lines); the CRI log is only the way in. So once a cursor is written, the CRI log's
 * blocks before it are punched out (FALLOC_FL_PUNCH_HOLE: conmon's offsets stay valid,
 * the file keeps its size, the blocks are freed), and a running task's output takes its
 * size on disk about once. Only if the cursor is lost after that (a machine crash) does
 * a restart have no way to number the lines: it resumes after the hole, numbering from
 * what the sinks hold, and may repeat lines; it never reads the hole's zeros as output.
 *
 * With a cap (logtail_set_max_bytes()), the line that would take the task log past it
 * is replaced by a marker line and later lines go to journald only. Then N no longer
 * counts the lines: a restart that finds the marker at the end of the task log takes
 * J, or the cursor's count, or the lines before the marker, whichever is highest. */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <malloc.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#include "crilog.h"
#include "fs-util.h"
#include "journal.h"
#include "log.h"
#include "logtail.h"
#include "redact.h"

#define READ_CHUNK ((size_t) 64U * 1024U)
#define CHUNKS_PER_DISPATCH 16U
#define FALLBACK_USEC (1 * USEC_PER_SEC)
#define CURSOR_INTERVAL_USEC (1 * USEC_PER_SEC)

/* The forwarded part of the CRI log is punched out in steps (a cursor write each): the
 * first once 256 KiB were forwarded (a short log is not worth it and stays whole, so a
 * restart without a cursor can still count its lines), then a 64th of what was punched so
 * far, 32 to 256 KiB. So the part forwarded but not yet punched stays within about 1.6% of
 * the output once it passed 2 MiB (a fixed 256 KiB step was 12% at 2 MiB), and 50 MB of
 * output costs about 330 cursor writes. */
#define PUNCH_FIRST ((uint64_t) 256U * 1024U)
#define PUNCH_STEP_MIN ((uint64_t) 32U * 1024U)
#define PUNCH_STEP_MAX ((uint64_t) 256U * 1024U)

/* The last line of a task log that reached its cap. */
#define CAP_MARKER_PREFIX "lagoon-taskd: the task log stops here"

/* How long a resume waits for journald to catch up (it normally takes milliseconds). */
#define RESUME_SYNC_USEC (10 * USEC_PER_SEC)

/* What followers may be shown of a stream's line that P records began and no F record
 * ended yet: a prefix of the line as the task log will hold it (masked), growing. */
typedef struct PartialView {
        uint64_t id;      /* 0: none */
        size_t raw_shown; /* bytes of the pending text the view covers */
        char *masked;     /* with secrets: those bytes masked (masked_len); else the view is
                           * the pending text itself */
        size_t masked_len;
        size_t masked_alloc;
} PartialView;

/* Where the last line that had a view went. */
typedef struct PartialLanded {
        uint64_t id; /* 0: none */
        uint64_t offset;
        bool in_log; /* false: the cap kept it out of the task log */
} PartialLanded;

struct LogTail {
        sd_event *event;
        JournalContext *journal;
        char **secrets; /* the non-empty ones; NULL when there are none */

        char *task_id;
        char *cri_path;
        char *cri_dir;
        char *cri_name;
        char *task_log_path;
        char *cursor_path;
        char *cursor_tmp_path;

        int cri_fd;
        int log_fd;
        uint64_t read_offset; /* next byte of the CRI log to read */

        CriLogStream *stream;
        uint64_t line_no;      /* number of the last line the stream produced (1-based) */
        uint64_t log_have;     /* lines up to this one were in the task log at the start */
        uint64_t journal_have; /* lines up to this one journald had at the start (>= log_have) */
        uint64_t lines;        /* lines in the task log */
        uint64_t log_bytes;    /* size of the task log, with the batch once written */
        uint64_t max_bytes;    /* cap of the task log (0: none) */
        bool capped;           /* the task log ends in the cap marker and takes no more lines */

        int punch_fd;     /* the CRI log for writing, to punch out what was forwarded */
        uint64_t punched; /* bytes of the CRI log before this are holes */
        unsigned punch_align;
        bool punch_off;

        char *rbuf; /* READ_CHUNK bytes */

        /* Lines of the current batch, each followed by '\n'; already sent to journald. */
        char *batch;
        size_t batch_len;
        size_t batch_alloc;
        size_t batch_written;
        size_t n_batch_lines;

        sd_event_source *file_source;
        sd_event_source *dir_source;
        sd_event_source *timer_source;
        sd_event_source *defer_source;

        uint64_t cursor_offset; /* what the cursor file holds, if cursor_written */
        uint64_t cursor_lines;
        bool cursor_written;
        uint64_t cursor_usec; /* CLOCK_MONOTONIC of the last write */

        bool finished;
        bool write_failed;
        bool read_failed;
        bool journal_failed; /* in this batch: log it once */

        PartialView partial[2]; /* stdout, stderr */
        PartialLanded landed[2];
        uint64_t partial_id;  /* the last id given out */
        bool partial_changed; /* since the last callback */

        logtail_output_cb_t cb;
        void *userdata;
};

static int grow(void **p, size_t *alloc, size_t need, size_t size) {
        if (need <= *alloc)
                return 0;
        size_t n = MAX(need, MAX(*alloc * 2, (size_t) 64));
        if (n > SIZE_MAX / size)
                return -ENOMEM;
        void *q = realloc(*p, n * size);
        if (!q)
                return -ENOMEM;
        *p = q;
        *alloc = n;
        return 0;
}

/* Journald first, then the batch: a kill in between leaves J > N, which a restart
 * repairs; the other order would leave N > J, which it could not. */
static int emit(LogTail *t, uint64_t line_no, const char *line, size_t len, bool is_stderr) {
        int r;

        /* Room first, so a failed allocation does not leave a line sent but not batched. */
        r = grow((void **) &t->batch, &t->batch_alloc, t->batch_len + len + 1, 1);
        if (r < 0)
                return r;

        if (line_no > t->journal_have) {
                r = journal_send_line(t->journal, line_no, line, len, is_stderr);
                if (r < 0 && !t->journal_failed) {
                        /* The task log gets the line; journald failing is not the task's problem. */
                        log_debug_errno(r, "Failed to send task output line to journald: %m");
                        t->journal_failed = true;
                }
        }

        if (t->capped || line_no <= t->log_have)
                return 0;

        if (t->max_bytes > 0 && t->log_bytes + t->batch_len + len + 1 > t->max_bytes) {
                _cleanup_free_ char *marker = NULL;
                int n;

                /* Journald keeps everything; the file keeps the head, so it stays readable. */
                n = asprintf(&marker,
                             CAP_MARKER_PREFIX ", at TaskLogSizeMax=%" PRIu64 " bytes; journald holds the whole "
                                               "output (journalctl LAGOON_TASK_ID=%s)\n",
                             t->max_bytes, strna(t->task_id));
                if (n < 0)
                        return -ENOMEM;
                r = grow((void **) &t->batch, &t->batch_alloc, t->batch_len + n, 1);
                if (r < 0)
                        return r;
                memcpy(t->batch + t->batch_len, marker, n);
                t->batch_len += n;
                t->n_batch_lines++;
                t->capped = true;
                log_info("Task %s: task log %s reached TaskLogSizeMax=%" PRIu64 ", the rest goes to journald only.",
                         strna(t->task_id), t->task_log_path, t->max_bytes);
                return 0;
        }

        if (len > 0)
                memcpy(t->batch + t->batch_len, line, len);
        t->batch[t->batch_len + len] = '\n';
        t->batch_len += len + 1;
        t->n_batch_lines++;
        return 0;
}

static int emit_masked(LogTail *t, uint64_t line_no, const char *line, size_t len, bool is_stderr) {
        if (t->secrets && redact_needed(line, len, t->secrets)) {
                _cleanup_free_ char *masked = NULL;
                size_t masked_len;

                masked = redact(line, len, t->secrets, &masked_len);
                if (!masked)
                        return -ENOMEM;
                return emit(t, line_no, masked, masked_len, is_stderr);
        }

        return emit(t, line_no, line, len, is_stderr);
}

static int on_line(const char *line, size_t len, bool is_stderr, bool malformed, void *userdata) {
        LogTail *t = userdata;
        uint64_t line_no = ++t->line_no;
        PartialView *v = &t->partial[is_stderr];
        size_t before = t->batch_len;
        int r;

        if (malformed)
                log_debug("CRI log %s: malformed record (%zu bytes), passing it on as it is.", t->cri_path, len);

        if (line_no <= t->journal_have && (t->capped || line_no <= t->log_have))
                r = 0; /* both sinks have it */
        else
                r = emit_masked(t, line_no, line, len, is_stderr);
        if (r < 0 || malformed || v->id == 0)
                return r;

        /* The stream's next line is the one its view showed the start of: followers that
         * showed it skip that much of it in the task log. */
        t->landed[is_stderr] = (PartialLanded){
                .id = v->id,
                .offset = t->log_bytes + before,
                .in_log = !t->capped && t->batch_len > before,
        };
        v->id = 0;
        v->raw_shown = v->masked_len = 0;
        /* A long line's copy is not kept for the (usually short) next one. */
        if (v->masked_alloc > READ_CHUNK) {
                v->masked = mfree(v->masked);
                v->masked_alloc = 0;
        }
        return 0;
}

/* After a read pass: the views of the lines still pending, grown by what the P records
 * brought, as far as no secret could be cut (redact_stable_prefix()). */
static void update_partials(LogTail *t) {
        for (int s = 0; s < 2; s++) {
                PartialView *v = &t->partial[s];
                const char *text;
                size_t len, n;

                if (!t->stream || t->capped)
                        return; /* such a line never reaches the task log */
                cri_log_stream_pending(t->stream, s, &text, &len);
                if (len <= v->raw_shown)
                        continue;
                if (v->id == 0)
                        v->id = ++t->partial_id;

                if (!t->secrets) {
                        v->raw_shown = len;
                        t->partial_changed = true;
                        continue;
                }

                /* raw_shown is a point no occurrence crosses, so the rest is masked on its own. */
                n = redact_stable_prefix(text + v->raw_shown, len - v->raw_shown, t->secrets);
                if (n == 0)
                        continue;
                _cleanup_free_ char *masked = NULL;
                size_t masked_len;
                masked = redact(text + v->raw_shown, n, t->secrets, &masked_len);
                if (!masked || grow((void **) &v->masked, &v->masked_alloc, v->masked_len + masked_len, 1) < 0) {
                        log_debug("Out of memory, the partial line is shown later.");
                        continue; /* shown later, or with the whole line */
                }
                memcpy(v->masked + v->masked_len, masked, masked_len);
                v->masked_len += masked_len;
                v->raw_shown += n;
                t->partial_changed = true;
        }
}

/* Writes the batch (already in journald) to the task log with one write(). On a write
 * error the batch is kept and retried at the next wake-up, and no more is read
 * meanwhile. Returns the number of lines written. */
static int flush_batch(LogTail *t) {
        size_t n_lines = t->n_batch_lines;
        int r;

        /* journald first (the batch's lines may still sit in the journal's datagram). */
        r = journal_flush(t->journal);
        if (r < 0 && !t->journal_failed) {
                log_debug_errno(r, "Failed to send task output lines to journald: %m");
                t->journal_failed = true;
        }

        while (t->batch_written < t->batch_len) {
                ssize_t n = write(t->log_fd, t->batch + t->batch_written, t->batch_len - t->batch_written);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        if (!t->write_failed) {
                                t->write_failed = true;
                                return log_warning_errno(r, "Failed to write task log %s, will retry: %m",
                                                         t->task_log_path);
                        }
                        return r;
                }
                t->batch_written += n;
        }
        if (t->write_failed) {
                t->write_failed = false;
                log_info("Task log %s is writable again.", t->task_log_path);
        }

        t->lines += n_lines;
        t->log_bytes += t->batch_len;
        t->batch_len = t->batch_written = 0;
        t->n_batch_lines = 0;
        t->journal_failed = false;
        return (int) MIN(n_lines, (size_t) INT32_MAX);
}

static int write_cursor(LogTail *t, uint64_t offset, uint64_t lines) {
        _cleanup_close_ int fd = -EBADF;
        char buf[64];
        int n;

        n = snprintf(buf, sizeof(buf), "%" PRIu64 " %" PRIu64 "\n", offset, lines);

        fd = open(t->cursor_tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0640);
        if (fd < 0)
                return -errno;
        if (write(fd, buf, n) != n)
                return errno > 0 ? -errno : -EIO;
        fd = safe_close(fd);
        if (rename(t->cursor_tmp_path, t->cursor_path) < 0)
                return -errno;
        return 0;
}

static uint64_t punch_step(const LogTail *t) {
        if (t->punched == 0)
                return PUNCH_FIRST;
        return MAX(PUNCH_STEP_MIN, MIN(PUNCH_STEP_MAX, t->punched / 64U));
}

/* Frees the CRI log's blocks before the cursor, which now holds offset: they were
 * forwarded and a restart resumes at the cursor. A hole keeps offsets (conmon writes on
 * at its own), unlike a truncation. The byte before the cursor stays, read_cursor()
 * checks it. Best effort: where the file system cannot punch, the CRI log stays whole. */
static void punch_cri_log(LogTail *t, uint64_t offset) {
        struct stat a, b;
        uint64_t end;

        if (t->punch_off || t->cri_fd < 0 || offset == 0)
                return;
        end = (offset - 1) / t->punch_align * t->punch_align;
        if (end < t->punched + punch_step(t))
                return; /* a short log is not worth it, and stays whole */

        if (t->punch_fd < 0) {
                t->punch_fd = open(t->cri_path, O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK);
                /* Only the very file we read, and a regular one. */
                int r = 0;
                if (t->punch_fd < 0 || fstat(t->punch_fd, &a) < 0 || fstat(t->cri_fd, &b) < 0)
                        r = -errno;
                else if (!S_ISREG(a.st_mode) || a.st_dev != b.st_dev || a.st_ino != b.st_ino)
                        r = -ESTALE;
                if (r < 0) {
                        log_debug_errno(r, "Cannot open %s to trim it, keeping it whole: %m", t->cri_path);
                        t->punch_fd = safe_close(t->punch_fd);
                        t->punch_off = true;
                        return;
                }
        }

        if (fallocate(t->punch_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) t->punched,
                      (off_t) (end - t->punched)) < 0) {
                log_debug_errno(errno, "Cannot punch the forwarded part out of %s, keeping it whole: %m", t->cri_path);
                t->punch_off = true;
                return;
        }
        t->punched = end;
}

/* force: ignore the once-a-second limit. */
static void maybe_write_cursor(LogTail *t, bool force) {
        uint64_t offset, lines, now = 0;
        int r;

        if (t->finished || !t->stream || t->batch_len > 0)
                return; /* lines of the clean point may not be in the task log yet */

        cri_log_stream_clean_point(t->stream, &offset, &lines);
        if (t->cursor_written && offset == t->cursor_offset && lines == t->cursor_lines)
                return;

        if (t->event)
                (void) sd_event_now(t->event, CLOCK_MONOTONIC, &now);
        /* Past a punch step the cursor goes out at once, so the CRI log stays short. */
        if (!force && t->cursor_written && now < t->cursor_usec + CURSOR_INTERVAL_USEC &&
            (t->punch_off || offset < t->punched + punch_step(t) + t->punch_align))
                return; /* the timer comes back for it */

        r = write_cursor(t, offset, lines);
        if (r < 0) {
                log_debug_errno(r, "Failed to write cursor %s, ignoring: %m", t->cursor_path);
                return;
        }
        t->cursor_offset = offset;
        t->cursor_lines = lines;
        t->cursor_written = true;
        t->cursor_usec = now;

        punch_cri_log(t, offset);
}

/* Reads up to max_chunks chunks; *ret_eof tells whether the end of the file was seen.
 * Returns lines written or -errno. */
static int read_chunks(LogTail *t, size_t max_chunks, bool *ret_eof) {
        uint64_t before = t->lines;
        int r;

        *ret_eof = true;
        if (t->cri_fd < 0)
                return 0;

        if (t->batch_len > 0) {
                r = flush_batch(t);
                if (r < 0)
                        return r;
        }

        for (size_t i = 0; i < max_chunks;) {
                ssize_t n;

                n = pread(t->cri_fd, t->rbuf, READ_CHUNK, (off_t) t->read_offset);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                i++;
                if (n == 0)
                        return (int) MIN(t->lines - before, (uint64_t) INT32_MAX);

                t->read_offset += n;
                r = cri_log_stream_feed(t->stream, t->rbuf, n);
                if (r < 0)
                        return r;
                r = flush_batch(t);
                if (r < 0)
                        return r;
                /* Past a punch step within a pass (up to 1 MiB), punch now: what is forwarded
                 * is on disk twice until then. */
                maybe_write_cursor(t, false);

                /* A short read was the end of the file at that moment; inotify tells us about more. */
                if ((size_t) n < READ_CHUNK)
                        return (int) MIN(t->lines - before, (uint64_t) INT32_MAX);
        }

        *ret_eof = false;
        return (int) MIN(t->lines - before, (uint64_t) INT32_MAX);
}

static void notify_output(LogTail *t, uint64_t lines_before) {
        bool partial = t->partial_changed;

        t->partial_changed = false;
        if (t->cb && (t->lines != lines_before || partial))
                t->cb(t, t->userdata);
}

static void kick(LogTail *t) {
        if (t->defer_source)
                (void) sd_event_source_set_enabled(t->defer_source, SD_EVENT_ONESHOT);
}

static int on_defer(sd_event_source *s, void *userdata) {
        LogTail *t = userdata;
        uint64_t before = t->lines;
        bool eof;
        int r;

        r = read_chunks(t, CHUNKS_PER_DISPATCH, &eof);
        if (r == -ENOMEM)
                log_oom();
        else if (r < 0 && r != -ENOSPC && r != -EDQUOT && !t->write_failed && !t->read_failed) {
                t->read_failed = true;
                log_warning_errno(r, "Failed to forward output from %s, will retry: %m", t->cri_path);
        } else if (r >= 0) {
                t->read_failed = false;
                if (!eof)
                        kick(t); /* more to read: continue after other sources had their turn */
        }

        maybe_write_cursor(t, false);
        update_partials(t);
        notify_output(t, before);
        return 0;
}

static int on_file_inotify(sd_event_source *s, const struct inotify_event *ev, void *userdata) {
        kick(userdata);
        return 0;
}

static int on_dir_inotify(sd_event_source *s, const struct inotify_event *ev, void *userdata);

/* Opens the CRI log if it exists now and starts watching it. 1 if open, 0 if not there yet. */
static int try_open(LogTail *t) {
        _cleanup_close_ int fd = -EBADF;
        int r;

        if (t->cri_fd >= 0)
                return 1;

        /* The log's directory is the daemon's, but take nothing for granted about what
         * sits at its name: a regular file only, never a FIFO or a symlink. */
        fd = open_regular_at(AT_FDCWD, t->cri_path);
        if (fd < 0) {
                if (fd == -ENOENT)
                        return 0;
                return log_debug_errno(fd, "Failed to open CRI log %s: %m", t->cri_path);
        }
        t->cri_fd = TAKE_FD(fd);

        struct stat st;
        t->punch_align = fstat(t->cri_fd, &st) >= 0 && st.st_blksize >= 512 ? (unsigned) st.st_blksize : 4096U;

        if (t->event && !t->finished) {
                r = sd_event_add_inotify(t->event, &t->file_source, t->cri_path, IN_MODIFY | IN_CLOSE_WRITE,
                                         on_file_inotify, t);
                if (r < 0)
                        log_debug_errno(r, "Failed to watch %s, relying on the timer: %m", t->cri_path);
                else
                        (void) sd_event_source_set_description(t->file_source, "logtail-file");
        }
        t->dir_source = sd_event_source_disable_unref(t->dir_source);
        return 1;
}

static int on_dir_inotify(sd_event_source *s, const struct inotify_event *ev, void *userdata) {
        LogTail *t = userdata;

        if (ev->len > 0 && streq(ev->name, t->cri_name) && try_open(t) > 0)
                kick(t);
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        LogTail *t = userdata;
        uint64_t now = usec;

        /* The kick also writes a cursor that the once-a-second limit held back. */
        if (try_open(t) > 0)
                kick(t);
        /* From now, not from usec: after a stall it should not fire for every missed second. */
        (void) sd_event_now(t->event, CLOCK_MONOTONIC, &now);
        (void) sd_event_source_set_time(s, now + FALLBACK_USEC);
        return 0;
}

/* Counts the complete lines of the task log and its size; cuts off a torn last line;
 * notes whether the last line is the cap marker. */
static int count_task_log_lines(LogTail *t, uint64_t *ret) {
        uint64_t lines = 0, offset = 0, end_of_last_line = 0, start_of_last_line = 0;

        for (;;) {
                ssize_t n = pread(t->log_fd, t->rbuf, READ_CHUNK, (off_t) offset);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;

                const char *p = t->rbuf, *e = t->rbuf + n;
                while ((p = memchr(p, '\n', e - p))) {
                        p++;
                        lines++;
                        start_of_last_line = end_of_last_line;
                        end_of_last_line = offset + (p - t->rbuf);
                }
                offset += n;
        }

        /* A task that prints the marker itself only stops its own task log early. */
        if (lines > 0) {
                char head[sizeof(CAP_MARKER_PREFIX) - 1];
                t->capped = pread(t->log_fd, head, sizeof(head), (off_t) start_of_last_line) == sizeof(head) &&
                            memcmp(head, CAP_MARKER_PREFIX, sizeof(head)) == 0;
        }
        t->log_bytes = end_of_last_line;

        if (offset > end_of_last_line) {
                log_debug("Task log %s ends in a torn line, cutting %" PRIu64 " bytes; it is written again.",
                          t->task_log_path, offset - end_of_last_line);
                if (ftruncate(t->log_fd, (off_t) end_of_last_line) < 0)
                        return -errno;
        }

        *ret = lines;
        return 0;
}

/* Without a usable cursor, where the CRI log's data starts after a punched-out head
 * (0 if it has none): just after the first record end there. */
static uint64_t after_hole(LogTail *t) {
        off_t d;

        if (t->cri_fd < 0)
                return 0;
        d = lseek(t->cri_fd, 0, SEEK_DATA);
        if (d <= 0)
                return 0;
        for (uint64_t o = (uint64_t) d;;) {
                ssize_t n = pread(t->cri_fd, t->rbuf, READ_CHUNK, (off_t) o);
                if (n <= 0)
                        return o;
                const char *nl = memchr(t->rbuf, '\n', n);
                if (nl)
                        return o + (nl - t->rbuf) + 1;
                o += n;
        }
}

/* Where to resume: the cursor, if it is believable, else the start of the CRI log.
 * *ret_lines is UINT64_MAX when the start was punched out and the cursor is gone (only
 * after a crash of the machine): the lines there cannot be numbered. */
static void read_cursor(LogTail *t, uint64_t task_log_lines, uint64_t *ret_offset, uint64_t *ret_lines) {
        char buf[128];
        unsigned long long offset, lines;
        ssize_t n;
        int consumed = 0;

        *ret_offset = *ret_lines = 0;

        _cleanup_close_ int fd = open(t->cursor_path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                goto invalid;
        n = read(fd, buf, sizeof(buf) - 1);
        if (n <= 0)
                goto invalid;
        buf[n] = 0;

        if (sscanf(buf, "%llu %llu%n", &offset, &lines, &consumed) != 2 || (buf[consumed] != '\n' && buf[consumed]) ||
            buf[0] < '0' || buf[0] > '9')
                goto invalid;
        /* A capped task log no longer counts the lines. */
        if (lines > task_log_lines && !t->capped)
                goto invalid;
        if (offset > 0) {
                struct stat st;
                char c;

                /* It must point just after a record in the CRI log we have. */
                if (t->cri_fd < 0 || fstat(t->cri_fd, &st) < 0 || offset > (uint64_t) st.st_size ||
                    pread(t->cri_fd, &c, 1, (off_t) offset - 1) != 1 || c != '\n')
                        goto invalid;
        }

        *ret_offset = offset;
        *ret_lines = lines;
        return;

invalid:
        *ret_offset = after_hole(t);
        if (*ret_offset > 0) {
                *ret_lines = UINT64_MAX;
                log_warning("No usable cursor %s while the head of %s was already forwarded and trimmed; "
                            "resuming after the trimmed part, a few lines may be repeated.",
                            t->cursor_path, t->cri_path);
        } else if (fd >= 0)
                log_debug("Ignoring unusable cursor %s, counting lines from the start.", t->cursor_path);
}

static int split_path(const char *path, char **ret_dir, char **ret_name) {
        const char *slash = strrchr(path, '/');
        _cleanup_free_ char *dir = NULL, *name = NULL;

        if (!slash)
                dir = strdup(".");
        else if (slash == path)
                dir = strdup("/");
        else
                dir = strndup(path, slash - path);
        name = strdup(slash ? slash + 1 : path);
        if (!dir || !name)
                return -ENOMEM;
        if (isempty(name))
                return -EINVAL;

        *ret_dir = TAKE_PTR(dir);
        *ret_name = TAKE_PTR(name);
        return 0;
}

static char *strjoin2(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b);
        char *s = malloc(la + lb + 1);
        if (!s)
                return NULL;
        memcpy(s, a, la);
        memcpy(s + la, b, lb + 1);
        return s;
}

int logtail_new(sd_event *e,
                const Task *task,
                const char *cri_log_path,
                const char *task_log_path,
                char *const *secrets,
                logtail_output_cb_t cb,
                void *userdata,
                LogTail **ret) {

        _cleanup_(logtail_freep) LogTail *t = NULL;
        uint64_t n_lines = 0, journal_lines, start_offset = 0, start_lines = 0;
        bool resuming;
        int r;

        if (!e || !task || !cri_log_path || !task_log_path || !ret)
                return -EINVAL;

        t = calloc(1, sizeof(LogTail));
        if (!t)
                return -ENOMEM;
        t->cri_fd = t->log_fd = t->punch_fd = -EBADF;
        t->event = sd_event_ref(e);
        t->cb = cb;
        t->userdata = userdata;

        r = journal_context_new(task, &t->journal);
        if (r < 0)
                return r;

        /* Output is masked line by line, and a value may be printed JSON-escaped. */
        r = redact_secret_forms(secrets, &t->secrets);
        if (r < 0)
                return r;

        t->task_id = task->id ? strdup(task->id) : NULL;
        t->cri_path = strdup(cri_log_path);
        t->task_log_path = strdup(task_log_path);
        t->cursor_path = strjoin2(task_log_path, ".cursor");
        t->cursor_tmp_path = strjoin2(task_log_path, ".cursor.tmp");
        t->rbuf = malloc(READ_CHUNK);
        if ((task->id && !t->task_id) || !t->cri_path || !t->task_log_path || !t->cursor_path || !t->cursor_tmp_path ||
            !t->rbuf)
                return -ENOMEM;
        r = split_path(cri_log_path, &t->cri_dir, &t->cri_name);
        if (r < 0)
                return r;

        /* A LogTail ran before (and may have sent lines to journald) iff it left a task log
         * file (it creates it before sending anything) or a cursor. */
        resuming = access(task_log_path, F_OK) >= 0 || access(t->cursor_path, F_OK) >= 0;

        t->log_fd = open(task_log_path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
        if (t->log_fd < 0)
                return log_debug_errno(errno, "Failed to open task log %s: %m", task_log_path);

        r = count_task_log_lines(t, &n_lines);
        if (r < 0)
                return log_debug_errno(r, "Failed to read task log %s: %m", task_log_path);

        journal_lines = n_lines;
        if (resuming && task->id) {
                uint64_t j = 0;

                r = journal_last_line(task->id, RESUME_SYNC_USEC, &j);
                if (r == -ENOTCONN)
                        log_debug("Task %s: journald is not running, resuming its output after line %" PRIu64
                                  " of the task log.",
                                  task->id, n_lines);
                else if (r < 0)
                        log_warning_errno(r,
                                          "Task %s: cannot tell how far journald got with its output, assuming "
                                          "line %" PRIu64 " as in the task log; journald may miss or repeat a "
                                          "few lines: %m",
                                          task->id, n_lines);
                else {
                        journal_lines = MAX(j, n_lines);
                        log_debug("Task %s: resuming output, task log has %" PRIu64 " lines, journald %" PRIu64 ".",
                                  task->id, n_lines, j);
                }
        }

        r = try_open(t);
        if (r < 0)
                return r;

        read_cursor(t, n_lines, &start_offset, &start_lines);
        if (start_lines == UINT64_MAX) {
                start_lines = journal_lines; /* numbered after what both sinks hold */
        }
        if (t->capped) {
                /* Every line before the marker went to journald first; later ones too, up to the cursor. */
                journal_lines = MAX(MAX(journal_lines, start_lines), n_lines - 1);
                log_debug("Task %s: its task log is capped, output resumes in journald after line %" PRIu64 ".",
                          strna(task->id), journal_lines);
        }

        r = cri_log_stream_new(start_offset, start_lines, on_line, t, &t->stream);
        if (r < 0)
                return r;
        t->read_offset = start_offset;
        t->lines = n_lines;
        t->line_no = start_lines;
        t->log_have = n_lines;
        t->journal_have = journal_lines;

        r = sd_event_add_defer(e, &t->defer_source, on_defer, t);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(t->defer_source, "logtail-read");
        /* After the inotify events of an iteration, so a burst of them costs one read pass. */
        (void) sd_event_source_set_priority(t->defer_source, SD_EVENT_PRIORITY_NORMAL + 10);

        uint64_t now;
        r = sd_event_now(e, CLOCK_MONOTONIC, &now);
        if (r < 0)
                return r;
        r = sd_event_add_time(e, &t->timer_source, CLOCK_MONOTONIC, now + FALLBACK_USEC, 100 * USEC_PER_MSEC, on_timer,
                              t);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(t->timer_source, "logtail-timer");
        r = sd_event_source_set_enabled(t->timer_source, SD_EVENT_ON);
        if (r < 0)
                return r;

        if (t->cri_fd < 0) {
                r = sd_event_add_inotify(e, &t->dir_source, t->cri_dir, IN_CREATE | IN_MOVED_TO, on_dir_inotify, t);
                if (r < 0)
                        log_debug_errno(r, "Failed to watch %s, relying on the timer: %m", t->cri_dir);
                else
                        (void) sd_event_source_set_description(t->dir_source, "logtail-dir");

                /* It may have appeared before the watch was there. */
                r = try_open(t);
                if (r < 0)
                        return r;
        }

        kick(t); /* what is there already (the defer source starts enabled, make sure) */

        *ret = TAKE_PTR(t);
        return 0;
}

int logtail_finish(LogTail *t) {
        uint64_t before;
        bool eof = false;
        int r;

        if (!t)
                return -EINVAL;
        if (t->finished)
                return 0;

        before = t->lines;

        r = try_open(t);
        if (r < 0)
                return r;

        while (!eof) {
                r = read_chunks(t, SIZE_MAX, &eof);
                if (r < 0)
                        return log_warning_errno(r, "Failed to read the rest of %s: %m", t->cri_path);
        }

        r = cri_log_stream_finish(t->stream);
        if (r < 0)
                return r;
        r = flush_batch(t);
        if (r < 0)
                return r;

        if (fsync(t->log_fd) < 0)
                return log_warning_errno(errno, "Failed to fsync task log %s: %m", t->task_log_path);

        /* Kept, at the end (removed with the record): a daemon killed before the task's
         * end is on disk adopts the task again, and without a cursor it could not number
         * the lines after a trimmed head, so it would write them a second time. */
        maybe_write_cursor(t, true);

        t->finished = true;
        t->file_source = sd_event_source_disable_unref(t->file_source);
        t->dir_source = sd_event_source_disable_unref(t->dir_source);
        t->timer_source = sd_event_source_disable_unref(t->timer_source);
        t->defer_source = sd_event_source_disable_unref(t->defer_source);
        t->cri_fd = safe_close(t->cri_fd);
        t->punch_fd = safe_close(t->punch_fd);

        notify_output(t, before);
        return 0;
}

void logtail_set_max_bytes(LogTail *t, uint64_t max_bytes) {
        if (t)
                t->max_bytes = max_bytes;
}

uint64_t logtail_lines(LogTail *t) {
        return t ? t->lines : 0;
}

void logtail_partial(LogTail *t, bool is_stderr, uint64_t *ret_id, const char **ret_text, size_t *ret_len) {
        const PartialView *v = t ? &t->partial[is_stderr] : NULL;
        const char *text = "";
        size_t len = 0;

        *ret_id = 0;
        *ret_text = "";
        *ret_len = 0;
        /* Lines still in the batch (a write to retry) come first. */
        if (!v || v->id == 0 || t->finished || t->capped || t->batch_len > 0)
                return;
        if (t->secrets) {
                *ret_text = v->masked ?: "";
                *ret_len = v->masked_len;
        } else {
                cri_log_stream_pending(t->stream, is_stderr, &text, &len);
                *ret_text = text;
                *ret_len = MIN(len, v->raw_shown);
        }
        *ret_id = v->id;
}

int logtail_partial_landed(LogTail *t, uint64_t id, uint64_t *ret_offset) {
        if (!t || id == 0)
                return -ENOENT;
        for (int s = 0; s < 2; s++) {
                if (t->partial[s].id == id)
                        return -EAGAIN;
                if (t->landed[s].id == id) {
                        if (!t->landed[s].in_log)
                                return -ENOENT;
                        *ret_offset = t->landed[s].offset;
                        return 0;
                }
        }
        return -ENOENT;
}

LogTail *logtail_free(LogTail *t) {
        if (!t)
                return NULL;

        if (!t->finished && t->stream && t->log_fd >= 0) {
                /* Orderly stop (daemon shutdown): leave an up-to-date cursor behind. */
                if (t->batch_len > 0)
                        (void) flush_batch(t);
                maybe_write_cursor(t, true);
        }

        sd_event_source_disable_unref(t->file_source);
        sd_event_source_disable_unref(t->dir_source);
        sd_event_source_disable_unref(t->timer_source);
        sd_event_source_disable_unref(t->defer_source);
        sd_event_unref(t->event);

        safe_close(t->cri_fd);
        safe_close(t->punch_fd);
        safe_close(t->log_fd);
        cri_log_stream_free(t->stream);
        journal_context_free(t->journal);
        strv_free(t->secrets);

        free(t->task_id);
        free(t->cri_path);
        free(t->cri_dir);
        free(t->cri_name);
        free(t->task_log_path);
        free(t->cursor_path);
        free(t->cursor_tmp_path);
        free(t->rbuf);
        free(t->batch);
        free(t->partial[0].masked);
        free(t->partial[1].masked);
        free(t);

        /* A task's buffers (64 KiB read buffer, batch, datagram) leave holes at the top of
         * the heap that glibc keeps; hand them back so an idle daemon shrinks again. */
        (void) malloc_trim(0);
        return NULL;
}
