/* Safetensors: round trip, every malformed-file case, atomic writes.
 * Files go to a mkdtemp directory under /tmp that is removed at the end. If
 * /usr/bin/python3 exists, the written file is also checked with Python's json
 * module (and safetensors.numpy when installed); otherwise that check is skipped. */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "io/safetensors.h"
#include "kernels/common.h"

static char g_root[64];

static void path_in(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", g_root, name);
}

static int exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* ------------------------------------------------------------ round trip */

enum { NW = 4 * 3 * 3 * 3, NB = 4 };
static float g_w[NW], g_b[NB], g_s = 3.5f;

static void fill(void)
{
    harness_seed(42);
    harness_fill_normal(g_w, NW, 0, 1);
    harness_fill_normal(g_b, NB, 0, 1);
}

static const char *g_note = "quote \" backslash \\ newline \n tab \t \xc3\xbc\xc3\xb1\xc3\xaf";

static int write_sample(const char *path)
{
    pn_st_tensor t[4] = {
        { "conv.weight", 4, { 4, 3, 3, 3 }, g_w },
        { "bias", 1, { NB }, g_b },
        { "scalar", 0, { 0 }, &g_s },
        { "empty", 2, { 0, 5 }, NULL },
    };
    pn_st_meta m[2] = { { "step", "123" }, { "note", g_note } };
    return pn_safetensors_write(path, t, 4, m, 2);
}

TEST(round_trip)
{
    char p[256], tmp[300];
    fill();
    path_in(p, sizeof p, "sample.safetensors");
    CHECK(write_sample(p) == PN_OK, "write: %s", pn_last_error());
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    CHECK(!exists(tmp), "tmp file left behind");

    /* Layout: 8-byte length, a header padded to a multiple of 8 with spaces. */
    FILE *fp = fopen(p, "rb");
    unsigned char raw[8];
    CHECK(fp && fread(raw, 1, 8, fp) == 8, "cannot read back");
    uint64_t hl = 0;
    for (int k = 0; k < 8; k++) hl |= (uint64_t)raw[k] << (8 * k);
    CHECK(hl % 8 == 0, "header length %llu not a multiple of 8", (unsigned long long)hl);
    char *hdr = calloc(hl + 1, 1);
    CHECK(fp && fread(hdr, 1, hl, fp) == hl, "short header");
    CHECK(hdr[0] == '{', "header starts with %c", hdr[0]);
    size_t last = strlen(hdr);
    while (last > 0 && hdr[last - 1] == ' ') last--;
    CHECK(last > 0 && hdr[last - 1] == '}' && hl - last < 8, "padding: '%s'", hdr);
    free(hdr);
    if (fp) fclose(fp);
    struct stat st;
    stat(p, &st);
    CHECK((uint64_t)st.st_size == 8 + hl + 4 * (NW + NB + 1), "file size %lld",
          (long long)st.st_size);

    pn_st_file *f = NULL;
    CHECK(pn_safetensors_read(&f, p) == PN_OK, "read: %s", pn_last_error());
    if (!f) return;
    CHECK(pn_safetensors_count(f) == 4, "count %d", pn_safetensors_count(f));
    const char *names[4] = { "conv.weight", "bias", "scalar", "empty" };
    for (int i = 0; i < 4; i++)
        CHECK(pn_safetensors_name(f, i) && strcmp(pn_safetensors_name(f, i), names[i]) == 0,
              "name %d", i);
    CHECK(pn_safetensors_name(f, 4) == NULL && pn_safetensors_name(f, -1) == NULL,
          "name out of range");

    int nd;
    int64_t sh[PN_ST_MAX_DIMS];
    const float *d;
    CHECK(pn_safetensors_get(f, "conv.weight", &nd, sh, &d) == PN_OK, "%s", pn_last_error());
    CHECK(nd == 4 && sh[0] == 4 && sh[1] == 3 && sh[2] == 3 && sh[3] == 3 && sh[4] == 0,
          "shape");
    CHECK(((uintptr_t)d % sizeof(float)) == 0, "data not float-aligned");
    CHECK(memcmp(d, g_w, sizeof g_w) == 0, "weights differ");
    CHECK(pn_safetensors_get(f, "bias", &nd, sh, &d) == PN_OK && nd == 1 && sh[0] == NB &&
          memcmp(d, g_b, sizeof g_b) == 0, "bias");
    CHECK(pn_safetensors_get(f, "scalar", &nd, sh, &d) == PN_OK && nd == 0 && d[0] == 3.5f,
          "scalar");
    CHECK(pn_safetensors_get(f, "empty", &nd, sh, NULL) == PN_OK && nd == 2 && sh[0] == 0 &&
          sh[1] == 5, "empty tensor");
    CHECK(pn_safetensors_get(f, "bias", NULL, NULL, NULL) == PN_OK, "optional outputs");

    CHECK(pn_safetensors_meta(f, "step") && strcmp(pn_safetensors_meta(f, "step"), "123") == 0,
          "meta step");
    CHECK(pn_safetensors_meta(f, "note") && strcmp(pn_safetensors_meta(f, "note"), g_note) == 0,
          "meta note with escapes");
    CHECK(pn_safetensors_meta(f, "nope") == NULL, "absent meta key");
    CHECK(pn_safetensors_meta(NULL, "step") == NULL, "NULL file");

    /* Missing tensor: a format error naming it. */
    pn_clear_error();
    CHECK(pn_safetensors_get(f, "conv.bias", &nd, sh, &d) == PN_ERR_FORMAT, "missing tensor");
    CHECK(strstr(pn_last_error(), "conv.bias") != NULL, "message: %s", pn_last_error());
    CHECK(pn_safetensors_get(NULL, "bias", &nd, sh, &d) == PN_ERR_ARG, "NULL file");
    pn_safetensors_close(f);
    pn_safetensors_close(NULL);

    /* No metadata, no tensors: still a valid file. */
    path_in(p, sizeof p, "empty.safetensors");
    CHECK(pn_safetensors_write(p, NULL, 0, NULL, 0) == PN_OK, "%s", pn_last_error());
    CHECK(pn_safetensors_read(&f, p) == PN_OK, "%s", pn_last_error());
    CHECK(f && pn_safetensors_count(f) == 0 && pn_safetensors_meta(f, "step") == NULL, "empty");
    pn_safetensors_close(f);
}

