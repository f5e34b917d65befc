/* hms_policy: compiled policy sets, their index and their evaluation. */
#include "hms_policy.h"
#include "hms_alloc.h"
#include "hms_schema.h"
#include "hms_time.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Query fields, as bits of a mask: a rule needs every field it has a condition on. */
enum {
    F_SRC,
    F_DST,
    F_PORT,
    F_PROTOCOL,
    F_METHOD,
    F_PATH,
    F_HOST,
    F_SNI,
    F_USER,
    F_SERVICE,
    F_NS,
};
#define S_BIT(f) (1u << (f))

/* The name fields, in the order of names[] in rules and queries. */
enum { N_HOST, N_SNI, N_USER, N_SERVICE, N_NS, N_COUNT };
static const char *const s_name_keys[N_COUNT] = {"host", "sni", "user", "service", "namespace"};
static const int s_name_bits[N_COUNT] = {F_HOST, F_SNI, F_USER, F_SERVICE, F_NS};

static const char *const s_protocols[] = {"tcp", "udp", "ip", "http", NULL};

enum { A_ALLOW, A_DENY, A_ROUTE, A_RATE };
enum { K_SRC, K_USER, K_HOST };

/* Rules on at most this many ports are found through the port index. */
#define S_PORT_INDEX_MAX 1024
/* Name tails (".b.c" of "a.b.c") a query keeps: a suffix of 255 bytes has at most 127 dots. */
#define S_MAX_TAILS 128
/* Slots tried for a rate-limit key before one is taken over. */
#define S_RATE_WINDOW 8
/* Bytes of a rate-limit key kept for comparison (beyond them the 64-bit hash decides). */
#define S_RATE_KEY 40

/* ---- small helpers ---------------------------------------------------------------- */

static inline unsigned char s_lower (unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char) (c + 32) : c;
}

static inline uint64_t s_mix (uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

/* FNV-1a of the lower-cased bytes. */
static uint64_t s_hash (const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= s_lower ((unsigned char) p[i]);
        h *= 1099511628211ULL;
    }
    return s_mix (h);
}

/* pat (lower case) equals the n bytes of s, ignoring the case of s. */
static bool s_ieq (const char *pat, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char) pat[i] != s_lower ((unsigned char) s[i]))
            return false;
    return true;
}

static char *s_lower_dup (const char *s, size_t n)
{
    char *d = hms_alloc (n + 1);
    for (size_t i = 0; i < n; i++)
        d[i] = (char) s_lower ((unsigned char) s[i]);
    return d;
}

/* '*' glob over s[0..n) with pat in lower case; iterative, backtracking to the last star. */
static bool s_glob (const char *pat, const char *s, size_t n)
{
    const char *p = pat, *star = NULL;
    size_t i = 0, star_i = 0;
    while (i < n) {
        if (*p == '*') {
            star = p++;
            star_i = i;
        } else if (*p && (unsigned char) *p == s_lower ((unsigned char) s[i])) {
            p++;
            i++;
        } else if (star) {
            p = star + 1;
            i = ++star_i;
        } else
            return false;
    }
    while (*p == '*')
        p++;
    return *p == 0;
}

/* ---- hash table of names (open addressing, names borrowed) ------------------------- */

typedef struct {
    uint64_t hash;
    const char *name; /* lower case; NULL: free slot */
    size_t len;
    int value;
} s_slot_t;

typedef struct {
    s_slot_t *slots;
    size_t mask;
    size_t count;
    bool cased; /* names compare byte for byte (ids); else names are lower case */
} s_table_t;

static uint64_t s_hash_cased (const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char) p[i];
        h *= 1099511628211ULL;
    }
    return s_mix (h);
}

static uint64_t s_table_hash (const s_table_t *t, const char *p, size_t n)
{
    return t->cased ? s_hash_cased (p, n) : s_hash (p, n);
}

/* The slot of p[0..n), hashed with s_table_hash, or NULL. */
static s_slot_t *s_table_find (const s_table_t *t, uint64_t hash, const char *p, size_t n)
{
    if (!t->count)
        return NULL;
    for (size_t i = hash & t->mask;; i = (i + 1) & t->mask) {
        s_slot_t *s = &t->slots[i];
        if (!s->name)
            return NULL;
        if (s->hash == hash && s->len == n &&
            (t->cased ? memcmp (s->name, p, n) == 0 : s_ieq (s->name, p, n)))
            return s;
    }
}

static void s_table_grow (s_table_t *t)
{
    size_t size = t->slots ? (t->mask + 1) * 2 : 8;
    s_slot_t *old = t->slots;
    size_t old_size = old ? t->mask + 1 : 0;
    t->slots = hms_alloc (size * sizeof *t->slots);
    t->mask = size - 1;
    for (size_t i = 0; i < old_size; i++)
        if (old[i].name) {
            size_t j = old[i].hash & t->mask;
            while (t->slots[j].name)
                j = (j + 1) & t->mask;
            t->slots[j] = old[i];
        }
    free (old);
}

/* The slot of name (borrowed; lower case unless cased), added with value when absent
 * (*added true). */
static s_slot_t *s_table_add (s_table_t *t, const char *name, size_t n, int value, bool *added)
{
    uint64_t hash = s_table_hash (t, name, n);
    s_slot_t *s = s_table_find (t, hash, name, n);
    if (added)
        *added = !s;
    if (s)
        return s;
    if (!t->slots || (t->count + 1) * 2 > t->mask + 1)
        s_table_grow (t);
    size_t j = hash & t->mask;
    while (t->slots[j].name)
        j = (j + 1) & t->mask;
    t->slots[j] = (s_slot_t){hash, name, n, value};
    t->count++;
    return &t->slots[j];
}

static void s_table_free (s_table_t *t)
{
    free (t->slots);
    t->slots = NULL;
    t->mask = t->count = 0;
}

/* ---- growable list of rule numbers --------------------------------------------------- */

typedef struct {
    int *v;
    size_t n, cap;
} s_list_t;

/* Appends x unless it is the last element already (rules are added in order, so a rule
 * reached twice through one key lands in its list once). */
