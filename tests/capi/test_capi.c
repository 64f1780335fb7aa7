/* Tests of the C API (cpp/include/ffnskip/ffnskip_c.h), one case per process:
 *
 *   test_capi --list                  the case names
 *   test_capi CASE SMOLLM2 TINY       run one case; exit status 0 = pass
 *
 * SMOLLM2 is the real SmolLM2-135M GGUF; TINY is a 6-layer random model whose file stores a skip
 * profile (written by tests/test_capi.py, which also checks what the dump_* cases print against
 * the Python bindings). Built with -fsanitize=address,undefined in CI.
 */
#define _POSIX_C_SOURCE 200809L /* mkstemp, write, unlink */

#include <ffnskip/ffnskip_c.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_failures = 0;
static const char* g_smollm2 = NULL;
static const char* g_tiny = NULL;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            ++g_failures;                                                            \
        }                                                                            \
    } while (0)

/* The call returns `expected`; a failure status must come with a message containing `needle`. */
#define EXPECT_ERR(expected, needle, call)                                                         \
    do {                                                                                           \
        ffnskip_status st_ = (call);                                                               \
        if (st_ != (expected)) {                                                                   \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s (last error: %s)\n", __FILE__,     \
                    __LINE__, #call, ffnskip_status_string(st_), ffnskip_status_string(expected),  \
                    ffnskip_last_error());                                                         \
            ++g_failures;                                                                          \
        } else if ((expected) != FFNSKIP_OK && !strstr(ffnskip_last_error(), (needle))) {          \
            fprintf(stderr, "%s:%d: %s: message \"%s\" lacks \"%s\"\n", __FILE__, __LINE__, #call, \
                    ffnskip_last_error(), (needle));                                               \
            ++g_failures;                                                                          \
        }                                                                                          \
    } while (0)

#define EXPECT_OK(call) EXPECT_ERR(FFNSKIP_OK, "", call)

/* For set-up steps the rest of a case depends on: stop the case when they fail. */
#define REQUIRE_OK(call)                                                              \
    do {                                                                              \
        ffnskip_status st_ = (call);                                                  \
        if (st_ != FFNSKIP_OK) {                                                      \
            fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__, #call, \
                    ffnskip_status_string(st_), ffnskip_last_error());                \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

/* ---- helpers ------------------------------------------------------------------------------ */

static ffnskip_model* load(const char* path) {
    ffnskip_model* m = NULL;
    REQUIRE_OK(ffnskip_model_load(path, NULL, &m));
    return m;
}

static ffnskip_context* make_ctx(const ffnskip_model* m, int32_t n_ctx) {
    ffnskip_context_params p;
    REQUIRE_OK(ffnskip_context_params_init(&p, sizeof p));
    p.n_ctx = n_ctx;
    p.n_threads = 2;
    p.backend = FFNSKIP_BACKEND_CPU;
    ffnskip_context* c = NULL;
    REQUIRE_OK(ffnskip_context_create(m, &p, &c));
    return c;
}

static ffnskip_sampler* make_greedy(void) {
    ffnskip_sampler_params p;
    REQUIRE_OK(ffnskip_sampler_params_init(&p, sizeof p));
    p.temperature = 0.0f;
    ffnskip_sampler* s = NULL;
    REQUIRE_OK(ffnskip_sampler_create(&p, &s));
    return s;
}

static int64_t model_prop(const ffnskip_model* m, ffnskip_model_prop prop) {
    int64_t v = -12345;
    REQUIRE_OK(ffnskip_model_info(m, prop, &v));
    return v;
}

static int64_t ctx_prop(ffnskip_context* c, ffnskip_context_prop prop) {
    int64_t v = -12345;
    REQUIRE_OK(ffnskip_context_info(c, prop, &v));
    return v;
}

/* Tokenizes with BOS into a malloc'ed array (*n tokens). */
static int32_t* tokenize(const ffnskip_model* m, const char* text, int32_t* n) {
    int32_t count = 0;
    ffnskip_status st = ffnskip_tokenize(m, text, strlen(text), true, false, NULL, 0, &count);
    if (st != FFNSKIP_ERR_BUFFER_TOO_SMALL && st != FFNSKIP_OK) REQUIRE_OK(st);
    int32_t* ids = malloc(sizeof *ids * (size_t)(count + 1));
    REQUIRE_OK(ffnskip_tokenize(m, text, strlen(text), true, false, ids, count, n));
    return ids;
}

static int32_t argmax(const float* x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; ++i)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Collects streamed tokens; can stop after `stop_after` tokens (0: never). */
typedef struct {
    int32_t tokens[1024];
    int32_t n;
    int32_t stop_after;
    char text[8192];
    size_t text_len;
} Stream;

static bool collect(int32_t token, const char* piece, size_t len, void* user_data) {
    Stream* s = user_data;
    if (s->n < 1024) s->tokens[s->n++] = token;
    if (s->text_len + len < sizeof s->text) {
        memcpy(s->text + s->text_len, piece, len);
        s->text_len += len;
        s->text[s->text_len] = '\0';
    }
    return s->stop_after == 0 || s->n < s->stop_after;
}

/* ---- version, status, errors ---------------------------------------------------------------- */

static void test_version(void) {
    CHECK(strcmp(ffnskip_version(), FFNSKIP_VERSION_STRING) == 0);
    CHECK(ffnskip_abi_version() == FFNSKIP_ABI_VERSION);
    CHECK(strcmp(ffnskip_last_error(), "") == 0); /* nothing has failed in this process yet */
    CHECK(strcmp(ffnskip_status_string(FFNSKIP_OK), "FFNSKIP_OK") == 0);
    CHECK(strcmp(ffnskip_status_string(FFNSKIP_ERR_BUSY), "FFNSKIP_ERR_BUSY") == 0);
    CHECK(strcmp(ffnskip_status_string((ffnskip_status)999), "unknown status") == 0);
    /* Every status has its own name. */
    for (int a = FFNSKIP_OK; a <= FFNSKIP_ERR_INTERNAL; ++a) {
        CHECK(strncmp(ffnskip_status_string((ffnskip_status)a), "FFNSKIP_", 8) == 0);
        for (int b = a + 1; b <= FFNSKIP_ERR_INTERNAL; ++b)
            CHECK(strcmp(ffnskip_status_string((ffnskip_status)a),
                         ffnskip_status_string((ffnskip_status)b)) != 0);
    }
}

static void* fail_in_thread(void* arg) {
    (void)arg;
    ffnskip_model* m = NULL;
    EXPECT_ERR(FFNSKIP_ERR_IO, "other-thread.gguf",
               ffnskip_model_load("/nonexistent/other-thread.gguf", NULL, &m));
    return NULL;
}

static void test_last_error_is_per_thread(void) {
    ffnskip_model* m = NULL;
    EXPECT_ERR(FFNSKIP_ERR_IO, "main-thread.gguf",
               ffnskip_model_load("/nonexistent/main-thread.gguf", NULL, &m));
    pthread_t t;
    pthread_create(&t, NULL, fail_in_thread, NULL);
    pthread_join(t, NULL);
    CHECK(strstr(ffnskip_last_error(), "main-thread.gguf") != NULL);
    /* A successful call leaves the message alone. */
    CHECK(ffnskip_abi_version() == FFNSKIP_ABI_VERSION);
    CHECK(strstr(ffnskip_last_error(), "ffnskip_model_load") != NULL);
}

/* ---- model loading ------------------------------------------------------------------------- */

static void test_load_errors(void) {
    ffnskip_model* sentinel = (ffnskip_model*)&g_failures; /* must stay untouched */
    ffnskip_model* m = sentinel;
    EXPECT_ERR(FFNSKIP_ERR_IO, "/nonexistent/model.gguf",
               ffnskip_model_load("/nonexistent/model.gguf", NULL, &m));
    CHECK(m == sentinel);
    EXPECT_ERR(FFNSKIP_ERR_IO, "/tmp", ffnskip_model_load("/tmp", NULL, &m));
    /* A file that exists but is no GGUF. */
    char junk[] = "/tmp/ffnskip-capi-test-XXXXXX";
    const int fd = mkstemp(junk);
    CHECK(fd >= 0);
    CHECK(write(fd, "not a GGUF file at all", 22) == 22);
    close(fd);
    EXPECT_ERR(FFNSKIP_ERR_FORMAT, "GGUF", ffnskip_model_load(junk, NULL, &m));
    unlink(junk);
    CHECK(m == sentinel);
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "path is NULL", ffnskip_model_load(NULL, NULL, &m));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "model is NULL",
               ffnskip_model_load(g_tiny, NULL, NULL));

    ffnskip_load_params p;
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "params is NULL",
               ffnskip_load_params_init(NULL, sizeof p));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "struct_size",
               ffnskip_load_params_init(&p, sizeof p + 8));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "struct_size", ffnskip_load_params_init(&p, 1));
    EXPECT_OK(ffnskip_load_params_init(&p, sizeof p));
    CHECK(p.struct_size == sizeof p && p.progress == NULL);
    p.struct_size = 3; /* a struct that was never initialised */
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "struct_size", ffnskip_model_load(g_tiny, &p, &m));
    CHECK(m == sentinel);
}

typedef struct {
    float seen[4096];
    int n;
    int cancel_at; /* return false on this call (-1: never) */
} Progress;

static bool on_progress(float progress, void* user_data) {
    Progress* p = user_data;
    if (p->n < 4096) p->seen[p->n] = progress;
    return p->n++ != p->cancel_at;
}

