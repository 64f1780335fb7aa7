/* ffnskip-native C API: load a GGUF model, evaluate and sample tokens, stream generations, and
 * configure the conditional FFN path, from C or any language with a C FFI.
 *
 * Conventions
 * - Every object is an opaque handle made by a *_create / *_load function and released by its
 *   *_free function. No C++ type, exception or container crosses this boundary.
 * - Every function that can fail returns an ffnskip_status; FFNSKIP_OK is 0. On failure
 *   ffnskip_last_error() gives a message naming the problem. Output parameters are written only
 *   on success, except where a function documents otherwise (BUFFER_TOO_SMALL reports the size).
 * - A NULL handle or a NULL pointer where one is required returns FFNSKIP_ERR_INVALID_ARGUMENT.
 *   So does a freed or foreign pointer passed as a handle, as long as its address has not been
 *   reused by a newer handle of the same kind (live handles are kept in a registry).
 * - Parameter structs start with `struct_size`; fill them with the matching *_params_init
 *   function, passing sizeof the struct. Fields are only ever appended, so an app built against
 *   an older header keeps working with a newer library (the library uses defaults for the
 *   fields the app's struct does not have).
 * - Token ids are int32_t in [0, n_vocab).
 *
 * Threads
 * - A context or sampler is used by one thread at a time. A second thread that calls into one
 *   while another call on it is running gets FFNSKIP_ERR_BUSY (nothing is changed); that
 *   includes *_free, so a handle in use is never freed under its user.
 * - ffnskip_context_cancel may be called from any thread at any time.
 * - A model is read-only once loaded: any number of threads may tokenize with it and create
 *   contexts from it at once (freeing it meanwhile returns FFNSKIP_ERR_BUSY). A context keeps
 *   the weights alive, so the model handle may be freed before its contexts.
 * - A skip configuration may be read by several calls at once (e.g. set on several contexts);
 *   changing or freeing it while it is read returns FFNSKIP_ERR_BUSY.
 * - Callbacks run on the thread that made the call. Calling back into the same context or
 *   sampler from a callback returns FFNSKIP_ERR_BUSY.
 *
 * Versioning: FFNSKIP_ABI_VERSION changes only when an existing function, struct field or enum
 * value changes meaning or is removed; additions keep it. Check ffnskip_abi_version() against
 * the macro at start-up. Exported symbols carry the version node FFNSKIP_<ABI>.
 */
#ifndef FFNSKIP_C_H
#define FFNSKIP_C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The library is built with hidden visibility; these are the functions it exports (GCC, Clang). */
#define FFNSKIP_API __attribute__((visibility("default")))

/* Enumerations travel as 32-bit ints. C++ (the library's language) is told so: any int32_t a C
 * caller passes is then a valid value there, and one that names no enumerator is refused with
 * FFNSKIP_ERR_INVALID_ARGUMENT rather than being undefined behaviour. */
#ifdef __cplusplus
#define FFNSKIP_ENUM_BASE : int32_t
#else
#define FFNSKIP_ENUM_BASE
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define FFNSKIP_VERSION_MAJOR 0
#define FFNSKIP_VERSION_MINOR 1
#define FFNSKIP_VERSION_PATCH 0
#define FFNSKIP_VERSION_STRING "0.1.0"
#define FFNSKIP_ABI_VERSION 1

/* ---- status, errors, versions ------------------------------------------------------------ */

