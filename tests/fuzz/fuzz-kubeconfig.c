/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* kube_credentials_from_kubeconfig on arbitrary bytes (written to a private temporary
 * file, *-data blobs into a private directory), for the current context and for a
 * named one; kube_base64_decode on the same bytes. Success must give a server URL. */

#include <stdint.h>
#include <string.h>

#include "fs-util.h"
#include "kubeconfig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[] = "/tmp/fuzz-kubeconfig-XXXXXX";
static char *path = NULL, *data_dir = NULL;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (!path) {
                if (!mkdtemp(dir))
                        __builtin_trap();
                path = path_join(dir, "config");
                data_dir = path_join(dir, "data");
                if (!path || !data_dir)
                        __builtin_trap();
        }
        if (size > 65536)
                return 0;

        _cleanup_free_ char *decoded = NULL;
        size_t n = 0;
        if (kube_base64_decode((const char *) data, size, &decoded, &n) == 0 && n > size)
                __builtin_trap();

        if (write_file_atomic(path, data, size, 0600) < 0)
                __builtin_trap();
        for (unsigned i = 0; i < 2; i++) {
                _cleanup_(kube_credentials_freep) KubeCredentials *c = NULL;
                _cleanup_free_ char *err = NULL;
                int r = kube_credentials_from_kubeconfig(path, i == 0 ? NULL : "a", data_dir, &c, &err);
                if (r >= 0) {
                        if (!c || !c->server || err)
                                __builtin_trap();
                        _cleanup_(kube_credentials_freep) KubeCredentials *d = kube_credentials_copy(c);
                        if (!d)
                                __builtin_trap();
                } else if (!err && r != -ENOMEM)
                        __builtin_trap();
        }
        return 0;
}