static void test_load_progress(void) {
    Progress pr = {.n = 0, .cancel_at = -1};
    ffnskip_load_params p;
    REQUIRE_OK(ffnskip_load_params_init(&p, sizeof p));
    p.progress = on_progress;
    p.progress_user_data = &pr;
    ffnskip_model* m = NULL;
    EXPECT_OK(ffnskip_model_load(g_smollm2, &p, &m));
    CHECK(m != NULL);
    /* 0 first, 1 last, never decreasing; the ~100 MB file is read in several chunks. */
    CHECK(pr.n >= 3);
    CHECK(pr.seen[0] == 0.0f);
    CHECK(pr.seen[pr.n - 1] == 1.0f);
    for (int i = 1; i < pr.n; ++i) CHECK(pr.seen[i] >= pr.seen[i - 1]);
    EXPECT_OK(ffnskip_model_free(m));
    EXPECT_OK(ffnskip_model_free(NULL));
}

static void test_load_cancel(void) {
    for (int at = 0; at <= 2; ++at) {
        Progress pr = {.n = 0, .cancel_at = at};
        ffnskip_load_params p;
        REQUIRE_OK(ffnskip_load_params_init(&p, sizeof p));
        p.progress = on_progress;
        p.progress_user_data = &pr;
        ffnskip_model* m = NULL;
        EXPECT_ERR(FFNSKIP_ERR_CANCELLED, "cancelled", ffnskip_model_load(g_smollm2, &p, &m));
        CHECK(m == NULL);
        CHECK(pr.n == at + 1); /* no progress reported after the cancel */
    }
}

/* An app's cancel button: another thread sets a flag the progress callback returns. */
typedef struct {
    atomic_int cancel;
    atomic_int loading;
} LoadCancel;

static bool progress_until_cancelled(float progress, void* user_data) {
    (void)progress;
    LoadCancel* lc = user_data;
    atomic_store(&lc->loading, 1);
    /* Wait for the other thread, so the cancel always lands during the load. */
    while (!atomic_load(&lc->cancel)) sched_yield();
    return false;
}

static void* press_cancel(void* arg) {
    LoadCancel* lc = arg;
    while (!atomic_load(&lc->loading)) sched_yield();
    atomic_store(&lc->cancel, 1);
    return NULL;
}

static void test_load_cancel_from_thread(void) {
    LoadCancel lc;
    atomic_init(&lc.cancel, 0);
    atomic_init(&lc.loading, 0);
    ffnskip_load_params p;
    REQUIRE_OK(ffnskip_load_params_init(&p, sizeof p));
    p.progress = progress_until_cancelled;
    p.progress_user_data = &lc;
    pthread_t t;
    pthread_create(&t, NULL, press_cancel, &lc);
    ffnskip_model* m = NULL;
    EXPECT_ERR(FFNSKIP_ERR_CANCELLED, "cancelled", ffnskip_model_load(g_smollm2, &p, &m));
    pthread_join(t, NULL);
    CHECK(m == NULL);
}

static void test_model_info(void) {
    ffnskip_model* m = load(g_tiny);
    CHECK(model_prop(m, FFNSKIP_MODEL_N_LAYER) == 6);
    CHECK(model_prop(m, FFNSKIP_MODEL_N_EMBD) == 64);
    CHECK(model_prop(m, FFNSKIP_MODEL_HAS_SKIP_PROFILE) == 1);
    int64_t v = 0;
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "ffnskip_model_prop",
               ffnskip_model_info(m, (ffnskip_model_prop)99, &v));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "value is NULL",
               ffnskip_model_info(m, FFNSKIP_MODEL_N_VOCAB, NULL));
    const int64_t n_vocab = model_prop(m, FFNSKIP_MODEL_N_VOCAB);
    const int64_t eos = model_prop(m, FFNSKIP_MODEL_EOS);
    bool eog = false;
    EXPECT_OK(ffnskip_model_is_eog(m, (int32_t)eos, &eog));
    CHECK(eog);
    EXPECT_OK(ffnskip_model_is_eog(m, 'a', &eog));
    CHECK(!eog);
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "outside",
               ffnskip_model_is_eog(m, (int32_t)n_vocab, &eog));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "outside", ffnskip_model_is_eog(m, -1, &eog));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "is_eog is NULL", ffnskip_model_is_eog(m, 0, NULL));
    EXPECT_OK(ffnskip_model_free(m));

    ffnskip_model* s = load(g_smollm2);
    CHECK(model_prop(s, FFNSKIP_MODEL_HAS_SKIP_PROFILE) == 0);
    EXPECT_OK(ffnskip_model_free(s));
}

/* ---- handles ------------------------------------------------------------------------------- */

/* Every function that takes a handle, with a NULL handle and otherwise valid arguments. */
static void test_null_handles(void) {
    int64_t v = 0;
    bool b = false;
    int32_t tok = 1, n = 0;
    size_t len = 0;
    char buf[16];
    float f[4] = {0};
    ffnskip_skip_config* cfg = NULL;
    ffnskip_context* c = NULL;
    ffnskip_skip_stats st = {.struct_size = sizeof st};
    int64_t ev[1];
#define NULL_HANDLE(call) EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "is NULL", call)
    NULL_HANDLE(ffnskip_model_info(NULL, FFNSKIP_MODEL_N_VOCAB, &v));
    NULL_HANDLE(ffnskip_model_is_eog(NULL, 0, &b));
    NULL_HANDLE(ffnskip_tokenize(NULL, "a", 1, true, false, &tok, 1, &n));
    NULL_HANDLE(ffnskip_detokenize(NULL, &tok, 1, false, buf, sizeof buf, &len));
    NULL_HANDLE(ffnskip_token_piece(NULL, 0, buf, sizeof buf, &len));
    NULL_HANDLE(ffnskip_context_create(NULL, NULL, &c));
    NULL_HANDLE(ffnskip_context_info(NULL, FFNSKIP_CONTEXT_N_PAST, &v));
    NULL_HANDLE(ffnskip_context_kv_truncate(NULL, 0));
    NULL_HANDLE(ffnskip_context_cancel(NULL));
    NULL_HANDLE(ffnskip_eval(NULL, &tok, 1));
    NULL_HANDLE(ffnskip_eval_generated(NULL, tok, 0));
    NULL_HANDLE(ffnskip_get_logits(NULL, f, 4));
    NULL_HANDLE(ffnskip_sampler_reseed(NULL, 1));
    NULL_HANDLE(ffnskip_sampler_sample(NULL, f, 4, NULL, 0, &tok));
    NULL_HANDLE(ffnskip_generate(NULL, NULL, &tok, 1, 1, NULL, NULL, NULL, NULL));
    NULL_HANDLE(ffnskip_skip_config_from_model(NULL, &cfg));
    NULL_HANDLE(ffnskip_skip_config_set_int(NULL, FFNSKIP_SKIP_SPAN, 1));
    NULL_HANDLE(ffnskip_skip_config_get_int(NULL, FFNSKIP_SKIP_SPAN, &tok));
    NULL_HANDLE(ffnskip_skip_config_set_array(NULL, FFNSKIP_SKIP_THRESHOLD, f, 1));
    NULL_HANDLE(ffnskip_skip_config_get_array(NULL, FFNSKIP_SKIP_THRESHOLD, f, 4, &n));
    NULL_HANDLE(ffnskip_context_set_skip(NULL, NULL));
    NULL_HANDLE(ffnskip_context_get_skip(NULL, &cfg));
    NULL_HANDLE(ffnskip_context_skip_stats(NULL, &st));
    NULL_HANDLE(ffnskip_context_skip_stats_layers(NULL, ev, ev, 1));
    NULL_HANDLE(ffnskip_context_reset_skip_stats(NULL));
#undef NULL_HANDLE
    /* Freeing NULL is a no-op, as with free(). */
    EXPECT_OK(ffnskip_model_free(NULL));
    EXPECT_OK(ffnskip_context_free(NULL));
    EXPECT_OK(ffnskip_sampler_free(NULL));
    EXPECT_OK(ffnskip_skip_config_free(NULL));
}

/* Freed handles, double frees and a handle of the wrong kind are refused, not dereferenced. */
static void test_stale_and_foreign_handles(void) {
    ffnskip_model* m = load(g_tiny);
    ffnskip_context* c = make_ctx(m, 64);
    ffnskip_sampler* s = make_greedy();
    ffnskip_skip_config* cfg = NULL;
    REQUIRE_OK(ffnskip_skip_config_create(&cfg));
    int64_t v = 0;
    int32_t tok = 1;

    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "is a ffnskip_sampler, not a ffnskip_context",
               ffnskip_eval((ffnskip_context*)s, &tok, 1));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "not a ffnskip_model",
               ffnskip_model_info((ffnskip_model*)c, FFNSKIP_MODEL_N_VOCAB, &v));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "not a ffnskip_sampler",
               ffnskip_sampler_free((ffnskip_sampler*)cfg));
    int junk[64] = {0};
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "not a live ffnskip_context",
               ffnskip_context_info((ffnskip_context*)junk, FFNSKIP_CONTEXT_N_PAST, &v));

    EXPECT_OK(ffnskip_context_free(c));
    EXPECT_OK(ffnskip_sampler_free(s));
    EXPECT_OK(ffnskip_skip_config_free(cfg));
    EXPECT_OK(ffnskip_model_free(m));
    /* The pointers are only compared by the library, never dereferenced. */
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "not a live", ffnskip_eval(c, &tok, 1));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "not a live", ffnskip_context_cancel(c));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "not a live", ffnskip_context_free(c));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "not a live", ffnskip_sampler_free(s));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "not a live", ffnskip_skip_config_free(cfg));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "not a live", ffnskip_model_free(m));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "not a live",
               ffnskip_model_info(m, FFNSKIP_MODEL_N_VOCAB, &v));
}

