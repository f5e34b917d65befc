/* libFuzzer target for the bus codec: hms_msg_decode (JSON, envelope and body schemas) must
 * answer any input with a message or a clean refusal, and a decoded message must encode and
 * decode again to the same thing. Build with -DHERMES_FUZZ=ON and clang. */
#include "hms_msg.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    const char *code = NULL;
    char err[1024];
    json_t *env = hms_msg_decode ((const char *) data, size, &code, err, sizeof err);
    if (!env) {
        if (!code || !err[0])
            abort (); /* a refusal must say why */
        return 0;
    }
    char *text = hms_msg_encode (env);
    json_t *again = hms_msg_decode (text, strlen (text), &code, err, sizeof err);
    if (!again || !json_equal (env, again))
        abort ();
    json_decref (again);
    json_decref (env);
    free (text);
    return 0;
}