static void s_list_push (s_list_t *l, int x)
{
    if (l->n && l->v[l->n - 1] == x)
        return;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4;
        l->v = hms_realloc (l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = x;
}

/* ---- hash table of network keys (open addressing, key 0 = free) ----------------------- */

typedef struct {
    uint64_t *keys;
    uint32_t *values;
    size_t mask;
    size_t count;
} s_net_t;

static uint32_t *s_net_find (const s_net_t *t, uint64_t key)
{
    if (!t->count)
        return NULL;
    for (size_t i = s_mix (key) & t->mask;; i = (i + 1) & t->mask) {
        if (t->keys[i] == key)
            return &t->values[i];
        if (!t->keys[i])
            return NULL;
    }
}

/* The value slot of key, added (with value) when absent. */
static uint32_t *s_net_add (s_net_t *t, uint64_t key, uint32_t value, bool *added)
{
    uint32_t *v = s_net_find (t, key);
    *added = !v;
    if (v)
        return v;
    if (!t->keys || (t->count + 1) * 2 > t->mask + 1) {
        size_t size = t->keys ? (t->mask + 1) * 2 : 16;
        uint64_t *keys = t->keys;
        uint32_t *values = t->values;
        size_t old = keys ? t->mask + 1 : 0;
        t->keys = hms_alloc (size * sizeof *t->keys);
        t->values = hms_alloc (size * sizeof *t->values);
        t->mask = size - 1;
        for (size_t i = 0; i < old; i++)
            if (keys[i]) {
                size_t j = s_mix (keys[i]) & t->mask;
                while (t->keys[j])
                    j = (j + 1) & t->mask;
                t->keys[j] = keys[i];
                t->values[j] = values[i];
            }
        free (keys);
        free (values);
    }
    size_t j = s_mix (key) & t->mask;
    while (t->keys[j])
        j = (j + 1) & t->mask;
    t->keys[j] = key;
    t->values[j] = value;
    t->count++;
    return &t->values[j];
}

static void s_net_free (s_net_t *t)
{
    free (t->keys);
    free (t->values);
    memset (t, 0, sizeof *t);
}

/* ---- compiled conditions ------------------------------------------------------------- */

typedef struct {
    uint32_t net;
    uint8_t len;
} s_p4_t;

typedef struct {
    uint64_t hi, lo;
    uint8_t len;
} s_p6_t;

/* Entries [start, end) of one prefix length. */
typedef struct {
    uint8_t len;
    uint32_t start, end;
} s_span_t;

typedef struct {
    s_p4_t *p4;
    size_t n4;
    s_span_t *spans4;
    size_t nspans4;
    s_p6_t *p6;
    size_t n6;
    s_span_t *spans6;
    size_t nspans6;
} s_prefixes_t;

typedef struct {
    int lo, hi;
} s_range_t;

/* A glob with its literal head and tail (before the first and after the last '*'), which
 * rule most names out before the matcher runs. */
typedef struct {
    const char *pat;
    size_t head;
    const char *tail;
    size_t tail_len;
} s_globpat_t;

typedef struct {
    bool any;         /* a "*" pattern */
    s_table_t exact;  /* names */
    s_table_t suffix; /* ".tails" */
    s_globpat_t *globs;
    size_t nglobs;
    char **owned; /* every pattern text, lower case */
    size_t nowned;
} s_names_t;

typedef struct {
    char *id;
    char *reason;      /* description, or "matched at priority P" */
    char *rate_reason; /* "rate limited by ID" */
    int64_t priority;
    int order;       /* position after sorting */
    unsigned fields; /* S_BIT of every field a condition needs */
    s_prefixes_t src, dst;
    unsigned protocols; /* bit i: s_protocols[i] */
    s_range_t *ports;
    size_t nports;
    size_t port_count; /* how many ports the ranges cover */
    char **methods;
    size_t nmethods;
    char **paths;
    size_t npaths;
    s_names_t names[N_COUNT];
    int action;
    char *route, *target, *retry_profile;
    bool bypass;
    int64_t ttl_ms;
    double per_second;
    int64_t burst;
    int rate_key;
} s_rule_t;

typedef struct {
    uint64_t key_hash; /* of the key alone */
    int32_t rule;      /* order of the rule; -1: free slot */
    uint16_t klen;
    char key[S_RATE_KEY];
    double tokens;
    int64_t last_ms; /* last refill */
} s_bucket_t;

struct hms_policy_set {
    s_rule_t *rules; /* sorted */
    size_t nrules;
    s_table_t ids; /* id -> order */
    /* the index: each rule sits in the lists of one kind of key (see s_build_index) */
    s_list_t *lists;
    size_t nlists;
    s_table_t host_index;   /* exact host -> list */
    s_table_t suffix_index; /* ".tail" of a host -> list */
    s_net_t net_index;      /* src or dst network -> list */
    uint32_t *port_index;   /* port -> 1 + list, 0 none (65536 entries, when needed) */
    s_list_t general;       /* rules without a key: tested for every query */
    size_t nsni, ndst;      /* rules with an sni, a dst condition */
    /* rate limiting */
    pthread_mutex_t lock;
    hms_policy_clock_fn *clock;
    void *clock_arg;
    s_bucket_t *buckets;
    size_t nbuckets; /* power of two */
};

/* ---- parsing of prefixes and ports -------------------------------------------------------- */

int hms_policy_prefix_parse (const char *text, int *family, unsigned char addr[16], int *len,
                             char *err, size_t errlen)
{
    char buf[128];
    int fam = strchr (text, ':') ? AF_INET6 : AF_INET;
    int max = fam == AF_INET6 ? 128 : 32;
    if (strlen (text) >= sizeof buf) {
        snprintf (err, errlen, "'%s' is not an IPv%d address", text, max == 32 ? 4 : 6);
        return -1;
    }
    snprintf (buf, sizeof buf, "%s", text);
    char *slash = strchr (buf, '/');
    if (slash)
        *slash = 0;
    *family = fam;
    if (inet_pton (fam, buf, addr) != 1) {
        snprintf (err, errlen, "'%s' is not an IPv%d address", text, max == 32 ? 4 : 6);
        return -1;
    }
    *len = max;
    if (slash) {
        char *end;
        long v = strtol (slash + 1, &end, 10);
        if (end == slash + 1 || *end || v < 0 || v > max) {
            snprintf (err, errlen, "prefix length in '%s' must be 0 to %d", text, max);
            return -1;
        }
        *len = (int) v;
    }
    return 0;
}

int hms_policy_ports_parse (const char *text, int *lo, int *hi, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    long a = strtol (text, &end, 10), b = a;
    if (*end == '-')
        b = strtol (end + 1, &end, 10);
    if (errno || end == text || *end || a < 1 || b > 65535 || a > b) {
        snprintf (err, errlen, "port range '%s' must be N or N-M with 1 <= N <= M <= 65535", text);
        return -1;
    }
    *lo = (int) a;
    *hi = (int) b;
    return 0;
}

static inline uint32_t s_mask4 (int len)
{
    return len == 0 ? 0 : 0xffffffffu << (32 - len);
}

static inline void s_mask6 (int len, uint64_t *hi, uint64_t *lo)
{
    *hi = len >= 64 ? ~0ULL : len == 0 ? 0 : ~0ULL << (64 - len);
    *lo = len <= 64 ? 0 : len >= 128 ? ~0ULL : ~0ULL << (128 - len);
}

static uint64_t s_be64 (const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static bool s_v4_mapped (const unsigned char a[16])
{
    static const unsigned char prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp (a, prefix, 12) == 0;
}

static int s_cmp_p4 (const void *a, const void *b)
{
    const s_p4_t *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->net < y->net ? -1 : x->net > y->net;
}

static int s_cmp_p6 (const void *a, const void *b)
{
    const s_p6_t *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    if (x->hi != y->hi)
        return x->hi < y->hi ? -1 : 1;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Sorted entries -> spans of equal length. */
static s_span_t *s_spans (const void *entries, size_t n, size_t size, size_t len_off,
                          size_t *nspans)
{
    s_span_t *spans = hms_alloc ((n ? n : 1) * sizeof *spans);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t len = *((const uint8_t *) entries + i * size + len_off);
        if (k == 0 || spans[k - 1].len != len)
            spans[k++] = (s_span_t){len, (uint32_t) i, (uint32_t) i};
        spans[k - 1].end = (uint32_t) i + 1;
    }
    *nspans = k;
    return spans;
}

static int s_prefixes_compile (s_prefixes_t *px, const json_t *list, const char *field, char *err,
                               size_t errlen)
{
    size_t n = json_array_size (list), i;
    px->p4 = hms_alloc ((n ? n : 1) * sizeof *px->p4);
    px->p6 = hms_alloc ((n ? n : 1) * sizeof *px->p6);
    json_t *v;
    json_array_foreach (list, i, v)
    {
        int family, len;
        unsigned char addr[16];
        char why[256];
        if (hms_policy_prefix_parse (json_string_value (v), &family, addr, &len, why, sizeof why)) {
            snprintf (err, errlen, "match.%s[%zu]: %s", field, i, why);
            return -1;
        }
        if (family == AF_INET6 && len >= 96 && s_v4_mapped (addr)) {
            memmove (addr, addr + 12, 4);
            family = AF_INET;
            len -= 96;
        }
        if (family == AF_INET) {
            uint32_t net = (uint32_t) addr[0] << 24 | (uint32_t) addr[1] << 16 |
                           (uint32_t) addr[2] << 8 | addr[3];
            px->p4[px->n4++] = (s_p4_t){net & s_mask4 (len), (uint8_t) len};
        } else {
            uint64_t mh, ml;
            s_mask6 (len, &mh, &ml);
            px->p6[px->n6++] = (s_p6_t){s_be64 (addr) & mh, s_be64 (addr + 8) & ml, (uint8_t) len};
        }
    }
    qsort (px->p4, px->n4, sizeof *px->p4, s_cmp_p4);
    qsort (px->p6, px->n6, sizeof *px->p6, s_cmp_p6);
    px->spans4 = s_spans (px->p4, px->n4, sizeof *px->p4, offsetof (s_p4_t, len), &px->nspans4);
    px->spans6 = s_spans (px->p6, px->n6, sizeof *px->p6, offsetof (s_p6_t, len), &px->nspans6);
    return 0;
}

static void s_prefixes_free (s_prefixes_t *px)
{
    free (px->p4);
    free (px->p6);
    free (px->spans4);
    free (px->spans6);
}

static bool s_prefixes_match4 (const s_prefixes_t *px, uint32_t a)
{
    for (size_t s = 0; s < px->nspans4; s++) {
        const s_span_t *sp = &px->spans4[s];
        uint32_t key = a & s_mask4 (sp->len);
        size_t lo = sp->start, hi = sp->end;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (px->p4[mid].net < key)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < sp->end && px->p4[lo].net == key)
            return true;
    }
    return false;
}

static bool s_prefixes_match6 (const s_prefixes_t *px, uint64_t ah, uint64_t al)
{
    for (size_t s = 0; s < px->nspans6; s++) {
        const s_span_t *sp = &px->spans6[s];
        uint64_t mh, ml;
        s_mask6 (sp->len, &mh, &ml);
        uint64_t kh = ah & mh, kl = al & ml;
        size_t lo = sp->start, hi = sp->end;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            const s_p6_t *p = &px->p6[mid];
            if (p->hi < kh || (p->hi == kh && p->lo < kl))
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < sp->end && px->p6[lo].hi == kh && px->p6[lo].lo == kl)
            return true;
    }
    return false;
}

