/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Parsers for values found in configuration files and API requests. */

#include <stdbool.h>
#include <stdint.h>

/* systemd-style time spans: "90", "90s", "5min", "1h 30min", "2d", "500ms", "infinity".
 * A bare number is seconds. Returns 0, -EINVAL, -ERANGE. */
int parse_duration(const char *s, uint64_t *ret_usec);
int parse_unsigned(const char *s, unsigned *ret); /* decimal, no sign, -EINVAL/-ERANGE */
int parse_uint64(const char *s, uint64_t *ret);   /* the same, up to UINT64_MAX */
int parse_boolean(const char *s);                 /* yes/no/true/false/on/off/1/0 → 1/0, -EINVAL */
/* The value 0-63 of a character of the standard base64 alphabet (RFC 4648 §4), -1 for others. */
int base64_char_value(char c);
/* Standard base64 with padding (RFC 4648 §4), and base64url without padding (§5, as JWTs
 * use it). -EINVAL for NULL data of non-zero size. */
int base64_encode(const void *data, size_t size, char **ret);
int base64url_encode(const void *data, size_t size, char **ret);
/* Split a shell-like word list ("a 'b c' \"d\"") into a strv. -EINVAL on an unterminated quote. */
int split_words(const char *s, char ***ret);
/* An RFC 1123 label as Kubernetes names objects: 1-63 of [a-z0-9-], no '-' at either end. */
bool dns_label_is_valid(const char *s);
/* Whether an http:// or https:// URL names a loopback host (localhost, 127.0.0.0/8, [::1]):
 * plain http is acceptable only there for URLs that carry a token. */
bool url_host_is_loopback(const char *url);
/* Whether s is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
 * above U+10FFFF), as JSON strings must be. */
bool utf8_is_valid(const char *s);
/* Format a duration as systemd does ("1h 30min", "infinity"). */
char *format_duration(uint64_t usec);
