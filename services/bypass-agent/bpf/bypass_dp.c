/* bypass_dp: loads the embedded tc program, attaches it, and manages its flow table, counters
 * and event ring buffer through libbpf. */
#include "bypass_dp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <net/if.h>
#include <linux/if_packet.h>
#include <linux/pkt_cls.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "hms_alloc.h"
#include "hms_log.h"

/* generated from bypass_dp.bpf.o at build time (bypass_dp_obj.c) */
extern const unsigned char bypass_dp_bpf_obj[];
extern const size_t bypass_dp_bpf_obj_len;

#define BYPASS_MAX_IFACES 64

typedef struct {
    int ifindex;
    bool created_qdisc;
    bool ingress; /* the data plane is attached */
    bool egress;  /* the SYN shaper is attached */
} s_iface_t;

struct bypass_dp {
    struct bpf_object *obj;
    int prog_fd;
    int shape_fd; /* the SYN shaper */
    int flows_fd;
    int servers_fd;
    int shaped_fd;
    int stats_fd;
    struct ring_buffer *events;
    bypass_dp_event_fn *event_fn;
    void *event_arg;
    int event_count;
    s_iface_t ifaces[BYPASS_MAX_IFACES];
    size_t n_ifaces;
    int packet_fd; /* AF_PACKET, for bypass_dp_inject; opened on first use */
};

static int s_on_libbpf_print (enum libbpf_print_level level, const char *fmt, va_list ap)
{
    char line[1024];
    size_t len;

    vsnprintf (line, sizeof (line), fmt, ap);
    /* bpf_tc_hook_create on an interface that has a clsact qdisc already: expected */
    if (strstr (line, "Exclusivity flag on"))
        level = LIBBPF_DEBUG;
    if (level == LIBBPF_DEBUG && !hms_log_debug_on ("bypass.bpf"))
        return 0;
    len = strlen (line);
    while (len > 0 && line[len - 1] == '\n')
        line[--len] = '\0';
    hms_log (level == LIBBPF_WARN ? HMS_LOG_WARNING : HMS_LOG_DEBUG, "bypass: libbpf: %s", line);
    return 0;
}

static int s_on_ring_event (void *ctx, void *data, size_t size)
{
    bypass_dp_t *self = ctx;

    if (size < sizeof (struct bypass_event))
        return 0;
    self->event_count++;
    if (self->event_fn)
        self->event_fn (data, self->event_arg);
    return 0;
}