/* ---- tokenizer ----------------------------------------------------------------------------- */

static void test_tokenize(void) {
    ffnskip_model* m = load(g_smollm2);
    const char* text = "Hello, world! Caf\xc3\xa9 \xe2\x82\xac 42";
    int32_t n = -1;
    /* Size query. */
    EXPECT_ERR(FFNSKIP_ERR_BUFFER_TOO_SMALL, "needed",
               ffnskip_tokenize(m, text, strlen(text), false, false, NULL, 0, &n));
    CHECK(n > 3);
    int32_t ids[64];
    for (int i = 0; i < 64; ++i) ids[i] = -7;
    int32_t n2 = -1;
    EXPECT_ERR(FFNSKIP_ERR_BUFFER_TOO_SMALL, "needed",
               ffnskip_tokenize(m, text, strlen(text), false, false, ids, n - 1, &n2));
    CHECK(n2 == n);
    CHECK(ids[0] == -7); /* nothing written */
    EXPECT_OK(ffnskip_tokenize(m, text, strlen(text), false, false, ids, n, &n2));
    CHECK(n2 == n);

    /* Round trip. */
    char buf[256];
    size_t len = 0;
    EXPECT_OK(ffnskip_detokenize(m, ids, n, false, buf, sizeof buf, &len));
    CHECK(len == strlen(text) && strcmp(buf, text) == 0);
    /* The pieces concatenate to the same text. */
    char joined[256] = "";
    size_t total = 0;
    for (int32_t i = 0; i < n; ++i) {
        char piece[64];
        size_t plen = 0;
        EXPECT_OK(ffnskip_token_piece(m, ids[i], piece, sizeof piece, &plen));
        CHECK(plen == strlen(piece));
        memcpy(joined + total, piece, plen);
        total += plen;
    }
    joined[total] = '\0';
    CHECK(strcmp(joined, text) == 0);

    /* add_special adds BOS when the file asks for it (SmolLM2 does not). */
    int32_t with_bos[64];
    int32_t nb = 0;
    EXPECT_OK(ffnskip_tokenize(m, text, strlen(text), true, false, with_bos, 64, &nb));
    const int64_t bos = model_prop(m, FFNSKIP_MODEL_BOS);
    CHECK(nb == n || (nb == n + 1 && with_bos[0] == bos));

    /* Control tokens: parsed only with parse_special. */
    const char* ctl = "<|im_start|>";
    int32_t one[16];
    int32_t n_ctl = 0;
    EXPECT_OK(ffnskip_tokenize(m, ctl, strlen(ctl), false, true, one, 16, &n_ctl));
    CHECK(n_ctl == 1);
    EXPECT_OK(ffnskip_tokenize(m, ctl, strlen(ctl), false, false, one, 16, &n_ctl));
    CHECK(n_ctl > 1);

    /* Embedded NUL bytes are text; an empty text is no tokens. */
    EXPECT_OK(ffnskip_tokenize(m, "a\0b", 3, false, false, ids, 64, &n2));
    EXPECT_OK(ffnskip_detokenize(m, ids, n2, false, buf, sizeof buf, &len));
    CHECK(len == 3 && memcmp(buf, "a\0b", 3) == 0);
    EXPECT_OK(ffnskip_tokenize(m, NULL, 0, false, false, NULL, 0, &n2));
    CHECK(n2 == 0);

    /* Errors. */
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "text is NULL",
               ffnskip_tokenize(m, NULL, 3, false, false, ids, 64, &n2));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "n_tokens is NULL",
               ffnskip_tokenize(m, "a", 1, false, false, ids, 64, NULL));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "capacity",
               ffnskip_tokenize(m, "a", 1, false, false, ids, -1, &n2));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "tokens is NULL",
               ffnskip_tokenize(m, "abc", 3, false, false, NULL, 8, &n2));
    EXPECT_OK(ffnskip_model_free(m));
}

static void test_detokenize(void) {
    ffnskip_model* m = load(g_smollm2);
    const int64_t n_vocab = model_prop(m, FFNSKIP_MODEL_N_VOCAB);
    int32_t ids[16];
    int32_t n = 0;
    REQUIRE_OK(ffnskip_tokenize(m, "Hello", 5, false, false, ids, 16, &n));
    char buf[64];
    memset(buf, 'x', sizeof buf);
    size_t len = 0;
    /* The text needs length + 1 bytes: exactly `length` is one short. */
    EXPECT_ERR(FFNSKIP_ERR_BUFFER_TOO_SMALL, "needed",
               ffnskip_detokenize(m, ids, n, false, buf, 5, &len));
    CHECK(len == 5 && buf[0] == 'x');
    EXPECT_ERR(FFNSKIP_ERR_BUFFER_TOO_SMALL, "needed",
               ffnskip_detokenize(m, ids, n, false, NULL, 0, &len));
    CHECK(len == 5);
    EXPECT_OK(ffnskip_detokenize(m, ids, n, false, buf, 6, &len));
    CHECK(strcmp(buf, "Hello") == 0);
    /* Control tokens only with `special`. */
    const int64_t eos = model_prop(m, FFNSKIP_MODEL_EOS);
    int32_t e = (int32_t)eos;
    EXPECT_OK(ffnskip_detokenize(m, &e, 1, false, buf, sizeof buf, &len));
    CHECK(len == 0 && buf[0] == '\0');
    EXPECT_OK(ffnskip_detokenize(m, &e, 1, true, buf, sizeof buf, &len));
    CHECK(len > 0);
    /* No tokens: empty text. */
    EXPECT_OK(ffnskip_detokenize(m, NULL, 0, false, buf, sizeof buf, &len));
    CHECK(len == 0 && buf[0] == '\0');
    /* Token out of range, in either direction. */
    int32_t bad[2] = {ids[0], (int32_t)n_vocab};
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "out of range",
               ffnskip_detokenize(m, bad, 2, false, buf, sizeof buf, &len));
    bad[1] = -1;
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "out of range",
               ffnskip_detokenize(m, bad, 2, false, buf, sizeof buf, &len));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "out of range",
               ffnskip_token_piece(m, (int32_t)n_vocab, buf, sizeof buf, &len));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "n_tokens",
               ffnskip_detokenize(m, ids, -1, false, buf, sizeof buf, &len));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "tokens is NULL",
               ffnskip_detokenize(m, NULL, 2, false, buf, sizeof buf, &len));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "length is NULL",
               ffnskip_detokenize(m, ids, n, false, buf, sizeof buf, NULL));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "buf is NULL",
               ffnskip_token_piece(m, ids[0], NULL, 64, &len));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "length is NULL",
               ffnskip_token_piece(m, ids[0], buf, sizeof buf, NULL));
    EXPECT_OK(ffnskip_model_free(m));
}

/* ---- contexts and evaluation ----------------------------------------------------------------- */

static void test_context_create(void) {
    ffnskip_model* m = load(g_tiny);
    ffnskip_context* c = NULL;
    EXPECT_OK(ffnskip_context_create(m, NULL, &c));
    CHECK(ctx_prop(c, FFNSKIP_CONTEXT_N_CTX) == 4096);
    CHECK(ctx_prop(c, FFNSKIP_CONTEXT_N_PAST) == 0);
    CHECK(ctx_prop(c, FFNSKIP_CONTEXT_N_THREADS) >= 1);
    CHECK(ctx_prop(c, FFNSKIP_CONTEXT_N_VOCAB) == model_prop(m, FFNSKIP_MODEL_N_VOCAB));
    const int64_t backend = ctx_prop(c, FFNSKIP_CONTEXT_BACKEND);
    CHECK(backend == FFNSKIP_BACKEND_CPU || backend == FFNSKIP_BACKEND_CUDA);
    int64_t v = 0;
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "ffnskip_context_prop",
               ffnskip_context_info(c, (ffnskip_context_prop)0, &v));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "value is NULL",
               ffnskip_context_info(c, FFNSKIP_CONTEXT_N_CTX, NULL));
    EXPECT_OK(ffnskip_context_free(c));

    ffnskip_context_params p;
    REQUIRE_OK(ffnskip_context_params_init(&p, sizeof p));
    CHECK(p.n_ctx == 4096 && p.n_threads == 0 && p.backend == FFNSKIP_BACKEND_AUTO);
    p.n_ctx = 32;
    p.n_threads = 1;
    p.backend = FFNSKIP_BACKEND_CPU;
    EXPECT_OK(ffnskip_context_create(m, &p, &c));
    CHECK(ctx_prop(c, FFNSKIP_CONTEXT_N_CTX) == 32);
    CHECK(ctx_prop(c, FFNSKIP_CONTEXT_N_THREADS) == 1);
    CHECK(ctx_prop(c, FFNSKIP_CONTEXT_BACKEND) == FFNSKIP_BACKEND_CPU);
    EXPECT_OK(ffnskip_context_free(c));

    ffnskip_context* sentinel = (ffnskip_context*)&g_failures;
    c = sentinel;
    p.n_ctx = 0;
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "n_ctx", ffnskip_context_create(m, &p, &c));
    p.n_ctx = 32;
    p.n_threads = -1;
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "n_threads", ffnskip_context_create(m, &p, &c));
    p.n_threads = 1;
    p.backend = (ffnskip_backend)7;
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "ffnskip_backend", ffnskip_context_create(m, &p, &c));
    p.backend = FFNSKIP_BACKEND_CPU;
    p.struct_size = 0;
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "struct_size", ffnskip_context_create(m, &p, &c));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "ctx is NULL", ffnskip_context_create(m, NULL, NULL));
    CHECK(c == sentinel);

    /* CUDA: a CPU-only build (or a machine without a GPU) says why; a GPU build uses it. */
    REQUIRE_OK(ffnskip_context_params_init(&p, sizeof p));
    p.n_ctx = 32;
    p.backend = FFNSKIP_BACKEND_CUDA;
    const ffnskip_status st = ffnskip_context_create(m, &p, &c);
    if (st == FFNSKIP_OK) {
        CHECK(ctx_prop(c, FFNSKIP_CONTEXT_BACKEND) == FFNSKIP_BACKEND_CUDA);
        EXPECT_OK(ffnskip_context_free(c));
    } else {
        CHECK(st == FFNSKIP_ERR_BACKEND_UNAVAILABLE);
        CHECK(strstr(ffnskip_last_error(), "CUDA") != NULL);
    }
    EXPECT_OK(ffnskip_model_free(m));
}

