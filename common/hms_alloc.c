/* hms_alloc: allocation wrappers that abort on out-of-memory. */
#include "hms_alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void s_oom (size_t size)
{
    fprintf (stderr, "hermes: out of memory allocating %zu bytes (aborting)\n", size);
    abort ();
}

void *hms_alloc (size_t size)
{
    void *p = calloc (1, size ? size : 1);
    if (!p)
        s_oom (size);
    return p;
}

void *hms_alloc_raw (size_t size)
{
    void *p = malloc (size ? size : 1);
    if (!p)
        s_oom (size);
    return p;
}

void *hms_realloc (void *ptr, size_t size)
{
    void *p = realloc (ptr, size ? size : 1);
    if (!p)
        s_oom (size);
    return p;
}

char *hms_strdup (const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen (s) + 1;
    char *d = hms_alloc (n);
    memcpy (d, s, n);
    return d;
}

char *hms_sprintf (const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    char *out = NULL;
    int rc = vasprintf (&out, fmt, ap);
    va_end (ap);
    if (rc < 0)
        s_oom (0);
    return out;
}

void hms_free (void *p_of_ptr)
{
    void **pp = (void **) p_of_ptr;
    if (pp && *pp) {
        free (*pp);
        *pp = NULL;
    }
}