bypass_dp_t *bypass_dp_new (void)
{
    LIBBPF_OPTS (bpf_object_open_opts, opts, .object_name = "bypass_dp");
    bypass_dp_t *self = hms_alloc (sizeof (*self));
    struct bpf_program *prog;
    struct bpf_map *map;
    int err;

    memset (self, 0, sizeof (*self));
    self->prog_fd = self->shape_fd = self->flows_fd = self->stats_fd = self->packet_fd = -1;
    self->servers_fd = self->shaped_fd = -1;
    libbpf_set_print (s_on_libbpf_print);

    self->obj = bpf_object__open_mem (bypass_dp_bpf_obj, bypass_dp_bpf_obj_len, &opts);
    if (!self->obj) {
        hms_error ("bypass: cannot open the embedded BPF object: %s (rebuild hermes-bypass)",
                   strerror (errno));
        goto fail;
    }
    err = bpf_object__load (self->obj);
    if (err) {
        hms_error ("bypass: kernel refused the BPF data plane: %s (run as root with BPF "
                   "enabled; 'debug bypass.bpf on' shows the verifier log)",
                   strerror (-err));
        goto fail;
    }
    prog = bpf_object__find_program_by_name (self->obj, BYPASS_PROG_NAME);
    self->prog_fd = prog ? bpf_program__fd (prog) : -1;
    map = bpf_object__find_map_by_name (self->obj, BYPASS_TABLE_NAME);
    self->flows_fd = map ? bpf_map__fd (map) : -1;
    map = bpf_object__find_map_by_name (self->obj, BYPASS_STATS_NAME);
    self->stats_fd = map ? bpf_map__fd (map) : -1;
    prog = bpf_object__find_program_by_name (self->obj, BYPASS_SHAPE_PROG_NAME);
    self->shape_fd = prog ? bpf_program__fd (prog) : -1;
    map = bpf_object__find_map_by_name (self->obj, BYPASS_SERVERS_NAME);
    self->servers_fd = map ? bpf_map__fd (map) : -1;
    map = bpf_object__find_map_by_name (self->obj, BYPASS_SHAPED_NAME);
    self->shaped_fd = map ? bpf_map__fd (map) : -1;
    map = bpf_object__find_map_by_name (self->obj, BYPASS_EVENTS_NAME);
    if (self->prog_fd < 0 || self->flows_fd < 0 || self->stats_fd < 0 || !map ||
        self->shape_fd < 0 || self->servers_fd < 0 || self->shaped_fd < 0) {
        hms_error ("bypass: BPF object lacks %s, %s, %s, %s, %s, %s or %s (rebuild hermes-bypass)",
                   BYPASS_PROG_NAME, BYPASS_TABLE_NAME, BYPASS_STATS_NAME, BYPASS_EVENTS_NAME,
                   BYPASS_SHAPE_PROG_NAME, BYPASS_SERVERS_NAME, BYPASS_SHAPED_NAME);
        goto fail;
    }
    self->events = ring_buffer__new (bpf_map__fd (map), s_on_ring_event, self, NULL);
    if (!self->events) {
        hms_error ("bypass: cannot map the event ring buffer: %s", strerror (errno));
        goto fail;
    }
    return self;
fail:
    bypass_dp_destroy (&self);
    return NULL;
}

static s_iface_t *s_iface_find (bypass_dp_t *self, int ifindex)
{
    for (size_t i = 0; i < self->n_ifaces; i++)
        if (self->ifaces[i].ifindex == ifindex)
            return &self->ifaces[i];
    return NULL;
}

static int s_detach (const s_iface_t *iface, bool destroy_qdisc)
{
    LIBBPF_OPTS (bpf_tc_hook, hook, .ifindex = iface->ifindex, .attach_point = BPF_TC_INGRESS);
    LIBBPF_OPTS (bpf_tc_opts, opts, .handle = BYPASS_TC_HANDLE, .priority = BYPASS_TC_PRIO);
    int err = 0;

    if (iface->ingress)
        err = bpf_tc_detach (&hook, &opts);
    if (iface->egress) {
        LIBBPF_OPTS (bpf_tc_opts, eopts, .handle = BYPASS_TC_HANDLE, .priority = BYPASS_TC_PRIO);
        hook.attach_point = BPF_TC_EGRESS;
        int e = bpf_tc_detach (&hook, &eopts);
        if (!err)
            err = e;
    }
    if (destroy_qdisc) {
        hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS;
        bpf_tc_hook_destroy (&hook);
    }
    return err;
}

void bypass_dp_destroy (bypass_dp_t **self_p)
{
    bypass_dp_t *self;

    if (!self_p || !*self_p)
        return;
    self = *self_p;
    for (size_t i = 0; i < self->n_ifaces; i++)
        s_detach (&self->ifaces[i], self->ifaces[i].created_qdisc);
    ring_buffer__free (self->events);
    bpf_object__close (self->obj);
    if (self->packet_fd >= 0)
        close (self->packet_fd);
    free (self);
    *self_p = NULL;
}

