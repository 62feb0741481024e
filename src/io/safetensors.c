/* Safetensors writer (atomic) and validating reader. F32 only.
 *
 * File: u64 little-endian L, L bytes of JSON header (padded with spaces so that
 * the data starts at a multiple of 8), then the raw tensor bytes (little-endian).
 * The writer lays tensors out back to back in the order given. The reader keeps
 * its own aligned copy of each tensor, so the pointers it hands out are valid
 * float pointers whatever the offsets in the file. */
#include "io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "kernels/common.h"

#define ST_MAX_HEADER 100000000ull  /* same limit as the reference implementation */
#define ST_MAX_INT 9007199254740992.0 /* 2^53: larger JSON numbers are not exact */

#if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && \
    __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define ST_BIG_ENDIAN 1
static void swap4(void *p, size_t n)
{
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++, b += 4) {
        unsigned char t0 = b[0], t1 = b[1];
        b[0] = b[3]; b[1] = b[2]; b[2] = t1; b[3] = t0;
    }
}
#else
#define ST_BIG_ENDIAN 0
#endif

/* ------------------------------------------------------------------ writer */

static cJSON *json_int(long long v)
{
    char s[32];
    snprintf(s, sizeof s, "%lld", v);
    return cJSON_CreateRaw(s);
}

/* Adds "name": {"dtype": "F32", "shape": [...], "data_offsets": [b, e]}. */
static int add_tensor_entry(cJSON *root, const pn_st_tensor *t, long long begin, long long end)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return -1;
    if (!cJSON_AddItemToObject(root, t->name, o)) {
        cJSON_Delete(o);
        return -1;
    }
    cJSON *shape = cJSON_CreateArray(), *offs = cJSON_CreateArray();
    int ok = cJSON_AddStringToObject(o, "dtype", "F32") != NULL;
    if (shape && !cJSON_AddItemToObject(o, "shape", shape)) { cJSON_Delete(shape); shape = NULL; }
    if (offs && !cJSON_AddItemToObject(o, "data_offsets", offs)) { cJSON_Delete(offs); offs = NULL; }
    if (!ok || !shape || !offs) return -1;
    for (int k = 0; k < t->ndim; k++) {
        cJSON *v = json_int((long long)t->shape[k]);
        if (!v || !cJSON_AddItemToArray(shape, v)) { cJSON_Delete(v); return -1; }
    }
    cJSON *b = json_int(begin);
    if (!b || !cJSON_AddItemToArray(offs, b)) { cJSON_Delete(b); return -1; }
    cJSON *e = json_int(end);
    if (!e || !cJSON_AddItemToArray(offs, e)) { cJSON_Delete(e); return -1; }
    return 0;
}

static int write_all(FILE *fp, const void *p, size_t n)
{
    return fwrite(p, 1, n, fp) == n ? 0 : -1;
}

static int write_floats(FILE *fp, const float *x, size_t n)
{
    if (n == 0) return 0; /* x may be NULL */
#if ST_BIG_ENDIAN
    float buf[1024];
    for (size_t i = 0; i < n;) {
        size_t m = n - i < 1024 ? n - i : 1024;
        memcpy(buf, x + i, m * sizeof(float));
        swap4(buf, m);
        if (fwrite(buf, sizeof(float), m, fp) != m) return -1;
        i += m;
    }
    return 0;
#else
    return fwrite(x, sizeof(float), n, fp) == n ? 0 : -1;
#endif
}