static void test_context_outlives_model(void) {
    ffnskip_model* m = load(g_tiny);
    ffnskip_context* c = make_ctx(m, 64);
    int32_t n = 0;
    int32_t* ids = tokenize(m, "hello world", &n);
    EXPECT_OK(ffnskip_model_free(m));
    EXPECT_OK(ffnskip_eval(c, ids, n));
    CHECK(ctx_prop(c, FFNSKIP_CONTEXT_N_PAST) == n);
    free(ids);
    EXPECT_OK(ffnskip_context_free(c));
}

static void test_eval_and_logits(void) {
    ffnskip_model* m = load(g_smollm2);
    const int32_t n_vocab = (int32_t)model_prop(m, FFNSKIP_MODEL_N_VOCAB);
    ffnskip_context* c = make_ctx(m, 16);
    float* logits = malloc(sizeof *logits * (size_t)n_vocab);
    float* again = malloc(sizeof *again * (size_t)n_vocab);
    EXPECT_ERR(FFNSKIP_ERR_INVALID_STATE, "no logits", ffnskip_get_logits(c, logits, n_vocab));

    int32_t n = 0;
    int32_t* ids = tokenize(m, "The capital of France is", &n);
    EXPECT_OK(ffnskip_eval(c, ids, n));
    CHECK(ctx_prop(c, FFNSKIP_CONTEXT_N_PAST) == n);
    EXPECT_OK(ffnskip_get_logits(c, logits, n_vocab));
    int finite = 1;
    for (int32_t i = 0; i < n_vocab; ++i) finite &= isfinite(logits[i]) != 0;
    CHECK(finite);
    EXPECT_ERR(FFNSKIP_ERR_BUFFER_TOO_SMALL, "n_vocab", ffnskip_get_logits(c, logits, n_vocab - 1));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "logits is NULL",
               ffnskip_get_logits(c, NULL, n_vocab));

    /* The same prompt after clearing the cache gives the same logits. */
    EXPECT_OK(ffnskip_context_kv_truncate(c, 0));
    CHECK(ctx_prop(c, FFNSKIP_CONTEXT_N_PAST) == 0);
    EXPECT_ERR(FFNSKIP_ERR_INVALID_STATE, "no logits", ffnskip_get_logits(c, again, n_vocab));
    EXPECT_OK(ffnskip_eval(c, ids, n));
    EXPECT_OK(ffnskip_get_logits(c, again, n_vocab));
    CHECK(memcmp(logits, again, sizeof *logits * (size_t)n_vocab) == 0);

    /* Prompt tokens one at a time, then a generated token, agree with the batch. */
    EXPECT_OK(ffnskip_context_kv_truncate(c, n - 1));
    EXPECT_OK(ffnskip_eval(c, ids + n - 1, 1));
    EXPECT_OK(ffnskip_get_logits(c, again, n_vocab));
    CHECK(argmax(again, n_vocab) == argmax(logits, n_vocab));
    const int32_t next = argmax(logits, n_vocab);
    EXPECT_OK(ffnskip_eval_generated(c, next, 0));
    CHECK(ctx_prop(c, FFNSKIP_CONTEXT_N_PAST) == n + 1);

    /* Token out of range: refused, cache and logits unchanged. */
    int32_t bad = n_vocab;
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "out of range", ffnskip_eval(c, &bad, 1));
    bad = -1;
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "out of range", ffnskip_eval(c, &bad, 1));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "out of range", ffnskip_eval_generated(c, n_vocab, 1));
    CHECK(ctx_prop(c, FFNSKIP_CONTEXT_N_PAST) == n + 1);
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "gen_index", ffnskip_eval_generated(c, next, -1));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "n_tokens", ffnskip_eval(c, ids, 0));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "tokens is NULL", ffnskip_eval(c, NULL, 1));

    /* Context overflow: n_ctx is 16. */
    int32_t many[17];
    for (int i = 0; i < 17; ++i) many[i] = ids[0];
    EXPECT_OK(ffnskip_context_kv_truncate(c, 0));
    EXPECT_ERR(FFNSKIP_ERR_CONTEXT_OVERFLOW, "context", ffnskip_eval(c, many, 17));
    CHECK(ctx_prop(c, FFNSKIP_CONTEXT_N_PAST) == 0);
    EXPECT_OK(ffnskip_eval(c, many, 16));
    EXPECT_ERR(FFNSKIP_ERR_CONTEXT_OVERFLOW, "context", ffnskip_eval_generated(c, next, 0));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "kv_truncate", ffnskip_context_kv_truncate(c, 17));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "kv_truncate", ffnskip_context_kv_truncate(c, -1));

    free(ids);
    free(logits);
    free(again);
    EXPECT_OK(ffnskip_context_free(c));
    EXPECT_OK(ffnskip_model_free(m));
}

/* Contexts sharing a model: building a second context must not disturb one that is running
 * (the second build used to swap the shared embedding's pages again, showing zeros meanwhile). */
typedef struct {
    ffnskip_context* c;
    const int32_t* ids;
    int32_t n;
    const float* want;
    int32_t n_vocab;
    atomic_int stop;
    int mismatches;
    int runs;
} Rerun;

static void* rerun_until_stopped(void* arg) {
    Rerun* r = arg;
    float* got = malloc(sizeof *got * (size_t)r->n_vocab);
    while (!r->stop) {
        if (ffnskip_context_kv_truncate(r->c, 0) != FFNSKIP_OK ||
            ffnskip_eval(r->c, r->ids, r->n) != FFNSKIP_OK ||
            ffnskip_get_logits(r->c, got, r->n_vocab) != FFNSKIP_OK) {
            ++r->mismatches;
            break;
        }
        r->mismatches += memcmp(got, r->want, sizeof *got * (size_t)r->n_vocab) != 0;
        ++r->runs;
    }
    free(got);
    return NULL;
}

static void test_contexts_share_model_while_running(void) {
    ffnskip_model* m = load(g_smollm2);
    const int32_t n_vocab = (int32_t)model_prop(m, FFNSKIP_MODEL_N_VOCAB);
    ffnskip_context* a = make_ctx(m, 64);
    int32_t n = 0;
    int32_t* ids = tokenize(m, "One context runs while another is built", &n);
    float* want = malloc(sizeof *want * (size_t)n_vocab);
    EXPECT_OK(ffnskip_eval(a, ids, n));
    EXPECT_OK(ffnskip_get_logits(a, want, n_vocab));
    Rerun r = {a, ids, n, want, n_vocab, 0, 0, 0};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, rerun_until_stopped, &r) == 0);
    for (int i = 0; i < 4; ++i) EXPECT_OK(ffnskip_context_free(make_ctx(m, 64)));
    r.stop = 1;
    pthread_join(t, NULL);
    CHECK(r.runs > 0);
    CHECK(r.mismatches == 0);
    free(want);
    free(ids);
    EXPECT_OK(ffnskip_context_free(a));
    EXPECT_OK(ffnskip_model_free(m));
}

/* ---- sampler ------------------------------------------------------------------------------- */