typedef enum ffnskip_status FFNSKIP_ENUM_BASE {
    FFNSKIP_OK = 0,
    FFNSKIP_ERR_INVALID_ARGUMENT = 1,    /* NULL, bad handle, bad value, token out of range */
    FFNSKIP_ERR_IO = 2,                  /* the file cannot be opened or read */
    FFNSKIP_ERR_FORMAT = 3,              /* malformed or unsupported GGUF file */
    FFNSKIP_ERR_CONTEXT_OVERFLOW = 4,    /* the tokens do not fit in the context window */
    FFNSKIP_ERR_BACKEND_UNAVAILABLE = 5, /* CUDA not compiled in, or no device */
    FFNSKIP_ERR_CANCELLED = 6,           /* ffnskip_context_cancel, or the load's callback */
    FFNSKIP_ERR_BUSY = 7,                /* the handle is in use by another call */
    FFNSKIP_ERR_BUFFER_TOO_SMALL = 8,    /* the size needed is in the count/length output */
    FFNSKIP_ERR_INVALID_STATE = 9,       /* e.g. logits asked for before any evaluation */
    FFNSKIP_ERR_OUT_OF_MEMORY = 10,
    FFNSKIP_ERR_RUNTIME = 11, /* the engine failed while running (e.g. a CUDA error) */
    FFNSKIP_ERR_INTERNAL = 12 /* a bug: please report the message */
} ffnskip_status;

/* The library version, e.g. "0.1.0" (FFNSKIP_VERSION_STRING of the library's own build). */
FFNSKIP_API const char* ffnskip_version(void);
/* The library's FFNSKIP_ABI_VERSION. */
FFNSKIP_API int32_t ffnskip_abi_version(void);
/* A constant name for a status ("FFNSKIP_ERR_BUSY"); "unknown status" for other values. */
FFNSKIP_API const char* ffnskip_status_string(ffnskip_status status);
/* The message of the last call on this thread that failed ("" if none has). The pointer stays
 * valid until the next failing call on this thread. */
FFNSKIP_API const char* ffnskip_last_error(void);

/* ---- model ----------------------------------------------------------------------------------- */

typedef struct ffnskip_model ffnskip_model;

/* Called while loading with the fraction of the file read so far, from 0 to 1 (inclusive, in
 * increasing order). Return false to cancel the load: ffnskip_model_load then returns
 * FFNSKIP_ERR_CANCELLED. An app with its own cancel flag (e.g. set by a "Cancel" button on
 * another thread) returns its negation here. */
typedef bool (*ffnskip_progress_fn)(float progress, void* user_data);

typedef struct ffnskip_load_params {
    size_t struct_size;
    ffnskip_progress_fn progress; /* may be NULL */
    void* progress_user_data;
} ffnskip_load_params;

/* Defaults: no progress callback. struct_size is sizeof(ffnskip_load_params) as the caller sees
 * it. */
FFNSKIP_API ffnskip_status ffnskip_load_params_init(ffnskip_load_params* params,
                                                    size_t struct_size);

/* Maps the GGUF file at `path`, validates it and reads every page of it once, so that the first
 * evaluation does not wait for the disk. params may be NULL (defaults). On success *model is a
 * new handle; on failure it is left unchanged. FFNSKIP_ERR_IO / FFNSKIP_ERR_FORMAT name the
 * problem. */
FFNSKIP_API ffnskip_status ffnskip_model_load(const char* path, const ffnskip_load_params* params,
                                              ffnskip_model** model);
/* Releases the handle (NULL: no-op, FFNSKIP_OK). FFNSKIP_ERR_BUSY while another thread is in a
 * call on this model. Contexts created from it stay usable. */
FFNSKIP_API ffnskip_status ffnskip_model_free(ffnskip_model* model);

typedef enum ffnskip_model_prop FFNSKIP_ENUM_BASE {
    FFNSKIP_MODEL_N_VOCAB = 1,
    FFNSKIP_MODEL_N_LAYER = 2,
    FFNSKIP_MODEL_N_EMBD = 3,
    FFNSKIP_MODEL_N_CTX_TRAIN = 4,
    FFNSKIP_MODEL_BOS = 5,             /* -1 when the model has none */
    FFNSKIP_MODEL_EOS = 6,             /* -1 when the model has none */
    FFNSKIP_MODEL_HAS_SKIP_PROFILE = 7 /* 1 when the file stores a skip profile, else 0 */
} ffnskip_model_prop;

FFNSKIP_API ffnskip_status ffnskip_model_info(const ffnskip_model* model, ffnskip_model_prop prop,
                                              int64_t* value);
/* *is_eog: whether `token` ends a generation (EOS and end-of-turn tokens of the vocabulary). */
FFNSKIP_API ffnskip_status ffnskip_model_is_eog(const ffnskip_model* model, int32_t token,
                                                bool* is_eog);

