/*
 * mkmodel.c -- pl-mkmodel: writes one of pagellm's tiny test models.
 *
 *   pl-mkmodel --preset NAME --out DIR   write the preset's model directory
 *   pl-mkmodel --list                    list the presets
 *   pl-mkmodel --preset NAME --quant FORMAT --out DIR [--dequant-out DIR2]
 *                                        the preset quantized as FORMAT (and, in DIR2,
 *                                        the dense model of its dequantized weights:
 *                                        the reference it must match)
 *   pl-mkmodel --list-quant              list the quantized formats
 *
 * The output is deterministic (see src/model/tiny_model.h): the same preset
 * gives the same bytes on every machine.
 */
#include "model/quant_pack.h"
#include "model/tiny_model.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: pl-mkmodel --preset NAME --out DIR\n"
               "       pl-mkmodel --preset NAME --quant FORMAT --out DIR [--dequant-out DIR2]\n"
               "       pl-mkmodel --list | --list-quant\n");
}

int main(int argc, char **argv)
{
    const char *preset = NULL, *out = NULL, *quant = NULL, *dequant_out = NULL;
    int list = 0, list_quant = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--list")) {
            list = 1;
        } else if (!strcmp(argv[i], "--list-quant")) {
            list_quant = 1;
        } else if (!strcmp(argv[i], "--quant") && i + 1 < argc) {
            quant = argv[++i];
        } else if (!strcmp(argv[i], "--dequant-out") && i + 1 < argc) {
            dequant_out = argv[++i];
        } else if (!strcmp(argv[i], "--preset") && i + 1 < argc) {
            preset = argv[++i];
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "pl-mkmodel: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (list) {
        int n = 0;
        const char *const *names = pl_tiny_model_list_presets(&n);
        for (int i = 0; i < n; i++)
            printf("%-20s %s%s\n", names[i], pl_tiny_model_is_golden(names[i]) ? "[golden] " : "",
                   pl_tiny_model_describe(names[i]));
        return 0;
    }
    if (list_quant) {
        int n = 0;
        const char *const *names = pl_quant_format_list(&n);
        for (int i = 0; i < n; i++)
            printf("%-24s %s\n", names[i], pl_quant_format_config(names[i]));
        return 0;
    }
    if (!preset || !out || (dequant_out && !quant)) {
        usage(stderr);
        return 2;
    }
    struct pl_err err = {0};
    if (quant) {
        if (pl_quant_write_model(preset, quant, out, dequant_out, &err) != PL_STATUS_OK) {
            fprintf(stderr, "pl-mkmodel: %s\n", err.msg);
            return 1;
        }
        printf("pl-mkmodel: wrote preset '%s' quantized as %s to %s%s%s\n", preset, quant, out,
               dequant_out ? ", dequantized to " : "", dequant_out ? dequant_out : "");
        return 0;
    }
    if (pl_tiny_model_write(preset, out, &err) != PL_STATUS_OK) {
        fprintf(stderr, "pl-mkmodel: %s\n", err.msg);
        return 1;
    }
    printf("pl-mkmodel: wrote preset '%s' to %s\n", preset, out);
    return 0;
}