static void test_sampler(void) {
    ffnskip_sampler_params p;
    REQUIRE_OK(ffnskip_sampler_params_init(&p, sizeof p));
    CHECK(p.temperature == 0.8f && p.top_k == 40 && p.top_p == 0.95f && p.min_p == 0.05f);
    CHECK(p.repetition_penalty == 1.0f && p.repeat_last_n == 64 && p.seed == 0);

    ffnskip_sampler* greedy = make_greedy();
    float logits[8] = {0.5f, 3.0f, -1.0f, 3.0f, 2.0f, -INFINITY, 0.0f, 1.0f};
    int32_t tok = -1;
    EXPECT_OK(ffnskip_sampler_sample(greedy, logits, 8, NULL, 0, &tok));
    CHECK(tok == 1); /* ties go to the lower id */
    /* The repetition penalty divides the positive logits of recent ids (here by 4). */
    ffnskip_sampler* pen = NULL;
    p.temperature = 0.0f;
    p.repetition_penalty = 4.0f;
    REQUIRE_OK(ffnskip_sampler_create(&p, &pen));
    const int32_t recent[2] = {1, 3};
    EXPECT_OK(ffnskip_sampler_sample(pen, logits, 8, recent, 2, &tok));
    CHECK(tok == 4);
    EXPECT_OK(ffnskip_sampler_free(pen));

    /* Seeded draws repeat after a reseed. */
    REQUIRE_OK(ffnskip_sampler_params_init(&p, sizeof p));
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = 1234;
    ffnskip_sampler* s = NULL;
    REQUIRE_OK(ffnskip_sampler_create(&p, &s));
    float flat[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int32_t first[32], second[32];
    int distinct = 0;
    for (int i = 0; i < 32; ++i) EXPECT_OK(ffnskip_sampler_sample(s, flat, 8, NULL, 0, &first[i]));
    EXPECT_OK(ffnskip_sampler_reseed(s, 1234));
    for (int i = 0; i < 32; ++i) {
        EXPECT_OK(ffnskip_sampler_sample(s, flat, 8, NULL, 0, &second[i]));
        CHECK(first[i] == second[i]);
        CHECK(first[i] >= 0 && first[i] < 8);
        distinct |= 1 << first[i];
    }
    CHECK(distinct != (1 << first[0])); /* a uniform draw is not constant */

    /* Bad logits and arguments. */
    float nan_logits[3] = {0.0f, NAN, 1.0f};
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "NaN",
               ffnskip_sampler_sample(s, nan_logits, 3, NULL, 0, &tok));
    float all_inf[2] = {-INFINITY, -INFINITY};
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "-inf",
               ffnskip_sampler_sample(greedy, all_inf, 2, NULL, 0, &tok));
    const int32_t out_of_range[1] = {8};
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "recent token id 8",
               ffnskip_sampler_sample(s, flat, 8, out_of_range, 1, &tok));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "n_vocab",
               ffnskip_sampler_sample(s, flat, 0, NULL, 0, &tok));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "n_recent",
               ffnskip_sampler_sample(s, flat, 8, recent, -1, &tok));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "recent is NULL",
               ffnskip_sampler_sample(s, flat, 8, NULL, 2, &tok));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "logits is NULL",
               ffnskip_sampler_sample(s, NULL, 8, NULL, 0, &tok));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "token is NULL",
               ffnskip_sampler_sample(s, flat, 8, NULL, 0, NULL));

    ffnskip_sampler* never = NULL;
#define BAD_PARAM(field_name, assignment)                                                         \
    do {                                                                                          \
        REQUIRE_OK(ffnskip_sampler_params_init(&p, sizeof p));                                    \
        assignment;                                                                               \
        EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, field_name, ffnskip_sampler_create(&p, &never)); \
        CHECK(never == NULL);                                                                     \
    } while (0)
    BAD_PARAM("temperature", p.temperature = -1.0f);
    BAD_PARAM("temperature", p.temperature = INFINITY);
    BAD_PARAM("top_k", p.top_k = -1);
    BAD_PARAM("top_p", p.top_p = 0.0f);
    BAD_PARAM("min_p", p.min_p = 1.5f);
    BAD_PARAM("repetition_penalty", p.repetition_penalty = 0.0f);
    BAD_PARAM("repeat_last_n", p.repeat_last_n = -1);
    BAD_PARAM("struct_size", p.struct_size = sizeof p + 1);
#undef BAD_PARAM
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "sampler is NULL", ffnskip_sampler_create(NULL, NULL));
    EXPECT_OK(ffnskip_sampler_create(NULL, &never)); /* defaults */
    EXPECT_OK(ffnskip_sampler_free(never));
    EXPECT_OK(ffnskip_sampler_free(s));
    EXPECT_OK(ffnskip_sampler_free(greedy));
}

/* ---- generation ---------------------------------------------------------------------------- */

static void test_generate(void) {
    ffnskip_model* m = load(g_smollm2);
    ffnskip_context* c = make_ctx(m, 256);
    ffnskip_sampler* s = make_greedy();
    int32_t n = 0;
    int32_t* ids = tokenize(m, "The capital of France is", &n);

    Stream st = {.n = 0};
    int32_t n_gen = -1;
    ffnskip_finish finish = 0;
    EXPECT_OK(ffnskip_generate(c, s, ids, n, 12, collect, &st, &n_gen, &finish));
    CHECK(finish == FFNSKIP_FINISH_LENGTH);
    CHECK(n_gen == 12 && st.n == 12);
    /* The last streamed token is not evaluated. */
    CHECK(ctx_prop(c, FFNSKIP_CONTEXT_N_PAST) == n + 11);
    CHECK(strstr(st.text, "Paris") != NULL);

    /* The same greedy loop by hand, from the lower-level calls, gives the same tokens. */
    const int32_t n_vocab = (int32_t)model_prop(m, FFNSKIP_MODEL_N_VOCAB);
    float* logits = malloc(sizeof *logits * (size_t)n_vocab);
    EXPECT_OK(ffnskip_context_kv_truncate(c, 0));
    EXPECT_OK(ffnskip_eval(c, ids, n));
    for (int32_t i = 0; i < 12; ++i) {
        EXPECT_OK(ffnskip_get_logits(c, logits, n_vocab));
        int32_t tok = -1;
        EXPECT_OK(ffnskip_sampler_sample(s, logits, n_vocab, NULL, 0, &tok));
        CHECK(tok == st.tokens[i]);
        EXPECT_OK(ffnskip_eval_generated(c, tok, i));
    }
    free(logits);

    /* The callback stops it. */
    Stream three = {.n = 0, .stop_after = 3};
    EXPECT_OK(ffnskip_context_kv_truncate(c, 0));
    EXPECT_OK(ffnskip_generate(c, s, ids, n, 12, collect, &three, &n_gen, &finish));
    CHECK(finish == FFNSKIP_FINISH_CALLBACK && n_gen == 3 && three.n == 3);
    CHECK(memcmp(three.tokens, st.tokens, 3 * sizeof(int32_t)) == 0);

    /* No callback, no tokens, and a full context. */
    EXPECT_OK(ffnskip_context_kv_truncate(c, 0));
    EXPECT_OK(ffnskip_generate(c, s, ids, n, 0, NULL, NULL, &n_gen, &finish));
    CHECK(n_gen == 0 && finish == FFNSKIP_FINISH_LENGTH);
    ffnskip_context* small = make_ctx(m, n + 2);
    EXPECT_OK(ffnskip_generate(small, s, ids, n, 100, NULL, NULL, &n_gen, &finish));
    CHECK(finish == FFNSKIP_FINISH_LENGTH && n_gen == 3);
    CHECK(ctx_prop(small, FFNSKIP_CONTEXT_N_PAST) == n + 2);
    /* The prompt alone does not fit any more. */
    EXPECT_ERR(FFNSKIP_ERR_CONTEXT_OVERFLOW, "context",
               ffnskip_generate(small, s, ids, n, 4, NULL, NULL, &n_gen, NULL));
    CHECK(n_gen == 0);
    EXPECT_OK(ffnskip_context_free(small));

    /* A chat template's end-of-turn token ends the generation (ids 1 and 2 are SmolLM2's
     * <|im_start|> / <|im_end|>): an assistant turn that answers with a short word. */
    const char* chat =
        "<|im_start|>user\nSay only the word yes.<|im_end|>\n<|im_start|>assistant\n";
    int32_t chat_ids[64];
    int32_t n_chat = 0;
    REQUIRE_OK(ffnskip_tokenize(m, chat, strlen(chat), false, true, chat_ids, 64, &n_chat));
    Stream answer = {.n = 0};
    EXPECT_OK(ffnskip_context_kv_truncate(c, 0));
    EXPECT_OK(ffnskip_generate(c, s, chat_ids, n_chat, 64, collect, &answer, &n_gen, &finish));
    CHECK(finish == FFNSKIP_FINISH_EOG);
    CHECK(n_gen == answer.n && n_gen < 64);

    /* Argument errors. */
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "n_prompt",
               ffnskip_generate(c, s, ids, 0, 4, NULL, NULL, NULL, NULL));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "prompt is NULL",
               ffnskip_generate(c, s, NULL, 3, 4, NULL, NULL, NULL, NULL));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "max_tokens",
               ffnskip_generate(c, s, ids, n, -1, NULL, NULL, NULL, NULL));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "sampler is NULL",
               ffnskip_generate(c, NULL, ids, n, 4, NULL, NULL, NULL, NULL));
    const int32_t bad = n_vocab + 5;
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "out of range",
               ffnskip_generate(c, s, &bad, 1, 4, NULL, NULL, NULL, NULL));

    free(ids);
    EXPECT_OK(ffnskip_sampler_free(s));
    EXPECT_OK(ffnskip_context_free(c));
    EXPECT_OK(ffnskip_model_free(m));
}

/* ---- threads: cancel and BUSY ------------------------------------------------------------------
 */

/* The generating thread parks inside its token callback until the other thread has done its
 * part, so every interleaving below is deterministic. */
typedef struct {
    ffnskip_context* ctx;
    ffnskip_sampler* sampler;
    const int32_t* prompt;
    int32_t n_prompt;
    atomic_int in_callback;
    atomic_int release;
    int32_t n_gen;
    ffnskip_status status;
    int32_t tokens_seen;
} Parked;

static bool park_on_first_token(int32_t token, const char* piece, size_t len, void* user_data) {
    (void)token, (void)piece, (void)len;
    Parked* p = user_data;
    if (p->tokens_seen++ == 0) {
        atomic_store(&p->in_callback, 1);
        while (!atomic_load(&p->release)) sched_yield();
    }
    return true;
}

static void* generate_parked(void* arg) {
    Parked* p = arg;
    p->status = ffnskip_generate(p->ctx, p->sampler, p->prompt, p->n_prompt, 200,
                                 park_on_first_token, p, &p->n_gen, NULL);
    return NULL;
}

static void start_parked(Parked* p, pthread_t* t, ffnskip_context* c, ffnskip_sampler* s,
                         const int32_t* ids, int32_t n) {
    p->ctx = c;
    p->sampler = s;
    p->prompt = ids;
    p->n_prompt = n;
    atomic_init(&p->in_callback, 0);
    atomic_init(&p->release, 0);
    p->n_gen = -1;
    p->tokens_seen = 0;
    pthread_create(t, NULL, generate_parked, p);
    while (!atomic_load(&p->in_callback)) sched_yield();
}

