// Drops events whose value is empty or longer than `max_bytes`; keeps the rest. See README.md.
//
// No printf: wasi-libc's stdio would pull the WASI filesystem interfaces into the component
// (inert in kedge, which preopens no directory unless granted) and the code size with them.
//
// Ownership follows wit-bindgen's C bindings: the arguments of an export belong to the plugin,
// which frees them; what it returns must come from malloc, as the generated `cabi_post_*`
// functions free it once the host has copied it out.

#include <stdlib.h>
#include <string.h>

#include "transform.h"

// Kafka's default limit on a record batch (message.max.bytes) is about this.
#define DEFAULT_MAX_BYTES 1048576

static uint64_t max_bytes = DEFAULT_MAX_BYTES;

// Allocation failure cannot be reported: an error message would need memory too. Trapping makes
// the host recycle the instance. Zero bytes give NULL, as the bindings never free empty lists.
static void *xmalloc(size_t size) {
  if (size == 0) return NULL;
  void *p = malloc(size);
  if (p == NULL) abort();
  return p;
}

// Sets `err` to `before` + `value` + `after`, freshly allocated; returns false for `return fail(...)`.
static bool fail(transform_plugin_error_t *err, const char *before, const transform_string_t *value,
                 const char *after) {
  size_t len_before = strlen(before), len_after = strlen(after);
  size_t len = len_before + value->len + len_after;
  uint8_t *message = xmalloc(len);
  memcpy(message, before, len_before);
  memcpy(message + len_before, value->ptr, value->len);
  memcpy(message + len_before + value->len, after, len_after);
  err->message = (transform_string_t){message, len};
  return false;
}

static bool string_is(const transform_string_t *s, const char *text) {
  size_t len = strlen(text);
  return s->len == len && memcmp(s->ptr, text, len) == 0;
}

// WIT strings are not NUL-terminated, hence the digit-by-digit parse rather than strtoull.
static bool parse_u64(const transform_string_t *s, uint64_t *out) {
  if (s->len == 0) return false;
  uint64_t n = 0;
  for (size_t i = 0; i < s->len; i++) {
    uint8_t c = s->ptr[i];
    if (c < '0' || c > '9') return false;
    if (n > (UINT64_MAX - (c - '0')) / 10) return false;
    n = n * 10 + (c - '0');
  }
  *out = n;
  return true;
}

static void count(const char *name, uint64_t delta) {
  if (delta == 0) return;
  transform_string_t s;
  transform_string_set(&s, name);
  kedge_transform_host_counter_add(&s, delta);
}

bool exports_transform_init(transform_list_tuple2_string_string_t *config,
                            transform_plugin_error_t *err) {
  bool ok = true;
  for (size_t i = 0; i < config->len && ok; i++) {
    const transform_tuple2_string_string_t *entry = &config->ptr[i];
    if (string_is(&entry->f0, "max_bytes") && !parse_u64(&entry->f1, &max_bytes)) {
      ok = fail(err, "config `max_bytes`: expected a non-negative integer, got `", &entry->f1, "`");
    }
  }
  transform_list_tuple2_string_string_free(config);
  if (ok) {
    // Digits are written backwards from the end of `digits`; 20 fit any uint64_t.
    static const char before[] = "dropping empty values and those over ", after[] = " bytes";
    char line[sizeof before - 1 + 20 + sizeof after], digits[20];
    size_t n = 0;
    uint64_t rest = max_bytes;
    do {
      digits[sizeof digits - ++n] = (char)('0' + rest % 10);
      rest /= 10;
    } while (rest > 0);
    memcpy(line, before, sizeof before - 1);
    memcpy(line + sizeof before - 1, digits + sizeof digits - n, n);
    memcpy(line + sizeof before - 1 + n, after, sizeof after);
    transform_string_t message;
    transform_string_set(&message, line);
    kedge_transform_host_log(KEDGE_TRANSFORM_HOST_LEVEL_INFO, &message);
  }
  return ok;
}

bool exports_transform_process(transform_batch_info_t *info, transform_list_event_t *batch,
                               transform_list_verdict_t *ret, transform_plugin_error_t *err) {
  (void)err;
  uint64_t empty = 0, too_large = 0;
  ret->len = batch->len;
  ret->ptr = xmalloc(batch->len * sizeof *ret->ptr);
  for (size_t i = 0; i < batch->len; i++) {
    size_t len = batch->ptr[i].value.len;
    uint8_t tag = KEDGE_TRANSFORM_TYPES_VERDICT_KEEP;
    if (len == 0) {
      empty++;
      tag = KEDGE_TRANSFORM_TYPES_VERDICT_DROP;
    } else if (len > max_bytes) {
      too_large++;
      tag = KEDGE_TRANSFORM_TYPES_VERDICT_DROP;
    }
    ret->ptr[i].tag = tag;
  }
  count("empty", empty);
  count("too_large", too_large);
  transform_batch_info_free(info);
  transform_list_event_free(batch);
  return true;
}