/* ---- name patterns ----------------------------------------------------------------------- */

static int s_names_compile (s_names_t *m, const json_t *list, const char *field, char *err,
                            size_t errlen)
{
    size_t n = json_array_size (list), i;
    m->owned = hms_alloc (n * sizeof *m->owned);
    m->globs = hms_alloc (n * sizeof *m->globs);
    json_t *v;
    json_array_foreach (list, i, v)
    {
        const char *text = json_string_value (v);
        size_t len = strlen (text);
        while (len > 0 && text[len - 1] == '.')
            len--; /* "example.com." is "example.com" */
        if (len == 0) {
            snprintf (err, errlen, "match.%s[%zu]: '%s' is not a name or pattern", field, i, text);
            return -1;
        }
        char *pat = s_lower_dup (text, len);
        m->owned[m->nowned++] = pat;
        const char *star = strchr (pat, '*');
        if (star && strspn (pat, "*") == len)
            m->any = true;
        else if (star == pat && pat[1] == '.' && !strchr (pat + 1, '*'))
            s_table_add (&m->suffix, pat + 1, len - 1, 0, NULL); /* "*.x" is ".x" */
        else if (star) {
            const char *last = strrchr (pat, '*');
            m->globs[m->nglobs++] =
                (s_globpat_t){pat, (size_t) (star - pat), last + 1, strlen (last + 1)};
        } else if (pat[0] == '.')
            s_table_add (&m->suffix, pat, len, 0, NULL);
        else
            s_table_add (&m->exact, pat, len, 0, NULL);
    }
    return 0;
}

static void s_names_free (s_names_t *m)
{
    s_table_free (&m->exact);
    s_table_free (&m->suffix);
    for (size_t i = 0; i < m->nowned; i++)
        free (m->owned[i]);
    free (m->owned);
    free (m->globs);
}

/* ---- rules ----------------------------------------------------------------------------- */

static void s_rule_free (s_rule_t *r)
{
    free (r->id);
    free (r->reason);
    free (r->rate_reason);
    s_prefixes_free (&r->src);
    s_prefixes_free (&r->dst);
    free (r->ports);
    for (size_t i = 0; i < r->nmethods; i++)
        free (r->methods[i]);
    free (r->methods);
    for (size_t i = 0; i < r->npaths; i++)
        free (r->paths[i]);
    free (r->paths);
    for (int k = 0; k < N_COUNT; k++)
        s_names_free (&r->names[k]);
    free (r->route);
    free (r->target);
    free (r->retry_profile);
}

static int s_cmp_range (const void *a, const void *b)
{
    const s_range_t *x = a, *y = b;
    return x->lo != y->lo ? (x->lo < y->lo ? -1 : 1) : (x->hi < y->hi ? -1 : x->hi > y->hi);
}

static int s_ports_compile (s_rule_t *r, const json_t *list, char *err, size_t errlen)
{
    size_t n = json_array_size (list), i;
    s_range_t *ranges = hms_alloc ((n ? n : 1) * sizeof *ranges);
    json_t *v;
    json_array_foreach (list, i, v)
    {
        char why[256];
        if (hms_policy_ports_parse (json_string_value (v), &ranges[i].lo, &ranges[i].hi, why,
                                    sizeof why)) {
            snprintf (err, errlen, "match.ports[%zu]: %s", i, why);
            free (ranges);
            return -1;
        }
    }
    qsort (ranges, n, sizeof *ranges, s_cmp_range);
    /* merge overlapping and adjacent ranges */
    size_t k = 0;
    for (i = 0; i < n; i++) {
        if (k > 0 && ranges[i].lo <= ranges[k - 1].hi + 1) {
            if (ranges[i].hi > ranges[k - 1].hi)
                ranges[k - 1].hi = ranges[i].hi;
        } else
            ranges[k++] = ranges[i];
    }
    r->ports = ranges;
    r->nports = k;
    for (i = 0; i < k; i++)
        r->port_count += (size_t) (ranges[i].hi - ranges[i].lo + 1);
    return 0;
}

