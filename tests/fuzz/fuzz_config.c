/* The YAML run configuration (src/config/config.c): ds_config_load of the input as a config file.
 * A config that loads is written back (ds_config_write, the resolved copy every run keeps), and that
 * copy must load again, to the same values. */
#include "fuzz.h"
#include "dreamstate/config.h"

#include <stddef.h>
#include <string.h>

static ds_config loaded, reloaded;

static void body(const uint8_t *data, size_t size) {
    char path[512], copy[512];
    fuzz_write(path, sizeof path, "config.yaml", data, size);
    ds_config_load(&loaded, path, 0, NULL);
    fuzz_die_is_finding("the resolved copy of a config that loads does not load");
    fuzz_path(copy, sizeof copy, "resolved.yaml");
    if (ds_config_write(&loaded, copy) != 0) fuzz_fail("cannot write %s", copy);
    ds_config_load(&reloaded, copy, 0, NULL);
    size_t values = offsetof(ds_config, run);  /* source and key origins differ: another file */
    if (memcmp((const char *)&loaded + values, (const char *)&reloaded + values, sizeof loaded - values) != 0)
        fuzz_fail("the resolved copy of a config loads to other values");
}

FUZZ_TARGET(body)