/* fsync of the directory holding path, so that the rename itself is durable. */
static int sync_dir(const char *path)
{
    size_t n = strlen(path);
    char *dir = malloc(n + 2);
    if (!dir) return -1;
    memcpy(dir, path, n + 1);
    char *slash = strrchr(dir, '/');
    if (!slash) strcpy(dir, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    free(dir);
    if (fd < 0) return -1;
    int r = fsync(fd);
    /* Some file systems cannot fsync a directory; the rename is done anyway. */
    if (r != 0 && (errno == EINVAL || errno == ENOTSUP)) r = 0;
    int e = errno;
    close(fd);
    errno = e;
    return r;
}

/* Test hook (crash-safety test, tests/test_crash.c): PROXYNORM_TEST_SAVE_DELAY_MS=N
 * sleeps N ms in the middle of a checkpoint write -- the header written and flushed
 * to the temporary file, the tensors not yet -- widening the window in which a
 * kill -9 lands inside a write (and leaves a truncated file). */
static void test_save_delay(void)
{
    const char *v = getenv("PROXYNORM_TEST_SAVE_DELAY_MS");
    if (!v || !*v) return;
    long ms = strtol(v, NULL, 10);
    if (ms <= 0 || ms > 60000) return;
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

int pn_safetensors_write(const char *path, const pn_st_tensor *tensors, int ntensors,
                         const pn_st_meta *meta, int nmeta)
{
    PN_CHECK_PTR(path);
    PN_CHECK(ntensors >= 0 && nmeta >= 0, "%s: negative count", __func__);
    PN_CHECK(ntensors == 0 || tensors, "%s: tensors is NULL", __func__);
    PN_CHECK(nmeta == 0 || meta, "%s: meta is NULL", __func__);
    long long total = 0;
    for (int i = 0; i < ntensors; i++) {
        const pn_st_tensor *t = &tensors[i];
        PN_CHECK(t->name && t->name[0], "%s: tensor %d has no name", __func__, i);
        PN_CHECK(strcmp(t->name, "__metadata__") != 0, "%s: '__metadata__' is reserved",
                 __func__);
        PN_CHECK(t->ndim >= 0 && t->ndim <= PN_ST_MAX_DIMS, "%s: tensor '%s': ndim %d not in "
                 "[0, %d]", __func__, t->name, t->ndim, PN_ST_MAX_DIMS);
        long long numel = 1;
        for (int k = 0; k < t->ndim; k++) {
            PN_CHECK(t->shape[k] >= 0 && (double)t->shape[k] <= ST_MAX_INT,
                     "%s: tensor '%s': bad dimension %lld", __func__, t->name,
                     (long long)t->shape[k]);
            PN_CHECK(t->shape[k] == 0 || numel <= LLONG_MAX / 4 / t->shape[k],
                     "%s: tensor '%s' too large", __func__, t->name);
            numel *= t->shape[k];
        }
        PN_CHECK(numel == 0 || t->data, "%s: tensor '%s' has no data", __func__, t->name);
        PN_CHECK(total <= LLONG_MAX - 4 * numel, "%s: tensors too large", __func__);
        total += 4 * numel;
        for (int j = 0; j < i; j++)
            PN_CHECK(strcmp(tensors[j].name, t->name) != 0, "%s: duplicate tensor name '%s'",
                     __func__, t->name);
    }
    for (int i = 0; i < nmeta; i++) {
        PN_CHECK(meta[i].key && meta[i].value, "%s: metadata %d has a NULL key or value",
                 __func__, i);
        for (int j = 0; j < i; j++)
            PN_CHECK(strcmp(meta[j].key, meta[i].key) != 0, "%s: duplicate metadata key '%s'",
                     __func__, meta[i].key);
    }

    /* Header. */
    int rc = PN_OK;
    char *json = NULL, *tmp = NULL;
    FILE *fp = NULL;
    cJSON *root = cJSON_CreateObject();
    if (!root) return pn_error(PN_ERR_NOMEM, "%s: out of memory", __func__);
    if (nmeta > 0) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; m && i < nmeta; i++)
            if (!cJSON_AddStringToObject(m, meta[i].key, meta[i].value)) m = NULL;
        if (!m) {
            rc = pn_error(PN_ERR_NOMEM, "%s: out of memory", __func__);
            goto out;
        }
    }
    long long off = 0;
    for (int i = 0; i < ntensors; i++) {
        const pn_st_tensor *t = &tensors[i];
        long long numel = 1;
        for (int k = 0; k < t->ndim; k++) numel *= t->shape[k];
        if (add_tensor_entry(root, t, off, off + 4 * numel) != 0) {
            rc = pn_error(PN_ERR_NOMEM, "%s: out of memory", __func__);
            goto out;
        }
        off += 4 * numel;
    }
    json = cJSON_PrintUnformatted(root);
    if (!json) {
        rc = pn_error(PN_ERR_NOMEM, "%s: out of memory", __func__);
        goto out;
    }
    size_t jlen = strlen(json), hlen = (jlen + 7) / 8 * 8;
    unsigned char len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (unsigned char)((unsigned long long)hlen >> (8 * k));

    /* PATH.tmp, written and synced, then renamed over PATH. */
    size_t plen = strlen(path);
    tmp = malloc(plen + 5);
    if (!tmp) {
        rc = pn_error(PN_ERR_NOMEM, "%s: out of memory", __func__);
        goto out;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    fp = fopen(tmp, "wb");
    if (!fp) {
        rc = pn_error(PN_ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        goto out;
    }
    static const char spaces[8] = { ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ' };
    int bad = write_all(fp, len8, 8) || write_all(fp, json, jlen) ||
              write_all(fp, spaces, hlen - jlen);
    if (!bad && getenv("PROXYNORM_TEST_SAVE_DELAY_MS")) {
        bad = fflush(fp) != 0; /* the header alone is in the file while the hook sleeps */
        if (!bad) test_save_delay();
    }
    for (int i = 0; !bad && i < ntensors; i++) {
        const pn_st_tensor *t = &tensors[i];
        size_t numel = 1;
        for (int k = 0; k < t->ndim; k++) numel *= (size_t)t->shape[k];
        bad = write_floats(fp, t->data, numel);
    }
    if (bad || fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        rc = pn_error(PN_ERR_IO, "%s: writing %s failed: %s", path, tmp, strerror(errno));
        goto out;
    }
    FILE *f2 = fp;
    fp = NULL;
    if (fclose(f2) != 0) {
        rc = pn_error(PN_ERR_IO, "%s: closing %s failed: %s", path, tmp, strerror(errno));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        rc = pn_error(PN_ERR_IO, "%s: renaming %s over it failed: %s", path, tmp, strerror(errno));
        goto out;
    }
    free(tmp);
    tmp = NULL; /* renamed: nothing to remove any more */
    if (sync_dir(path) != 0)
        rc = pn_error(PN_ERR_IO, "%s: written, but syncing its directory failed: %s", path,
                      strerror(errno));

out:
    if (fp) fclose(fp);
    if (tmp) {
        if (rc != PN_OK) unlink(tmp);
        free(tmp);
    }
    cJSON_free(json);
    cJSON_Delete(root);
    return rc;
}

/* ------------------------------------------------------------------ reader */

typedef struct {
    char *name;
    int ndim;
    int64_t shape[PN_ST_MAX_DIMS];
    uint64_t begin, end; /* offsets in the file's data area */
    float *data;         /* into store */
} st_entry;

struct pn_st_file {
    int n, nmeta;
    st_entry *t;
    pn_st_meta *meta; /* owned strings */
    float *store;
};

void pn_safetensors_close(pn_st_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->t[i].name);
    for (int i = 0; i < f->nmeta; i++) {
        free((char *)f->meta[i].key);
        free((char *)f->meta[i].value);
    }
    free(f->t);
    free(f->meta);
    free(f->store);
    free(f);
}

static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* A JSON number that is an exact non-negative integer. */
static int json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return 0;
    double x = v->valuedouble;
    if (!isfinite(x) || x < 0 || x > ST_MAX_INT || floor(x) != x) return 0;
    *out = (uint64_t)x;
    return 1;
}

static int cmp_begin(const void *a, const void *b)
{
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp((*(const st_entry *const *)a)->name, (*(const st_entry *const *)b)->name);
}

/* Validates the parsed header against a data area of dsize bytes and fills f. */
static int parse_header(pn_st_file *f, const cJSON *root, uint64_t dsize, const char *path)
{
    if (!cJSON_IsObject(root))
        return pn_error(PN_ERR_FORMAT, "%s: header is not a JSON object", path);
    int count = cJSON_GetArraySize(root);
    f->t = calloc(count > 0 ? (size_t)count : 1, sizeof *f->t);
    if (!f->t) return pn_error(PN_ERR_NOMEM, "%s: out of memory", path);
    int seen_meta = 0;
    for (const cJSON *it = root->child; it; it = it->next) {
        const char *key = it->string ? it->string : "";
        if (strcmp(key, "__metadata__") == 0) {
            if (seen_meta)
                return pn_error(PN_ERR_FORMAT, "%s: duplicate __metadata__", path);
            seen_meta = 1;
            if (!cJSON_IsObject(it))
                return pn_error(PN_ERR_FORMAT, "%s: __metadata__ is not an object", path);
            int m = cJSON_GetArraySize(it);
            f->meta = calloc(m > 0 ? (size_t)m : 1, sizeof *f->meta);
            if (!f->meta) return pn_error(PN_ERR_NOMEM, "%s: out of memory", path);
            for (const cJSON *kv = it->child; kv; kv = kv->next) {
                if (!cJSON_IsString(kv))
                    return pn_error(PN_ERR_FORMAT, "%s: metadata value of '%s' is not a string",
                                    path, kv->string ? kv->string : "");
                for (int j = 0; j < f->nmeta; j++)
                    if (strcmp(f->meta[j].key, kv->string) == 0)
                        return pn_error(PN_ERR_FORMAT, "%s: duplicate metadata key '%s'", path,
                                        kv->string);
                pn_st_meta *e = &f->meta[f->nmeta];
                e->key = dupstr(kv->string ? kv->string : "");
                e->value = dupstr(kv->valuestring);
                if (e->key && e->value) {
                    f->nmeta++;
                } else {
                    free((char *)e->key);
                    free((char *)e->value);
                    e->key = e->value = NULL;
                    return pn_error(PN_ERR_NOMEM, "%s: out of memory", path);
                }
            }
            continue;
        }

        if (!cJSON_IsObject(it))
            return pn_error(PN_ERR_FORMAT, "%s: entry '%s' is not an object", path, key);
        const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(it, "shape");
        const cJSON *offs = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(dtype))
            return pn_error(PN_ERR_FORMAT, "%s: tensor '%s': missing dtype", path, key);
        if (strcmp(dtype->valuestring, "F32") != 0)
            return pn_error(PN_ERR_FORMAT, "%s: tensor '%s': unsupported dtype '%s' (only F32)",
                            path, key, dtype->valuestring);
        if (!cJSON_IsArray(shape))
            return pn_error(PN_ERR_FORMAT, "%s: tensor '%s': missing shape array", path, key);
        int nd = cJSON_GetArraySize(shape);
        if (nd > PN_ST_MAX_DIMS)
            return pn_error(PN_ERR_FORMAT, "%s: tensor '%s': %d dimensions (at most %d)", path,
                            key, nd, PN_ST_MAX_DIMS);
        st_entry *e = &f->t[f->n];
        e->ndim = nd;
        uint64_t numel = 1;
        int k = 0;
        for (const cJSON *v = shape->child; v; v = v->next, k++) {
            uint64_t dim;
            if (!json_uint(v, &dim))
                return pn_error(PN_ERR_FORMAT, "%s: tensor '%s': shape[%d] is not a "
                                "non-negative integer", path, key, k);
            if (dim != 0 && numel > (UINT64_MAX / 4) / dim)
                return pn_error(PN_ERR_FORMAT, "%s: tensor '%s': shape overflows", path, key);
            numel *= dim;
            e->shape[k] = (int64_t)dim;
        }
        uint64_t b, en;
        if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
            !json_uint(offs->child, &b) || !json_uint(offs->child->next, &en))
            return pn_error(PN_ERR_FORMAT, "%s: tensor '%s': data_offsets must be two "
                            "non-negative integers", path, key);
        if (b > en || en > dsize)
            return pn_error(PN_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] outside "
                            "the %llu-byte data area", path, key, (unsigned long long)b,
                            (unsigned long long)en, (unsigned long long)dsize);
        if (en - b != 4 * numel)
            return pn_error(PN_ERR_FORMAT, "%s: tensor '%s': %llu bytes for %llu F32 values "
                            "(size mismatch)", path, key, (unsigned long long)(en - b),
                            (unsigned long long)numel);
        e->begin = b;
        e->end = en;
        e->name = dupstr(key);
        if (!e->name) return pn_error(PN_ERR_NOMEM, "%s: out of memory", path);
        f->n++;
    }

    /* Overlaps and duplicate names, on sorted views. */
    if (f->n > 1) {
        st_entry **v = malloc((size_t)f->n * sizeof *v);
        if (!v) return pn_error(PN_ERR_NOMEM, "%s: out of memory", path);
        for (int i = 0; i < f->n; i++) v[i] = &f->t[i];
        qsort(v, (size_t)f->n, sizeof *v, cmp_name);
        for (int i = 1; i < f->n; i++)
            if (strcmp(v[i - 1]->name, v[i]->name) == 0) {
                int r = pn_error(PN_ERR_FORMAT, "%s: duplicate tensor '%s'", path, v[i]->name);
                free(v);
                return r;
            }
        qsort(v, (size_t)f->n, sizeof *v, cmp_begin);
        const st_entry *prev = NULL;
        for (int i = 0; i < f->n; i++) {
            if (v[i]->begin == v[i]->end) continue; /* empty tensors overlap nothing */
            if (prev && v[i]->begin < prev->end) {
                int r = pn_error(PN_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap", path,
                                 prev->name, v[i]->name);
                free(v);
                return r;
            }
            prev = v[i];
        }
        free(v);
    }
    return PN_OK;
}

