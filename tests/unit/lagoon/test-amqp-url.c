/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Tests of the AMQP URL parser (amqp_url_parse): defaults, userinfo and vhost
 * percent-decoding, IPv6 literals, ports, and garbage that must be refused. */

#include <errno.h>
#include <string.h>

#include "amqp-client.h"
#include "tests.h"

static void check(const char *url,
                  bool tls,
                  const char *host,
                  uint16_t port,
                  const char *vhost,
                  const char *user,
                  const char *password) {
        AmqpUrl u = {};
        int r = amqp_url_parse(url, &u);

        if (r < 0) {
                fprintf(stderr, "amqp_url_parse(\"%s\") failed: %s\n", url, strerror(-r));
                abort();
        }
        ASSERT_EQ(u.tls, tls);
        ASSERT_STREQ(u.host, host);
        ASSERT_EQ(u.port, port);
        ASSERT_STREQ(u.vhost, vhost);
        if (user)
                ASSERT_STREQ(u.user, user);
        else
                ASSERT(!u.user);
        if (password)
                ASSERT_STREQ(u.password, password);
        else
                ASSERT(!u.password);
        amqp_url_done(&u);
        amqp_url_done(&u); /* idempotent */
}

static void bad(const char *url) {
        AmqpUrl u = {};
        int r = amqp_url_parse(url, &u);

        if (r != -EINVAL) {
                fprintf(stderr, "amqp_url_parse(\"%s\") returned %d, expected -EINVAL\n", url ? url : "(null)", r);
                abort();
        }
        ASSERT(!u.host && !u.vhost && !u.user && !u.password);
}

TEST(defaults) {
        check("amqp://localhost", false, "localhost", 5672, "/", NULL, NULL);
        check("amqp://localhost/", false, "localhost", 5672, "/", NULL, NULL);
        check("amqps://broker.example.com", true, "broker.example.com", 5671, "/", NULL, NULL);
        check("AMQP://Broker", false, "Broker", 5672, "/", NULL, NULL);
        check("amqp://", false, "localhost", 5672, "/", NULL, NULL);
        check("amqp://host:", false, "host", 5672, "/", NULL, NULL);
}

TEST(ports) {
        check("amqp://127.0.0.1:5673", false, "127.0.0.1", 5673, "/", NULL, NULL);
        check("amqps://h:1/", true, "h", 1, "/", NULL, NULL);
        check("amqp://h:65535", false, "h", 65535, "/", NULL, NULL);
        bad("amqp://h:0");
        bad("amqp://h:65536");
        bad("amqp://h:123456");
        bad("amqp://h:-1");
        bad("amqp://h:12a");
        bad("amqp://h:+5");
        bad("amqp://h: 5");
}

TEST(vhost) {
        check("amqp://h/%2f", false, "h", 5672, "/", NULL, NULL);
        check("amqp://h/%2F", false, "h", 5672, "/", NULL, NULL);
        check("amqp://h/lagoon", false, "h", 5672, "lagoon", NULL, NULL);
        check("amqp://h:1234/%2flagoon%20x", false, "h", 1234, "/lagoon x", NULL, NULL);
        bad("amqp://h/a/b");
        bad("amqp://h//");
        bad("amqp://h/%");
        bad("amqp://h/%2");
        bad("amqp://h/%zz");
        bad("amqp://h/%00");
        bad("amqp://h/a b");
}

TEST(userinfo) {
        check("amqp://guest:guest@localhost:5672/", false, "localhost", 5672, "/", "guest", "guest");
        check("amqp://user@h", false, "h", 5672, "/", "user", NULL);
        check("amqp://user:@h", false, "h", 5672, "/", "user", "");
        check("amqp://:pw@h", false, "h", 5672, "/", "", "pw");
        check("amqp://u%40x:p%3Aw%2F%25@h/v", false, "h", 5672, "v", "u@x", "p:w/%");
        /* a raw '@' in the password: split at the last one */
        check("amqp://u:p@ss@h", false, "h", 5672, "/", "u", "p@ss");
        check("amqp://u:a:b@h", false, "h", 5672, "/", "u", "a:b");
        bad("amqp://u:%zz@h");
        bad("amqp://u%00:x@h");
}

TEST(ipv6) {
        check("amqp://[::1]", false, "::1", 5672, "/", NULL, NULL);
        check("amqp://[::1]:5673/vh", false, "::1", 5673, "vh", NULL, NULL);
        check("amqps://u:p@[fe80::1:2]:1/", true, "fe80::1:2", 1, "/", "u", "p");
        check("amqp://[::ffff:127.0.0.1]", false, "::ffff:127.0.0.1", 5672, "/", NULL, NULL);
        bad("amqp://[::1");
        bad("amqp://[::1]x");
        check("amqp://[::1]:", false, "::1", 5672, "/", NULL, NULL);
        bad("amqp://[]");
        bad("amqp://[zz]");
        bad("amqp://[1.2.3.4]");
        bad("amqp://::1");
        bad("amqp://::1:5672");
}

TEST(garbage) {
        bad(NULL);
        bad("");
        bad("amqp");
        bad("amqp:/");
        bad("amqp:/h");
        bad("http://h");
        bad("amqpx://h");
        bad(" amqp://h");
        bad("amqp://h?heartbeat=10");
        bad("amqp://h/v?x=1");
        bad("amqp://h#frag");
        bad("amqp://h o");
        bad("amqp://h\n");
        bad("amqp://h\t/");
        bad("amqp://h:5672:1");
        bad("amqp://a!b");
        bad("amqp://%");
        bad("amqp://h%00x");
        ASSERT_EQ(amqp_url_parse("amqp://h", NULL), -EINVAL);
}

TEST(amqp_url_parse_1k_of_junk) {
        /* every 1- and 2-byte suffix: no crash, either a result or -EINVAL */
        char buf[32];
        for (int a = 1; a < 256; a++)
                for (int b = 0; b < 256; b += 7) {
                        AmqpUrl u = {};
                        int r;

                        snprintf(buf, sizeof(buf), "amqp://h%c%c", a, b);
                        r = amqp_url_parse(buf, &u);
                        ASSERT(r == 0 || r == -EINVAL);
                        if (r == 0)
                                ASSERT(u.host && u.vhost);
                        amqp_url_done(&u);
                }
}

int main(void) {
        RUN(defaults);
        RUN(ports);
        RUN(vhost);
        RUN(userinfo);
        RUN(ipv6);
        RUN(garbage);
        RUN(amqp_url_parse_1k_of_junk);
        return 0;
}