static void test_cancel_generate_from_thread(void) {
    ffnskip_model* m = load(g_tiny);
    ffnskip_context* c = make_ctx(m, 512);
    ffnskip_sampler* s = make_greedy();
    int32_t n = 0;
    int32_t* ids = tokenize(m, "hello world", &n);

    /* A cancel before the call does not stop it. */
    EXPECT_OK(ffnskip_context_cancel(c));
    int32_t n_gen = -1;
    EXPECT_OK(ffnskip_generate(c, s, ids, n, 5, NULL, NULL, &n_gen, NULL));
    CHECK(n_gen >= 1);

    Parked p;
    pthread_t t;
    EXPECT_OK(ffnskip_context_kv_truncate(c, 0));
    start_parked(&p, &t, c, s, ids, n);
    EXPECT_OK(ffnskip_context_cancel(c)); /* from this thread, while generate runs */
    atomic_store(&p.release, 1);
    pthread_join(t, NULL);
    CHECK(p.status == FFNSKIP_ERR_CANCELLED);
    CHECK(p.n_gen == 1); /* stopped right after the token being streamed */

    /* The context works normally afterwards. */
    EXPECT_OK(ffnskip_context_kv_truncate(c, 0));
    EXPECT_OK(ffnskip_generate(c, s, ids, n, 3, NULL, NULL, &n_gen, NULL));
    free(ids);
    EXPECT_OK(ffnskip_sampler_free(s));
    EXPECT_OK(ffnskip_context_free(c));
    EXPECT_OK(ffnskip_model_free(m));
}

typedef struct {
    ffnskip_context* ctx;
    atomic_int done;
} Canceller;

static void* cancel_until_done(void* arg) {
    Canceller* k = arg;
    while (!atomic_load(&k->done)) {
        ffnskip_context_cancel(k->ctx);
        sched_yield();
    }
    return NULL;
}

/* A long prompt is cancelled between chunks, and the cache is rolled back. */
static void test_cancel_eval_from_thread(void) {
    ffnskip_model* m = load(g_tiny);
    ffnskip_context* c = make_ctx(m, 2048);
    /* Five chunks of the CPU backend's 256 tokens. */
    int32_t ids[1200];
    for (int i = 0; i < 1200; ++i) ids[i] = 3 + i % 250;
    Canceller k = {.ctx = c};
    atomic_init(&k.done, 0);
    pthread_t t;
    pthread_create(&t, NULL, cancel_until_done, &k);
    int cancelled = 0;
    for (int attempt = 0; attempt < 3 && !cancelled; ++attempt) {
        const ffnskip_status st = ffnskip_eval(c, ids, 1200);
        /* It may finish before a cancel lands between two of its chunks; never anything else. */
        CHECK(st == FFNSKIP_OK || st == FFNSKIP_ERR_CANCELLED);
        if (st == FFNSKIP_ERR_CANCELLED) {
            cancelled = 1;
            CHECK(ctx_prop(c, FFNSKIP_CONTEXT_N_PAST) == 0);
            float x;
            EXPECT_ERR(FFNSKIP_ERR_INVALID_STATE, "no logits", ffnskip_get_logits(c, &x, 1));
        } else {
            EXPECT_OK(ffnskip_context_kv_truncate(c, 0));
        }
    }
    atomic_store(&k.done, 1);
    pthread_join(t, NULL);
    CHECK(cancelled);
    EXPECT_OK(ffnskip_context_free(c));
    EXPECT_OK(ffnskip_model_free(m));
}

static void test_busy(void) {
    ffnskip_model* m = load(g_tiny);
    ffnskip_context* c = make_ctx(m, 512);
    ffnskip_sampler* s = make_greedy();
    ffnskip_skip_config* cfg = NULL;
    REQUIRE_OK(ffnskip_skip_config_create(&cfg));
    int32_t n = 0;
    int32_t* ids = tokenize(m, "hello world", &n);

    Parked p;
    pthread_t t;
    start_parked(&p, &t, c, s, ids, n);
    /* While generate runs on another thread, everything that needs the context or the sampler
     * is refused; the model and other handles stay usable. */
    int64_t v = 0;
    float logits[4];
    int32_t tok = 0;
    EXPECT_ERR(FFNSKIP_ERR_BUSY, "in use", ffnskip_eval(c, ids, n));
    EXPECT_ERR(FFNSKIP_ERR_BUSY, "in use", ffnskip_eval_generated(c, ids[0], 0));
    EXPECT_ERR(FFNSKIP_ERR_BUSY, "in use", ffnskip_get_logits(c, logits, 4));
    EXPECT_ERR(FFNSKIP_ERR_BUSY, "in use", ffnskip_context_info(c, FFNSKIP_CONTEXT_N_PAST, &v));
    EXPECT_ERR(FFNSKIP_ERR_BUSY, "in use", ffnskip_context_kv_truncate(c, 0));
    EXPECT_ERR(FFNSKIP_ERR_BUSY, "in use", ffnskip_context_set_skip(c, cfg));
    EXPECT_ERR(FFNSKIP_ERR_BUSY, "in use", ffnskip_context_reset_skip_stats(c));
    EXPECT_ERR(FFNSKIP_ERR_BUSY, "in use", ffnskip_context_free(c));
    EXPECT_ERR(FFNSKIP_ERR_BUSY, "in use", ffnskip_sampler_sample(s, logits, 4, NULL, 0, &tok));
    EXPECT_ERR(FFNSKIP_ERR_BUSY, "in use", ffnskip_sampler_free(s));
    EXPECT_ERR(FFNSKIP_ERR_BUSY, "in use",
               ffnskip_generate(c, s, ids, n, 1, NULL, NULL, NULL, NULL));
    EXPECT_OK(ffnskip_model_info(m, FFNSKIP_MODEL_N_VOCAB, &v));
    EXPECT_OK(ffnskip_skip_config_set_int(cfg, FFNSKIP_SKIP_SPAN, 1));
    ffnskip_context* other = make_ctx(m, 64);
    EXPECT_OK(ffnskip_eval(other, ids, n));
    EXPECT_OK(ffnskip_context_free(other));

    atomic_store(&p.release, 1);
    pthread_join(t, NULL);
    CHECK(p.status == FFNSKIP_OK);
    /* Free again once the call has returned. */
    EXPECT_OK(ffnskip_context_info(c, FFNSKIP_CONTEXT_N_PAST, &v));
    EXPECT_OK(ffnskip_skip_config_free(cfg));
    EXPECT_OK(ffnskip_sampler_free(s));
    EXPECT_OK(ffnskip_context_free(c));
    EXPECT_OK(ffnskip_model_free(m));
    free(ids);
}

/* A callback that calls back into the context it is streaming from gets BUSY. */
static bool reenter(int32_t token, const char* piece, size_t len, void* user_data) {
    (void)piece, (void)len;
    ffnskip_context* c = user_data;
    int64_t v = 0;
    EXPECT_ERR(FFNSKIP_ERR_BUSY, "in use", ffnskip_eval(c, &token, 1));
    EXPECT_ERR(FFNSKIP_ERR_BUSY, "in use", ffnskip_context_info(c, FFNSKIP_CONTEXT_N_PAST, &v));
    EXPECT_OK(ffnskip_context_cancel(c)); /* allowed from anywhere */
    return true;
}

static void test_reentry_from_callback(void) {
    ffnskip_model* m = load(g_tiny);
    ffnskip_context* c = make_ctx(m, 64);
    ffnskip_sampler* s = make_greedy();
    int32_t n = 0;
    int32_t* ids = tokenize(m, "hello", &n);
    int32_t n_gen = 0;
    EXPECT_ERR(FFNSKIP_ERR_CANCELLED, "cancelled",
               ffnskip_generate(c, s, ids, n, 8, reenter, c, &n_gen, NULL));
    CHECK(n_gen == 1);
    free(ids);
    EXPECT_OK(ffnskip_sampler_free(s));
    EXPECT_OK(ffnskip_context_free(c));
    EXPECT_OK(ffnskip_model_free(m));
}

/* ---- skip configuration and statistics --------------------------------------------------------
 */

