/* hms_buf: chunked FIFO byte queue. */
#include "hms_buf.h"
#include "hms_alloc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define HMS_BUF_CHUNK 16384

typedef struct s_chunk {
    struct s_chunk *next;
    size_t start, end;
    char data[HMS_BUF_CHUNK];
} s_chunk_t;

struct hms_buf {
    s_chunk_t *head, *tail;
    size_t size;
    s_chunk_t *spare; /* one freed chunk kept for reuse */
};

hms_buf_t *hms_buf_new (void)
{
    return hms_alloc (sizeof (hms_buf_t));
}

void hms_buf_destroy (hms_buf_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    hms_buf_t *self = *self_p;
    for (s_chunk_t *c = self->head, *next; c; c = next) {
        next = c->next;
        free (c);
    }
    free (self->spare);
    free (self);
    *self_p = NULL;
}

static s_chunk_t *s_chunk_new (hms_buf_t *self)
{
    s_chunk_t *c = self->spare;
    if (c)
        self->spare = NULL;
    else
        c = hms_alloc_raw (sizeof *c); /* 16 KiB about to be written: not zeroed */
    c->next = NULL;
    c->start = c->end = 0;
    return c;
}

void hms_buf_append (hms_buf_t *self, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        if (!self->tail || self->tail->end == HMS_BUF_CHUNK) {
            s_chunk_t *c = s_chunk_new (self);
            if (self->tail)
                self->tail->next = c;
            else
                self->head = c;
            self->tail = c;
        }
        size_t n = HMS_BUF_CHUNK - self->tail->end;
        if (n > len)
            n = len;
        memcpy (self->tail->data + self->tail->end, p, n);
        self->tail->end += n;
        self->size += n;
        p += n;
        len -= n;
    }
}

void hms_buf_shrink (hms_buf_t *self)
{
    if (self->size == 0) {
        free (self->spare);
        self->spare = NULL;
    }
}

size_t hms_buf_size (const hms_buf_t *self)
{
    return self->size;
}

const void *hms_buf_peek (const hms_buf_t *self, size_t *len)
{
    if (!self->head) {
        *len = 0;
        return NULL;
    }
    *len = self->head->end - self->head->start;
    return self->head->data + self->head->start;
}

void hms_buf_drain (hms_buf_t *self, size_t n)
{
    while (n > 0 && self->head) {
        s_chunk_t *c = self->head;
        size_t have = c->end - c->start;
        size_t take = n < have ? n : have;
        c->start += take;
        self->size -= take;
        n -= take;
        if (c->start == c->end) {
            self->head = c->next;
            if (!self->head)
                self->tail = NULL;
            if (!self->spare)
                self->spare = c;
            else
                free (c);
        }
    }
}

size_t hms_buf_copy (const hms_buf_t *self, void *out, size_t len)
{
    size_t done = 0;
    for (const s_chunk_t *c = self->head; c && done < len; c = c->next) {
        size_t n = c->end - c->start;
        if (n > len - done)
            n = len - done;
        memcpy ((char *) out + done, c->data + c->start, n);
        done += n;
    }
    return done;
}

size_t hms_buf_read (hms_buf_t *self, void *out, size_t len)
{
    size_t done = 0;
    while (done < len && self->head) {
        size_t n;
        const void *p = hms_buf_peek (self, &n);
        if (n > len - done)
            n = len - done;
        memcpy ((char *) out + done, p, n);
        hms_buf_drain (self, n);
        done += n;
    }
    return done;
}

ssize_t hms_buf_write_fd (hms_buf_t *self, int fd)
{
    ssize_t total = 0;
    while (self->size > 0) {
        struct iovec iov[16];
        int n = 0;
        for (s_chunk_t *c = self->head; c && n < 16; c = c->next, n++) {
            iov[n].iov_base = c->data + c->start;
            iov[n].iov_len = c->end - c->start;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t) n};
        ssize_t w = sendmsg (fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return total > 0 ? total : -1;
        }
        hms_buf_drain (self, (size_t) w);
        total += w;
    }
    return total;
}