static bool s_ports_match (const s_rule_t *r, int port)
{
    size_t lo = 0, hi = r->nports;
    while (lo < hi) { /* first range with hi >= port */
        size_t mid = (lo + hi) / 2;
        if (r->ports[mid].hi < port)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < r->nports && r->ports[lo].lo <= port;
}

/* "host:port" or "[v6]:port" with 1 <= port <= 65535. */
static bool s_target_ok (const char *t)
{
    const char *colon = strrchr (t, ':');
    if (!colon || colon == t)
        return false;
    if (t[0] == '[' && colon[-1] != ']')
        return false;
    if (t[0] != '[' && memchr (t, ':', (size_t) (colon - t)))
        return false;
    size_t digits = strlen (colon + 1);
    if (digits < 1 || digits > 5 || strspn (colon + 1, "0123456789") != digits)
        return false;
    long port = strtol (colon + 1, NULL, 10);
    return port >= 1 && port <= 65535;
}

static char *s_dup_str (const json_t *doc, const char *key)
{
    return hms_strdup (json_string_value (json_object_get (doc, key)));
}

static int s_rule_compile (s_rule_t *r, const json_t *doc, char *err, size_t errlen)
{
    char why[512];
    if (hms_schemas_validate ("config/policy.v1", doc, why, sizeof why)) {
        snprintf (err, errlen, "%s", why);
        return -1;
    }
    r->id = s_dup_str (doc, "id");
    json_t *prio = json_object_get (doc, "priority");
    r->priority = prio ? json_integer_value (prio) : HMS_POLICY_DEFAULT_PRIORITY;
    json_t *match = json_object_get (doc, "match");

    /* the same checks, in the same order, as before the compiler existed */
    json_t *src = json_object_get (match, "src"), *dst = json_object_get (match, "dst");
    if (s_prefixes_compile (&r->src, src, "src", err, errlen) ||
        s_prefixes_compile (&r->dst, dst, "dst", err, errlen))
        return -1;
    json_t *ports = json_object_get (match, "ports");
    if (s_ports_compile (r, ports, err, errlen))
        return -1;
    const char *action = json_string_value (json_object_get (doc, "action"));
    if (strcmp (action, "route") == 0 && !json_object_get (doc, "route")) {
        snprintf (err, errlen, "action route needs \"route\" (a route or node name)");
        return -1;
    }
    if (strcmp (action, "rate_limit") == 0 && !json_object_get (doc, "rate")) {
        snprintf (err, errlen, "action rate_limit needs \"rate\" {per_second, burst}");
        return -1;
    }

    /* an empty list would match nothing: say so rather than keep a dead rule */
    const char *key;
    json_t *list;
    json_object_foreach (match, key, list)
    {
        if (json_array_size (list) == 0) {
            snprintf (err, errlen,
                      "match.%s is empty (leave it out to match any %s, or list at least one)", key,
                      key);
            return -1;
        }
    }
    if (src)
        r->fields |= S_BIT (F_SRC);
    if (dst)
        r->fields |= S_BIT (F_DST);
    if (ports)
        r->fields |= S_BIT (F_PORT);
    size_t i;
    json_t *v;
    json_array_foreach (json_object_get (match, "protocol"), i, v)
    {
        for (int p = 0; s_protocols[p]; p++)
            if (strcmp (json_string_value (v), s_protocols[p]) == 0)
                r->protocols |= 1u << p;
        r->fields |= S_BIT (F_PROTOCOL);
    }
    json_t *methods = json_object_get (match, "method");
    r->methods = hms_alloc ((json_array_size (methods) + 1) * sizeof *r->methods);
    json_array_foreach (methods, i, v) r->methods[r->nmethods++] =
        hms_strdup (json_string_value (v));
    if (methods)
        r->fields |= S_BIT (F_METHOD);
    json_t *paths = json_object_get (match, "path_prefix");
    r->paths = hms_alloc ((json_array_size (paths) + 1) * sizeof *r->paths);
    json_array_foreach (paths, i, v) r->paths[r->npaths++] = hms_strdup (json_string_value (v));
    if (paths)
        r->fields |= S_BIT (F_PATH);
    for (int k = 0; k < N_COUNT; k++) {
        json_t *names = json_object_get (match, s_name_keys[k]);
        if (!names)
            continue;
        if (s_names_compile (&r->names[k], names, s_name_keys[k], err, errlen))
            return -1;
        r->fields |= S_BIT (s_name_bits[k]);
    }

    r->action = strcmp (action, "allow") == 0   ? A_ALLOW
                : strcmp (action, "deny") == 0  ? A_DENY
                : strcmp (action, "route") == 0 ? A_ROUTE
                                                : A_RATE;
    r->route = s_dup_str (doc, "route");
    r->target = s_dup_str (doc, "target");
    if (r->target && !s_target_ok (r->target)) {
        snprintf (err, errlen, "target '%s' must be HOST:PORT with a port from 1 to 65535",
                  r->target);
        return -1;
    }
    r->retry_profile = s_dup_str (doc, "retry_profile");
    r->bypass = json_is_true (json_object_get (doc, "bypass"));
    json_t *ttl = json_object_get (doc, "ttl_ms");
    r->ttl_ms = ttl ? json_integer_value (ttl) : HMS_POLICY_DEFAULT_TTL_MS;
    json_t *rate = json_object_get (doc, "rate");
    if (r->action == A_RATE) {
        r->per_second = json_number_value (json_object_get (rate, "per_second"));
        r->burst = json_integer_value (json_object_get (rate, "burst"));
        const char *k = json_string_value (json_object_get (rate, "key"));
        r->rate_key = !k || strcmp (k, "src") == 0 ? K_SRC
                      : strcmp (k, "user") == 0    ? K_USER
                                                   : K_HOST;
        r->rate_reason = hms_sprintf ("rate limited by %s", r->id);
    }
    const char *description = json_string_value (json_object_get (doc, "description"));
    r->reason = description ? hms_strdup (description)
                            : hms_sprintf ("matched at priority %lld", (long long) r->priority);
    return 0;
}

static int s_cmp_rule (const void *a, const void *b)
{
    const s_rule_t *x = a, *y = b;
    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    return strcmp (x->id, y->id);
}

/* ---- the set and its index ---------------------------------------------------------------- */

/* Index keys of networks: the /16 of an IPv4 and the /32 of an IPv6 address, per field. */
#define S_NET_V4_BITS 16
#define S_NET_V6_BITS 32

static uint64_t s_net_key4 (int field, uint32_t a)
{
    return (uint64_t) (field + 1) << 56 | (uint64_t) 4 << 48 | (a >> (32 - S_NET_V4_BITS));
}

static uint64_t s_net_key6 (int field, uint64_t hi)
{
    return (uint64_t) (field + 1) << 56 | (uint64_t) 6 << 48 | (hi >> (64 - S_NET_V6_BITS));
}

/* Every prefix long enough to have one index key. */
static bool s_net_indexable (const s_prefixes_t *px)
{
    return (px->n4 == 0 || px->p4[0].len >= S_NET_V4_BITS) &&
           (px->n6 == 0 || px->p6[0].len >= S_NET_V6_BITS); /* sorted by length */
}

static s_list_t *s_new_list (hms_policy_set_t *self, uint32_t *id)
{
    self->lists = hms_realloc (self->lists, (self->nlists + 1) * sizeof *self->lists);
    self->lists[self->nlists] = (s_list_t){0};
    *id = (uint32_t) self->nlists++;
    return &self->lists[*id];
}

static void s_index_names (hms_policy_set_t *self, s_table_t *index, const s_table_t *names,
                           int order)
{
    for (size_t j = 0; names->count && j <= names->mask; j++) {
        const s_slot_t *s = &names->slots[j];
        if (!s->name)
            continue;
        bool added;
        s_slot_t *slot = s_table_add (index, s->name, s->len, (int) self->nlists, &added);
        uint32_t id = (uint32_t) slot->value;
        if (added)
            s_new_list (self, &id);
        s_list_push (&self->lists[id], order);
    }
}

static void s_index_net (hms_policy_set_t *self, const s_prefixes_t *px, int field, int order)
{
    for (size_t i = 0; i < px->n4 + px->n6; i++) {
        uint64_t key = i < px->n4 ? s_net_key4 (field, px->p4[i].net)
                                  : s_net_key6 (field, px->p6[i - px->n4].hi);
        bool added;
        uint32_t *id = s_net_add (&self->net_index, key, (uint32_t) self->nlists, &added);
        uint32_t list = *id;
        if (added)
            s_new_list (self, &list);
        s_list_push (&self->lists[list], order);
    }
}

/* Puts each rule where a query can find it by one of the fields the rule needs: its host
 * names when none is a glob (exact names, and suffixes by their text), else its dst or src
 * networks when all are /16 (IPv4) or /32 (IPv6) or longer, else its ports when they are
 * few; the rest go to the general list. A query then tests only the rules in the lists of
 * its own host, host tails, networks and port, and the general list, merged in rule order:
 * the first match is the first match of a plain scan. */
static void s_build_index (hms_policy_set_t *self)
{
    for (size_t i = 0; i < self->nrules; i++) {
        s_rule_t *r = &self->rules[i];
        const s_names_t *h = &r->names[N_HOST];
        if ((r->fields & S_BIT (F_HOST)) && !h->any && h->nglobs == 0) {
            s_index_names (self, &self->host_index, &h->exact, r->order);
            s_index_names (self, &self->suffix_index, &h->suffix, r->order);
        } else if ((r->fields & S_BIT (F_DST)) && s_net_indexable (&r->dst))
            s_index_net (self, &r->dst, F_DST, r->order);
        else if ((r->fields & S_BIT (F_SRC)) && s_net_indexable (&r->src))
            s_index_net (self, &r->src, F_SRC, r->order);
        else if ((r->fields & S_BIT (F_PORT)) && r->port_count <= S_PORT_INDEX_MAX) {
            if (!self->port_index)
                self->port_index = hms_alloc (65536 * sizeof *self->port_index);
            for (size_t k = 0; k < r->nports; k++)
                for (int p = r->ports[k].lo; p <= r->ports[k].hi; p++) {
                    uint32_t id = self->port_index[p];
                    if (!id) {
                        s_new_list (self, &id);
                        self->port_index[p] = ++id;
                    }
                    s_list_push (&self->lists[id - 1], r->order);
                }
        } else
            s_list_push (&self->general, r->order);
    }
}

hms_policy_set_t *hms_policy_compile (const json_t *policies, char *err, size_t errlen)
{
    hms_policy_set_t *self = hms_alloc (sizeof *self);
    pthread_mutex_init (&self->lock, NULL);
    self->nbuckets = HMS_POLICY_DEFAULT_RATE_SLOTS;
    self->ids.cased = true;
    if (policies && !json_is_array (policies)) {
        snprintf (err, errlen, "policies must be an array of policy documents");
        hms_policy_destroy (&self);
        return NULL;
    }
    size_t n = json_array_size (policies);
    self->rules = hms_alloc ((n ? n : 1) * sizeof *self->rules);
    for (size_t i = 0; i < n; i++) {
        const json_t *doc = json_array_get (policies, i);
        const char *id = json_string_value (json_object_get (doc, "id"));
        s_rule_t *r = &self->rules[self->nrules++];
        char why[768];
        if (s_rule_compile (r, doc, why, sizeof why)) {
            snprintf (err, errlen, "policy %s (policies[%zu]): %s", id ? id : "?", i, why);
            hms_policy_destroy (&self);
            return NULL;
        }
        bool added;
        s_slot_t *slot = s_table_add (&self->ids, r->id, strlen (r->id), (int) i, &added);
        if (!added) {
            snprintf (err, errlen, "policy %s appears twice (policies[%d] and [%zu])", id,
                      slot->value, i);
            hms_policy_destroy (&self);
            return NULL;
        }
    }
    s_table_free (&self->ids);
    qsort (self->rules, self->nrules, sizeof *self->rules, s_cmp_rule);
    for (size_t i = 0; i < self->nrules; i++) {
        self->rules[i].order = (int) i;
        s_table_add (&self->ids, self->rules[i].id, strlen (self->rules[i].id), (int) i, NULL);
    }
    for (size_t i = 0; i < self->nrules; i++) {
        self->nsni += (self->rules[i].fields & S_BIT (F_SNI)) != 0;
        self->ndst += (self->rules[i].fields & S_BIT (F_DST)) != 0;
    }
    s_build_index (self);
    return self;
}

void hms_policy_destroy (hms_policy_set_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    hms_policy_set_t *self = *self_p;
    for (size_t i = 0; i < self->nrules; i++)
        s_rule_free (&self->rules[i]);
    free (self->rules);
    s_table_free (&self->ids);
    s_table_free (&self->host_index);
    s_table_free (&self->suffix_index);
    s_net_free (&self->net_index);
    free (self->port_index);
    for (size_t i = 0; i < self->nlists; i++)
        free (self->lists[i].v);
    free (self->lists);
    free (self->general.v);
    free (self->buckets);
    pthread_mutex_destroy (&self->lock);
    free (self);
    *self_p = NULL;
}

size_t hms_policy_size (const hms_policy_set_t *self)
{
    return self->nrules;
}

void hms_policy_set_clock (hms_policy_set_t *self, hms_policy_clock_fn *fn, void *arg)
{
    pthread_mutex_lock (&self->lock);
    self->clock = fn;
    self->clock_arg = arg;
    pthread_mutex_unlock (&self->lock);
}

void hms_policy_set_rate_slots (hms_policy_set_t *self, size_t slots)
{
    size_t n = 64;
    while (n < slots && n < ((size_t) 1 << 30))
        n <<= 1;
    pthread_mutex_lock (&self->lock);
    if (!self->buckets)
        self->nbuckets = n;
    pthread_mutex_unlock (&self->lock);
}

/* ---- queries ------------------------------------------------------------------------------- */

typedef struct {
    const char *p;
    size_t n;
    bool hashed;
    uint64_t hash;
    int ntails; /* -1 until computed */
    struct {
        uint32_t off;
        uint64_t hash;
    } tails[S_MAX_TAILS];
} s_qname_t;

typedef struct {
    unsigned fields;
    int src_family, dst_family; /* 4 or 6 */
    uint32_t src4, dst4;
    uint64_t src6[2], dst6[2];
    unsigned char src_raw[16];
    int port;
    unsigned protocol; /* bit of s_protocols, 0 when unknown */
    const char *method;
    const char *path;
    s_qname_t names[N_COUNT];
    unsigned any; /* fields whose conditions hold whatever the value (see s_pending) */
    bool dst_is_name;
} s_q_t;

/* Parses an address into family / v4 / v6; false when it is none. */
static bool s_addr (const char *text, int *family, uint32_t *v4, uint64_t v6[2],
                    unsigned char raw[16])
{
    unsigned char a[16];
    if (strchr (text, ':')) {
        if (inet_pton (AF_INET6, text, a) != 1)
            return false;
        if (!s_v4_mapped (a)) {
            *family = 6;
            v6[0] = s_be64 (a);
            v6[1] = s_be64 (a + 8);
            if (raw)
                memcpy (raw, a, 16);
            return true;
        }
        memmove (a, a + 12, 4);
    } else if (inet_pton (AF_INET, text, a) != 1)
        return false;
    *family = 4;
    *v4 = (uint32_t) a[0] << 24 | (uint32_t) a[1] << 16 | (uint32_t) a[2] << 8 | a[3];
    if (raw) {
        memset (raw, 0, 16);
        memcpy (raw, a, 4);
    }
    return true;
}

static void s_qname_set (s_q_t *q, int k, const char *p, size_t n)
{
    q->names[k].p = p;
    q->names[k].n = n;
    q->names[k].hashed = false;
    q->names[k].ntails = -1;
    q->fields |= S_BIT (s_name_bits[k]);
}

/* A host as matched: without ":port" (and "[...]" around an IPv6 literal) or a final dot. */
static void s_host_slice (const char *h, const char **p, size_t *n)
{
    size_t len = strlen (h);
    const char *colon = strrchr (h, ':');
    if (h[0] == '[') {
        const char *close = strchr (h, ']');
        if (close) {
            *p = h + 1;
            *n = (size_t) (close - h - 1);
            return;
        }
    } else if (colon && !memchr (h, ':', (size_t) (colon - h)) &&
               strspn (colon + 1, "0123456789") == strlen (colon + 1))
        len = (size_t) (colon - h); /* name:port, not a bare IPv6 address */
    while (len > 0 && h[len - 1] == '.')
        len--;
    *p = h;
    *n = len;
}

/* Reads query into q; false (and a decision in out) when src is not an address. */
static bool s_prepare (s_q_t *q, const hms_policy_query_t *query, hms_policy_decision_t *out)
{
    q->fields = 0;
    q->any = 0;
    if (query->src) {
        if (!s_addr (query->src, &q->src_family, &q->src4, q->src6, q->src_raw)) {
            *out = (hms_policy_decision_t){.action = HMS_POLICY_DENY,
                                           .reason = "src is not an IPv4 or IPv6 address"};
            return false;
        }
        q->fields |= S_BIT (F_SRC);
    }
    bool dst_is_name = false;
    if (query->dst) {
        if (s_addr (query->dst, &q->dst_family, &q->dst4, q->dst6, NULL))
            q->fields |= S_BIT (F_DST);
        else
            dst_is_name = *query->dst != 0;
    }
    q->dst_is_name = dst_is_name;
    if (query->port > 0 && query->port <= 65535) {
        q->port = query->port;
        q->fields |= S_BIT (F_PORT);
    }
    if (query->protocol) {
        q->protocol = 0;
        for (int p = 0; s_protocols[p]; p++)
            if (strcmp (query->protocol, s_protocols[p]) == 0)
                q->protocol = 1u << p;
        q->fields |= S_BIT (F_PROTOCOL);
    }
    if ((q->method = query->method))
        q->fields |= S_BIT (F_METHOD);
    if ((q->path = query->path))
        q->fields |= S_BIT (F_PATH);
    const char *host = query->host ? query->host : dst_is_name ? query->dst : NULL;
    const char *p;
    size_t n;
    if (host) {
        s_host_slice (host, &p, &n);
        s_qname_set (q, N_HOST, p, n);
    }
    if (query->sni) {
        n = strlen (query->sni);
        while (n > 0 && query->sni[n - 1] == '.')
            n--;
        s_qname_set (q, N_SNI, query->sni, n);
    }
    const char *ids[] = {query->user, query->service, query->ns};
    for (int k = N_USER; k <= N_NS; k++)
        if (ids[k - N_USER])
            s_qname_set (q, k, ids[k - N_USER], strlen (ids[k - N_USER]));
    return true;
}

static uint64_t s_qname_hash (s_qname_t *qn)
{
    if (!qn->hashed) {
        qn->hash = s_hash (qn->p, qn->n);
        qn->hashed = true;
    }
    return qn->hash;
}

static void s_qname_tails (s_qname_t *qn)
{
    if (qn->ntails >= 0)
        return;
    /* from the end, so that the shortest tails are kept when there are too many */
    int k = 0;
    for (size_t i = qn->n; i-- > 0 && k < S_MAX_TAILS;)
        if (qn->p[i] == '.') {
            qn->tails[k].off = (uint32_t) i;
            qn->tails[k].hash = s_hash (qn->p + i, qn->n - i);
            k++;
        }
    qn->ntails = k;
}

static bool s_names_match (const s_names_t *m, s_qname_t *qn)
{
    if (m->any)
        return true;
    if (m->exact.count && s_table_find (&m->exact, s_qname_hash (qn), qn->p, qn->n))
        return true;
    if (m->suffix.count) {
        s_qname_tails (qn);
        for (int t = 0; t < qn->ntails; t++)
            if (s_table_find (&m->suffix, qn->tails[t].hash, qn->p + qn->tails[t].off,
                              qn->n - qn->tails[t].off))
                return true;
    }
    for (size_t g = 0; g < m->nglobs; g++) {
        const s_globpat_t *gp = &m->globs[g];
        if (qn->n < gp->head + gp->tail_len || !s_ieq (gp->pat, qn->p, gp->head) ||
            !s_ieq (gp->tail, qn->p + qn->n - gp->tail_len, gp->tail_len))
            continue;
        if (s_glob (gp->pat, qn->p, qn->n))
            return true;
    }
    return false;
}

static bool s_match (const s_rule_t *r, s_q_t *q)
{
    if (r->fields & ~q->fields)
        return false;
    if (r->protocols && !(r->protocols & q->protocol))
        return false;
    if (r->nports && !s_ports_match (r, q->port))
        return false;
    if (r->fields & S_BIT (F_SRC)) {
        if (q->src_family == 4 ? !s_prefixes_match4 (&r->src, q->src4)
                               : !s_prefixes_match6 (&r->src, q->src6[0], q->src6[1]))
            return false;
    }
    if ((r->fields & S_BIT (F_DST)) && !(q->any & S_BIT (F_DST))) {
        if (q->dst_family == 4 ? !s_prefixes_match4 (&r->dst, q->dst4)
                               : !s_prefixes_match6 (&r->dst, q->dst6[0], q->dst6[1]))
            return false;
    }
    if (r->nmethods) {
        size_t i = 0;
        while (i < r->nmethods && strcmp (r->methods[i], q->method) != 0)
            i++;
        if (i == r->nmethods)
            return false;
    }
    if (r->npaths) {
        size_t i = 0;
        while (i < r->npaths && strncmp (r->paths[i], q->path, strlen (r->paths[i])) != 0)
            i++;
        if (i == r->npaths)
            return false;
    }
    for (int k = 0; k < N_COUNT; k++)
        if ((r->fields & S_BIT (s_name_bits[k])) && !(q->any & S_BIT (s_name_bits[k])) &&
            !s_names_match (&r->names[k], &q->names[k]))
            return false;
    return true;
}

static const s_rule_t *s_scan (const hms_policy_set_t *self, s_q_t *q)
{
    for (size_t i = 0; i < self->nrules; i++)
        if (s_match (&self->rules[i], q))
            return &self->rules[i];
    return NULL;
}

/* Tests the rules of the query's index lists (host, host tails, dst and src networks,
 * port) and of the general list, in rule order, until one matches. */
static const s_rule_t *s_indexed (const hms_policy_set_t *self, s_q_t *q)
{
    const s_list_t *lists[S_MAX_TAILS + 6];
    size_t n = 0;
    if (self->general.n)
        lists[n++] = &self->general;
    if (q->fields & S_BIT (F_HOST)) {
        s_qname_t *h = &q->names[N_HOST];
        const s_slot_t *s;
        if (self->host_index.count &&
            (s = s_table_find (&self->host_index, s_qname_hash (h), h->p, h->n)))
            lists[n++] = &self->lists[s->value];
        if (self->suffix_index.count) {
            s_qname_tails (h);
            for (int t = 0; t < h->ntails; t++)
                if ((s = s_table_find (&self->suffix_index, h->tails[t].hash,
                                       h->p + h->tails[t].off, h->n - h->tails[t].off)))
                    lists[n++] = &self->lists[s->value];
        }
    }
    if (self->net_index.count) {
        const uint32_t *id;
        if ((q->fields & S_BIT (F_DST)) &&
            (id = s_net_find (&self->net_index, q->dst_family == 4
                                                    ? s_net_key4 (F_DST, q->dst4)
                                                    : s_net_key6 (F_DST, q->dst6[0]))))
            lists[n++] = &self->lists[*id];
        if ((q->fields & S_BIT (F_SRC)) &&
            (id = s_net_find (&self->net_index, q->src_family == 4
                                                    ? s_net_key4 (F_SRC, q->src4)
                                                    : s_net_key6 (F_SRC, q->src6[0]))))
            lists[n++] = &self->lists[*id];
    }
    if ((q->fields & S_BIT (F_PORT)) && self->port_index && self->port_index[q->port])
        lists[n++] = &self->lists[self->port_index[q->port] - 1];
    if (n == 1) { /* the common case: one list, no merging */
        for (size_t i = 0; i < lists[0]->n; i++)
            if (s_match (&self->rules[lists[0]->v[i]], q))
                return &self->rules[lists[0]->v[i]];
        return NULL;
    }
    size_t at[S_MAX_TAILS + 6] = {0};
    int last = -1;
    while (true) {
        int best = -1;
        size_t which = 0;
        for (size_t l = 0; l < n; l++)
            if (at[l] < lists[l]->n && (best < 0 || lists[l]->v[at[l]] < best)) {
                best = lists[l]->v[at[l]];
                which = l;
            }
        if (best < 0)
            return NULL;
        at[which]++;
        if (best != last && s_match (&self->rules[best], q)) /* a rule may be in two lists */
            return &self->rules[best];
        last = best;
    }
}

/* ---- rate limiting ------------------------------------------------------------------------- */

static int64_t s_now (hms_policy_set_t *self)
{
    return self->clock ? self->clock (self->clock_arg) : hms_mono_ms ();
}

static uint64_t s_slot_hash (uint64_t key_hash, int rule)
{
    return s_mix (key_hash ^ ((uint64_t) (rule + 1) * 0x9e3779b97f4a7c15ULL));
}

static void s_refill (const s_rule_t *r, s_bucket_t *b, int64_t now)
{
    if (now > b->last_ms) {
        b->tokens += (double) (now - b->last_ms) * r->per_second / 1000.0;
        if (b->tokens > (double) r->burst)
            b->tokens = (double) r->burst;
        b->last_ms = now;
    }
}

static bool s_key_equal (const s_bucket_t *b, uint64_t key_hash, const char *key, size_t klen)
{
    size_t cmp = klen < S_RATE_KEY ? klen : S_RATE_KEY;
    return b->key_hash == key_hash && b->klen == (klen > 65535 ? 65535 : klen) &&
           memcmp (b->key, key, cmp) == 0;
}

/* The bucket of (rule, key), taken over from a fuller or older one when not there. Called
 * with the lock held. */
static s_bucket_t *s_bucket (hms_policy_set_t *self, const s_rule_t *r, uint64_t key_hash,
                             const char *key, size_t klen, int64_t now)
{
    if (!self->buckets) {
        self->buckets = hms_alloc (self->nbuckets * sizeof *self->buckets);
        for (size_t i = 0; i < self->nbuckets; i++)
            self->buckets[i].rule = -1;
    }
    size_t mask = self->nbuckets - 1;
    size_t base = s_slot_hash (key_hash, r->order) & mask;
    s_bucket_t *victim = NULL;
    double victim_fill = -1;
    for (size_t i = 0; i < S_RATE_WINDOW; i++) {
        s_bucket_t *b = &self->buckets[(base + i) & mask];
        if (b->rule == r->order && s_key_equal (b, key_hash, key, klen))
            return b;
        double fill;
        if (b->rule < 0)
            fill = 2.0; /* free: best */
        else {
            const s_rule_t *owner = &self->rules[b->rule];
            s_refill (owner, b, now);
            fill = b->tokens / (double) owner->burst;
        }
        if (fill > victim_fill || (fill == victim_fill && b->last_ms < victim->last_ms)) {
            victim = b;
            victim_fill = fill;
        }
    }
    victim->rule = r->order;
    victim->key_hash = key_hash;
    victim->klen = (uint16_t) (klen > 65535 ? 65535 : klen);
    memcpy (victim->key, key, klen < S_RATE_KEY ? klen : S_RATE_KEY);
    victim->tokens = (double) r->burst;
    victim->last_ms = now;
    return victim;
}

/* Takes a token from the bucket of rule r for the query's key; false when there is none. */
static bool s_take (hms_policy_set_t *self, const s_rule_t *r, s_q_t *q)
{
    char key[S_RATE_KEY];
    size_t klen = 0;
    uint64_t key_hash;
    if (r->rate_key == K_SRC) {
        if (q->fields & S_BIT (F_SRC)) {
            klen = q->src_family == 4 ? 4 : 16;
            memcpy (key, q->src_raw, klen);
        }
        key_hash = s_mix (s_hash (key, klen) ^ (uint64_t) klen);
    } else {
        int k = r->rate_key == K_USER ? N_USER : N_HOST;
        s_qname_t *qn = &q->names[k];
        bool has = q->fields & S_BIT (s_name_bits[k]);
        klen = has ? qn->n : 0;
        for (size_t i = 0; i < klen && i < S_RATE_KEY; i++)
            key[i] = (char) s_lower ((unsigned char) qn->p[i]);
        key_hash = has ? s_qname_hash (qn) : s_hash ("", 0);
    }
    pthread_mutex_lock (&self->lock);
    int64_t now = s_now (self);
    s_bucket_t *b = s_bucket (self, r, key_hash, key, klen, now);
    s_refill (r, b, now);
    bool ok = b->tokens >= 1.0;
    if (ok)
        b->tokens -= 1.0;
    pthread_mutex_unlock (&self->lock);
    return ok;
}

void hms_policy_inherit (hms_policy_set_t *self, hms_policy_set_t *old)
{
    if (!old || !old->buckets)
        return;
    pthread_mutex_lock (&old->lock);
    pthread_mutex_lock (&self->lock);
    int64_t now = s_now (self);
    for (size_t i = 0; i < old->nbuckets; i++) {
        s_bucket_t *b = &old->buckets[i];
        if (b->rule < 0)
            continue;
        const s_rule_t *was = &old->rules[b->rule];
        size_t idlen = strlen (was->id);
        const s_slot_t *s =
            s_table_find (&self->ids, s_table_hash (&self->ids, was->id, idlen), was->id, idlen);
        if (!s)
            continue;
        const s_rule_t *r = &self->rules[s->value];
        if (r->action != A_RATE || r->per_second != was->per_second || r->burst != was->burst ||
            r->rate_key != was->rate_key)
            continue;
        s_refill (was, b, now);
        s_bucket_t *nb = s_bucket (self, r, b->key_hash, b->key, b->klen, now);
        nb->tokens = b->tokens;
        nb->last_ms = b->last_ms;
    }
    pthread_mutex_unlock (&self->lock);
    pthread_mutex_unlock (&old->lock);
}

/* ---- decisions ------------------------------------------------------------------------------ */

/* What the asker does not know yet but can learn (the SNI; the address of a dst given by
 * name): does a rule that needs it come before r, the rule that decides without it? With the
 * conditions on those fields taken as true, the first rule before r that matches is one (else
 * it would have matched already). Returns the fields that rule needs, 0 when none. */
static unsigned s_pending (const hms_policy_set_t *self, const hms_policy_query_t *query, s_q_t *q,
                           const s_rule_t *r)
{
    unsigned pending = 0;
    if (query->sni_pending && !query->sni && self->nsni)
        pending |= S_BIT (F_SNI);
    if (query->dst_pending && q->dst_is_name && self->ndst)
        pending |= S_BIT (F_DST);
    if (!pending)
        return 0;
    q->fields |= pending;
    q->any = pending;
    size_t limit = r ? (size_t) r->order : self->nrules;
    unsigned needs = 0;
    for (size_t i = 0; i < limit && !needs; i++)
        if (self->rules[i].fields & pending && s_match (&self->rules[i], q))
            needs = self->rules[i].fields & pending;
    q->fields &= ~pending; /* those fields were unknown: back as it was */
    q->any = 0;
    return needs;
}

void hms_policy_evaluate (hms_policy_set_t *self, const hms_policy_query_t *query, int flags,
                          hms_policy_decision_t *out)
{
    s_q_t q;
    if (!s_prepare (&q, query, out))
        return;
    const s_rule_t *r = flags & HMS_POLICY_SCAN ? s_scan (self, &q) : s_indexed (self, &q);
    unsigned needs = s_pending (self, query, &q, r);
    if (needs) {
        *out = (hms_policy_decision_t){.action = HMS_POLICY_DENY,
                                       .needs_sni = (needs & S_BIT (F_SNI)) != 0,
                                       .needs_dst = (needs & S_BIT (F_DST)) != 0,
                                       .ttl_ms = HMS_POLICY_DEFAULT_TTL_MS,
                                       .reason = needs & S_BIT (F_SNI)
                                                     ? "the decision depends on the TLS SNI"
                                                     : "the decision depends on the address"};
        return;
    }
    if (!r) {
        *out = (hms_policy_decision_t){.action = HMS_POLICY_DENY,
                                       .ttl_ms = HMS_POLICY_DEFAULT_TTL_MS,
                                       .reason = "no rule matched"};
        return;
    }
    *out = (hms_policy_decision_t){
        .rule = r->id,
        .target = r->target,
        .retry_profile = r->retry_profile,
        .bypass = r->bypass,
        .ttl_ms = r->ttl_ms,
        .reason = r->reason,
    };
    switch (r->action) {
    case A_ALLOW:
        out->action = HMS_POLICY_ALLOW;
        break;
    case A_ROUTE:
        out->action = HMS_POLICY_ROUTE;
        out->route = r->route;
        break;
    case A_RATE:
        out->ttl_ms = 0; /* a cached answer would not spend tokens */
        out->action = HMS_POLICY_ALLOW;
        if (!(flags & HMS_POLICY_DRY_RUN) && !s_take (self, r, &q))
            *out = (hms_policy_decision_t){
                .action = HMS_POLICY_DENY, .rule = r->id, .reason = r->rate_reason};
        break;
    default:
        *out = (hms_policy_decision_t){
            .action = HMS_POLICY_DENY, .rule = r->id, .ttl_ms = r->ttl_ms, .reason = r->reason};
    }
}

const char *hms_policy_action_name (hms_policy_action_t action)
{
    return action == HMS_POLICY_ALLOW ? "allow" : action == HMS_POLICY_ROUTE ? "route" : "deny";
}

void hms_policy_query_from_json (const json_t *obj, hms_policy_query_t *q)
{
    *q = (hms_policy_query_t){
        .src = json_string_value (json_object_get (obj, "src")),
        .dst = json_string_value (json_object_get (obj, "dst")),
        .port = (int) json_integer_value (json_object_get (obj, "port")),
        .protocol = json_string_value (json_object_get (obj, "protocol")),
        .host = json_string_value (json_object_get (obj, "host")),
        .sni = json_string_value (json_object_get (obj, "sni")),
        .sni_pending = json_is_true (json_object_get (obj, "sni_pending")),
        .dst_pending = json_is_true (json_object_get (obj, "dst_pending")),
        .method = json_string_value (json_object_get (obj, "method")),
        .path = json_string_value (json_object_get (obj, "path")),
        .user = json_string_value (json_object_get (obj, "user")),
        .service = json_string_value (json_object_get (obj, "service")),
        .ns = json_string_value (json_object_get (obj, "namespace")),
    };
}

static json_t *s_str_or_null (const char *s)
{
    return s ? json_string (s) : json_null ();
}

json_t *hms_policy_decision_to_json (const hms_policy_decision_t *d)
{
    json_t *out = json_pack (
        "{s:s, s:o, s:o, s:o, s:o, s:b, s:I, s:s}", "action", hms_policy_action_name (d->action),
        "rule", s_str_or_null (d->rule), "route", s_str_or_null (d->route), "target",
        s_str_or_null (d->target), "retry_profile", s_str_or_null (d->retry_profile), "bypass",
        d->bypass, "ttl_ms", (json_int_t) d->ttl_ms, "reason", d->reason ? d->reason : "");
    if (d->needs_sni)
        json_object_set_new (out, "needs_sni", json_true ());
    if (d->needs_dst)
        json_object_set_new (out, "needs_dst", json_true ());
    return out;
}