TEST(python_json_check)
{
    if (access("/usr/bin/python3", X_OK) != 0) {
        printf("note: /usr/bin/python3 absent, JSON check skipped\n");
        return;
    }
    char p[256], cmd[2048];
    fill();
    path_in(p, sizeof p, "py.safetensors");
    CHECK(write_sample(p) == PN_OK, "write: %s", pn_last_error());
    /* json module: header parses, offsets are contiguous and cover the data; the
     * floats decode to the written values. safetensors.numpy too if installed. */
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 - '%s' %.9g %.9g <<'EOF'\n"
             "import json, struct, sys\n"
             "b = open(sys.argv[1], 'rb').read()\n"
             "n = struct.unpack('<Q', b[:8])[0]\n"
             "h = json.loads(b[8:8 + n].decode('utf-8'))\n"
             "assert n %% 8 == 0\n"
             "m = h.pop('__metadata__')\n"
             "assert m == {'step': '123', 'note': %s}, m\n"
             "w = h['conv.weight']\n"
             "assert w['dtype'] == 'F32' and w['shape'] == [4, 3, 3, 3], w\n"
             "assert h['scalar']['shape'] == [] and h['empty']['shape'] == [0, 5]\n"
             "spans = sorted(tuple(v['data_offsets']) for v in h.values())\n"
             "pos = 0\n"
             "for s, e in spans:\n"
             "    assert s == pos, spans\n"
             "    pos = e\n"
             "assert pos == len(b) - 8 - n\n"
             "s, e = w['data_offsets']\n"
             "v = struct.unpack('<%%df' %% ((e - s) // 4), b[8 + n + s:8 + n + e])\n"
             "assert abs(v[0] - float(sys.argv[2])) < 1e-6 and abs(v[-1] - float(sys.argv[3])) < 1e-6\n"
             "try:\n"
             "    from safetensors.numpy import load_file\n"
             "except ImportError:\n"
             "    sys.exit(0)\n"
             "t = load_file(sys.argv[1])\n"
             "assert t['conv.weight'].shape == (4, 3, 3, 3) and t['scalar'].shape == ()\n"
             "print('note: safetensors.numpy loaded the file')\n"
             "EOF",
             p, g_w[0], g_w[NW - 1],
             "'quote \" backslash \\\\ newline \\n tab \\t \\u00fc\\u00f1\\u00ef'");
    int rc = system(cmd);
    CHECK(rc == 0, "python check failed (status %d)", rc);
}

