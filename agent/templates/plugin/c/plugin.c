// {{name}}: a kedge transform plugin in C (`kedge plugin new`). It drops empty readings, sends
// readings that are not JSON objects to the dead-letter topic, and keeps the rest. Change
// exports_transform_process to do what you need.
//
// The bindings (transform.h) are generated from wit/transform.wit by build.sh; the contract is
// explained in kedge's wit/README.md. Ownership follows wit-bindgen's C bindings: the arguments
// of an export belong to the plugin, which frees them; what it returns must come from malloc.
// No printf: wasi-libc's stdio would pull the WASI filesystem interfaces in.

#include <stdlib.h>
#include <string.h>

#include "transform.h"

static void *xmalloc(size_t size) {
  if (size == 0) return NULL;
  void *p = malloc(size);
  if (p == NULL) abort();  // a trap: kedge recycles the instance
  return p;
}

static void count(const char *name, uint64_t delta) {
  if (delta == 0) return;
  transform_string_t s;
  transform_string_set(&s, name);
  kedge_transform_host_counter_add(&s, delta);
}

// Runs once per instance with the plugin's [plugin.config] table; returning false (with
// err->message set, from malloc) refuses the plugin. This one takes no settings.
bool exports_transform_init(transform_list_tuple2_string_string_t *config,
                            transform_plugin_error_t *err) {
  (void)err;
  transform_list_tuple2_string_string_free(config);
  return true;
}

static bool is_json_object(const uint8_t *p, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n') return p[i] == '{';
  }
  return false;
}

// Must return exactly one verdict per event, in order.
bool exports_transform_process(transform_batch_info_t *info, transform_list_event_t *batch,
                               transform_list_verdict_t *ret, transform_plugin_error_t *err) {
  (void)err;
  uint64_t empty = 0;
  ret->len = batch->len;
  ret->ptr = xmalloc(batch->len * sizeof *ret->ptr);
  for (size_t i = 0; i < batch->len; i++) {
    const transform_list_u8_t *value = &batch->ptr[i].value;
    kedge_transform_types_verdict_t *verdict = &ret->ptr[i];
    if (value->len == 0) {
      empty++;
      verdict->tag = KEDGE_TRANSFORM_TYPES_VERDICT_DROP;
    } else if (!is_json_object(value->ptr, value->len)) {
      verdict->tag = KEDGE_TRANSFORM_TYPES_VERDICT_FAIL;
      transform_string_dup(&verdict->val.fail, "the reading is not a JSON object");
    } else {
      verdict->tag = KEDGE_TRANSFORM_TYPES_VERDICT_KEEP;
    }
  }
  count("empty", empty);
  transform_batch_info_free(info);
  transform_list_event_free(batch);
  return true;
}
