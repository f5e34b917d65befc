/* hms_buf: a FIFO byte queue made of fixed-size chunks, for the data plane's outgoing
 * bytes (socket writes, HTTP/2 DATA, TLS records). Appends copy; reads peek at the first
 * contiguous run and drain what was used. */
#ifndef HMS_BUF_H_INCLUDED
#define HMS_BUF_H_INCLUDED

#include <stddef.h>
#include <sys/types.h>

typedef struct hms_buf hms_buf_t;

/* Caller owns return value. */
hms_buf_t *hms_buf_new (void);
void hms_buf_destroy (hms_buf_t **self_p);

/* Appends a copy of data. */
void hms_buf_append (hms_buf_t *self, const void *data, size_t len);
/* Bytes queued. */
size_t hms_buf_size (const hms_buf_t *self);
/* The first contiguous run of queued bytes (*len 0 when empty); valid until the next call
 * that changes the buffer. */
const void *hms_buf_peek (const hms_buf_t *self, size_t *len);
/* Copies up to len bytes out (and drains them); returns the count. */
size_t hms_buf_read (hms_buf_t *self, void *out, size_t len);
/* Copies up to len bytes from the front without draining them; returns the count. */
size_t hms_buf_copy (const hms_buf_t *self, void *out, size_t len);
/* Drops the first n bytes (n <= size). */
void hms_buf_drain (hms_buf_t *self, size_t n);
/* Frees the chunk an empty buffer keeps for reuse (an idle queue then holds no data memory). */
void hms_buf_shrink (hms_buf_t *self);
/* Writes as much as the non-blocking fd takes; returns bytes written, or -1 with errno
 * (EAGAIN when nothing could be written). */
ssize_t hms_buf_write_fd (hms_buf_t *self, int fd);

#endif