static void test_skip_config(void) {
    ffnskip_skip_config* cfg = NULL;
    REQUIRE_OK(ffnskip_skip_config_create(&cfg));
    int32_t v = -1;
    struct {
        ffnskip_skip_int key;
        int32_t expected;
    } defaults[] = {{FFNSKIP_SKIP_ENABLED, 1},
                    {FFNSKIP_SKIP_WARMUP, 32},
                    {FFNSKIP_SKIP_COLD_START, 2},
                    {FFNSKIP_SKIP_COLD_END, 2},
                    {FFNSKIP_SKIP_SPAN, 3}};
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; ++i) {
        EXPECT_OK(ffnskip_skip_config_get_int(cfg, defaults[i].key, &v));
        CHECK(v == defaults[i].expected);
        EXPECT_OK(ffnskip_skip_config_set_int(cfg, defaults[i].key, 0));
        EXPECT_OK(ffnskip_skip_config_get_int(cfg, defaults[i].key, &v));
        CHECK(v == 0);
    }
    float thr[8] = {0};
    int32_t n = -1;
    EXPECT_OK(ffnskip_skip_config_get_array(cfg, FFNSKIP_SKIP_THRESHOLD, thr, 8, &n));
    CHECK(n == 1 && thr[0] == 0.98f);
    EXPECT_OK(ffnskip_skip_config_get_array(cfg, FFNSKIP_SKIP_COMPENSATION, thr, 8, &n));
    CHECK(n == 0);
    const float six[6] = {0.9f, NAN, -1.0f, 1.0f, 0.5f, 0.0f};
    EXPECT_OK(ffnskip_skip_config_set_array(cfg, FFNSKIP_SKIP_THRESHOLD, six, 6));
    EXPECT_ERR(FFNSKIP_ERR_BUFFER_TOO_SMALL, "needed",
               ffnskip_skip_config_get_array(cfg, FFNSKIP_SKIP_THRESHOLD, thr, 5, &n));
    CHECK(n == 6);
    EXPECT_OK(ffnskip_skip_config_get_array(cfg, FFNSKIP_SKIP_THRESHOLD, thr, 6, &n));
    CHECK(thr[0] == 0.9f && isnan(thr[1]) && thr[2] == -1.0f && thr[5] == 0.0f);

    /* Bad values name the problem and change nothing. */
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "0 or 1",
               ffnskip_skip_config_set_int(cfg, FFNSKIP_SKIP_ENABLED, 2));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, ">= 0",
               ffnskip_skip_config_set_int(cfg, FFNSKIP_SKIP_WARMUP, -1));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "unknown ffnskip_skip_int",
               ffnskip_skip_config_set_int(cfg, (ffnskip_skip_int)99, 1));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "unknown ffnskip_skip_int",
               ffnskip_skip_config_get_int(cfg, (ffnskip_skip_int)99, &v));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "unknown ffnskip_skip_array",
               ffnskip_skip_config_set_array(cfg, (ffnskip_skip_array)99, six, 1));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "unknown ffnskip_skip_array",
               ffnskip_skip_config_get_array(cfg, (ffnskip_skip_array)99, thr, 8, &n));
    const float too_big = 1.5f;
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "outside [-1, 1]",
               ffnskip_skip_config_set_array(cfg, FFNSKIP_SKIP_THRESHOLD, &too_big, 1));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "at least 1",
               ffnskip_skip_config_set_array(cfg, FFNSKIP_SKIP_THRESHOLD, NULL, 0));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "values is NULL",
               ffnskip_skip_config_set_array(cfg, FFNSKIP_SKIP_THRESHOLD, NULL, 2));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "n must be",
               ffnskip_skip_config_set_array(cfg, FFNSKIP_SKIP_COMPENSATION, six, -1));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "value is NULL",
               ffnskip_skip_config_get_int(cfg, FFNSKIP_SKIP_SPAN, NULL));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "n is NULL",
               ffnskip_skip_config_get_array(cfg, FFNSKIP_SKIP_THRESHOLD, thr, 8, NULL));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "capacity",
               ffnskip_skip_config_get_array(cfg, FFNSKIP_SKIP_THRESHOLD, thr, -1, &n));
    EXPECT_OK(ffnskip_skip_config_get_array(cfg, FFNSKIP_SKIP_THRESHOLD, thr, 6, &n));
    CHECK(n == 6 && thr[0] == 0.9f);
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "config is NULL", ffnskip_skip_config_create(NULL));

    /* Against a model: lengths are checked when the configuration is set on a context. */
    ffnskip_model* m = load(g_tiny); /* 6 layers, n_embd 64 */
    ffnskip_context* c = make_ctx(m, 64);
    EXPECT_OK(ffnskip_context_set_skip(c, cfg));
    const float three[3] = {0.9f, 0.9f, 0.9f};
    EXPECT_OK(ffnskip_skip_config_set_array(cfg, FFNSKIP_SKIP_THRESHOLD, three, 3));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "threshold", ffnskip_context_set_skip(c, cfg));
    EXPECT_OK(ffnskip_skip_config_set_array(cfg, FFNSKIP_SKIP_THRESHOLD, three, 1));
    float comp[6 * 64];
    for (int i = 0; i < 6 * 64; ++i) comp[i] = 0.01f * (float)(i % 7);
    EXPECT_OK(ffnskip_skip_config_set_array(cfg, FFNSKIP_SKIP_COMPENSATION, comp, 6 * 63));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "compensation", ffnskip_context_set_skip(c, cfg));
    EXPECT_OK(ffnskip_skip_config_set_array(cfg, FFNSKIP_SKIP_COMPENSATION, comp, 6 * 64));
    EXPECT_OK(ffnskip_context_set_skip(c, cfg));

    /* The context holds a copy: later edits of the handle do not reach it. */
    EXPECT_OK(ffnskip_skip_config_set_int(cfg, FFNSKIP_SKIP_SPAN, 5));
    ffnskip_skip_config* active = NULL;
    EXPECT_OK(ffnskip_context_get_skip(c, &active));
    CHECK(active != NULL && active != cfg);
    EXPECT_OK(ffnskip_skip_config_get_int(active, FFNSKIP_SKIP_SPAN, &v));
    CHECK(v == 0);
    EXPECT_ERR(FFNSKIP_ERR_BUFFER_TOO_SMALL, "needed",
               ffnskip_skip_config_get_array(active, FFNSKIP_SKIP_COMPENSATION, NULL, 0, &n));
    CHECK(n == 6 * 64);
    EXPECT_OK(ffnskip_skip_config_free(active));
    EXPECT_OK(ffnskip_context_set_skip(c, NULL));
    EXPECT_OK(ffnskip_context_get_skip(c, &active));
    CHECK(active == NULL);
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "config is NULL", ffnskip_context_get_skip(c, NULL));

    EXPECT_OK(ffnskip_skip_config_free(cfg));
    EXPECT_OK(ffnskip_context_free(c));
    EXPECT_OK(ffnskip_model_free(m));
}

/* The channel-sparse kind through the keyed arrays: round trip, a check against the model, and
 * bytes actually saved on generated tokens (dense reads every FFN byte). */
static void test_channel_sparse(void) {
    ffnskip_skip_config* cfg = NULL;
    REQUIRE_OK(ffnskip_skip_config_create(&cfg));
    float out[8];
    int32_t n = -1;
    EXPECT_OK(ffnskip_skip_config_get_array(cfg, FFNSKIP_SKIP_CHANNEL_GATE, out, 8, &n));
    CHECK(n == 0);
    const float off = NAN;
    EXPECT_OK(ffnskip_skip_config_set_array(cfg, FFNSKIP_SKIP_THRESHOLD, &off, 1));
    EXPECT_OK(ffnskip_skip_config_set_int(cfg, FFNSKIP_SKIP_WARMUP, 0));
    EXPECT_OK(ffnskip_skip_config_set_int(cfg, FFNSKIP_SKIP_COLD_START, 0));
    EXPECT_OK(ffnskip_skip_config_set_int(cfg, FFNSKIP_SKIP_COLD_END, 0));
    const float gate[6] = {0.05f, 0.05f, 0.05f, NAN, 0.05f, 0.05f};
    EXPECT_OK(ffnskip_skip_config_set_array(cfg, FFNSKIP_SKIP_CHANNEL_GATE, gate, 6));
    EXPECT_OK(ffnskip_skip_config_get_array(cfg, FFNSKIP_SKIP_CHANNEL_GATE, out, 8, &n));
    CHECK(n == 6 && out[0] == 0.05f && isnan(out[3]));

    ffnskip_model* m = load(g_tiny); /* 6 layers */
    ffnskip_context* c = make_ctx(m, 64);
    EXPECT_OK(ffnskip_skip_config_set_array(cfg, FFNSKIP_SKIP_CHANNEL_MID, gate, 5));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "t_mid", ffnskip_context_set_skip(c, cfg));
    EXPECT_OK(ffnskip_skip_config_set_array(cfg, FFNSKIP_SKIP_CHANNEL_MID, NULL, 0));
    EXPECT_OK(ffnskip_context_set_skip(c, cfg));

    int32_t np = 0;
    int32_t* ids = tokenize(m, "channel sparse", &np);
    EXPECT_OK(ffnskip_eval(c, ids, np));
    for (int32_t i = 0; i < 4; ++i) EXPECT_OK(ffnskip_eval_generated(c, ids[0], i));
    ffnskip_skip_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    EXPECT_OK(ffnskip_context_skip_stats(c, &st));
    CHECK(st.tokens == 4);
    CHECK(st.ffn_skipped == 0);
    CHECK(st.ffn_bytes_dense > 0);
    CHECK(st.ffn_bytes_read > 0 && st.ffn_bytes_read < st.ffn_bytes_dense);
    CHECK(st.ffn_bytes_saved > 0.0 &&
          fabs(st.ffn_bytes_saved -
               (1.0 - (double)st.ffn_bytes_read / (double)st.ffn_bytes_dense)) < 1e-12);

    free(ids);
    EXPECT_OK(ffnskip_skip_config_free(cfg));
    EXPECT_OK(ffnskip_context_free(c));
    EXPECT_OK(ffnskip_model_free(m));
}

/* Prints the stored profile and the one a new context starts with (checked by pytest against
 * what it wrote into the file). */