/* ------------------------------------------------------------ corruption */

/* Writes an 8-byte length (hl_override if != UINT64_MAX), the header, and dlen bytes. */
static void write_raw(const char *path, const char *header, size_t hlen, uint64_t hl_override,
                      size_t dlen)
{
    FILE *fp = fopen(path, "wb");
    CHECK(fp != NULL, "open %s", path);
    if (!fp) return;
    uint64_t hl = hl_override != UINT64_MAX ? hl_override : hlen;
    unsigned char b[8];
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)(hl >> (8 * k));
    fwrite(b, 1, 8, fp);
    fwrite(header, 1, hlen, fp);
    for (size_t i = 0; i < dlen; i++) fputc((int)(i * 37 % 251), fp);
    fclose(fp);
}

static void expect_bad(const char *label, const char *header, size_t dlen, const char *needle,
                       int status)
{
    char p[256];
    path_in(p, sizeof p, "bad.safetensors");
    write_raw(p, header, strlen(header), UINT64_MAX, dlen);
    pn_st_file *f = (pn_st_file *)(uintptr_t)1;
    pn_clear_error();
    int rc = pn_safetensors_read(&f, p);
    CHECK(rc == status, "%s: status %d, expected %d (%s)", label, rc, status, pn_last_error());
    CHECK(f == NULL, "%s: *out not NULL after an error", label);
    CHECK(strstr(pn_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", label,
          pn_last_error(), needle);
    CHECK(strstr(pn_last_error(), "bad.safetensors") != NULL, "%s: message '%s' lacks the file",
          label, pn_last_error());
    if (getenv("PN_SHOW")) printf("  %s: %s\n", label, pn_last_error()); /* PN_SHOW=1 */
    if (rc == PN_OK) pn_safetensors_close(f);
}

#define T16 "\"dtype\":\"F32\",\"shape\":[4]"

TEST(corrupt_header)
{
    /* Sanity: the helper itself produces readable files. */
    char p[256];
    path_in(p, sizeof p, "bad.safetensors");
    const char *okh = "{\"a\":{" T16 ",\"data_offsets\":[0,16]}}  ";
    write_raw(p, okh, strlen(okh), UINT64_MAX, 16);
    pn_st_file *f = NULL;
    CHECK(pn_safetensors_read(&f, p) == PN_OK, "well-formed file rejected: %s", pn_last_error());
    pn_safetensors_close(f);

    expect_bad("invalid JSON", "{\"a\":{\"dtype\":\"F32\",", 0, "JSON", PN_ERR_FORMAT);
    expect_bad("trailing garbage", "{} x", 0, "JSON", PN_ERR_FORMAT);
    expect_bad("empty header", "", 0, "JSON", PN_ERR_FORMAT);
    expect_bad("not an object", "[1, 2]", 0, "not a JSON object", PN_ERR_FORMAT);
    expect_bad("entry not an object", "{\"a\": 3}", 0, "not an object", PN_ERR_FORMAT);
    expect_bad("wrong dtype", "{\"a\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]}}",
               8, "unsupported dtype", PN_ERR_FORMAT);
    expect_bad("missing dtype", "{\"a\":{\"shape\":[4],\"data_offsets\":[0,16]}}", 16, "dtype",
               PN_ERR_FORMAT);
    expect_bad("missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,16]}}", 16,
               "shape", PN_ERR_FORMAT);
    expect_bad("negative dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}",
               16, "shape[0]", PN_ERR_FORMAT);
    expect_bad("fractional dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,10]}}",
               16, "shape[0]", PN_ERR_FORMAT);
    expect_bad("string dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"4\"],\"data_offsets\":[0,16]}}",
               16, "shape[0]", PN_ERR_FORMAT);
    expect_bad("too many dims",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
               4, "dimensions", PN_ERR_FORMAT);
    expect_bad("shape overflow",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}",
               0, "overflow", PN_ERR_FORMAT);
    expect_bad("offsets missing", "{\"a\":{" T16 "}}", 16, "data_offsets", PN_ERR_FORMAT);
    expect_bad("offsets one value", "{\"a\":{" T16 ",\"data_offsets\":[16]}}", 16, "data_offsets",
               PN_ERR_FORMAT);
    expect_bad("offsets negative", "{\"a\":{" T16 ",\"data_offsets\":[-16,0]}}", 16,
               "data_offsets", PN_ERR_FORMAT);
    expect_bad("offsets out of range", "{\"a\":{" T16 ",\"data_offsets\":[0,16]}}", 12,
               "outside", PN_ERR_FORMAT);
    expect_bad("offsets far out", "{\"a\":{" T16 ",\"data_offsets\":[4000000000,4000000016]}}", 16,
               "outside", PN_ERR_FORMAT);
    expect_bad("offsets reversed", "{\"a\":{" T16 ",\"data_offsets\":[16,0]}}", 16, "outside",
               PN_ERR_FORMAT);
    expect_bad("size mismatch", "{\"a\":{" T16 ",\"data_offsets\":[0,12]}}", 16, "size mismatch",
               PN_ERR_FORMAT);
    expect_bad("size mismatch 2", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,16]}}",
               24, "size mismatch", PN_ERR_FORMAT);
    expect_bad("overlap",
               "{\"a\":{" T16 ",\"data_offsets\":[0,16]},\"b\":{" T16 ",\"data_offsets\":[8,24]}}",
               24, "overlap", PN_ERR_FORMAT);
    expect_bad("same region",
               "{\"a\":{" T16 ",\"data_offsets\":[0,16]},\"b\":{" T16 ",\"data_offsets\":[0,16]}}",
               16, "overlap", PN_ERR_FORMAT);
    expect_bad("duplicate name",
               "{\"a\":{" T16 ",\"data_offsets\":[0,16]},\"a\":{" T16 ",\"data_offsets\":[16,32]}}",
               32, "duplicate", PN_ERR_FORMAT);
    expect_bad("metadata not strings", "{\"__metadata__\":{\"step\":3}}", 0, "not a string",
               PN_ERR_FORMAT);
    expect_bad("metadata not object", "{\"__metadata__\":[\"x\"]}", 0, "__metadata__",
               PN_ERR_FORMAT);

    /* Misaligned offsets are legal (other dtypes could precede); data comes back aligned. */
    path_in(p, sizeof p, "odd.safetensors");
    const char *oddh = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[3,11]}}";
    write_raw(p, oddh, strlen(oddh), UINT64_MAX, 11);
    f = NULL;
    CHECK(pn_safetensors_read(&f, p) == PN_OK, "odd offsets: %s", pn_last_error());
    const float *d = NULL;
    if (f) CHECK(pn_safetensors_get(f, "a", NULL, NULL, &d) == PN_OK, "%s", pn_last_error());
    CHECK(d && (uintptr_t)d % sizeof(float) == 0, "data not float-aligned");
    if (d) {
        unsigned char want[8];
        for (int i = 0; i < 8; i++) want[i] = (unsigned char)((3 + i) * 37 % 251);
        CHECK(memcmp(d, want, 8) == 0, "wrong bytes for misaligned tensor");
    }
    pn_safetensors_close(f);
}