/* Parses a whole file held in buf (size bytes); path names it in messages. */
static int st_parse(pn_st_file **out, const unsigned char *buf, uint64_t size, const char *path)
{
    char *hdr = NULL;
    cJSON *root = NULL;
    pn_st_file *f = NULL;
    int rc;

    if (size < 8)
        return pn_error(PN_ERR_FORMAT, "%s: too short for a safetensors file (%llu bytes)",
                        path, (unsigned long long)size);
    uint64_t hlen = 0;
    for (int k = 0; k < 8; k++) hlen |= (uint64_t)buf[k] << (8 * k);
    if (hlen > size - 8 || hlen > ST_MAX_HEADER) {
        rc = pn_error(PN_ERR_FORMAT, "%s: header length %llu exceeds the file (%llu bytes) or "
                      "the %llu-byte limit (truncated or not a safetensors file)", path,
                      (unsigned long long)hlen, (unsigned long long)size, ST_MAX_HEADER);
        goto fail;
    }
    hdr = malloc((size_t)hlen + 1);
    if (!hdr) {
        rc = pn_error(PN_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    memcpy(hdr, buf + 8, (size_t)hlen);
    hdr[hlen] = '\0';
    if (memchr(hdr, '\0', (size_t)hlen)) {
        rc = pn_error(PN_ERR_FORMAT, "%s: header contains a NUL byte", path);
        goto fail;
    }
    const char *end = NULL;
    root = cJSON_ParseWithOpts(hdr, &end, 1);
    if (!root) {
        rc = pn_error(PN_ERR_FORMAT, "%s: header is not valid JSON (error at byte %ld)", path,
                      end ? (long)(end - hdr) : -1L);
        goto fail;
    }

    f = calloc(1, sizeof *f);
    if (!f) {
        rc = pn_error(PN_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    const unsigned char *data = buf + 8 + hlen;
    rc = parse_header(f, root, size - 8 - hlen, path);
    if (rc) goto fail;

    /* Aligned copies, back to back. */
    size_t total = 0;
    for (int i = 0; i < f->n; i++) total += (size_t)(f->t[i].end - f->t[i].begin);
    f->store = malloc(total ? total : 1);
    if (!f->store) {
        rc = pn_error(PN_ERR_NOMEM, "%s: out of memory for %zu bytes of tensors", path, total);
        goto fail;
    }
    size_t at = 0;
    for (int i = 0; i < f->n; i++) {
        size_t nb = (size_t)(f->t[i].end - f->t[i].begin);
        f->t[i].data = f->store + at / 4;
        if (nb) memcpy(f->t[i].data, data + f->t[i].begin, nb);
#if ST_BIG_ENDIAN
        swap4(f->t[i].data, nb / 4);
#endif
        at += nb;
    }

    cJSON_Delete(root);
    free(hdr);
    *out = f;
    return PN_OK;

fail:
    pn_safetensors_close(f);
    cJSON_Delete(root);
    free(hdr);
    return rc;
}

int pn_safetensors_read_mem(pn_st_file **out, const void *buf, size_t size, const char *name)
{
    PN_CHECK_PTR(out);
    *out = NULL;
    PN_CHECK(buf || size == 0, "%s: buf is NULL", __func__);
    return st_parse(out, buf, (uint64_t)size, name ? name : "(memory)");
}

int pn_safetensors_read(pn_st_file **out, const char *path)
{
    PN_CHECK_PTR(out);
    *out = NULL;
    PN_CHECK_PTR(path);

    FILE *fp = fopen(path, "rb");
    if (!fp) return pn_error(PN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        int rc = pn_error(PN_ERR_IO, "%s: not a regular file", path);
        fclose(fp);
        return rc;
    }
    if (st.st_size < 8) {
        fclose(fp);
        return pn_error(PN_ERR_FORMAT, "%s: too short for a safetensors file (%lld bytes)",
                        path, (long long)st.st_size);
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size > SIZE_MAX) {
        fclose(fp);
        return pn_error(PN_ERR_NOMEM, "%s: file too large", path);
    }
    unsigned char *buf = malloc((size_t)size);
    if (!buf) {
        fclose(fp);
        return pn_error(PN_ERR_NOMEM, "%s: out of memory for %llu bytes", path,
                        (unsigned long long)size);
    }
    size_t got = fread(buf, 1, (size_t)size, fp);
    int ioerr = ferror(fp);
    fclose(fp);
    int rc;
    if (got != size)
        rc = pn_error(ioerr ? PN_ERR_IO : PN_ERR_FORMAT, "%s: read %zu of %llu bytes", path, got,
                      (unsigned long long)size);
    else
        rc = st_parse(out, buf, size, path);
    free(buf);
    return rc;
}

int pn_safetensors_get(const pn_st_file *f, const char *name, int *ndim,
                       int64_t shape[PN_ST_MAX_DIMS], const float **data)
{
    PN_CHECK_PTR(f);
    PN_CHECK_PTR(name);
    for (int i = 0; i < f->n; i++) {
        const st_entry *e = &f->t[i];
        if (strcmp(e->name, name) != 0) continue;
        if (ndim) *ndim = e->ndim;
        if (shape)
            for (int k = 0; k < PN_ST_MAX_DIMS; k++) shape[k] = k < e->ndim ? e->shape[k] : 0;
        if (data) *data = e->data;
        return PN_OK;
    }
    return pn_error(PN_ERR_FORMAT, "tensor '%s' not found in the file", name);
}

const char *pn_safetensors_meta(const pn_st_file *f, const char *key)
{
    if (!f || !key) return NULL;
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

int pn_safetensors_count(const pn_st_file *f) { return f ? f->n : 0; }

const char *pn_safetensors_name(const pn_st_file *f, int i)
{
    return (f && i >= 0 && i < f->n) ? f->t[i].name : NULL;
}
