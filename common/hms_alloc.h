/* hms_alloc: allocation that aborts on out-of-memory, the only fatal error in Hermes. */
#ifndef HMS_ALLOC_H_INCLUDED
#define HMS_ALLOC_H_INCLUDED

#include <stddef.h>

/* Zeroed allocation. Caller owns return value. Aborts when memory is exhausted. */
void *hms_alloc (size_t size);
/* Allocation left uninitialised (buffers about to be filled). Caller owns return value.
 * Aborts when memory is exhausted. */
void *hms_alloc_raw (size_t size);
/* Caller owns return value. */
void *hms_realloc (void *ptr, size_t size);
/* Caller owns return value; s may be NULL (returns NULL). */
char *hms_strdup (const char *s);
/* printf into a new string. Caller owns return value. */
char *hms_sprintf (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
/* Frees *p and nulls it. */
void hms_free (void *p_of_ptr);

#endif