TEST(corrupt_length_and_truncation)
{
    char p[256];
    pn_st_file *f = (pn_st_file *)(uintptr_t)1;
    path_in(p, sizeof p, "nofile.safetensors");
    CHECK(pn_safetensors_read(&f, p) == PN_ERR_IO && f == NULL, "missing file");
    CHECK(strstr(pn_last_error(), "nofile.safetensors") != NULL, "%s", pn_last_error());

    /* Header length larger than the file, and above the 100 MB limit. */
    const char *h = "{\"a\":{" T16 ",\"data_offsets\":[0,16]}}";
    path_in(p, sizeof p, "len.safetensors");
    write_raw(p, h, strlen(h), strlen(h) + 17, 16);
    CHECK(pn_safetensors_read(&f, p) == PN_ERR_FORMAT && f == NULL, "length > file");
    CHECK(strstr(pn_last_error(), "header length") != NULL, "%s", pn_last_error());
    write_raw(p, h, strlen(h), (uint64_t)1 << 62, 16);
    CHECK(pn_safetensors_read(&f, p) == PN_ERR_FORMAT && f == NULL, "huge length");
    write_raw(p, h, strlen(h), UINT64_MAX - 3, 16);
    CHECK(pn_safetensors_read(&f, p) == PN_ERR_FORMAT && f == NULL, "length near 2^64");

    /* A header holding a NUL byte. */
    write_raw(p, "{}\0{}", 5, UINT64_MAX, 0);
    CHECK(pn_safetensors_read(&f, p) == PN_ERR_FORMAT && f == NULL, "NUL in header");

    /* Truncations of a good file at many points: all rejected, none crash. */
    char good[256];
    fill();
    path_in(good, sizeof good, "good.safetensors");
    CHECK(write_sample(good) == PN_OK, "%s", pn_last_error());
    FILE *fp = fopen(good, "rb");
    unsigned char buf[1024];
    size_t n = fp ? fread(buf, 1, sizeof buf, fp) : 0;
    if (fp) fclose(fp);
    CHECK(n > 100 && n < sizeof buf, "sample size %zu", n);
    path_in(p, sizeof p, "cut.safetensors");
    int bad = 0;
    for (size_t keep = 0; keep < n; keep++) {
        /* Every cut leaves some offset past the end (or a broken header). */
        FILE *o = fopen(p, "wb");
        fwrite(buf, 1, keep, o);
        fclose(o);
        f = (pn_st_file *)(uintptr_t)1;
        int rc = pn_safetensors_read(&f, p);
        if (rc != PN_ERR_FORMAT || f != NULL) {
            if (!bad) CHECK(0, "cut at %zu of %zu bytes: status %d", keep, n, rc);
            bad = 1;
            if (rc == PN_OK) pn_safetensors_close(f);
        }
    }
    pn_clear_error();
    f = (pn_st_file *)(uintptr_t)1;
    fp = fopen(p, "wb");
    fwrite(buf, 1, 5, fp);
    fclose(fp);
    CHECK(pn_safetensors_read(&f, p) == PN_ERR_FORMAT && strstr(pn_last_error(), "too short"),
          "5-byte file: %s", pn_last_error());
}

