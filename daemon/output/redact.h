/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Masking of secret values in task output before it leaves the daemon. */

#include <stdbool.h>
#include <stddef.h>

/* Returns a newly allocated copy of text (len bytes, NUL-terminated, length in
 * *ret_len) where every occurrence of every non-empty string of secrets
 * (NULL-terminated) is replaced by "***". Longer secrets win over shorter ones
 * that overlap them: overlapping occurrences (of the same or different secrets) are
 * masked together as one "***", so no part of any secret is left visible; merely
 * adjacent occurrences each become their own "***". Binary safe. NULL on OOM. */
char *redact(const char *text, size_t len, char *const *secrets, size_t *ret_len);

/* Whether text contains any non-empty secret: the cheap test that lets callers skip
 * the copy for the (common) lines without secrets. */
bool redact_needed(const char *text, size_t len, char *const *secrets);

/* For a line not complete yet (text, len bytes so far): the length of its longest
 * prefix that may be shown now. It ends before any tail of text that could be the start
 * of a secret the rest of the line completes, and before a masked run that such a secret
 * could still extend. So for any continuation rest, redact(text + rest) is exactly
 * redact(text[0..n)) followed by redact((text + rest)[n..]): what was shown stays true
 * and nothing shown is a prefix of a secret. Usually holds back at most (longest secret
 * - 1) bytes, more only for overlapping secrets. len when secrets is NULL or empty. */
size_t redact_stable_prefix(const char *text, size_t len, char *const *secrets);

/* Secrets shorter than this are not masked: a one-character value would hide every
 * occurrence of that character and make the output useless (README, under `Secret=`). */
#define REDACT_SECRET_MIN 4U

/* The strings to mask for a list of secret values, as output shows them: each value, each
 * line of a multi-line value (output is masked line by line; a trailing \r dropped), and
 * the JSON-escaped form of each (a program printing it as a JSON string); all forms shorter
 * than REDACT_SECRET_MIN left out, duplicates once. */
int redact_secret_forms(char *const *secrets, char ***ret);
