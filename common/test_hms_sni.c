/* Unit tests of hms_sni: the server name of a real ClientHello that GnuTLS writes, fed
 * whole, byte by byte and over several records; hellos without a name; bytes that are not
 * TLS or are malformed, read without reading past what was given. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "hms_sni.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The first flight of a GnuTLS client asking for name (NULL: no server_name), as written
 * to its socket. Returns its length. */
static size_t s_client_hello (const char *name, uint8_t *out, size_t cap)
{
    int sv[2];
    assert_int_equal (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl (sv[0], F_SETFL, O_NONBLOCK);
    gnutls_session_t s;
    gnutls_certificate_credentials_t cred;
    assert_int_equal (gnutls_certificate_allocate_credentials (&cred), 0);
    assert_int_equal (gnutls_init (&s, GNUTLS_CLIENT | GNUTLS_NONBLOCK), 0);
    assert_int_equal (gnutls_set_default_priority (s), 0);
    gnutls_credentials_set (s, GNUTLS_CRD_CERTIFICATE, cred);
    if (name)
        assert_int_equal (gnutls_server_name_set (s, GNUTLS_NAME_DNS, name, strlen (name)), 0);
    gnutls_transport_set_int (s, sv[0]);
    assert_int_equal (gnutls_handshake (s), GNUTLS_E_AGAIN); /* the hello is out */
    ssize_t n = read (sv[1], out, cap);
    assert_true (n > 0);
    gnutls_deinit (s);
    gnutls_certificate_free_credentials (cred);
    close (sv[0]);
    close (sv[1]);
    return (size_t) n;
}

static hms_sni_result_t s_parse (const uint8_t *p, size_t n, char *name, char *why)
{
    return hms_sni_parse (p, n, name, 256, why, 200);
}

static void test_name_of_a_real_client_hello (void **state)
{
    uint8_t hello[8192];
    size_t n = s_client_hello ("WWW.Example.com", hello, sizeof hello);
    char name[256], why[200];
    assert_int_equal (s_parse (hello, n, name, why), HMS_SNI_FOUND);
    assert_string_equal (name, "www.example.com");
    /* any shorter prefix asks for more, and reads nothing past it (ASan) */
    for (size_t k = 0; k < n; k++) {
        uint8_t *cut = malloc (k ? k : 1);
        memcpy (cut, hello, k);
        assert_int_equal (s_parse (cut, k, name, why), HMS_SNI_MORE);
        free (cut);
    }
    /* bytes after the hello (a client that sends more) change nothing */
    memcpy (hello + n, "\x17\x03\x03\x00\x01X", 6);
    assert_int_equal (s_parse (hello, n + 6, name, why), HMS_SNI_FOUND);
}

static void test_a_hello_over_two_records (void **state)
{
    uint8_t hello[8192], split[8300];
    size_t n = s_client_hello ("split.example", hello, sizeof hello);
    size_t body = n - 5, first = body / 3;
    /* record 1: the first third of the handshake bytes; record 2: the rest */
    memcpy (split, hello, 5);
    split[3] = (uint8_t) (first >> 8);
    split[4] = (uint8_t) first;
    memcpy (split + 5, hello + 5, first);
    uint8_t *r2 = split + 5 + first;
    memcpy (r2, hello, 5);
    r2[3] = (uint8_t) ((body - first) >> 8);
    r2[4] = (uint8_t) (body - first);
    memcpy (r2 + 5, hello + 5 + first, body - first);
    size_t total = n + 5;
    char name[256], why[200];
    assert_int_equal (s_parse (split, total, name, why), HMS_SNI_FOUND);
    assert_string_equal (name, "split.example");
    for (size_t k = 0; k < total; k++)
        assert_int_equal (s_parse (split, k, name, why), HMS_SNI_MORE);
}

static void test_a_hello_without_a_name (void **state)
{
    uint8_t hello[8192];
    size_t n = s_client_hello (NULL, hello, sizeof hello);
    char name[256], why[200];
    assert_int_equal (s_parse (hello, n, name, why), HMS_SNI_NONE);
    assert_non_null (strstr (why, "without a server name"));
}

static void test_what_is_not_a_client_hello (void **state)
{
    char name[256], why[200];
    const char *get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal (s_parse ((const uint8_t *) get, strlen (get), name, why), HMS_SNI_NOT_TLS);
    assert_string_equal (why, "not a TLS handshake");
    /* a handshake record that is not a ClientHello (a ServerHello) */
    const uint8_t server_hello[] = {22, 3, 3, 0, 4, 2, 0, 0, 0};
    assert_int_equal (s_parse (server_hello, sizeof server_hello, name, why), HMS_SNI_NOT_TLS);
    /* a record of length 0, and one longer than TLS allows */
    const uint8_t empty[] = {22, 3, 1, 0, 0};
    assert_int_equal (s_parse (empty, sizeof empty, name, why), HMS_SNI_NOT_TLS);
    const uint8_t huge[] = {22, 3, 1, 0xff, 0xff, 1};
    assert_int_equal (s_parse (huge, sizeof huge, name, why), HMS_SNI_NOT_TLS);
    /* an alert where the rest of the hello should be */
    uint8_t hello[8192];
    size_t n = s_client_hello ("x.example", hello, sizeof hello);
    hello[3] = 0;
    hello[4] = 10;
    memcpy (hello + 15, "\x15\x03\x03\x00\x02\x02\x28", 7);
    assert_int_equal (s_parse (hello, 22, name, why), HMS_SNI_NOT_TLS);
    (void) n;
}

/* A hello whose lengths lie: a vector longer than the message, a name with a byte a host
 * name cannot have, a name longer than the caller's room. */
static void test_malformed_hellos (void **state)
{
    uint8_t hello[8192];
    size_t n = s_client_hello ("abc.example", hello, sizeof hello);
    char name[256], why[200];
    uint8_t *at = NULL;
    for (size_t i = 0; i + 11 <= n; i++)
        if (memcmp (hello + i, "abc.example", 11) == 0)
            at = hello + i;
    assert_non_null (at);
    uint8_t bad[8192];
    memcpy (bad, hello, n);
    bad[at - hello] = '/';
    assert_int_equal (s_parse (bad, n, name, why), HMS_SNI_NOT_TLS);
    assert_non_null (strstr (why, "character"));
    /* the name's length says more than the extension holds */
    memcpy (bad, hello, n);
    bad[at - hello - 1] = 200;
    assert_int_equal (s_parse (bad, n, name, why), HMS_SNI_NOT_TLS);
    /* room for 5 characters only */
    assert_int_equal (hms_sni_parse (hello, n, name, 6, why, sizeof why), HMS_SNI_NOT_TLS);
    /* the handshake says it is longer than the record, and the next record is not one */
    memcpy (bad, hello, n);
    size_t m = ((size_t) bad[6] << 16 | (size_t) bad[7] << 8 | bad[8]) + 1;
    bad[6] = (uint8_t) (m >> 16);
    bad[7] = (uint8_t) (m >> 8);
    bad[8] = (uint8_t) m;
    bad[n] = 23;
    assert_int_equal (s_parse (bad, n + 1, name, why), HMS_SNI_NOT_TLS);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_name_of_a_real_client_hello),
        cmocka_unit_test (test_a_hello_over_two_records),
        cmocka_unit_test (test_a_hello_without_a_name),
        cmocka_unit_test (test_what_is_not_a_client_hello),
        cmocka_unit_test (test_malformed_hellos),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
