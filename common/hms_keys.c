/* hms_keys: CURVE keypair generation and loading, and the authorised-key keyring. */
#include "hms_keys.h"
#include "hms_alloc.h"
#include "hms_log.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

const char *const hms_keys_identities[] = {"controller", "ingress", "relay", "policy", "retry",
                                           "ndn",        "bypass",  "admin", NULL};

static const char *s_role_of (const char *name)
{
    if (strcmp (name, "admin") == 0)
        return "admin";
    if (strcmp (name, "controller") == 0)
        return "controller";
    return "service";
}

int hms_keys_generate (const char *dir, char *err, size_t errlen)
{
    char path[1024];
    snprintf (path, sizeof path, "%s/authorized", dir);
    if (zsys_dir_create ("%s", path) != 0) {
        snprintf (err, errlen, "cannot create key folder %s: %s", path, strerror (errno));
        return -1;
    }
    chmod (dir, 0700);
    for (int i = 0; hms_keys_identities[i]; i++) {
        const char *name = hms_keys_identities[i];
        char secret[1024], pub[1024], auth[1024];
        snprintf (pub, sizeof pub, "%s/%s.cert", dir, name);
        snprintf (secret, sizeof secret, "%s/%s.cert_secret", dir, name);
        snprintf (auth, sizeof auth, "%s/authorized/%s.cert", dir, name);
        zcert_t *cert = zcert_load (pub);
        if (!cert || !zsys_file_exists (secret)) {
            zcert_destroy (&cert);
            cert = zcert_new ();
            zcert_set_meta (cert, "name", "%s", name);
            zcert_set_meta (cert, "role", "%s", s_role_of (name));
            if (zcert_save (cert, pub) != 0) {
                snprintf (err, errlen, "cannot write key %s: %s", pub, strerror (errno));
                zcert_destroy (&cert);
                return -1;
            }
            chmod (secret, 0600);
        }
        if (!zsys_file_exists (auth) && zcert_save_public (cert, auth) != 0) {
            snprintf (err, errlen, "cannot write key %s: %s", auth, strerror (errno));
            zcert_destroy (&cert);
            return -1;
        }
        zcert_destroy (&cert);
    }
    return 0;
}

zcert_t *hms_keys_load_secret (const char *dir, const char *name, char *err, size_t errlen)
{
    char path[1024];
    snprintf (path, sizeof path, "%s/%s.cert", dir, name);
    char secret[1100];
    snprintf (secret, sizeof secret, "%s_secret", path);
    if (!zsys_file_exists (secret)) {
        snprintf (err, errlen,
                  "no secret key %s (create keys with 'hermesctl keygen --dir %s' or set "
                  "HERMES_KEYS_DIR)",
                  secret, dir);
        return NULL;
    }
    zcert_t *cert = zcert_load (path);
    if (!cert)
        snprintf (err, errlen, "cannot read key %s (corrupt? regenerate it)", secret);
    return cert;
}

int hms_keys_load_public (const char *dir, const char *name, char out[41], char *err, size_t errlen)
{
    char path[1024];
    snprintf (path, sizeof path, "%s/%s.cert", dir, name);
    zcert_t *cert = zcert_load (path);
    if (!cert) {
        snprintf (err, errlen, "cannot read public key %s (create keys with 'hermesctl keygen')",
                  path);
        return -1;
    }
    snprintf (out, 41, "%s", zcert_public_txt (cert));
    zcert_destroy (&cert);
    return 0;
}

typedef struct {
    char key[41];
    char *name;
    char *role;
} s_key_t;

struct hms_keyring {
    char *dir;
    s_key_t *keys;
    size_t count;
    struct timespec mtime;
};

static void s_keyring_clear (hms_keyring_t *self)
{
    for (size_t i = 0; i < self->count; i++) {
        free (self->keys[i].name);
        free (self->keys[i].role);
    }
    free (self->keys);
    self->keys = NULL;
    self->count = 0;
}

static int s_keyring_load (hms_keyring_t *self, char *err, size_t errlen)
{
    DIR *d = opendir (self->dir);
    if (!d) {
        snprintf (err, errlen, "cannot read authorised keys in %s: %s", self->dir,
                  strerror (errno));
        return -1;
    }
    struct stat st;
    if (stat (self->dir, &st) == 0)
        self->mtime = st.st_mtim;
    s_keyring_clear (self);
    struct dirent *de;
    while ((de = readdir (d))) {
        size_t n = strlen (de->d_name);
        if (n < 6 || strcmp (de->d_name + n - 5, ".cert") != 0)
            continue;
        char path[2048];
        snprintf (path, sizeof path, "%s/%s", self->dir, de->d_name);
        zcert_t *cert = zcert_load (path);
        if (!cert) {
            hms_warning ("ignoring unreadable authorised key file=%s", path);
            continue;
        }
        self->keys = hms_realloc (self->keys, (self->count + 1) * sizeof (s_key_t));
        s_key_t *k = &self->keys[self->count++];
        snprintf (k->key, sizeof k->key, "%s", zcert_public_txt (cert));
        const char *name = zcert_meta (cert, "name");
        const char *role = zcert_meta (cert, "role");
        k->name = hms_strdup (name ? name : de->d_name);
        k->role = hms_strdup (role ? role : "service");
        zcert_destroy (&cert);
    }
    closedir (d);
    return 0;
}

hms_keyring_t *hms_keyring_new (const char *dir, char *err, size_t errlen)
{
    hms_keyring_t *self = hms_alloc (sizeof *self);
    self->dir = hms_sprintf ("%s/authorized", dir);
    if (s_keyring_load (self, err, errlen)) {
        hms_keyring_destroy (&self);
        return NULL;
    }
    return self;
}

void hms_keyring_destroy (hms_keyring_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    s_keyring_clear (*self_p);
    free ((*self_p)->dir);
    free (*self_p);
    *self_p = NULL;
}

static const s_key_t *s_find (const hms_keyring_t *self, const char *key_txt)
{
    for (size_t i = 0; i < self->count; i++)
        if (strcmp (self->keys[i].key, key_txt) == 0)
            return &self->keys[i];
    return NULL;
}

bool hms_keyring_lookup (hms_keyring_t *self, const char *key_txt, const char **name,
                         const char **role)
{
    const s_key_t *k = s_find (self, key_txt);
    if (!k) {
        struct stat st;
        if (stat (self->dir, &st) == 0 && (st.st_mtim.tv_sec != self->mtime.tv_sec ||
                                           st.st_mtim.tv_nsec != self->mtime.tv_nsec)) {
            char err[256];
            if (s_keyring_load (self, err, sizeof err) == 0)
                k = s_find (self, key_txt);
        }
    }
    if (!k)
        return false;
    if (name)
        *name = k->name;
    if (role)
        *role = k->role;
    return true;
}
