/* libFuzzer target for hms_sni: any bytes, with the invariants that must hold for any input
 * (a found name is lower case, NUL-terminated, host-name characters only; a prefix of the
 * input never gives a different name than the whole; no read past the input). Build:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon common/hms_sni.c \
 *         common/fuzz_hms_sni.c -o fuzz_hms_sni */
#include "hms_sni.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_CHECK(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf (stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);          \
            abort ();                                                                              \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char name[256], why[200];
    uint8_t *copy = malloc (size ? size : 1); /* exactly size bytes: ASan sees any overread */
    memcpy (copy, data, size);
    hms_sni_result_t whole = hms_sni_parse (copy, size, name, sizeof name, why, sizeof why);
    if (whole == HMS_SNI_FOUND) {
        size_t n = strlen (name);
        S_CHECK (n > 0 && n < sizeof name);
        for (size_t i = 0; i < n; i++)
            S_CHECK ((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
                     name[i] == '.' || name[i] == '-' || name[i] == '_');
        /* a shorter prefix says MORE or the same name, never another one */
        char part[256];
        hms_sni_result_t r = hms_sni_parse (copy, size / 2, part, sizeof part, why, sizeof why);
        S_CHECK (r == HMS_SNI_MORE || r == HMS_SNI_NOT_TLS || r == HMS_SNI_NONE ||
                 strcmp (part, name) == 0);
    } else if (whole != HMS_SNI_MORE)
        S_CHECK (why[0] != 0);
    free (copy);
    return 0;
}