/* ---- tokenizer ------------------------------------------------------------------------------- */

/* Tokens of text[0, text_len) (UTF-8; NUL bytes are ordinary bytes). add_special: add BOS/EOS as
 * the model file asks. parse_special: recognise control-token strings such as "<|im_start|>".
 * Writes *n_tokens = the number of tokens; if that exceeds `capacity` nothing is written to
 * `tokens` and FFNSKIP_ERR_BUFFER_TOO_SMALL is returned (tokens may be NULL when capacity is 0,
 * to ask for the size). */
FFNSKIP_API ffnskip_status ffnskip_tokenize(const ffnskip_model* model, const char* text,
                                            size_t text_len, bool add_special, bool parse_special,
                                            int32_t* tokens, int32_t capacity, int32_t* n_tokens);
/* Text of the tokens, with invalid UTF-8 replaced by U+FFFD; control tokens are rendered only
 * with `special`. Writes *length = the text's length in bytes; the buffer needs length + 1 bytes
 * (the text is NUL-terminated), else FFNSKIP_ERR_BUFFER_TOO_SMALL and nothing is written (buf
 * may be NULL when capacity is 0). */
FFNSKIP_API ffnskip_status ffnskip_detokenize(const ffnskip_model* model, const int32_t* tokens,
                                              int32_t n_tokens, bool special, char* buf,
                                              size_t capacity, size_t* length);
/* The bytes one token contributes to text (possibly part of a UTF-8 character): what a stream
 * of tokens concatenates to. Same buffer rules as ffnskip_detokenize. */
FFNSKIP_API ffnskip_status ffnskip_token_piece(const ffnskip_model* model, int32_t token, char* buf,
                                               size_t capacity, size_t* length);

/* ---- context: a KV cache on a backend -------------------------------------------------------- */

typedef struct ffnskip_context ffnskip_context;

typedef enum ffnskip_backend FFNSKIP_ENUM_BASE {
    FFNSKIP_BACKEND_AUTO = 0, /* CUDA when compiled in and a device is present, else CPU */
    FFNSKIP_BACKEND_CPU = 1,
    FFNSKIP_BACKEND_CUDA = 2
} ffnskip_backend;

typedef struct ffnskip_context_params {
    size_t struct_size;
    int32_t n_ctx;           /* KV cache positions, >= 1; default 4096 */
    int32_t n_threads;       /* CPU threads, >= 0; 0 (default) = the physical cores */
    ffnskip_backend backend; /* default FFNSKIP_BACKEND_AUTO */
} ffnskip_context_params;

FFNSKIP_API ffnskip_status ffnskip_context_params_init(ffnskip_context_params* params,
                                                       size_t struct_size);

/* A new context with an empty cache. params may be NULL (defaults). The skip profile stored in
 * the model file, if any, is active; otherwise decoding is dense (ffnskip_context_set_skip
 * changes it). FFNSKIP_ERR_BACKEND_UNAVAILABLE says why CUDA cannot be used. Memory: each context
 * has its own KV cache and, on the CPU, its own re-laid-out copy of Q4_0/Q4_1 weights. */
FFNSKIP_API ffnskip_status ffnskip_context_create(const ffnskip_model* model,
                                                  const ffnskip_context_params* params,
                                                  ffnskip_context** ctx);
/* NULL: no-op. FFNSKIP_ERR_BUSY while a call on it runs (cancel it, then free). */
FFNSKIP_API ffnskip_status ffnskip_context_free(ffnskip_context* ctx);

typedef enum ffnskip_context_prop FFNSKIP_ENUM_BASE {
    FFNSKIP_CONTEXT_N_CTX = 1,
    FFNSKIP_CONTEXT_N_PAST = 2, /* tokens in the cache */
    FFNSKIP_CONTEXT_N_THREADS = 3,
    FFNSKIP_CONTEXT_BACKEND = 4, /* the ffnskip_backend in use (never AUTO) */
    FFNSKIP_CONTEXT_N_VOCAB = 5
} ffnskip_context_prop;

