/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The CRI log format as conmon writes it: parsing one record, and splitting a byte
 * stream into records and joined lines (P pieces up to the F piece, per stream). Pure:
 * no I/O, no logging; the only allocations are the stream's buffers, which are reused
 * so that the common path (one F record in one chunk) copies nothing. */

#include <errno.h>
#include <string.h>

#include "crilog.h"

static bool is_digit(char c) {
        return c >= '0' && c <= '9';
}

static bool digits(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (!is_digit(s[i]))
                        return false;
        return true;
}

/* Structural check of an RFC 3339 timestamp: YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM|±HHMM).
 * Enough to tell a record from garbage; the value itself is not used. */
static bool timestamp_is_valid(const char *s, size_t n) {
        if (n < 20)
                return false;
        if (!digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' || !digits(s + 8, 2) ||
            (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2) || s[13] != ':' || !digits(s + 14, 2) ||
            s[16] != ':' || !digits(s + 17, 2))
                return false;

        size_t i = 19;
        if (s[i] == '.') {
                size_t start = ++i;
                while (i < n && is_digit(s[i]))
                        i++;
                if (i == start)
                        return false;
        }
        if (i >= n)
                return false;
        if (s[i] == 'Z' || s[i] == 'z')
                return i + 1 == n;
        if (s[i] != '+' && s[i] != '-')
                return false;
        i++;
        if (n - i == 5)
                return digits(s + i, 2) && s[i + 2] == ':' && digits(s + i + 3, 2);
        if (n - i == 4)
                return digits(s + i, 4);
        return false;
}

int cri_log_parse_line(const char *line, size_t len, CriLogLine *ret) {
        const char *p, *e, *sp;

        if (!line || len == 0)
                return -EBADMSG;

        p = line;
        e = line + len;

        /* timestamp */
        sp = memchr(p, ' ', e - p);
        if (!sp || !timestamp_is_valid(p, sp - p))
                return -EBADMSG;
        const char *ts = p;
        size_t ts_len = sp - p;
        p = sp + 1;

        /* stream */
        bool is_stderr;
        if (e - p >= 7 && memcmp(p, "stdout ", 7) == 0)
                is_stderr = false;
        else if (e - p >= 7 && memcmp(p, "stderr ", 7) == 0)
                is_stderr = true;
        else
                return -EBADMSG;
        p += 7;

        /* tag: F or P. conmon writes "<tag> <text>", also for empty text; a record that
         * ends right after the tag is accepted as empty text too. */
        if (p >= e || (*p != 'F' && *p != 'P'))
                return -EBADMSG;
        bool partial = *p == 'P';
        p++;
        if (p < e) {
                if (*p != ' ')
                        return -EBADMSG;
                p++;
        }

        if (ret)
                *ret = (CriLogLine){
                        .timestamp = ts,
                        .timestamp_len = ts_len,
                        .is_stderr = is_stderr,
                        .partial = partial,
                        .text = p,
                        .text_len = e - p,
                };
        return 0;
}

typedef struct Pending {
        char *buf;
        size_t len;
        size_t alloc;
        uint64_t started; /* sequence number of its first piece, for ordering at finish */
} Pending;

struct CriLogStream {
        cri_log_line_cb_t cb;
        void *userdata;

        uint64_t offset; /* file offset of the first byte of `carry` */
        uint64_t lines;
        uint64_t clean_offset;
        uint64_t clean_lines;
        uint64_t seq;

        char *carry; /* incomplete trailing record */
        size_t carry_len;
        size_t carry_alloc;

        Pending pending[2]; /* stdout, stderr */
};

int cri_log_stream_new(uint64_t offset, uint64_t lines, cri_log_line_cb_t cb, void *userdata, CriLogStream **ret) {
        CriLogStream *s;

        if (!cb || !ret)
                return -EINVAL;

        s = calloc(1, sizeof(CriLogStream));
        if (!s)
                return -ENOMEM;

        s->cb = cb;
        s->userdata = userdata;
        s->offset = s->clean_offset = offset;
        s->lines = s->clean_lines = lines;

        *ret = s;
        return 0;
}

CriLogStream *cri_log_stream_free(CriLogStream *s) {
        if (!s)
                return NULL;
        free(s->carry);
        free(s->pending[0].buf);
        free(s->pending[1].buf);
        return mfree(s);
}

static int grow(char **buf, size_t *alloc, size_t need) {
        if (need <= *alloc)
                return 0;

        size_t n = MAX(need, MAX(*alloc * 2, (size_t) 4096));
        char *b = realloc(*buf, n);
        if (!b)
                return -ENOMEM;
        *buf = b;
        *alloc = n;
        return 0;
}

static int emit(CriLogStream *s, const char *line, size_t len, bool is_stderr, bool malformed) {
        s->lines++;
        return s->cb(line, len, is_stderr, malformed, s->userdata);
}