/* ------------------------------------------------------------ atomicity */

static int read_first(const char *path, float *v)
{
    pn_st_file *f = NULL;
    const float *d;
    int rc = pn_safetensors_read(&f, path);
    if (rc == PN_OK) rc = pn_safetensors_get(f, "v", NULL, NULL, &d);
    if (rc == PN_OK) *v = d[0];
    pn_safetensors_close(f);
    return rc;
}

static int write_value(const char *path, float v)
{
    pn_st_tensor t = { "v", 1, { 1 }, &v };
    return pn_safetensors_write(path, &t, 1, NULL, 0);
}

TEST(atomic_write)
{
    char p[256], tmp[300], dir[256];
    float v = 0;

    /* Into a directory that does not exist: I/O error, nothing created. */
    path_in(p, sizeof p, "no/such/dir/x.safetensors");
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    pn_clear_error();
    CHECK(write_value(p, 1.0f) == PN_ERR_IO, "write into a missing directory");
    CHECK(strstr(pn_last_error(), "x.safetensors") != NULL, "message: %s", pn_last_error());
    CHECK(!exists(p) && !exists(tmp), "files created");

    /* Overwriting replaces the file. */
    path_in(p, sizeof p, "ckpt.safetensors");
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    CHECK(write_value(p, 1.0f) == PN_OK, "%s", pn_last_error());
    CHECK(read_first(p, &v) == PN_OK && v == 1.0f, "first write: %g", v);
    CHECK(write_value(p, 2.0f) == PN_OK, "%s", pn_last_error());
    CHECK(read_first(p, &v) == PN_OK && v == 2.0f, "overwrite: %g", v);
    CHECK(!exists(tmp), "tmp file left behind");

    /* The tmp file cannot be created (a directory sits there): I/O error, the old
     * file is intact. */
    mkdir(tmp, 0700);
    CHECK(write_value(p, 3.0f) == PN_ERR_IO, "tmp path blocked");
    CHECK(read_first(p, &v) == PN_OK && v == 2.0f, "old file damaged: %g", v);
    rmdir(tmp);

    /* The rename fails (PATH is a non-empty directory): I/O error, tmp removed. */
    path_in(dir, sizeof dir, "adir");
    mkdir(dir, 0700);
    char inner[300];
    snprintf(inner, sizeof inner, "%s/keep", dir);
    fclose(fopen(inner, "wb"));
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    pn_clear_error();
    CHECK(write_value(dir, 4.0f) == PN_ERR_IO, "rename over a directory");
    CHECK(strstr(pn_last_error(), "adir") != NULL, "message: %s", pn_last_error());
    CHECK(!exists(tmp), "tmp file not removed after a failed rename");
    CHECK(exists(inner), "directory damaged");

    /* A relative path (directory "."). */
    char cwd[1024];
    CHECK(getcwd(cwd, sizeof cwd) != NULL, "getcwd");
    CHECK(chdir(g_root) == 0, "chdir");
    CHECK(write_value("rel.safetensors", 5.0f) == PN_OK, "%s", pn_last_error());
    CHECK(read_first("rel.safetensors", &v) == PN_OK && v == 5.0f, "relative: %g", v);
    CHECK(chdir(cwd) == 0, "chdir back");
}