FFNSKIP_API ffnskip_status ffnskip_context_info(ffnskip_context* ctx, ffnskip_context_prop prop,
                                                int64_t* value);
/* Keeps the first n_keep cache entries (0 <= n_keep <= n_past); 0 clears the cache. */
FFNSKIP_API ffnskip_status ffnskip_context_kv_truncate(ffnskip_context* ctx, int32_t n_keep);

/* Asks the call running on ctx (eval, eval_generated, generate) to stop: it returns
 * FFNSKIP_ERR_CANCELLED within one token (prompt evaluation stops between chunks, and the cache
 * is then as before the call). Any thread, any time; a cancel that arrives while no call runs
 * has no effect on later calls. */
FFNSKIP_API ffnskip_status ffnskip_context_cancel(ffnskip_context* ctx);

/* ---- evaluation ------------------------------------------------------------------------------ */

/* Appends n_tokens prompt tokens to the cache (batched, always dense) and keeps the logits of
 * the last one. FFNSKIP_ERR_CONTEXT_OVERFLOW if n_past + n_tokens > n_ctx. */
FFNSKIP_API ffnskip_status ffnskip_eval(ffnskip_context* ctx, const int32_t* tokens,
                                        int32_t n_tokens);
/* Appends one generated token under the active skip configuration and keeps its logits.
 * gen_index counts generated tokens from 0 (the skip warm-up is measured in it). */
FFNSKIP_API ffnskip_status ffnskip_eval_generated(ffnskip_context* ctx, int32_t token,
                                                  int64_t gen_index);
/* Copies the logits of the last evaluated token (n_vocab floats) to `logits`; `capacity` is its
 * length in floats. FFNSKIP_ERR_INVALID_STATE before the first evaluation, after a failed one,
 * or after the cache was truncated. */
FFNSKIP_API ffnskip_status ffnskip_get_logits(ffnskip_context* ctx, float* logits,
                                              int32_t capacity);

/* ---- sampler --------------------------------------------------------------------------------- */

typedef struct ffnskip_sampler ffnskip_sampler;

/* Filters, in this order: repetition penalty over the last repeat_last_n tokens; temperature 0 =
 * greedy (lowest id on ties) and nothing else applies; top_k (0 = off); softmax at the
 * temperature; top_p (1 = off); min_p (0 = off); a draw from a xoshiro256** stream seeded with
 * `seed` (the same seed gives the same draws on every platform). */
typedef struct ffnskip_sampler_params {
    size_t struct_size;
    float temperature;        /* >= 0; default 0.8 */
    int32_t top_k;            /* >= 0; default 40 */
    float top_p;              /* (0, 1]; default 0.95 */
    float min_p;              /* [0, 1]; default 0.05 */
    float repetition_penalty; /* > 0; default 1 (off) */
    int32_t repeat_last_n;    /* >= 0; default 64 (ffnskip_generate only) */
    uint64_t seed;            /* default 0 */
} ffnskip_sampler_params;

FFNSKIP_API ffnskip_status ffnskip_sampler_params_init(ffnskip_sampler_params* params,
                                                       size_t struct_size);
/* params may be NULL (defaults). Bad values: FFNSKIP_ERR_INVALID_ARGUMENT naming the field. */
FFNSKIP_API ffnskip_status ffnskip_sampler_create(const ffnskip_sampler_params* params,
                                                  ffnskip_sampler** sampler);
FFNSKIP_API ffnskip_status ffnskip_sampler_free(ffnskip_sampler* sampler);
FFNSKIP_API ffnskip_status ffnskip_sampler_reseed(ffnskip_sampler* sampler, uint64_t seed);
/* Draws a token from logits[0, n_vocab). recent[0, n_recent) are the ids the repetition penalty
 * sees (may be NULL when n_recent is 0). NaN or +inf logits, all -inf, or a recent id out of
 * range: FFNSKIP_ERR_INVALID_ARGUMENT. */
