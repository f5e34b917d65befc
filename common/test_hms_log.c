/* Unit tests of hms_log's batching of access lines for event-loop threads: kept access
 * lines go out only on flush, any other line goes out at once after them (order holds), a
 * full batch goes out before the line that does not fit (no line is cut or lost), and a
 * thread that does not batch writes each line at once. stderr is pointed at a temporary
 * file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hms_log.h"

static char s_path[] = "/tmp/hermes-test-log-XXXXXX";
static int s_fd = -1, s_saved = -1;

/* The log's lines go to the file between s_capture and s_release; cmocka's own messages
 * (on stderr too) go to the real stderr, so asserts are made after s_release. */
static void s_capture (void)
{
    assert_int_equal (dup2 (s_fd, STDERR_FILENO), STDERR_FILENO);
}

static void s_release (void)
{
    assert_int_equal (dup2 (s_saved, STDERR_FILENO), STDERR_FILENO);
}

static int s_setup (void **state)
{
    s_fd = mkstemp (s_path);
    assert_true (s_fd >= 0);
    s_saved = dup (STDERR_FILENO);
    hms_log_set_name ("test");
    hms_log_set_level (HMS_LOG_INFO);
    return 0;
}

static int s_teardown (void **state)
{
    close (s_fd);
    close (s_saved);
    unlink (s_path);
    return 0;
}

/* What the log file holds now (caller frees). */
static char *s_read (void)
{
    FILE *f = fopen (s_path, "r");
    assert_non_null (f);
    fseek (f, 0, SEEK_END);
    long n = ftell (f);
    fseek (f, 0, SEEK_SET);
    char *buf = calloc (1, (size_t) n + 1);
    assert_int_equal (fread (buf, 1, (size_t) n, f), (size_t) n);
    fclose (f);
    return buf;
}

static void s_truncate (void)
{
    assert_int_equal (ftruncate (s_fd, 0), 0);
    lseek (s_fd, 0, SEEK_SET);
}

static size_t s_count (const char *text, const char *what)
{
    size_t n = 0;
    for (const char *p = text; (p = strstr (p, what)); p += strlen (what))
        n++;
    return n;
}

static void test_kept_lines_go_out_on_flush_and_before_any_other_line (void **state)
{
    s_truncate ();
    s_capture ();
    hms_log_batch_begin (NULL, NULL);
    hms_access ("first flow=%d", 1);
    hms_access ("second flow=%d", 2);
    s_release ();
    char *got = s_read ();
    assert_string_equal (got, ""); /* kept */
    free (got);
    s_capture ();
    hms_info ("denied flow=%d", 3); /* not an access line: out at once, after the kept */
    s_release ();
    got = s_read ();
    char *a = strstr (got, "info test: first flow=1\n");
    char *b = strstr (got, "info test: second flow=2\n");
    char *c = strstr (got, "info test: denied flow=3\n");
    assert_true (a && b && c && a < b && b < c);
    assert_int_equal (s_count (got, "\n"), 3);
    free (got);
    s_capture ();
    hms_access ("third");
    s_release ();
    got = s_read ();
    assert_null (strstr (got, "third"));
    free (got);
    s_capture ();
    hms_warning ("something went wrong");
    hms_access ("fourth");
    hms_log_flush ();
    hms_log_batch_end ();
    s_release ();
    got = s_read ();
    a = strstr (got, "info test: third\n");
    b = strstr (got, "warning test: something went wrong\n");
    c = strstr (got, "info test: fourth\n");
    assert_true (a && b && c && a < b && b < c);
    assert_int_equal (s_count (got, "\n"), 6);
    free (got);
}

static void test_a_full_batch_goes_out_whole_and_nothing_is_lost (void **state)
{
    s_truncate ();
    char pad[1001];
    memset (pad, 'x', 1000);
    pad[1000] = 0;
    s_capture ();
    hms_log_batch_begin (NULL, NULL);
    /* about 1 KiB a line: several batches' worth */
    for (int i = 0; i < 100; i++)
        hms_access ("line=%03d %s", i, pad);
    s_release ();
    char *got = s_read ();
    size_t before = s_count (got, "\n");
    assert_true (before > 0 && before < 100); /* full batches went out, the rest is kept */
    free (got);
    s_capture ();
    hms_log_batch_end ();
    s_release ();
    got = s_read ();
    assert_int_equal (s_count (got, "\n"), 100);
    /* whole lines, in order */
    const char *p = got;
    for (int i = 0; i < 100; i++) {
        char want[32];
        snprintf (want, sizeof want, "line=%03d ", i);
        p = strstr (p, want);
        assert_non_null (p);
        const char *eol = strchr (p, '\n');
        assert_int_equal ((size_t) (eol - p), strlen (want) + 1000);
    }
    free (got);
}

static void s_count_kept (void *arg)
{
    (*(int *) arg)++;
}

static void test_the_loop_is_told_once_per_batch (void **state)
{
    int told = 0;
    s_truncate ();
    s_capture ();
    hms_log_batch_begin (s_count_kept, &told);
    hms_access ("one");
    hms_access ("two"); /* the batch was not empty: no second cue */
    int after_two = told;
    hms_info ("not kept"); /* written at once, with what was kept: the batch is empty again */
    hms_access ("three");
    int after_three = told;
    hms_log_flush ();
    hms_access ("four");
    int after_four = told;
    hms_log_batch_end ();
    s_release ();
    assert_int_equal (after_two, 1);
    assert_int_equal (after_three, 2);
    assert_int_equal (after_four, 3);
    char *got = s_read ();
    assert_int_equal (s_count (got, "\n"), 5);
    free (got);
}

static void *s_other_thread (void *arg)
{
    hms_access ("from a thread that does not batch");
    return NULL;
}

static void test_a_thread_that_does_not_batch_writes_at_once (void **state)
{
    s_truncate ();
    s_capture ();
    hms_log_batch_begin (NULL, NULL); /* this thread only */
    hms_access ("kept by the batching thread");
    pthread_t t;
    int rc = pthread_create (&t, NULL, s_other_thread, NULL);
    if (rc == 0)
        pthread_join (t, NULL);
    s_release ();
    assert_int_equal (rc, 0);
    char *got = s_read ();
    assert_non_null (strstr (got, "from a thread that does not batch\n"));
    assert_null (strstr (got, "kept by the batching thread"));
    free (got);
    s_capture ();
    hms_log_batch_end ();
    s_release ();
    got = s_read ();
    assert_non_null (strstr (got, "kept by the batching thread\n"));
    free (got);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_kept_lines_go_out_on_flush_and_before_any_other_line),
        cmocka_unit_test (test_a_full_batch_goes_out_whole_and_nothing_is_lost),
        cmocka_unit_test (test_a_thread_that_does_not_batch_writes_at_once),
        cmocka_unit_test (test_the_loop_is_told_once_per_batch),
    };
    return cmocka_run_group_tests (tests, s_setup, s_teardown);
}