static void dump_profile(void) {
    ffnskip_model* m = load(g_tiny);
    ffnskip_skip_config* stored = NULL;
    REQUIRE_OK(ffnskip_skip_config_from_model(m, &stored));
    CHECK(stored != NULL);
    ffnskip_context* c = make_ctx(m, 64);
    ffnskip_skip_config* active = NULL;
    REQUIRE_OK(ffnskip_context_get_skip(c, &active));
    CHECK(active != NULL);
    ffnskip_skip_config* both[2] = {stored, active};
    const char* names[2] = {"stored", "active"};
    for (int k = 0; k < 2 && stored && active; ++k) {
        int32_t v[5];
        for (int key = FFNSKIP_SKIP_ENABLED; key <= FFNSKIP_SKIP_SPAN; ++key)
            REQUIRE_OK(ffnskip_skip_config_get_int(both[k], (ffnskip_skip_int)key, &v[key - 1]));
        float thr[64];
        int32_t n = 0;
        REQUIRE_OK(ffnskip_skip_config_get_array(both[k], FFNSKIP_SKIP_THRESHOLD, thr, 64, &n));
        printf("%s enabled=%d warmup=%d cold_start=%d cold_end=%d span=%d threshold=", names[k],
               v[0], v[1], v[2], v[3], v[4]);
        for (int32_t i = 0; i < n; ++i) printf("%s%.9g", i ? "," : "", thr[i]);
        printf("\n");
    }
    ffnskip_skip_config* none = (ffnskip_skip_config*)&g_failures;
    ffnskip_model* s = load(g_smollm2);
    EXPECT_OK(ffnskip_skip_config_from_model(s, &none));
    CHECK(none == NULL);
    ffnskip_skip_config_free(stored);
    ffnskip_skip_config_free(active);
    ffnskip_context_free(c);
    ffnskip_model_free(m);
    ffnskip_model_free(s);
}

/* Generates greedily under the file's profile and prints the statistics (pytest compares them
 * with the Python bindings' for the same generation). */
static void dump_skip_stats(void) {
    ffnskip_model* m = load(g_tiny);
    const int32_t n_layer = (int32_t)model_prop(m, FFNSKIP_MODEL_N_LAYER);
    ffnskip_context* c = make_ctx(m, 256);
    ffnskip_sampler* s = make_greedy();
    int32_t n = 0;
    int32_t* ids = tokenize(m, "hello world", &n);
    Stream st = {.n = 0};
    int32_t n_gen = 0;
    ffnskip_finish finish = 0;
    REQUIRE_OK(ffnskip_generate(c, s, ids, n, 24, collect, &st, &n_gen, &finish));
    ffnskip_skip_stats stats = {.struct_size = sizeof stats};
    REQUIRE_OK(ffnskip_context_skip_stats(c, &stats));
    int64_t ev[64], sk[64];
    REQUIRE_OK(ffnskip_context_skip_stats_layers(c, ev, sk, n_layer));
    /* Consistency of the totals, whatever the numbers are. */
    int64_t sum_ev = 0, sum_sk = 0;
    for (int32_t l = 0; l < n_layer; ++l) sum_ev += ev[l], sum_sk += sk[l];
    CHECK(sum_ev == stats.ffn_evaluated && sum_sk == stats.ffn_skipped);
    CHECK(stats.ffn_evaluated + stats.ffn_skipped == stats.tokens * n_layer);
    CHECK(stats.tokens == (finish == FFNSKIP_FINISH_EOG ? n_gen : n_gen - 1));
    CHECK(fabs(stats.skip_ratio - (double)stats.ffn_skipped / (double)(stats.tokens * n_layer)) <
          1e-12);
    printf("prompt=");
    for (int32_t i = 0; i < n; ++i) printf("%s%d", i ? "," : "", ids[i]);
    printf("\ngenerated=");
    for (int32_t i = 0; i < st.n; ++i) printf("%s%d", i ? "," : "", st.tokens[i]);
    printf("\ntokens=%lld skipped=%lld ratio=%.9f\nevaluated_layers=", (long long)stats.tokens,
           (long long)stats.ffn_skipped, stats.skip_ratio);
    for (int32_t l = 0; l < n_layer; ++l) printf("%s%lld", l ? "," : "", (long long)ev[l]);
    printf("\nskipped_layers=");
    for (int32_t l = 0; l < n_layer; ++l) printf("%s%lld", l ? "," : "", (long long)sk[l]);
    printf("\n");

    /* Errors, reset, and a dense context's statistics. */
    ffnskip_skip_stats bad = {.struct_size = 4};
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "struct_size", ffnskip_context_skip_stats(c, &bad));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "stats is NULL", ffnskip_context_skip_stats(c, NULL));
    EXPECT_ERR(FFNSKIP_ERR_INVALID_ARGUMENT, "n_layer",
               ffnskip_context_skip_stats_layers(c, ev, sk, n_layer + 1));
    EXPECT_OK(ffnskip_context_skip_stats_layers(c, NULL, sk, n_layer));
    EXPECT_OK(ffnskip_context_reset_skip_stats(c));
    EXPECT_OK(ffnskip_context_skip_stats(c, &stats));
    CHECK(stats.tokens == 0 && stats.ffn_skipped == 0 && stats.skip_ratio == 0.0);
    EXPECT_OK(ffnskip_context_set_skip(c, NULL));
    EXPECT_OK(ffnskip_context_kv_truncate(c, 0));
    REQUIRE_OK(ffnskip_generate(c, s, ids, n, 8, NULL, NULL, &n_gen, NULL));
    EXPECT_OK(ffnskip_context_skip_stats(c, &stats));
    CHECK(stats.tokens == 0 && stats.ffn_skipped == 0);
    free(ids);
    ffnskip_sampler_free(s);
    ffnskip_context_free(c);
    ffnskip_model_free(m);
}

/* Prints what pytest checks against the Python bindings: model properties, a tokenization, the
 * logits after a prompt, and a greedy continuation. */
static void dump_smollm2(void) {
    ffnskip_model* m = load(g_smollm2);
    printf("n_vocab=%lld n_layer=%lld n_embd=%lld n_ctx_train=%lld bos=%lld eos=%lld\n",
           (long long)model_prop(m, FFNSKIP_MODEL_N_VOCAB),
           (long long)model_prop(m, FFNSKIP_MODEL_N_LAYER),
           (long long)model_prop(m, FFNSKIP_MODEL_N_EMBD),
           (long long)model_prop(m, FFNSKIP_MODEL_N_CTX_TRAIN),
           (long long)model_prop(m, FFNSKIP_MODEL_BOS),
           (long long)model_prop(m, FFNSKIP_MODEL_EOS));
    int32_t n = 0;
    int32_t* ids = tokenize(m, "Once upon a time, in a small village,", &n);
    printf("tokens=");
    for (int32_t i = 0; i < n; ++i) printf("%s%d", i ? "," : "", ids[i]);
    printf("\n");
    const int32_t n_vocab = (int32_t)model_prop(m, FFNSKIP_MODEL_N_VOCAB);
    ffnskip_context* c = make_ctx(m, 128);
    REQUIRE_OK(ffnskip_eval(c, ids, n));
    float* logits = malloc(sizeof *logits * (size_t)n_vocab);
    REQUIRE_OK(ffnskip_get_logits(c, logits, n_vocab));
    printf("logits=");
    for (int32_t i = 0; i < n_vocab; i += 997) printf("%s%.9g", i ? "," : "", logits[i]);
    printf("\nargmax=%d\n", argmax(logits, n_vocab));
    free(logits);
    ffnskip_sampler* s = make_greedy();
    Stream st = {.n = 0};
    REQUIRE_OK(ffnskip_context_kv_truncate(c, 0));
    REQUIRE_OK(ffnskip_generate(c, s, ids, n, 16, collect, &st, NULL, NULL));
    printf("text=%s\n", st.text);
    free(ids);
    ffnskip_sampler_free(s);
    ffnskip_context_free(c);
    ffnskip_model_free(m);
}

/* ---- driver -------------------------------------------------------------------------------- */

static const struct {
    const char* name;
    void (*run)(void);
} CASES[] = {
    {"version", test_version},
    {"last_error_is_per_thread", test_last_error_is_per_thread},
    {"load_errors", test_load_errors},
    {"load_progress", test_load_progress},
    {"load_cancel", test_load_cancel},
    {"load_cancel_from_thread", test_load_cancel_from_thread},
    {"model_info", test_model_info},
    {"null_handles", test_null_handles},
    {"stale_and_foreign_handles", test_stale_and_foreign_handles},
    {"tokenize", test_tokenize},
    {"detokenize", test_detokenize},
    {"context_create", test_context_create},
    {"context_outlives_model", test_context_outlives_model},
    {"eval_and_logits", test_eval_and_logits},
    {"contexts_share_model_while_running", test_contexts_share_model_while_running},
    {"sampler", test_sampler},
    {"generate", test_generate},
    {"cancel_generate_from_thread", test_cancel_generate_from_thread},
    {"cancel_eval_from_thread", test_cancel_eval_from_thread},
    {"busy", test_busy},
    {"reentry_from_callback", test_reentry_from_callback},
    {"skip_config", test_skip_config},
    {"channel_sparse", test_channel_sparse},
    {"dump_profile", dump_profile},
    {"dump_skip_stats", dump_skip_stats},
    {"dump_smollm2", dump_smollm2},
};

int main(int argc, char** argv) {
    const size_t n_cases = sizeof CASES / sizeof CASES[0];
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < n_cases; ++i) printf("%s\n", CASES[i].name);
        return 0;
    }
    if (argc != 4) {
        fprintf(stderr, "usage: %s --list | CASE SMOLLM2_GGUF TINY_GGUF\n", argv[0]);
        return 2;
    }
    g_smollm2 = argv[2];
    g_tiny = argv[3];
    for (size_t i = 0; i < n_cases; ++i) {
        if (strcmp(argv[1], CASES[i].name) == 0) {
            CASES[i].run();
            if (g_failures) fprintf(stderr, "%s: %d check(s) failed\n", argv[1], g_failures);
            return g_failures ? 1 : 0;
        }
    }
    fprintf(stderr, "unknown case %s\n", argv[1]);
    return 2;
}