FFNSKIP_API ffnskip_status ffnskip_sampler_sample(ffnskip_sampler* sampler, const float* logits,
                                                  int32_t n_vocab, const int32_t* recent,
                                                  int32_t n_recent, int32_t* token);

/* ---- generation ------------------------------------------------------------------------------ */

/* Called with each generated token and its bytes (ffnskip_token_piece; a UTF-8 character may
 * span pieces). Return false to stop the generation. */
typedef bool (*ffnskip_token_fn)(int32_t token, const char* piece, size_t piece_len,
                                 void* user_data);

typedef enum ffnskip_finish FFNSKIP_ENUM_BASE {
    FFNSKIP_FINISH_EOG = 1,     /* the model produced an end-of-generation token (not streamed) */
    FFNSKIP_FINISH_LENGTH = 2,  /* max_tokens reached, or the context window is full */
    FFNSKIP_FINISH_CALLBACK = 3 /* the token callback returned false */
} ffnskip_finish;

/* Appends the prompt to the cache (clear it first with ffnskip_context_kv_truncate(ctx, 0) for a
 * fresh start), then samples up to max_tokens tokens with `sampler`, streaming each to on_token
 * (may be NULL). Generated tokens run under the active skip configuration, counted from
 * gen_index 0; the skip statistics are reset first and then describe this call. The last
 * streamed token is not evaluated, so the cache ends one token short of the stream.
 * Returns FFNSKIP_OK when the generation finished (*finish says why; may be NULL), or
 * FFNSKIP_ERR_CANCELLED after ffnskip_context_cancel. *n_generated (may be NULL) is the number of
 * tokens streamed, written whatever the status. */
FFNSKIP_API ffnskip_status ffnskip_generate(ffnskip_context* ctx, ffnskip_sampler* sampler,
                                            const int32_t* prompt, int32_t n_prompt,
                                            int32_t max_tokens, ffnskip_token_fn on_token,
                                            void* user_data, int32_t* n_generated,
                                            ffnskip_finish* finish);

/* ---- conditional FFN: skip configuration and statistics -------------------------------------- */

/* A skip configuration is a value: setting it on a context copies it. Block kind (the FFN of a
 * layer is skipped whole; semantics in DESIGN.md, "FFN skipping - exact semantics"): dense for
 * prompt tokens, the first `warmup` generated tokens and the cold layers (l < cold_start or
 * l >= n_layer - cold_end); after a hot layer's FFN runs with gate cos(h, h') >= threshold[l],
 * the next `span` hot layers are skipped (span 0: all remaining hot layers). */
typedef struct ffnskip_skip_config ffnskip_skip_config;

typedef enum ffnskip_skip_int FFNSKIP_ENUM_BASE {
    FFNSKIP_SKIP_ENABLED = 1,    /* 0 or 1; default 1 */
    FFNSKIP_SKIP_WARMUP = 2,     /* >= 0; default 32 */
    FFNSKIP_SKIP_COLD_START = 3, /* >= 0; default 2 */
    FFNSKIP_SKIP_COLD_END = 4,   /* >= 0; default 2 */
    FFNSKIP_SKIP_SPAN = 5        /* >= 0; default 3 */
} ffnskip_skip_int;

/* Per-layer float arrays. A later conditional-FFN kind adds its arrays as new keys, which keeps
 * the ABI. The channel-sparse kind (kind 2) zeroes, inside an FFN that runs for a generated token
 * past warm-up, the entries below a layer's threshold: of the FFN input h (t_in), of the gate
 * activation act(W_gate h) (t_gate: the neuron's W_up row and W_down column are not read), of
 * the product m (t_mid). NaN turns a layer's filter off; an empty array (default) turns it off
 * everywhere. */
typedef enum ffnskip_skip_array FFNSKIP_ENUM_BASE {
    FFNSKIP_SKIP_THRESHOLD = 1,    /* block gate thresholds in [-1, 1] or NaN (never): 1 value for
                                    * every layer or n_layer values; default {0.98} */
    FFNSKIP_SKIP_COMPENSATION = 2, /* n_layer x n_embd row-major added by a skipped block, or
                                    * empty (default: none) */
    FFNSKIP_SKIP_CHANNEL_IN = 3,   /* kind 2: t_in, n_layer values >= 0 or NaN, or empty */
    FFNSKIP_SKIP_CHANNEL_GATE = 4, /* kind 2: t_gate, likewise */
    FFNSKIP_SKIP_CHANNEL_MID = 5   /* kind 2: t_mid, likewise */
} ffnskip_skip_array;

