/* generate MODEL PROMPT: streams the model's continuation of PROMPT to stdout (greedy, at most
 * 64 tokens). The smallest complete program over the C API: load, tokenize, generate, free.
 *
 *   cc generate.c $(python -m ffnskip_native.capi --cflags --libs) -o generate
 *   ./generate SmolLM2-135M-Instruct.Q4_1.gguf "The capital of France is"
 */
#include <ffnskip/ffnskip_c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_NEW_TOKENS = 64 };

static bool print_piece(int32_t token, const char* piece, size_t len, void* user_data) {
    (void)token;
    (void)user_data;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return true;
}

/* Prints the failed call's message and returns its status as the exit code. */
static int report(const char* what, ffnskip_status status) {
    fprintf(stderr, "generate: %s failed (%s): %s\n", what, ffnskip_status_string(status),
            ffnskip_last_error());
    return (int)status;
}

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL PROMPT\n", argv[0]);
        return 2;
    }
    if (ffnskip_abi_version() != FFNSKIP_ABI_VERSION) {
        fprintf(stderr, "generate: libffnskip has ABI %d, this program was built for %d\n",
                (int)ffnskip_abi_version(), FFNSKIP_ABI_VERSION);
        return 2;
    }

    ffnskip_model* model = NULL;
    ffnskip_context* ctx = NULL;
    ffnskip_sampler* sampler = NULL;
    int32_t* prompt = NULL;
    int rc = 0;
    ffnskip_status st = ffnskip_model_load(argv[1], NULL, &model);
    if (st != FFNSKIP_OK) return report("loading the model", st);

    /* Ask for the token count first, then tokenize into a buffer of that size. */
    const char* text = argv[2];
    int32_t n_prompt = 0;
    st = ffnskip_tokenize(model, text, strlen(text), true, false, NULL, 0, &n_prompt);
    if (st == FFNSKIP_ERR_BUFFER_TOO_SMALL) {
        prompt = malloc(sizeof *prompt * (size_t)(n_prompt > 0 ? n_prompt : 1));
        st = prompt ? ffnskip_tokenize(model, text, strlen(text), true, false, prompt, n_prompt,
                                       &n_prompt)
                    : FFNSKIP_ERR_OUT_OF_MEMORY;
    }
    if (st != FFNSKIP_OK) {
        rc = report("tokenizing the prompt", st);
        goto done;
    }

    ffnskip_context_params cp;
    ffnskip_context_params_init(&cp, sizeof cp);
    cp.n_ctx = 512;
    st = ffnskip_context_create(model, &cp, &ctx);
    if (st != FFNSKIP_OK) {
        rc = report("creating the context", st);
        goto done;
    }

    ffnskip_sampler_params sp;
    ffnskip_sampler_params_init(&sp, sizeof sp);
    sp.temperature = 0.0f; /* greedy: the same text every run */
    st = ffnskip_sampler_create(&sp, &sampler);
    if (st != FFNSKIP_OK) {
        rc = report("creating the sampler", st);
        goto done;
    }

    fputs(text, stdout);
    st = ffnskip_generate(ctx, sampler, prompt, n_prompt, MAX_NEW_TOKENS, print_piece, NULL, NULL,
                          NULL);
    fputc('\n', stdout);
    if (st != FFNSKIP_OK) rc = report("generating", st);

done:
    free(prompt);
    ffnskip_sampler_free(sampler);
    ffnskip_context_free(ctx);
    ffnskip_model_free(model);
    return rc;
}
