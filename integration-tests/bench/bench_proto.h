/* bench_proto: what hermes-pingpong tells hermes-bench-target at the start of a tunnel.
 *
 * The client's first 40 bytes on every connection (after the proxy's 200, if any) are this
 * header; the target then plays the role the header names:
 *   ECHO    echo every byte back until the client closes
 *   SINK    read a bytes, answer with 8 bytes (the count), then wait for the close
 *   SOURCE  send a bytes, then wait for the close
 *   RPC     read a bytes, send b bytes, read c bytes, send d bytes, then wait for the close
 *           (an HTTPS-like exchange: ClientHello / server flight / Finished + request /
 *           response)
 * Integers are in host order: both ends run on the same machine. */
#ifndef BENCH_PROTO_H_INCLUDED
#define BENCH_PROTO_H_INCLUDED

#include <stdint.h>

#define BENCH_MAGIC "HBN1"

enum { BENCH_ECHO = 1, BENCH_SINK = 2, BENCH_SOURCE = 3, BENCH_RPC = 4 };

typedef struct {
    char magic[4];
    uint32_t op;
    uint64_t a, b, c, d;
} bench_hdr_t;

_Static_assert(sizeof (bench_hdr_t) == 40, "bench_hdr_t is 40 bytes on the wire");

#endif
