/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Parser for one line of a CRI-format container log as conmon writes it:
 *   <RFC3339Nano timestamp> <stdout|stderr> <F|P> <text>
 * "P" marks a partial line (the text continues in the next P/F record of the same
 * stream); "F" a full line or the last piece of one. cri_log_parse_line() is pure and
 * does not allocate.
 *
 * CriLogStream is the (also pure, no I/O) record splitter on top of it: fed arbitrary
 * chunks of the file, it splits records on '\n', keeps an incomplete trailing record
 * until its newline arrives, joins P records per stream until the F record, cuts
 * joined lines at CRI_LOG_LINE_MAX, and hands each complete line to a callback.
 * Malformed records are handed out raw as stdout lines (flagged), so nothing is lost.
 * Its output depends only on the bytes fed from its start offset, not on how they
 * were chunked, which is what makes the cursor/resume logic of logtail.c work. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef struct CriLogLine {
        const char *timestamp; /* points into the input, not NUL-terminated */
        size_t timestamp_len;
        bool is_stderr;
        bool partial;
        const char *text; /* may be empty; points into the input */
        size_t text_len;
} CriLogLine;

/* line: one record without its trailing '\n'. Returns 0 or -EBADMSG for anything
 * that is not a CRI record (missing fields, unknown stream, flag other than F/P). */
int cri_log_parse_line(const char *line, size_t len, CriLogLine *ret);

/* A joined line longer than this is emitted in pieces of this size. */
#define CRI_LOG_LINE_MAX ((size_t) 1024U * 1024U)
/* A record (without '\n') longer than this is cut here and the rest is taken as the
 * next record (only garbage is that long: conmon writes records of a few KiB). */
#define CRI_LOG_RECORD_MAX (CRI_LOG_LINE_MAX + 256U)

/* line: len bytes, no '\n', valid only during the call. malformed: the raw text of a
 * record that did not parse (is_stderr is then false). A negative return aborts the
 * feed and is returned from it (the stream should then be discarded). */
typedef int (*cri_log_line_cb_t)(const char *line, size_t len, bool is_stderr, bool malformed, void *userdata);

typedef struct CriLogStream CriLogStream;

/* offset: file offset of the first byte that will be fed (a record start); lines: the
 * line count at that point (only used for the counters below). */
int cri_log_stream_new(uint64_t offset, uint64_t lines, cri_log_line_cb_t cb, void *userdata, CriLogStream **ret);
CriLogStream *cri_log_stream_free(CriLogStream *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(CriLogStream *, cri_log_stream_free);

int cri_log_stream_feed(CriLogStream *s, const void *data, size_t len);
/* End of input: an incomplete trailing record is taken as a record, then partial lines
 * still pending are emitted (in the order they were started). */
int cri_log_stream_finish(CriLogStream *s);

/* The text of the line a stream's P records started and no F record ended yet (joined,
 * len 0 when none); valid until the next feed. The next line emitted for that stream
 * begins with it. */
void cri_log_stream_pending(const CriLogStream *s, bool is_stderr, const char **ret_text, size_t *ret_len);

/* Lines emitted so far, counting from the `lines` given at creation. */
uint64_t cri_log_stream_lines(const CriLogStream *s);
/* The last point (file offset just after a record, and the line count there) where no
 * partial line and no incomplete record was pending: resuming a new stream there, with
 * that line count, reproduces exactly the lines that follow. */
void cri_log_stream_clean_point(const CriLogStream *s, uint64_t *ret_offset, uint64_t *ret_lines);
