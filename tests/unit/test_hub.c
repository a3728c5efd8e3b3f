/*
 * test_hub.c -- the Hub client's pure parts and cache helpers: SHA-1 (and git blob
 * ids), repo ids, revisions and safe paths, the model-info and index parsers, which
 * files are chosen, origins and URL encoding, the cache root and token from the
 * environment, refs, snapshot links and the lock. The network half is
 * tests/cli/test_hub.sh against tests/node/fake_hub.mjs.
 */
#include "test.h"
#include "model/hub.h"
#include "model/hub_impl.h"
#include "util/sha1.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/file.h>
#include <sys/stat.h>

static void sha1_hex_of(const void *msg, size_t len, char hex[PL_SHA1_HEX_LEN])
{
    struct pl_sha1 s;
    uint8_t d[PL_SHA1_DIGEST_LEN];
    pl_sha1_init(&s);
    pl_sha1_update(&s, msg, len);
    pl_sha1_final(&s, d);
    pl_sha1_hex(d, hex);
}

static void test_sha1_vectors(void)
{
    char hex[PL_SHA1_HEX_LEN];
    sha1_hex_of("", 0, hex);
    CHECK(!strcmp(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709"));
    sha1_hex_of("abc", 3, hex);
    CHECK(!strcmp(hex, "a9993e364706816aba3e25717850c26c9cd0d89d"));
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha1_hex_of(m448, strlen(m448), hex);
    CHECK(!strcmp(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1"));
    /* a million 'a', fed in uneven pieces (the partial-block path) */
    struct pl_sha1 s;
    pl_sha1_init(&s);
    char a[997];
    memset(a, 'a', sizeof(a));
    size_t left = 1000000;
    while (left) {
        size_t n = left < sizeof(a) ? left : sizeof(a);
        pl_sha1_update(&s, a, n);
        left -= n;
    }
    uint8_t d[PL_SHA1_DIGEST_LEN];
    pl_sha1_final(&s, d);
    pl_sha1_hex(d, hex);
    CHECK(!strcmp(hex, "34aa973cd4c4daa4f61eeb2bdbad27316534016f"));
}

static void test_git_blob_id(void)
{
    /* `printf 'hello\n' | git hash-object --stdin` */
    struct pl_sha1 s;
    hub_git_blob_init(&s, 6);
    pl_sha1_update(&s, "hello\n", 6);
    uint8_t d[PL_SHA1_DIGEST_LEN];
    char hex[PL_SHA1_HEX_LEN];
    pl_sha1_final(&s, d);
    pl_sha1_hex(d, hex);
    CHECK(!strcmp(hex, "ce013625030ba8dba906f756967f9e9ca394464a"));
    hub_git_blob_init(&s, 0); /* the empty blob */
    pl_sha1_final(&s, d);
    pl_sha1_hex(d, hex);
    CHECK(!strcmp(hex, "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"));
}

static void test_repo_ids(void)
{
    const char *good[] = {"org/name", "Qwen/Qwen3-0.6B", "meta-llama/Llama-3.1-8B-Instruct",
                          "a/b", "user_1/model.v2", "HuggingFaceTB/SmolLM2-135M"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        CHECKF(pl_hub_is_repo_id(good[i]), "%s", good[i]);
    char long_id[120];
    memset(long_id, 'a', sizeof(long_id));
    long_id[50] = '/';
    long_id[97] = '\0'; /* 97 characters */
    const char *bad[] = {"",         "name",    "a/b/c",   "/abs/path", "./x",     "a//b",
                         "a/b-",     "-a/b",    "a--b/c",  "a/b..c",    "a/b.git", "x/y z",
                         "models/",  "/x",      "a/.b",    "a./b",      "~/m",     long_id,
                         "a/b\n",    "org/na$e"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECKF(!pl_hub_is_repo_id(bad[i]), "'%s'", bad[i]);
    CHECK(!pl_hub_is_repo_id(NULL));
}

static void test_paths_and_revisions(void)
{
    CHECK(pl_hub_is_safe_path("config.json"));
    CHECK(pl_hub_is_safe_path("sub/dir/x.safetensors"));
    CHECK(pl_hub_is_safe_path(".gitattributes"));
    const char *bad[] = {"", "/etc/passwd", "a/../b", "..", ".", "a//b", "a/", "a\\b", "a\nb",
                         "../x", "x/..", "a/./b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECKF(!pl_hub_is_safe_path(bad[i]), "'%s'", bad[i]);
    CHECK(pl_hub_is_revision("main"));
    CHECK(pl_hub_is_revision("refs/pr/1"));
    CHECK(pl_hub_is_revision("v1.0"));
    CHECK(pl_hub_is_revision("0123456789abcdef0123456789abcdef01234567"));
    CHECK(!pl_hub_is_revision("../main"));
    CHECK(!pl_hub_is_revision("a/../../b"));
    CHECK(!pl_hub_is_revision(""));
    CHECK(pl_hub_is_pickle("pytorch_model.bin"));
    CHECK(pl_hub_is_pickle("original/consolidated.00.pth"));
    CHECK(pl_hub_is_pickle("x.pt"));
    CHECK(!pl_hub_is_pickle("model.safetensors"));
    CHECK(!pl_hub_is_pickle("tokenizer.json"));
}

#define SHA "ABCDEF0123456789abcdef0123456789abcdef01"
#define LFS1 "1111111111111111111111111111111111111111111111111111111111111111"

static void test_info_parse(void)
{
    const char *doc =
        "{\"id\": \"org/m\", \"sha\": \"" SHA "\", \"gated\": false, \"siblings\": ["
        "{\"rfilename\": \"config.json\", \"size\": 650, \"blobId\": "
        "\"d65462c8831d952a901dc6a5f9da7cba916e046b\"},"
        "{\"rfilename\": \"model.safetensors\", \"size\": 7283280, \"blobId\": "
        "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", \"lfs\": {\"sha256\": \"" LFS1
        "\", \"size\": 7283280, \"pointerSize\": 134}},"
        "{\"rfilename\": \"README.md\"}]}";
    struct pl_hub_info info;
    struct pl_err err = {0};
    REQUIRE(pl_hub_info_parse(doc, strlen(doc), &info, &err) == PL_STATUS_OK);
    CHECK(!strcmp(info.sha, "abcdef0123456789abcdef0123456789abcdef01")); /* lower-cased */
    CHECK(info.id && !strcmp(info.id, "org/m"));
    REQUIRE(info.n_files == 3);
    CHECK(!strcmp(info.files[0].name, "config.json") && info.files[0].size == 650);
    CHECK(!strcmp(info.files[0].blob_id, "d65462c8831d952a901dc6a5f9da7cba916e046b"));
    CHECK(info.files[0].lfs_sha256[0] == '\0');
    CHECK(!strcmp(info.files[1].lfs_sha256, LFS1) && info.files[1].size == 7283280);
    CHECK(info.files[2].size == -1 && info.files[2].blob_id[0] == '\0');
    pl_hub_info_fini(&info);
    pl_hub_info_fini(&info); /* twice is harmless */

    struct {
        const char *doc, *want;
    } bad[] = {
        {"[]", "not a JSON object"},
        {"{", "not JSON"},
        {"{\"siblings\": []}", "'sha'"},
        {"{\"sha\": \"abc\", \"siblings\": []}", "'sha'"},
        {"{\"sha\": \"" SHA "\"}", "'siblings' is not a list"},
        {"{\"sha\": \"" SHA "\", \"siblings\": [{}]}", "no 'rfilename'"},
        {"{\"sha\": \"" SHA "\", \"siblings\": [{\"rfilename\": \"../../etc/x\"}]}",
         "unsafe file name '../../etc/x'"},
        {"{\"sha\": \"" SHA "\", \"siblings\": [{\"rfilename\": \"/abs\"}]}", "unsafe file name"},
        {"{\"sha\": \"" SHA "\", \"siblings\": [{\"rfilename\": \"a\"}, {\"rfilename\": \"a\"}]}",
         "listed twice"},
        {"{\"sha\": \"" SHA "\", \"siblings\": [{\"rfilename\": \"a\", \"size\": -1}]}",
         "'size' is not a byte count"},
        {"{\"sha\": \"" SHA "\", \"siblings\": [{\"rfilename\": \"a\", \"size\": \"9\"}]}",
         "'size' is not a byte count"},
        {"{\"sha\": \"" SHA "\", \"siblings\": [{\"rfilename\": \"a\", \"blobId\": \"xyz\"}]}",
         "'blobId'"},
        {"{\"sha\": \"" SHA "\", \"siblings\": [{\"rfilename\": \"a\", \"lfs\": {\"sha256\": "
         "\"12\"}}]}",
         "'lfs.sha256'"},
        {"{\"sha\": \"" SHA "\", \"sha\": \"" SHA "\", \"siblings\": []}", "not JSON"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err.msg[0] = '\0';
        pl_status st = pl_hub_info_parse(bad[i].doc, strlen(bad[i].doc), &info, &err);
        CHECKF(st != PL_STATUS_OK && strstr(err.msg, bad[i].want), "%s -> %s", bad[i].doc,
               err.msg);
        CHECK(info.files == NULL && info.n_files == 0);
    }
}

static void test_index_shards(void)
{
    const char *idx = "{\"metadata\": {\"total_size\": 10}, \"weight_map\": {"
                      "\"a\": \"model-00002-of-00002.safetensors\","
                      "\"b\": \"model-00001-of-00002.safetensors\","
                      "\"c\": \"model-00002-of-00002.safetensors\"}}";
    char **names;
    int n;
    struct pl_err err = {0};
    REQUIRE(pl_hub_index_shards(idx, strlen(idx), &names, &n, &err) == PL_STATUS_OK);
    REQUIRE(n == 2);
    CHECK(!strcmp(names[0], "model-00002-of-00002.safetensors"));
    CHECK(!strcmp(names[1], "model-00001-of-00002.safetensors"));
    pl_hub_free_names(names, n);
    const char *bad[] = {"{\"weight_map\": {\"a\": \"../x.safetensors\"}}",
                         "{\"weight_map\": {\"a\": 3}}", "{\"weight_map\": {}}",
                         "{\"weight_map\": []}", "nope"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECKF(pl_hub_index_shards(bad[i], strlen(bad[i]), &names, &n, &err) != PL_STATUS_OK &&
                   names == NULL && n == 0,
               "%s", bad[i]);
}

/* A listing with the given file names (sizes 1). */
static void make_info(struct pl_hub_info *info, const char *const *names, int n)
{
    memset(info, 0, sizeof(*info));
    memset(info->sha, 'a', 40);
    info->files = calloc((size_t)n, sizeof(*info->files));
    for (int i = 0; i < n; i++) {
        info->files[i].name = strdup(names[i]);
        info->files[i].size = 1;
    }
    info->n_files = n;
}

/* The chosen names joined with ' '. */
static const char *chosen(const struct pl_hub_info *info, const char *sel)
{
    static char buf[1024];
    buf[0] = '\0';
    for (int i = 0; i < info->n_files; i++)
        if (sel[i]) {
            strcat(buf, buf[0] ? " " : "");
            strcat(buf, info->files[i].name);
        }
    return buf;
}

static void test_select(void)
{
    struct pl_hub_opts o;
    pl_hub_opts_default(&o);
    struct pl_hub_info info;
    struct pl_err err = {0};
    char sel[32];
    bool need_index;
    int n_pickles;

    const char *plain[] = {"config.json", "generation_config.json", "model.safetensors",
                           "README.md", "pytorch_model.bin", "tokenizer.json", "vocab.txt",
                           "onnx/model.safetensors", "tokenizer_config.json"};
    make_info(&info, plain, 9);
    REQUIRE(pl_hub_select(&info, &o, NULL, 0, sel, &need_index, &n_pickles, "o/m", &err) ==
            PL_STATUS_OK);
    CHECK(!need_index && n_pickles == 1);
    CHECK(!strcmp(chosen(&info, sel), "config.json generation_config.json model.safetensors "
                                      "tokenizer.json tokenizer_config.json"));
    const char *ex[] = {"tokenizer*"};
    o.exclude = ex;
    o.n_exclude = 1;
    REQUIRE(pl_hub_select(&info, &o, NULL, 0, sel, &need_index, &n_pickles, "o/m", &err) ==
            PL_STATUS_OK);
    CHECK(!strcmp(chosen(&info, sel), "config.json generation_config.json model.safetensors"));
    const char *inc[] = {"*.json", "onnx/"};
    o.include = inc;
    o.n_include = 2;
    REQUIRE(pl_hub_select(&info, &o, NULL, 0, sel, &need_index, &n_pickles, "o/m", &err) ==
            PL_STATUS_OK);
    /* '*' crosses '/' (Python's fnmatch); "dir/" means everything below it */
    CHECK(!strcmp(chosen(&info, sel), "config.json generation_config.json "
                                      "onnx/model.safetensors"));
    const char *inc_bin[] = {"*.bin"};
    o.include = inc_bin;
    o.n_include = 1;
    o.n_exclude = 0;
    CHECK(pl_hub_select(&info, &o, NULL, 0, sel, &need_index, &n_pickles, "o/m", &err) ==
              PL_STATUS_UNSUPPORTED &&
          strstr(err.msg, "pickles"));
    const char *inc_none[] = {"x*"};
    o.include = inc_none;
    CHECK(pl_hub_select(&info, &o, NULL, 0, sel, &need_index, &n_pickles, "o/m", &err) ==
              PL_STATUS_NOT_FOUND &&
          strstr(err.msg, "no file of o/m matches --include"));
    pl_hub_info_fini(&info);
    pl_hub_opts_default(&o);

    const char *sharded[] = {"config.json", "model.safetensors.index.json",
                             "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                             "consolidated.safetensors"};
    make_info(&info, sharded, 5);
    REQUIRE(pl_hub_select(&info, &o, NULL, 0, sel, &need_index, &n_pickles, "o/m", &err) ==
            PL_STATUS_OK);
    CHECK(need_index);
    CHECK(!strcmp(chosen(&info, sel), "config.json model.safetensors.index.json"));
    char *shards[] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    REQUIRE(pl_hub_select(&info, &o, shards, 2, sel, &need_index, &n_pickles, "o/m", &err) ==
            PL_STATUS_OK);
    CHECK(!need_index);
    CHECK(!strcmp(chosen(&info, sel), "config.json model.safetensors.index.json "
                                      "model-00001-of-00002.safetensors "
                                      "model-00002-of-00002.safetensors"));
    char *missing[] = {"model-00003-of-00003.safetensors"};
    CHECK(pl_hub_select(&info, &o, missing, 1, sel, &need_index, &n_pickles, "o/m", &err) ==
              PL_STATUS_NOT_FOUND &&
          strstr(err.msg, "names the shard 'model-00003-of-00003.safetensors'"));
    char *pickle_shard[] = {"config.json"};
    CHECK(pl_hub_select(&info, &o, pickle_shard, 1, sel, &need_index, &n_pickles, "o/m", &err) ==
          PL_STATUS_UNSUPPORTED);
    pl_hub_info_fini(&info);

    const char *other[] = {"config.json", "weights-a.safetensors", "weights-b.safetensors",
                           "sub/extra.safetensors"};
    make_info(&info, other, 4);
    REQUIRE(pl_hub_select(&info, &o, NULL, 0, sel, &need_index, &n_pickles, "o/m", &err) ==
            PL_STATUS_OK);
    CHECK(!strcmp(chosen(&info, sel), "config.json weights-a.safetensors weights-b.safetensors"));
    pl_hub_info_fini(&info);

    const char *pickles[] = {"config.json", "pytorch_model-00001-of-00002.bin",
                             "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json"};
    make_info(&info, pickles, 4);
    CHECK(pl_hub_select(&info, &o, NULL, 0, sel, &need_index, &n_pickles, "o/m", &err) ==
          PL_STATUS_UNSUPPORTED);
    CHECKF(strstr(err.msg, "o/m has only PyTorch pickle weights (pytorch_model-00001-of-00002.bin, "
                           "pytorch_model-00002-of-00002.bin)"),
           "%s", err.msg);
    pl_hub_info_fini(&info);

    const char *no_weights[] = {"config.json", "README.md"};
    make_info(&info, no_weights, 2);
    CHECK(pl_hub_select(&info, &o, NULL, 0, sel, &need_index, &n_pickles, "o/m", &err) ==
              PL_STATUS_NOT_FOUND &&
          strstr(err.msg, "o/m has no safetensors weights"));
    pl_hub_info_fini(&info);

    const char *no_config[] = {"model.safetensors"};
    make_info(&info, no_config, 1);
    CHECK(pl_hub_select(&info, &o, NULL, 0, sel, &need_index, &n_pickles, "o/m", &err) ==
              PL_STATUS_NOT_FOUND &&
          strstr(err.msg, "o/m has no config.json"));
    pl_hub_info_fini(&info);
}

static void test_origins_and_urls(void)
{
    char o[300];
    CHECK(hub_origin("https://HuggingFace.co/api/x", o, sizeof(o)) &&
          !strcmp(o, "https://huggingface.co:443"));
    CHECK(hub_origin("https://huggingface.co:443", o, sizeof(o)) &&
          !strcmp(o, "https://huggingface.co:443"));
    CHECK(hub_origin("http://127.0.0.1:8080/a?b", o, sizeof(o)) &&
          !strcmp(o, "http://127.0.0.1:8080"));
    CHECK(hub_origin("http://user:pw@cdn.example:81/x", o, sizeof(o)) &&
          !strcmp(o, "http://cdn.example:81"));
    CHECK(hub_origin("http://[::1]/x", o, sizeof(o)) && !strcmp(o, "http://[::1]:80"));
    CHECK(hub_origin("http://[::1]:9/x", o, sizeof(o)) && !strcmp(o, "http://[::1]:9"));
    CHECK(!hub_origin("ftp://x/y", o, sizeof(o)));
    CHECK(!hub_origin("/relative", o, sizeof(o)));
    char *e = hub_urlencode("refs/pr/1", false);
    CHECK(e && !strcmp(e, "refs%2Fpr%2F1"));
    free(e);
    e = hub_urlencode("sub dir/a+b.json", true);
    CHECK(e && !strcmp(e, "sub%20dir/a%2Bb.json"));
    free(e);
}

static char tmp_root[256];

static void setup_tmp(void)
{
    snprintf(tmp_root, sizeof(tmp_root), "/tmp/pl_test_hub_%d", (int)getpid());
    pl_test_rm_tree(tmp_root);
    mkdir(tmp_root, 0777);
}

static void test_env_cache_dir_and_token(void)
{
    setup_tmp();
    const char *vars[] = {"HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME",
                          "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH",
                          "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    setenv("HOME", tmp_root, 1);
    char want[512];
    char *p = pl_hub_cache_dir(NULL);
    snprintf(want, sizeof(want), "%s/.cache/huggingface/hub", tmp_root);
    CHECKF(p && !strcmp(p, want), "%s", p);
    free(p);
    setenv("XDG_CACHE_HOME", "/xdg", 1);
    CHECK((p = pl_hub_cache_dir(NULL)) && !strcmp(p, "/xdg/huggingface/hub"));
    free(p);
    setenv("HF_HOME", "~/hf", 1); /* expanded as Python's expanduser */
    snprintf(want, sizeof(want), "%s/hf/hub", tmp_root);
    CHECK((p = pl_hub_cache_dir(NULL)) && !strcmp(p, want));
    free(p);
    setenv("HUGGINGFACE_HUB_CACHE", "/legacy", 1);
    CHECK((p = pl_hub_cache_dir(NULL)) && !strcmp(p, "/legacy"));
    free(p);
    setenv("HF_HUB_CACHE", "/new", 1);
    CHECK((p = pl_hub_cache_dir(NULL)) && !strcmp(p, "/new"));
    free(p);
    CHECK((p = pl_hub_cache_dir("/flag")) && !strcmp(p, "/flag"));
    free(p);

    /* token: explicit, HF_TOKEN, HUGGING_FACE_HUB_TOKEN, the file */
    char path[512];
    snprintf(path, sizeof(path), "%s/hf", tmp_root);
    mkdir(path, 0777);
    snprintf(path, sizeof(path), "%s/hf/token", tmp_root);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fputs("  hf_file\r\n", f);
    fclose(f);
    char *t = hub_token(NULL);
    CHECK(t && !strcmp(t, "hf_file"));
    free(t);
    setenv("HUGGING_FACE_HUB_TOKEN", "hf_legacy", 1);
    CHECK((t = hub_token(NULL)) && !strcmp(t, "hf_legacy"));
    free(t);
    setenv("HF_TOKEN", "hf_env\n", 1);
    CHECK((t = hub_token(NULL)) && !strcmp(t, "hf_env"));
    free(t);
    CHECK((t = hub_token("hf_flag")) && !strcmp(t, "hf_flag"));
    free(t);
    unsetenv("HF_TOKEN");
    unsetenv("HUGGING_FACE_HUB_TOKEN");
    setenv("HF_TOKEN_PATH", "/nonexistent/token", 1);
    CHECK(hub_token(NULL) == NULL);
    setenv("HF_TOKEN", "   ", 1);
    CHECK(hub_token(NULL) == NULL);
    unsetenv("HF_TOKEN");

    CHECK(!hub_env_offline());
    setenv("TRANSFORMERS_OFFLINE", "1", 1);
    CHECK(hub_env_offline());
    setenv("HF_HUB_OFFLINE", "0", 1); /* HF_HUB_OFFLINE, when set, decides */
    CHECK(!hub_env_offline());
    const char *yes[] = {"1", "ON", "yes", "True"};
    for (int i = 0; i < 4; i++) {
        setenv("HF_HUB_OFFLINE", yes[i], 1);
        CHECKF(hub_env_offline(), "%s", yes[i]);
    }
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    pl_test_rm_tree(tmp_root);
}

static void test_refs_links_lock(void)
{
    setup_tmp();
    char *repo = hub_repo_dir(tmp_root, "org/name");
    char want[512];
    snprintf(want, sizeof(want), "%s/models--org--name", tmp_root);
    REQUIRE(repo && !strcmp(repo, want));
    const char *commit = "0123456789abcdef0123456789abcdef01234567";
    char got[41];
    CHECK(!hub_read_ref(repo, "main", got));
    REQUIRE(hub_write_ref(repo, "main", commit, NULL) == PL_STATUS_OK);
    CHECK(hub_read_ref(repo, "main", got) && !strcmp(got, commit));
    char path[600];
    snprintf(path, sizeof(path), "%s/refs/main", repo);
    CHECK(hub_file_size(path) == 40); /* no newline: huggingface_hub compares the raw text */
    REQUIRE(hub_write_ref(repo, "refs/pr/1", commit, NULL) == PL_STATUS_OK);
    CHECK(hub_read_ref(repo, "refs/pr/1", got));
    /* another writer's newline is tolerated; junk is not a commit */
    FILE *f = fopen(path, "w");
    fprintf(f, "%s\n", commit);
    fclose(f);
    CHECK(hub_read_ref(repo, "main", got) && !strcmp(got, commit));
    f = fopen(path, "w");
    fputs("not a commit", f);
    fclose(f);
    CHECK(!hub_read_ref(repo, "main", got));

    /* snapshot entries: relative links, one more ../ per directory level */
    snprintf(path, sizeof(path), "%s/blobs", repo);
    REQUIRE(hub_mkdirs(path, NULL) == PL_STATUS_OK);
    snprintf(path, sizeof(path), "%s/blobs/e1", repo);
    f = fopen(path, "w");
    fputs("data", f);
    fclose(f);
    REQUIRE(hub_link_pointer(repo, commit, "config.json", "e1", NULL) == PL_STATUS_OK);
    REQUIRE(hub_link_pointer(repo, commit, "sub/dir/x.json", "e1", NULL) == PL_STATUS_OK);
    REQUIRE(hub_link_pointer(repo, commit, "config.json", "e1", NULL) == PL_STATUS_OK); /* again */
    char target[256];
    snprintf(path, sizeof(path), "%s/snapshots/%s/config.json", repo, commit);
    ssize_t n = readlink(path, target, sizeof(target) - 1);
    REQUIRE(n > 0);
    target[n] = '\0';
    CHECK(!strcmp(target, "../../blobs/e1"));
    snprintf(path, sizeof(path), "%s/snapshots/%s/sub/dir/x.json", repo, commit);
    n = readlink(path, target, sizeof(target) - 1);
    REQUIRE(n > 0);
    target[n] = '\0';
    CHECK(!strcmp(target, "../../../../blobs/e1"));
    CHECK(hub_file_size(path) == 4);

    hub_touch_no_exist(repo, commit, "chat_template.jinja");
    CHECK(hub_is_no_exist(repo, commit, "chat_template.jinja"));
    CHECK(!hub_is_no_exist(repo, commit, "config.json"));

    /* the lock excludes another open file description (another process, or Python's filelock) */
    snprintf(path, sizeof(path), "%s/.locks/models--org--name/e1.lock", tmp_root);
    int fd = hub_lock(path, NULL, NULL);
    REQUIRE(fd >= 0);
    int other = open(path, O_RDWR);
    REQUIRE(other >= 0);
    CHECK(flock(other, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK);
    hub_unlock(fd);
    CHECK(flock(other, LOCK_EX | LOCK_NB) == 0);
    close(other);
    CHECK(hub_exists(path)); /* lock files stay */

    char *joined = hub_path("a/", "b", NULL, "c");
    CHECK(joined && !strcmp(joined, "a/b/c"));
    free(joined);
    CHECK(hub_free_bytes(tmp_root) > 0);
    char deep[600];
    snprintf(deep, sizeof(deep), "%s/not/yet/made", tmp_root);
    CHECK(hub_free_bytes(deep) > 0); /* the nearest existing parent */
    free(repo);
    pl_test_rm_tree(tmp_root);
}

static void test_resolve_local_and_bad_names(void)
{
    setup_tmp();
    char *path = NULL;
    struct pl_err err = {0};
    /* an existing directory always wins, even one shaped like a repo id */
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/org", tmp_root);
    mkdir(dir, 0777);
    snprintf(dir, sizeof(dir), "%s/org/name", tmp_root);
    mkdir(dir, 0777);
    REQUIRE(chdir(tmp_root) == 0);
    REQUIRE(pl_hub_resolve_model("org/name", "nope", NULL, &path, &err) == PL_STATUS_OK);
    CHECK(path && !strcmp(path, "org/name"));
    free(path);
    CHECK(pl_hub_resolve_model("/no/such/dir", NULL, NULL, &path, &err) == PL_STATUS_NOT_FOUND);
    CHECK(path == NULL && strstr(err.msg, "no model directory at '/no/such/dir'"));
    CHECK(pl_hub_download("org/name", "../x", NULL, &path, &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(err.msg, "not a usable revision"));
    /* offline and not cached: the exact path looked up */
    struct pl_hub_opts o;
    pl_hub_opts_default(&o);
    o.offline = 1;
    o.cache_dir = tmp_root;
    o.progress = PL_HUB_PROGRESS_QUIET;
    CHECK(pl_hub_download("org/other", NULL, &o, &path, &err) == PL_STATUS_NOT_FOUND);
    char want[600];
    snprintf(want, sizeof(want), "looked for %s/models--org--other/refs/main, which does not exist",
             tmp_root);
    CHECKF(strstr(err.msg, want), "%s", err.msg);
    REQUIRE(chdir("/") == 0);
    pl_test_rm_tree(tmp_root);
}

static void touch(const char *dir, const char *name)
{
    char p[700];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (f)
        fclose(f);
}

/* A snapshot another tool left in the cache, used offline: complete or not. */
static void test_offline_snapshots(void)
{
    setup_tmp();
    const char *commit = "89abcdef0123456789abcdef0123456789abcdef";
    char *repo = hub_repo_dir(tmp_root, "org/m");
    REQUIRE(repo && hub_write_ref(repo, "main", commit, NULL) == PL_STATUS_OK);
    char snap[600];
    snprintf(snap, sizeof(snap), "%s/snapshots/%s", repo, commit);
    REQUIRE(hub_mkdirs(snap, NULL) == PL_STATUS_OK);
    struct pl_hub_opts o;
    pl_hub_opts_default(&o);
    o.offline = 1;
    o.cache_dir = tmp_root;
    o.progress = PL_HUB_PROGRESS_QUIET;
    char *path = NULL;
    struct pl_err err = {0};
    CHECK(pl_hub_download("org/m", NULL, &o, &path, &err) == PL_STATUS_NOT_FOUND);
    CHECKF(strstr(err.msg, "only partly in the cache") && strstr(err.msg, "/config.json does not"),
           "%s", err.msg);
    touch(snap, "config.json");
    CHECK(pl_hub_download("org/m", NULL, &o, &path, &err) == PL_STATUS_NOT_FOUND);
    CHECKF(strstr(err.msg, "/model.safetensors does not exist"), "%s", err.msg);
    /* weights under another name (no index, no model.safetensors) are the weights */
    touch(snap, "weights-a.safetensors");
    REQUIRE(pl_hub_download("org/m", "main", &o, &path, &err) == PL_STATUS_OK);
    CHECK(path && !strcmp(path, snap));
    free(path);
    /* an index whose shard is missing */
    char idx[700];
    snprintf(idx, sizeof(idx), "%s/model.safetensors.index.json", snap);
    FILE *f = fopen(idx, "w");
    REQUIRE(f);
    fputs("{\"weight_map\": {\"w\": \"model-00001-of-00001.safetensors\"}}", f);
    fclose(f);
    CHECK(pl_hub_download("org/m", commit, &o, &path, &err) == PL_STATUS_NOT_FOUND);
    CHECKF(strstr(err.msg, "/model-00001-of-00001.safetensors does not exist"), "%s", err.msg);
    touch(snap, "model-00001-of-00001.safetensors");
    REQUIRE(pl_hub_download("org/m", commit, &o, &path, &err) == PL_STATUS_OK);
    free(path);
    /* include mode (the tokenizer only) does not ask for weights */
    const char *inc[] = {"tokenizer.json"};
    o.include = inc;
    o.n_include = 1;
    unlink(idx);
    snprintf(idx, sizeof(idx), "%s/config.json", snap);
    unlink(idx);
    CHECK(pl_hub_download("org/m", NULL, &o, &path, &err) == PL_STATUS_OK);
    free(path);
    free(repo);
    pl_test_rm_tree(tmp_root);
}

int main(void)
{
    PL_RUN(test_sha1_vectors);
    PL_RUN(test_git_blob_id);
    PL_RUN(test_repo_ids);
    PL_RUN(test_paths_and_revisions);
    PL_RUN(test_info_parse);
    PL_RUN(test_index_shards);
    PL_RUN(test_select);
    PL_RUN(test_origins_and_urls);
    PL_RUN(test_env_cache_dir_and_token);
    PL_RUN(test_refs_links_lock);
    PL_RUN(test_resolve_local_and_bad_names);
    PL_RUN(test_offline_snapshots);
    return pl_test_summary();
}
