/* hms_metrics: the Prometheus text endpoint, one blocking thread (scrapes are rare). */
#include "hms_metrics.h"
#include "hms_alloc.h"
#include "hms_net.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct hms_metrics {
    int lfd;
    int stop_pipe[2];
    pthread_t thread;
    char kind[32], instance[160];
    hms_stats_fn *stats;
    void *arg;
};

static void s_serve (hms_metrics_t *self, int fd)
{
    /* the request itself does not matter: read what came, answer with the counters */
    char req[2048];
    struct pollfd p = {fd, POLLIN, 0};
    if (poll (&p, 1, 2000) > 0 && read (fd, req, sizeof req) < 0)
        return;
    json_t *stats = self->stats ? self->stats (self->arg) : json_object ();
    char *body = NULL;
    size_t len = 0;
    FILE *out = open_memstream (&body, &len);
    const char *name;
    json_t *value;
    json_object_foreach (stats, name, value)
        fprintf (out, "hermes_%s{kind=\"%s\",instance=\"%s\"} %lld\n", name, self->kind,
                 self->instance, (long long) json_integer_value (value));
    fclose (out);
    json_decref (stats);
    char head[256];
    int n = snprintf (head, sizeof head,
                      "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      len);
    if (send (fd, head, (size_t) n, MSG_NOSIGNAL) == n)
        (void) send (fd, body, len, MSG_NOSIGNAL);
    free (body);
}

static void *s_thread (void *arg)
{
    hms_metrics_t *self = arg;
    for (;;) {
        struct pollfd p[2] = {{self->lfd, POLLIN, 0}, {self->stop_pipe[0], POLLIN, 0}};
        if (poll (p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[1].revents)
            break;
        if (p[0].revents) {
            int fd = accept4 (self->lfd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0)
                continue;
            fcntl (fd, F_SETFL, 0); /* blocking, with the poll above as a limit */
            s_serve (self, fd);
            close (fd);
        }
    }
    return NULL;
}

hms_metrics_t *hms_metrics_new (const char *listen, const char *kind, const char *instance,
                                hms_stats_fn *stats, void *arg, char *err, size_t errlen)
{
    hms_addr_t addr;
    char why[256];
    if (hms_addr_parse (listen, &addr, why, sizeof why)) {
        snprintf (err, errlen, "metrics_listen: %s", why);
        return NULL;
    }
    int lfd = hms_net_listen (&addr, 16, why, sizeof why);
    if (lfd < 0) {
        snprintf (err, errlen, "metrics_listen: %s", why);
        return NULL;
    }
    hms_metrics_t *self = hms_alloc (sizeof *self);
    self->lfd = lfd;
    snprintf (self->kind, sizeof self->kind, "%s", kind);
    snprintf (self->instance, sizeof self->instance, "%s", instance);
    self->stats = stats;
    self->arg = arg;
    if (pipe2 (self->stop_pipe, O_CLOEXEC) != 0 ||
        pthread_create (&self->thread, NULL, s_thread, self) != 0) {
        snprintf (err, errlen, "metrics: cannot start its thread");
        close (lfd);
        free (self);
        return NULL;
    }
    return self;
}

void hms_metrics_destroy (hms_metrics_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    hms_metrics_t *self = *self_p;
    if (write (self->stop_pipe[1], "x", 1) != 1)
        abort ();
    pthread_join (self->thread, NULL);
    close (self->stop_pipe[0]);
    close (self->stop_pipe[1]);
    close (self->lfd);
    free (self);
    *self_p = NULL;
}