/* Adds one piece of a stream's text; final: the F piece that ends the line. */
static int stream_append(CriLogStream *s, bool is_stderr, const char *text, size_t len, bool final) {
        Pending *p = &s->pending[is_stderr];
        int r;

        /* Common path: a whole line in one F record, nothing pending: no copy. */
        if (p->len == 0 && final && len <= CRI_LOG_LINE_MAX)
                return emit(s, text, len, is_stderr, false);

        if (p->len == 0 && len > 0)
                p->started = s->seq++;

        while (p->len + len > CRI_LOG_LINE_MAX) {
                size_t take = CRI_LOG_LINE_MAX - p->len;

                if (p->len == 0) {
                        r = emit(s, text, take, is_stderr, false);
                } else {
                        r = grow(&p->buf, &p->alloc, CRI_LOG_LINE_MAX);
                        if (r < 0)
                                return r;
                        memcpy(p->buf + p->len, text, take);
                        p->len = 0;
                        r = emit(s, p->buf, CRI_LOG_LINE_MAX, is_stderr, false);
                }
                if (r < 0)
                        return r;
                text += take;
                len -= take;
                if (len > 0)
                        p->started = s->seq++;
        }

        if (final) {
                if (p->len == 0)
                        return emit(s, text, len, is_stderr, false);
                r = grow(&p->buf, &p->alloc, p->len + len);
                if (r < 0)
                        return r;
                memcpy(p->buf + p->len, text, len);
                size_t n = p->len + len;
                p->len = 0;
                return emit(s, p->buf, n, is_stderr, false);
        }

        if (len > 0) {
                r = grow(&p->buf, &p->alloc, p->len + len);
                if (r < 0)
                        return r;
                memcpy(p->buf + p->len, text, len);
                p->len += len;
        }
        return 0;
}

/* One record (without '\n'), `consumed` bytes of the file including its '\n'. */
static int process_record(CriLogStream *s, const char *rec, size_t len, size_t consumed) {
        CriLogLine l;
        int r;

        if (cri_log_parse_line(rec, len, &l) >= 0)
                r = stream_append(s, l.is_stderr, l.text, l.text_len, !l.partial);
        else {
                /* Not a record: hand it out raw, so nothing is lost. */
                r = 0;
                do {
                        size_t n = MIN(len, CRI_LOG_LINE_MAX);
                        r = emit(s, rec, n, false, true);
                        rec += n;
                        len -= n;
                } while (r >= 0 && len > 0);
        }
        if (r < 0)
                return r;

        s->offset += consumed;
        if (s->pending[0].len == 0 && s->pending[1].len == 0) {
                s->clean_offset = s->offset;
                s->clean_lines = s->lines;
        }
        return 0;
}

static int carry_append(CriLogStream *s, const char *data, size_t n) {
        int r;

        if (n == 0)
                return 0;
        r = grow(&s->carry, &s->carry_alloc, s->carry_len + n);
        if (r < 0)
                return r;
        memcpy(s->carry + s->carry_len, data, n);
        s->carry_len += n;
        return 0;
}

int cri_log_stream_feed(CriLogStream *s, const void *data, size_t len) {
        const char *p = data, *e = p + len;
        int r;

        if (!s || (!data && len > 0))
                return -EINVAL;

        while (p < e) {
                const char *nl = memchr(p, '\n', e - p);
                size_t n = nl ? (size_t) (nl - p) : (size_t) (e - p);

                if (s->carry_len > 0) {
                        size_t room = CRI_LOG_RECORD_MAX - s->carry_len;

                        if (n > room) {
                                /* Overlong record: cut at exactly CRI_LOG_RECORD_MAX bytes from its
                                 * start, whatever the chunking. */
                                r = carry_append(s, p, room);
                                if (r < 0)
                                        return r;
                                p += room;
                                s->carry_len = 0;
                                r = process_record(s, s->carry, CRI_LOG_RECORD_MAX, CRI_LOG_RECORD_MAX);
                                if (r < 0)
                                        return r;
                                continue;
                        }

                        r = carry_append(s, p, n);
                        if (r < 0)
                                return r;
                        if (!nl)
                                break;
                        p = nl + 1;
                        size_t l = s->carry_len;
                        s->carry_len = 0;
                        r = process_record(s, s->carry, l, l + 1);
                        if (r < 0)
                                return r;
                        continue;
                }

                if (n > CRI_LOG_RECORD_MAX) {
                        r = process_record(s, p, CRI_LOG_RECORD_MAX, CRI_LOG_RECORD_MAX);
                        if (r < 0)
                                return r;
                        p += CRI_LOG_RECORD_MAX;
                        continue;
                }
                if (!nl)
                        return carry_append(s, p, n);

                r = process_record(s, p, n, n + 1);
                if (r < 0)
                        return r;
                p = nl + 1;
        }

        return 0;
}

static int flush_pending(CriLogStream *s, bool is_stderr) {
        Pending *p = &s->pending[is_stderr];
        size_t n = p->len;

        if (n == 0)
                return 0;
        p->len = 0;
        return emit(s, p->buf, n, is_stderr, false);
}

int cri_log_stream_finish(CriLogStream *s) {
        int r;

        if (!s)
                return -EINVAL;

        if (s->carry_len > 0) {
                size_t l = s->carry_len;
                s->carry_len = 0;
                r = process_record(s, s->carry, l, l);
                if (r < 0)
                        return r;
        }

        bool first_stderr =
                s->pending[1].len > 0 && (s->pending[0].len == 0 || s->pending[1].started < s->pending[0].started);
        r = flush_pending(s, first_stderr);
        if (r < 0)
                return r;
        r = flush_pending(s, !first_stderr);
        if (r < 0)
                return r;

        s->clean_offset = s->offset;
        s->clean_lines = s->lines;
        return 0;
}

void cri_log_stream_pending(const CriLogStream *s, bool is_stderr, const char **ret_text, size_t *ret_len) {
        const Pending *p = &s->pending[is_stderr];

        *ret_text = p->len > 0 ? p->buf : "";
        *ret_len = p->len;
}

uint64_t cri_log_stream_lines(const CriLogStream *s) {
        return s ? s->lines : 0;
}

void cri_log_stream_clean_point(const CriLogStream *s, uint64_t *ret_offset, uint64_t *ret_lines) {
        if (ret_offset)
                *ret_offset = s->clean_offset;
        if (ret_lines)
                *ret_lines = s->clean_lines;
}