/* The defaults above. */
FFNSKIP_API ffnskip_status ffnskip_skip_config_create(ffnskip_skip_config** config);
/* The profile stored in the model file; *config = NULL (and FFNSKIP_OK) when it has none. */
FFNSKIP_API ffnskip_status ffnskip_skip_config_from_model(const ffnskip_model* model,
                                                          ffnskip_skip_config** config);
FFNSKIP_API ffnskip_status ffnskip_skip_config_free(ffnskip_skip_config* config);
FFNSKIP_API ffnskip_status ffnskip_skip_config_set_int(ffnskip_skip_config* config,
                                                       ffnskip_skip_int key, int32_t value);
FFNSKIP_API ffnskip_status ffnskip_skip_config_get_int(const ffnskip_skip_config* config,
                                                       ffnskip_skip_int key, int32_t* value);
/* values may be NULL when n is 0. Lengths are checked against a model when the configuration is
 * set on a context. */
FFNSKIP_API ffnskip_status ffnskip_skip_config_set_array(ffnskip_skip_config* config,
                                                         ffnskip_skip_array key,
                                                         const float* values, int32_t n);
/* Writes *n = the array's length; FFNSKIP_ERR_BUFFER_TOO_SMALL (nothing copied) if it exceeds
 * capacity. */
FFNSKIP_API ffnskip_status ffnskip_skip_config_get_array(const ffnskip_skip_config* config,
                                                         ffnskip_skip_array key, float* values,
                                                         int32_t capacity, int32_t* n);

/* Makes `config` (copied; NULL = dense) the active policy of ctx and resets the statistics.
 * A configuration that does not fit the model: FFNSKIP_ERR_INVALID_ARGUMENT naming the field. */
FFNSKIP_API ffnskip_status ffnskip_context_set_skip(ffnskip_context* ctx,
                                                    const ffnskip_skip_config* config);
/* A new handle holding a copy of the active configuration; *config = NULL when dense. */
FFNSKIP_API ffnskip_status ffnskip_context_get_skip(ffnskip_context* ctx,
                                                    ffnskip_skip_config** config);

/* Statistics over the generated tokens decoded under the policy since the last reset. */
typedef struct ffnskip_skip_stats {
    size_t struct_size;    /* set by the caller to sizeof(ffnskip_skip_stats) */
    int64_t tokens;        /* generated tokens decoded with a policy active */
    int64_t ffn_evaluated; /* FFN blocks computed for them, all layers */
    int64_t ffn_skipped;   /* FFN blocks skipped */
    double skip_ratio;     /* ffn_skipped / (tokens * n_layer); 0 without tokens */
    /* ABI 1 callers may stop here; the fields below are written when struct_size covers them. */
    int64_t ffn_bytes_read;  /* FFN weight bytes those tokens read (both kinds, layout included) */
    int64_t ffn_bytes_dense; /* what they would have read dense */
    double ffn_bytes_saved;  /* 1 - read / dense; 0 without tokens */
} ffnskip_skip_stats;

FFNSKIP_API ffnskip_status ffnskip_context_skip_stats(ffnskip_context* ctx,
                                                      ffnskip_skip_stats* stats);
/* Per layer: evaluated[l] and skipped[l] (either may be NULL); n_layer must be the model's. */
FFNSKIP_API ffnskip_status ffnskip_context_skip_stats_layers(ffnskip_context* ctx,
                                                             int64_t* evaluated, int64_t* skipped,
                                                             int32_t n_layer);
FFNSKIP_API ffnskip_status ffnskip_context_reset_skip_stats(ffnskip_context* ctx);

#ifdef __cplusplus
}
#endif

#endif /* FFNSKIP_C_H */
