/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The daemon's own log: stderr, with a "<N>" priority prefix when stderr is a
 * journald stream (JOURNAL_STREAM matches), plain "level: message" otherwise. */

#include <stdarg.h>
#include <sys/stat.h>

#include "log.h"

static int max_level = LOG_INFO;
static int stderr_is_journal = -1;

static const char *const level_names[] = {
        [LOG_EMERG] = "emerg",     [LOG_ALERT] = "alert",   [LOG_CRIT] = "crit", [LOG_ERR] = "err",
        [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice", [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

void log_set_max_level(int level) {
        max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

int log_level_from_string(const char *s) {
        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
                if (streq(s, level_names[i]))
                        return (int) i;
        if (streq(s, "error"))
                return LOG_ERR;
        if (streq(s, "warn"))
                return LOG_WARNING;
        return -EINVAL;
}

static bool check_stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (stderr_is_journal >= 0)
                return stderr_is_journal;
        stderr_is_journal = 0;
        if (e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) >= 0 &&
            (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino)
                stderr_is_journal = 1;
        return stderr_is_journal;
}

int log_internal(int level, int error, const char *file, int line, const char *func, const char *format, ...) {
        char buf[4096];
        va_list ap;

        error = abs(error);
        /* Make %m print the error passed in. */
        errno = error;
        va_start(ap, format);
        vsnprintf(buf, sizeof(buf), format, ap);
        va_end(ap);

        if (check_stderr_is_journal())
                fprintf(stderr, "<%d>%s\n", level & 7, buf);
        else if (max_level >= LOG_DEBUG)
                fprintf(stderr, "%s: %s (%s:%d %s)\n", level_names[level & 7], buf, file, line, func);
        else
                fprintf(stderr, "%s\n", buf);

        errno = error;
        return -error;
}