TEST(writer_arguments)
{
    char p[256];
    path_in(p, sizeof p, "args.safetensors");
    float x[4] = { 1, 2, 3, 4 };
    pn_st_tensor dup[2] = { { "a", 1, { 4 }, x }, { "a", 1, { 4 }, x } };
    CHECK(pn_safetensors_write(p, dup, 2, NULL, 0) == PN_ERR_ARG, "duplicate names");
    pn_st_tensor t = { "a", 9, { 1 }, x };
    CHECK(pn_safetensors_write(p, &t, 1, NULL, 0) == PN_ERR_ARG, "ndim 9");
    pn_st_tensor neg = { "a", 1, { -1 }, x };
    CHECK(pn_safetensors_write(p, &neg, 1, NULL, 0) == PN_ERR_ARG, "negative dim");
    pn_st_tensor nodata = { "a", 1, { 4 }, NULL };
    CHECK(pn_safetensors_write(p, &nodata, 1, NULL, 0) == PN_ERR_ARG, "NULL data");
    pn_st_tensor reserved = { "__metadata__", 1, { 4 }, x };
    CHECK(pn_safetensors_write(p, &reserved, 1, NULL, 0) == PN_ERR_ARG, "reserved name");
    pn_st_tensor noname = { NULL, 1, { 4 }, x };
    CHECK(pn_safetensors_write(p, &noname, 1, NULL, 0) == PN_ERR_ARG, "NULL name");
    pn_st_meta m[2] = { { "k", "1" }, { "k", "2" } };
    pn_st_tensor ok = { "a", 1, { 4 }, x };
    CHECK(pn_safetensors_write(p, &ok, 1, m, 2) == PN_ERR_ARG, "duplicate metadata keys");
    pn_st_meta nullv = { "k", NULL };
    CHECK(pn_safetensors_write(p, &ok, 1, &nullv, 1) == PN_ERR_ARG, "NULL metadata value");
    CHECK(pn_safetensors_write(NULL, &ok, 1, NULL, 0) == PN_ERR_ARG, "NULL path");
    CHECK(!exists(p), "a file was written despite bad arguments");
    CHECK(pn_safetensors_read(NULL, p) == PN_ERR_ARG, "NULL out");
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

int main(void)
{
    snprintf(g_root, sizeof g_root, "/tmp/pn_test_st_XXXXXX");
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(round_trip);
    RUN(python_json_check);
    RUN(corrupt_header);
    RUN(corrupt_length_and_truncation);
    RUN(atomic_write);
    RUN(writer_arguments);
    nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return harness_summary();
}
