/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Unit tests of lagoon-taskctl's --since parser (daemon/ctl/ctl-journal.c): durations
 * before now, RFC 3339 times with fraction and offset, local "YYYY-MM-DD HH:MM:SS", and
 * garbage, which must be -EINVAL and leave the result alone. */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ctl-journal.h"
#include "tests.h"

#define SEC 1000000ULL
#define NOW (1796423400ULL * SEC) /* 2026-12-04T22:30:00Z */

static void check(const char *s, uint64_t expected) {
        uint64_t v = 0;
        int r = ctl_journal_parse_since(s, NOW, &v);

        if (r != 0 || v != expected) {
                fprintf(stderr, "ctl_journal_parse_since(\"%s\") = %d, %" PRIu64 "; expected 0, %" PRIu64 "\n", s, r, v,
                        expected);
                abort();
        }
}

static void check_fails(const char *s) {
        uint64_t v = 4711;
        int r = ctl_journal_parse_since(s, NOW, &v);

        if (r != -EINVAL || v != 4711) {
                fprintf(stderr, "ctl_journal_parse_since(\"%s\") = %d, %" PRIu64 "; expected -EINVAL, untouched\n", s,
                        r, v);
                abort();
        }
}

int main(void) {
        /* Local time is the test's: UTC. */
        setenv("TZ", "UTC", 1);
        tzset();

        check("10m", NOW - 600 * SEC);
        check("2h ago", NOW - 7200 * SEC);
        check("1h30m", NOW - 5400 * SEC);
        check("0s", NOW);
        check("2026-12-04T22:30:00Z", NOW);
        check("2026-12-04t22:30:00z", NOW);
        check("2026-12-04T22:30:00.5Z", NOW + SEC / 2);
        check("2026-12-04T22:30:00.123456789Z", NOW + 123456);
        check("2026-12-04T23:30:00+01:00", NOW);
        check("2026-12-04T21:00:00-01:30", NOW);
        check("2026-12-04 22:30:00", NOW);
        check("2026-12-04T22:30:00", NOW);
        check("1970-01-01T00:00:00Z", 0);

        check_fails(NULL);
        check_fails("");
        check_fails(" ");
        check_fails("abc");
        check_fails("ago");
        check_fails(" ago");
        check_fails("10m ago ago");
        check_fails("10x");
        check_fails("-5m");
        check_fails("100000d"); /* before the epoch */
        check_fails("2026-12-04");
        check_fails("2026-12-04T");
        check_fails("2026-12-04T22:30");
        check_fails("2026-12-04T22:30:00.Z");
        check_fails("2026-12-04T22:30:00+1:00");
        check_fails("2026-12-04T22:30:00+24:00");
        check_fails("2026-12-04T22:30:00+01:60");
        check_fails("2026-12-04T22:30:00+01");
        check_fails("2026-12-04T22:30:00Zjunk");
        check_fails("2026-13-04T22:30:00Z");
        check_fails("2026-12-04T25:30:00Z");
        check_fails("2026-12-04X22:30:00Z");
        check_fails("1969-12-31T23:59:59Z");

        printf("test-ctl-journal: all tests passed\n");
        return 0;
}