int bypass_dp_inject (bypass_dp_t *self, const uint8_t *ip, size_t len)
{
    const struct iphdr *iph = (const struct iphdr *) ip;
    struct bypass_flow_val val;
    LIBBPF_OPTS (bpf_test_run_opts, opts);

    if (len < sizeof *iph || len > 0xffff || iph->version != 4 || iph->protocol != IPPROTO_TCP ||
        len < (size_t) iph->ihl * 4 + sizeof (struct tcphdr) || ntohs (iph->tot_len) != len) {
        errno = EINVAL;
        return -1;
    }
    const struct tcphdr *tcp = (const struct tcphdr *) (ip + iph->ihl * 4);
    struct bypass_flow_key key = {
        .saddr = iph->saddr, .daddr = iph->daddr, .sport = tcp->source, .dport = tcp->dest};
    if (bypass_dp_flow_lookup (self, &key, &val) != 0)
        return -1;
    if (val.action != BYPASS_ACT_SPLICE || val.splice.out_port == 0) {
        errno = ENOENT;
        return -1;
    }
    /* the program rewrites the whole frame, Ethernet addresses included */
    size_t cap = ETH_HLEN + len + 64;
    uint8_t *in = hms_alloc (cap), *out = hms_alloc (cap);
    int rc = -1;
    memset (in, 0, ETH_HLEN);
    in[12] = ETH_P_IP >> 8;
    in[13] = ETH_P_IP & 0xff;
    memcpy (in + ETH_HLEN, ip, len);
    opts.data_in = in;
    opts.data_size_in = (uint32_t) (ETH_HLEN + len);
    opts.data_out = out;
    opts.data_size_out = (uint32_t) cap;
    opts.repeat = 1;
    if (bpf_prog_test_run_opts (self->prog_fd, &opts) != 0)
        goto done;
    if (opts.retval != TC_ACT_REDIRECT) {
        errno = EPROTO;
        goto done;
    }
    if (self->packet_fd < 0) {
        self->packet_fd = socket (AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
        if (self->packet_fd < 0)
            goto done;
    }
    struct sockaddr_ll to = {.sll_family = AF_PACKET,
                             .sll_protocol = htons (ETH_P_IP),
                             .sll_ifindex = (int) val.splice.out_port,
                             .sll_halen = ETH_ALEN};
    memcpy (to.sll_addr, val.splice.out_dmac, ETH_ALEN);
    if (sendto (self->packet_fd, out, opts.data_size_out, 0, (struct sockaddr *) &to, sizeof to) ==
        (ssize_t) opts.data_size_out)
        rc = 0;
done:;
    int saved = errno;
    free (in);
    free (out);
    errno = saved;
    return rc;
}

/* Attaches prog_fd to the ingress or the egress of ifindex (creating clsact if needed,
 * replacing an earlier bypass filter left behind). */
static int s_attach (bypass_dp_t *self, int ifindex, bool egress)
{
    LIBBPF_OPTS (bpf_tc_hook, hook, .ifindex = ifindex,
                 .attach_point = egress ? BPF_TC_EGRESS : BPF_TC_INGRESS);
    LIBBPF_OPTS (bpf_tc_opts, opts, .handle = BYPASS_TC_HANDLE, .priority = BYPASS_TC_PRIO,
                 .prog_fd = egress ? self->shape_fd : self->prog_fd, .flags = BPF_TC_F_REPLACE);
    const char *what = egress ? "SYN shaper" : "data plane";
    s_iface_t *iface = s_iface_find (self, ifindex);
    bool created = false;
    int err;

    if (iface && (egress ? iface->egress : iface->ingress))
        return 0;
    if (!iface && self->n_ifaces == BYPASS_MAX_IFACES) {
        hms_error ("bypass: cannot attach to ifindex %d: already on %d interfaces", ifindex,
                   BYPASS_MAX_IFACES);
        errno = ENOSPC;
        return -1;
    }
    /* a clsact qdisc we saw already: creating it again only draws a kernel complaint */
    err = iface ? -EEXIST : bpf_tc_hook_create (&hook);
    if (err == 0)
        created = true;
    else if (err != -EEXIST) {
        hms_error ("bypass: cannot create clsact on ifindex %d: %s (is the interface in this "
                   "namespace? are we root?)",
                   ifindex, strerror (-err));
        errno = -err;
        return -1;
    }
    err = bpf_tc_attach (&hook, &opts);
    if (err) {
        hms_error ("bypass: cannot attach the %s to ifindex %d: %s", what, ifindex,
                   strerror (-err));
        if (created) {
            hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS;
            bpf_tc_hook_destroy (&hook);
        }
        errno = -err;
        return -1;
    }
    if (!iface) {
        iface = &self->ifaces[self->n_ifaces++];
        memset (iface, 0, sizeof *iface);
        iface->ifindex = ifindex;
    }
    iface->created_qdisc |= created;
    if (egress)
        iface->egress = true;
    else
        iface->ingress = true;
    hms_info ("bypass: %s attached ifindex=%d clsact_created=%d", what, ifindex, created);
    return 0;
}

int bypass_dp_attach (bypass_dp_t *self, int ifindex)
{
    return s_attach (self, ifindex, false);
}

int bypass_dp_shape (bypass_dp_t *self, int ifindex)
{
    return s_attach (self, ifindex, true);
}

bool bypass_dp_attached (bypass_dp_t *self, int ifindex, bool egress)
{
    s_iface_t *iface = s_iface_find (self, ifindex);
    return iface && (egress ? iface->egress : iface->ingress);
}

size_t bypass_dp_attached_count (bypass_dp_t *self, bool egress)
{
    size_t n = 0;
    for (size_t i = 0; i < self->n_ifaces; i++)
        n += egress ? self->ifaces[i].egress : self->ifaces[i].ingress;
    return n;
}

void bypass_dp_prune (bypass_dp_t *self)
{
    char name[IF_NAMESIZE];
    for (size_t i = 0; i < self->n_ifaces;)
        if (!if_indextoname ((unsigned) self->ifaces[i].ifindex, name) && errno == ENXIO)
            self->ifaces[i] = self->ifaces[--self->n_ifaces];
        else
            i++;
}

int bypass_dp_server_set (bypass_dp_t *self, uint32_t addr, uint16_t port, uint32_t strip)
{
    struct bypass_server_key key = {.addr = addr, .port = port};
    if (strip == 0)
        return bpf_map_delete_elem (self->servers_fd, &key) == 0 || errno == ENOENT ? 0 : -1;
    return bpf_map_update_elem (self->servers_fd, &key, &strip, BPF_ANY) == 0 ? 0 : -1;
}

int bypass_dp_server_get (bypass_dp_t *self, uint32_t addr, uint16_t port, uint32_t *strip)
{
    struct bypass_server_key key = {.addr = addr, .port = port};
    *strip = 0;
    if (bpf_map_lookup_elem (self->servers_fd, &key, strip) == 0)
        return 0;
    return errno == ENOENT ? 0 : -1;
}

uint32_t bypass_dp_shaped_take (bypass_dp_t *self, const struct bypass_flow_key *key)
{
    uint32_t strip = 0;
    if (bpf_map_lookup_elem (self->shaped_fd, key, &strip) != 0)
        return 0;
    bpf_map_delete_elem (self->shaped_fd, key);
    return strip;
}

int bypass_dp_shape_prog_fd (bypass_dp_t *self)
{
    return self->shape_fd;
}

int bypass_dp_detach (bypass_dp_t *self, int ifindex)
{
    s_iface_t *iface = s_iface_find (self, ifindex);
    int err;

    if (!iface) {
        errno = ENOENT;
        return -1;
    }
    err = s_detach (iface, iface->created_qdisc);
    *iface = self->ifaces[--self->n_ifaces];
    if (err) {
        hms_warning ("bypass: detaching from ifindex %d: %s", ifindex, strerror (-err));
        errno = -err;
        return -1;
    }
    return 0;
}

static int s_flow_put (bypass_dp_t *self, const struct bypass_flow_key *key,
                       const struct bypass_flow_val *val)
{
    if (bpf_map_update_elem (self->flows_fd, key, val, BPF_ANY) != 0)
        return -1;
    return 0;
}

int bypass_dp_flow_splice (bypass_dp_t *self, const struct bypass_flow_key *key,
                           const struct bypass_splice_params *params, uint64_t cookie)
{
    struct bypass_flow_val val;

    memset (&val, 0, sizeof (val));
    val.action = BYPASS_ACT_SPLICE;
    val.cookie = cookie;
    val.splice = *params;
    val.splice.pad0 = 0;
    return s_flow_put (self, key, &val);
}

int bypass_dp_flow_observe (bypass_dp_t *self, const struct bypass_flow_key *key, uint64_t cookie)
{
    struct bypass_flow_val val;

    memset (&val, 0, sizeof (val));
    val.action = BYPASS_ACT_OBSERVE;
    val.cookie = cookie;
    return s_flow_put (self, key, &val);
}

int bypass_dp_flow_lookup (bypass_dp_t *self, const struct bypass_flow_key *key,
                           struct bypass_flow_val *out)
{
    return bpf_map_lookup_elem (self->flows_fd, key, out) == 0 ? 0 : -1;
}

int bypass_dp_flow_del (bypass_dp_t *self, const struct bypass_flow_key *key)
{
    return bpf_map_delete_elem (self->flows_fd, key) == 0 ? 0 : -1;
}

int bypass_dp_flow_foreach (bypass_dp_t *self, bypass_dp_flow_fn *fn, void *arg)
{
    struct bypass_flow_key key, next;
    struct bypass_flow_val val;
    const void *prev = NULL;
    int n = 0;

    for (;;) {
        if (bpf_map_get_next_key (self->flows_fd, prev, &next) != 0) {
            if (errno == ENOENT)
                break;
            return -1;
        }
        key = next;
        prev = &key;
        if (bpf_map_lookup_elem (self->flows_fd, &key, &val) != 0)
            continue; /* removed meanwhile */
        n++;
        if (fn (&key, &val, arg))
            break;
    }
    return n;
}

uint64_t bypass_dp_stat (bypass_dp_t *self, enum bypass_stat which)
{
    int ncpu = libbpf_num_possible_cpus ();
    uint32_t key = which;
    uint64_t sum = 0;
    uint64_t *vals;

    if (ncpu <= 0)
        return 0;
    vals = hms_alloc (sizeof (uint64_t) * ncpu);
    if (bpf_map_lookup_elem (self->stats_fd, &key, vals) == 0)
        for (int i = 0; i < ncpu; i++)
            sum += vals[i];
    free (vals);
    return sum;
}

int bypass_dp_poll_events (bypass_dp_t *self, int timeout_ms, bypass_dp_event_fn *fn, void *arg)
{
    int err;

    self->event_fn = fn;
    self->event_arg = arg;
    self->event_count = 0;
    err = ring_buffer__poll (self->events, timeout_ms);
    self->event_fn = NULL;
    self->event_arg = NULL;
    if (err < 0 && err != -EINTR) {
        errno = -err;
        return -1;
    }
    return self->event_count;
}

int bypass_dp_events_fd (bypass_dp_t *self)
{
    return ring_buffer__epoll_fd (self->events);
}

int bypass_dp_prog_fd (bypass_dp_t *self)
{
    return self->prog_fd;
}

/* One direction: what the peer of `in` sends becomes what the peer of `out` expects. */
static void s_direction (const bypass_leg_t *in, const bypass_leg_t *out, uint8_t flags,
                         struct bypass_flow_key *key, struct bypass_splice_params *p)
{
    memset (key, 0, sizeof (*key));
    key->saddr = in->raddr;
    key->daddr = in->laddr;
    key->sport = in->rport;
    key->dport = in->lport;

    memset (p, 0, sizeof (*p));
    p->new_saddr = out->laddr;
    p->new_daddr = out->raddr;
    p->new_sport = out->lport;
    p->new_dport = out->rport;
    p->seq_delta = out->snd_nxt - in->rcv_nxt;
    p->ack_delta = out->rcv_nxt - in->snd_nxt;
    /* the peer's clock continues the clock of the leg it replaces; echoes go back into the
     * clock of the other peer (the inverse of the reverse direction's tsval_delta) */
    p->tsval_delta = out->ts_now - in->ts_recent;
    p->tsecr_delta = out->ts_recent - in->ts_now;
    p->wscale_in = in->snd_wscale;
    p->wscale_out = out->rcv_wscale;
    p->flags = flags;
    p->out_port = (uint32_t) out->ifindex;
    memcpy (p->out_smac, out->lmac, 6);
    memcpy (p->out_dmac, out->rmac, 6);
}

int bypass_dp_splice_pair (const bypass_leg_t *a, const bypass_leg_t *b,
                           struct bypass_flow_key *key_ab, struct bypass_splice_params *params_ab,
                           struct bypass_flow_key *key_ba, struct bypass_splice_params *params_ba)
{
    uint8_t flags = BYPASS_SPLICE_SACK; /* translated SACK is harmless where it is ignored */

    if (a->timestamps != b->timestamps) {
        errno = EINVAL;
        return -1;
    }
    if (a->timestamps)
        flags |= BYPASS_SPLICE_TS;
    s_direction (a, b, flags, key_ab, params_ab);
    s_direction (b, a, flags, key_ba, params_ba);
    return 0;
}

static void s_print_mac (FILE *out, const uint8_t *m)
{
    fprintf (out, " %02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

static void s_print_ip (FILE *out, uint32_t addr)
{
    char text[INET_ADDRSTRLEN];

    fprintf (out, " %s", inet_ntop (AF_INET, &addr, text, sizeof (text)));
}

int bypass_dp_p4_entry (FILE *out, const struct bypass_flow_key *key,
                        const struct bypass_flow_val *val, bypass_dp_port_fn *port_of, void *arg)
{
    const struct bypass_splice_params *p = &val->splice;
    const char *action;

    switch (val->action) {
    case BYPASS_ACT_SPLICE:
        action = "splice";
        break;
    case BYPASS_ACT_OBSERVE:
        action = "observe";
        break;
    default:
        errno = EINVAL;
        return -1;
    }
    /* key and parameters in the order of bypass_maps.h (= p4/bypass.p4) */
    fprintf (out, "table_add %s %s", BYPASS_TABLE_NAME, action);
    s_print_ip (out, key->saddr);
    s_print_ip (out, key->daddr);
    fprintf (out, " %u %u =>", ntohs (key->sport), ntohs (key->dport));
    if (val->action == BYPASS_ACT_SPLICE) {
        s_print_ip (out, p->new_saddr);
        s_print_ip (out, p->new_daddr);
        fprintf (out, " %u %u", ntohs (p->new_sport), ntohs (p->new_dport));
        fprintf (out, " 0x%08x 0x%08x 0x%08x 0x%08x", p->seq_delta, p->ack_delta, p->tsval_delta,
                 p->tsecr_delta);
        fprintf (out, " %u %u %u", p->wscale_in, p->wscale_out, p->flags);
        fprintf (out, " %u", port_of ? port_of (p->out_port, arg) : p->out_port);
        s_print_mac (out, p->out_smac);
        s_print_mac (out, p->out_dmac);
    }
    fputc ('\n', out);
    return 0;
}

typedef struct {
    FILE *out;
    bypass_dp_port_fn *port_of;
    void *arg;
    int printed;
} s_export_t;

static int s_on_export_flow (const struct bypass_flow_key *key, const struct bypass_flow_val *val,
                             void *arg)
{
    s_export_t *ex = arg;

    if (bypass_dp_p4_entry (ex->out, key, val, ex->port_of, ex->arg) == 0)
        ex->printed++;
    return 0;
}

int bypass_dp_export_p4 (bypass_dp_t *self, FILE *out, bypass_dp_port_fn *port_of, void *arg)
{
    s_export_t ex = {out, port_of, arg, 0};

    if (bypass_dp_flow_foreach (self, s_on_export_flow, &ex) < 0)
        return -1;
    return ex.printed;
}
