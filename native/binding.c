/*
 * The Node-API face of the native core (the only file that includes node_api.h).
 * JS contract: src/dataplane/addon.ts.
 *
 * exports.openTun(name, {slotSize, ringSlots, multiQueue}, onReadable) -> TunPort
 * exports.sdNotify(path, message): one datagram to a unix socket (sd_notify(3))
 * exports.tunCounterNames: frozen array of the names of TunPort.counters, in index order
 *
 * Threads: every function here runs on the JS thread of its env, except port_notify(),
 * which runs on the port's I/O thread and only calls napi_call_threadsafe_function().
 *
 * Ownership and lifetimes of one TunPort:
 *  - struct port: owned by the JS object (napi_wrap); freed by its finalizer.
 *  - the fd, the I/O thread, rings, eventfd: from openTun() until close_port(), which runs
 *    from close(), the wrap finalizer, or the env cleanup hook, whichever comes first.
 *  - the thread-safe function: created unref'd (it never keeps the loop alive by itself),
 *    released (abort) in close_port() after the I/O thread is joined. Its context
 *    (struct notify_ctx) is freed by its own finalizer, so a call still queued after
 *    close_port() finds ctx->closed and does not call onReadable.
 *  - the counters: a 64-byte-aligned block shared by the I/O thread and the
 *    BigUint64Array's external ArrayBuffer, reference-counted (both holders are on the JS
 *    thread): it stays valid, frozen at its last values, after close() and for as long
 *    as JS holds the array, even after the TunPort itself is collected.
 */
#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif
#include <node_api.h>

#include "overlayd.h"

#include <errno.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Option ranges of the contract (addon.ts, TunPortOptions). */
#define SLOT_SIZE_MIN 576u
#define SLOT_SIZE_MAX 65535u
#define RING_SLOTS_MIN 2u
#define RING_SLOTS_MAX 65536u
/* Bounded queue of the thread-safe function; a full queue is harmless (see port_notify). */
#define TSFN_QUEUE_MAX 4
/* write(packets): iovecs kept on the stack up to this many packets, else on the heap. */
#define WRITE_STACK_PKTS 256u
/* Longest name echoed back in an error message, in bytes. */
#define NAME_ECHO_MAX 64

static const napi_type_tag TUNPORT_TAG = {0x6f7665726c617964ULL, 0x54756e506f727431ULL};
static const napi_type_tag ENGINE_TAG = {0x6f7665726c617964ULL, 0x456e67696e655031ULL};

struct addon_data {
  napi_ref port_class;   /* the TunPort constructor */
  napi_ref engine_class; /* the EnginePort constructor */
  bool constructing;     /* set only while openTun()/openEngine() instantiate their class */
};

/* Counter memory shared by native threads and a BigUint64Array (see the header comment). */
struct counters_box {
  void *mem;    /* 64-byte aligned, zeroed, `bytes` long: struct ovl_tun_counters or
                   struct ovl_engine_counters[queues] */
  size_t bytes;
  uint32_t refs; /* JS thread only: the ArrayBuffer, and an open port/engine */
};

struct notify_ctx {
  bool closed; /* JS thread only */
};

/* What a TunPort and an EnginePort have in common on the JS thread: native threads that
 * call into JS through an unref'd thread-safe function, counters shared with a
 * BigUint64Array, an env cleanup hook that closes the object if JS never did. */
struct live {
  napi_env env;
  bool closed;                   /* true until fully opened, and after close */
  bool hook_added;
  napi_threadsafe_function tsfn; /* used by the native threads while they run */
  struct notify_ctx *nctx;       /* owned by tsfn */
  struct counters_box *box;      /* one reference while open */
};

struct port {
  struct live l;
  struct ovl_tunport *tp; /* NULL until open and after close */
  int fd;                 /* -1 when not open */
  uint32_t slot_size;
};

/* ---------------------------------------------------------------- errors ---------------- */

/* Throws a JS Error for a failed napi call, unless an exception is already pending. */
static void throw_status(napi_env env, napi_status status, const char *what) {
  const napi_extended_error_info *info = NULL;
  char msg[256];
  const char *detail = "unknown error";
  if (napi_get_last_error_info(env, &info) == napi_ok && info && info->error_message)
    detail = info->error_message;
  snprintf(msg, sizeof(msg), "overlayd addon: %s failed: %s (napi_status %d)", what, detail, (int)status);
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) != napi_ok || pending) return;
  (void)napi_throw_error(env, "ERR_NAPI", msg); /* nothing more can be done if this fails */
}

/* Evaluates a napi call; on failure throws and returns `ret` from the enclosing function. */
#define CHECK_RET(env, call, ret)                 \
  do {                                            \
    napi_status st_ = (call);                     \
    if (st_ != napi_ok) {                         \
      throw_status((env), st_, #call);            \
      return ret;                                 \
    }                                             \
  } while (0)
#define CHECK(env, call) CHECK_RET(env, call, NULL)

static napi_value throw_type(napi_env env, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  (void)napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

static napi_value throw_range(napi_env env, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  (void)napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return NULL;
}

/* Creates Error{code: errno name, errno: -err, syscall} with message
 * "<context>: <syscall> failed: <strerror> (<CODE>)[: <hint>]". err is a positive errno.
 * Returns false with an exception pending when a napi call failed. */
static bool make_errno_error(napi_env env, int err, const char *syscall, const char *context, const char *hint,
                             napi_value *out) {
  char ebuf[128], msg[512];
  const char *code = ovl_errno_name(err);
  const char *text = strerror_r(err, ebuf, sizeof(ebuf)); /* GNU variant (_GNU_SOURCE) */
  snprintf(msg, sizeof(msg), "%s: %s failed: %s (%s)%s%s", context, syscall, text, code,
           hint ? ": " : "", hint ? hint : "");
  napi_value jcode, jmsg, jsys, jerrno;
  CHECK_RET(env, napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &jcode), false);
  CHECK_RET(env, napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &jmsg), false);
  CHECK_RET(env, napi_create_error(env, jcode, jmsg, out), false);
  CHECK_RET(env, napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &jsys), false);
  CHECK_RET(env, napi_set_named_property(env, *out, "syscall", jsys), false);
  CHECK_RET(env, napi_create_int32(env, -err, &jerrno), false);
  CHECK_RET(env, napi_set_named_property(env, *out, "errno", jerrno), false);
  return true;
}

/* Throws the error of make_errno_error. */
static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *context,
                              const char *hint) {
  napi_value jerr;
  if (!make_errno_error(env, err, syscall, context, hint, &jerr)) return NULL;
  CHECK(env, napi_throw(env, jerr));
  return NULL;
}

static napi_value throw_closed(napi_env env, const char *method) {
  char msg[128];
  snprintf(msg, sizeof(msg), "TunPort.%s: the TUN port is closed", method);
  (void)napi_throw_error(env, "ERR_TUN_CLOSED", msg);
  return NULL;
}

/* ---------------------------------------------------------------- lifetime -------------- */

static void box_unref(struct counters_box *box) {
  if (--box->refs == 0) {
    free(box->mem);
    free(box);
  }
}

static void counters_ab_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  box_unref(hint);
}

/* A box of `bytes` (a multiple of 64) zeroed counter memory and a BigUint64Array of its
 * first `words` counters, which holds the first reference. Returns NULL with an exception
 * pending. */
static struct counters_box *box_new(napi_env env, size_t bytes, size_t words, const char *context,
                                    napi_value *array) {
  struct counters_box *box = calloc(1, sizeof(*box));
  void *mem = aligned_alloc(64, bytes);
  if (box == NULL || mem == NULL) {
    free(box);
    free(mem);
    throw_errno(env, ENOMEM, "malloc", context, NULL);
    return NULL;
  }
  memset(mem, 0, bytes);
  box->mem = mem;
  box->bytes = bytes;
  napi_value ab;
  napi_status nst = napi_create_external_arraybuffer(env, mem, bytes, counters_ab_finalize, box, &ab);
  if (nst != napi_ok) {
    free(mem);
    free(box);
    throw_status(env, nst, "napi_create_external_arraybuffer(counters)");
    return NULL;
  }
  box->refs = 1; /* the ArrayBuffer: from here on its finalizer frees the box */
  CHECK(env, napi_create_typedarray(env, napi_biguint64_array, words, ab, 0, array));
  return box;
}

static void tsfn_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data); /* struct notify_ctx */
}

/* JS thread: calls a JS callback from a thread-safe function. If it throws, the exception
 * goes to 'uncaughtException' like any callback from the loop (left pending, Node 20
 * would only print a deprecation warning and drop it). */
static void call_js_callback(napi_env env, napi_value fn, size_t argc, const napi_value *argv, const char *what) {
  napi_value undef;
  CHECK_RET(env, napi_get_undefined(env, &undef), );
  napi_status st = napi_call_function(env, undef, fn, argc, argv, NULL);
  if (st == napi_pending_exception) {
    napi_value exc;
    CHECK_RET(env, napi_get_and_clear_last_exception(env, &exc), );
    CHECK_RET(env, napi_fatal_exception(env, exc), );
  } else if (st != napi_ok) {
    throw_status(env, st, what);
  }
}

/* JS thread: runs queued onReadable calls. env and js_cb are NULL during env teardown. */
static void tsfn_call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)data;
  const struct notify_ctx *nctx = context;
  if (env == NULL || js_cb == NULL || nctx->closed) return;
  call_js_callback(env, js_cb, 0, NULL, "calling onReadable");
}

/* Creates l's thread-safe function calling `fn` through call_js (queue bounded by
 * queue_max), unref'd so that it never keeps the loop alive. Returns false with an
 * exception pending, nothing left behind. */
static bool live_tsfn_create(napi_env env, struct live *l, napi_value fn, const char *resource, size_t queue_max,
                             napi_threadsafe_function_call_js call_js, const char *context) {
  struct notify_ctx *nctx = calloc(1, sizeof(*nctx));
  if (nctx == NULL) {
    throw_errno(env, ENOMEM, "malloc", context, NULL);
    return false;
  }
  napi_value res_name;
  napi_status nst = napi_create_string_utf8(env, resource, NAPI_AUTO_LENGTH, &res_name);
  if (nst == napi_ok)
    nst = napi_create_threadsafe_function(env, fn, NULL, res_name, queue_max, 1, nctx, tsfn_finalize, nctx, call_js,
                                          &l->tsfn);
  if (nst != napi_ok) {
    free(nctx);
    throw_status(env, nst, "napi_create_threadsafe_function");
    return false;
  }
  l->nctx = nctx;
  nst = napi_unref_threadsafe_function(env, l->tsfn);
  if (nst != napi_ok) {
    throw_status(env, nst, "napi_unref_threadsafe_function");
    (void)napi_release_threadsafe_function(l->tsfn, napi_tsfn_abort); /* frees nctx */
    l->tsfn = NULL;
    l->nctx = NULL;
    return false;
  }
  return true;
}

/* Undoes live_tsfn_create for an object that never opened (no thread ever used it). */
static void live_tsfn_abort(struct live *l) {
  /* Fails only for an already released tsfn: not reachable here. */
  (void)napi_release_threadsafe_function(l->tsfn, napi_tsfn_abort);
  l->tsfn = NULL;
  l->nctx = NULL;
}

/* The object is open: takes a reference on the counters, registers the env cleanup hook
 * (hook(arg) closes it) and defines obj's read-only properties: the string `name`, then
 * n_extra more (names/values), then `counters`. Returns false with an exception pending;
 * the caller then closes the object. */
static bool live_opened(napi_env env, struct live *l, struct counters_box *box, void (*hook)(void *), void *arg,
                        napi_value obj, const char *name, napi_value counters, size_t n_extra,
                        const char *const *extra_names, const napi_value *extra_values) {
  l->box = box;
  box->refs++;
  l->closed = false;
  napi_status nst = napi_add_env_cleanup_hook(env, hook, arg);
  if (nst != napi_ok) {
    throw_status(env, nst, "napi_add_env_cleanup_hook");
    return false;
  }
  l->hook_added = true;
  napi_property_descriptor props[4];
  size_t n = 0;
  napi_value jname;
  CHECK_RET(env, napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &jname), false);
  props[n++] = (napi_property_descriptor){"name", NULL, NULL, NULL, NULL, jname, napi_enumerable, NULL};
  for (size_t i = 0; i < n_extra && n < 3; i++)
    props[n++] = (napi_property_descriptor){extra_names[i], NULL, NULL, NULL, NULL, extra_values[i], napi_enumerable, NULL};
  props[n++] = (napi_property_descriptor){"counters", NULL, NULL, NULL, NULL, counters, napi_enumerable, NULL};
  CHECK_RET(env, napi_define_properties(env, obj, n, props), false);
  return true;
}

/* JS thread, after the native threads are joined: a call still queued finds the context
 * closed; releases the thread-safe function, the counters reference and the hook. */
static void live_release(struct live *l, void (*hook)(void *), void *arg, bool from_hook) {
  l->nctx->closed = true;
  /* Fails only for an already released tsfn, which the `closed` flag rules out. */
  (void)napi_release_threadsafe_function(l->tsfn, napi_tsfn_abort);
  l->tsfn = NULL;
  box_unref(l->box);
  l->box = NULL;
  if (l->hook_added && !from_hook) {
    /* Fails only if the hook is unknown, i.e. already run: nothing to undo then. */
    (void)napi_remove_env_cleanup_hook(l->env, hook, arg);
  }
  l->hook_added = false;
}

/* I/O thread: the rx ring became non-empty. napi_queue_full means calls are already queued,
 * and they run after this commit, so JS still drains it; napi_closing means the env is
 * going away. Neither needs action, and nothing else can fail for a live tsfn. */
static void port_notify(void *opaque) {
  struct port *pt = opaque;
  (void)napi_call_threadsafe_function(pt->l.tsfn, NULL, napi_tsfn_nonblocking);
}

static void port_cleanup_hook(void *arg);

/* JS thread. Idempotent. Joins the I/O thread first, so nothing races the releases. */
static void close_port(struct port *pt, bool from_hook) {
  if (pt->l.closed) return;
  pt->l.closed = true;
  ovl_tunport_stop(pt->tp);
  pt->tp = NULL;
  /* Linux releases the descriptor even when close() reports an error, and a TUN or
   * socket fd has no buffered data that an error could have lost. */
  (void)close(pt->fd);
  pt->fd = -1;
  live_release(&pt->l, port_cleanup_hook, pt, from_hook);
}

/* The env is being torn down (process exit, worker exit) and JS never called close(). */
static void port_cleanup_hook(void *arg) { close_port(arg, true); }

static void port_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct port *pt = data;
  close_port(pt, false);
  free(pt);
}

/* ---------------------------------------------------------------- TunPort methods -------- */

/* Fetches this (checked to carry `tag`, i.e. to be a `cls`) and up to *argc arguments
 * (missing ones are undefined); returns its native struct. Returns NULL with an exception
 * pending when this is not a `cls`. */
static void *this_wrapped(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv,
                          const napi_type_tag *tag, const char *cls, const char *method) {
  napi_value self;
  CHECK(env, napi_get_cb_info(env, info, argc, argv, &self, NULL));
  napi_valuetype t;
  CHECK(env, napi_typeof(env, self, &t));
  bool tagged = false;
  if (t == napi_object) CHECK(env, napi_check_object_type_tag(env, self, tag, &tagged));
  if (!tagged) {
    throw_type(env, "%s.%s: called on something that is not a %s", cls, method, cls);
    return NULL;
  }
  void *p = NULL;
  CHECK(env, napi_unwrap(env, self, &p));
  return p;
}

static struct port *this_port(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv,
                              const char *method) {
  return this_wrapped(env, info, argc, argv, &TUNPORT_TAG, "TunPort", method);
}

/* The typed array view of v if it is one of `type`, else false (no exception). */
static bool get_typed(napi_env env, napi_value v, napi_typedarray_type want, void **data, size_t *length,
                      bool *ok) {
  bool is = false;
  *ok = false;
  CHECK_RET(env, napi_is_typedarray(env, v, &is), false);
  if (!is) return true;
  napi_typedarray_type type;
  CHECK_RET(env, napi_get_typedarray_info(env, v, &type, length, data, NULL, NULL), false);
  *ok = type == want;
  return true;
}

/* readBatch(buf: Buffer, lens: Uint32Array): number */
static napi_value port_read_batch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  struct port *pt = this_port(env, info, &argc, argv, "readBatch");
  if (pt == NULL) return NULL;
  if (pt->l.closed) return throw_closed(env, "readBatch");

  void *buf, *lens;
  size_t buf_len, n;
  bool ok;
  if (!get_typed(env, argv[0], napi_uint8_array, &buf, &buf_len, &ok)) return NULL;
  if (!ok) return throw_type(env, "TunPort.readBatch: buf must be a Buffer or Uint8Array");
  if (!get_typed(env, argv[1], napi_uint32_array, &lens, &n, &ok)) return NULL;
  if (!ok) return throw_type(env, "TunPort.readBatch: lens must be a Uint32Array");
  if (n > UINT32_MAX) n = UINT32_MAX;
  size_t need = n * (size_t)pt->slot_size;
  if (buf_len < need)
    return throw_range(env,
                       "TunPort.readBatch: buf has %zu bytes, needs lens.length * slotSize = %zu * %u = %zu",
                       buf_len, n, pt->slot_size, need);

  uint32_t got = ovl_tunport_recv(pt->tp, buf, pt->slot_size, lens, (uint32_t)n);
  napi_value result;
  CHECK(env, napi_create_uint32(env, got, &result));
  return result;
}

/* write(packets: Buffer[]): number
 * Two passes: first every element is fetched (which may run JS: getters, proxies), then the
 * data pointers are taken and copied with no JS in between, so nothing can close the port
 * or detach a buffer under us. */
static napi_value port_write(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  struct port *pt = this_port(env, info, &argc, argv, "write");
  if (pt == NULL) return NULL;
  if (pt->l.closed) return throw_closed(env, "write");

  bool is_array = false;
  CHECK(env, napi_is_array(env, argv[0], &is_array));
  if (!is_array) return throw_type(env, "TunPort.write: packets must be an array of Buffers");
  uint32_t n;
  CHECK(env, napi_get_array_length(env, argv[0], &n));

  struct iovec stack_iov[WRITE_STACK_PKTS];
  napi_value stack_el[WRITE_STACK_PKTS];
  struct iovec *iov = stack_iov;
  napi_value *el = stack_el;
  if (n > WRITE_STACK_PKTS) {
    iov = malloc(sizeof(*iov) * (size_t)n);
    el = malloc(sizeof(*el) * (size_t)n);
    if (iov == NULL || el == NULL) {
      free(iov);
      free(el);
      return throw_errno(env, ENOMEM, "malloc", "TunPort.write", NULL);
    }
  }
  napi_value result = NULL;
  for (uint32_t i = 0; i < n; i++) {
    napi_status st = napi_get_element(env, argv[0], i, &el[i]);
    if (st != napi_ok) {
      throw_status(env, st, "napi_get_element(packets)");
      goto out;
    }
  }
  if (pt->l.closed) { /* a getter closed it */
    throw_closed(env, "write");
    goto out;
  }
  for (uint32_t i = 0; i < n; i++) {
    void *data;
    size_t len;
    bool ok;
    if (!get_typed(env, el[i], napi_uint8_array, &data, &len, &ok)) goto out;
    if (!ok) {
      throw_type(env, "TunPort.write: packets[%u] must be a Buffer or Uint8Array", i);
      goto out;
    }
    if (len > pt->slot_size) {
      throw_range(env, "TunPort.write: packets[%u] has %zu bytes, more than slotSize %u; nothing was queued",
                  i, len, pt->slot_size);
      goto out;
    }
    iov[i] = (struct iovec){.iov_base = data, .iov_len = len};
  }
  int sent = ovl_tunport_send(pt->tp, iov, n); /* lengths checked above: never -EMSGSIZE */
  if (sent < 0) {
    throw_errno(env, -sent, "ovl_tunport_send", "TunPort.write", NULL);
    goto out;
  }
  {
    napi_status st = napi_create_uint32(env, (uint32_t)sent, &result);
    if (st != napi_ok) {
      throw_status(env, st, "napi_create_uint32");
      result = NULL;
    }
  }
out:
  if (iov != stack_iov) free(iov);
  if (el != stack_el) free(el);
  return result;
}

/* close(): undefined. Idempotent. */
static napi_value port_close(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  struct port *pt = this_port(env, info, &argc, NULL, "close");
  if (pt == NULL) return NULL;
  close_port(pt, false);
  return NULL;
}

/* The constructor of TunPort and EnginePort: only openTun()/openEngine() may construct;
 * the class's data is the message for anyone else. */
static napi_value guarded_ctor(napi_env env, napi_callback_info info) {
  napi_value self;
  void *refusal;
  struct addon_data *ad;
  CHECK(env, napi_get_cb_info(env, info, NULL, NULL, &self, &refusal));
  CHECK(env, napi_get_instance_data(env, (void **)&ad));
  if (!ad->constructing) return throw_type(env, "%s", (const char *)refusal);
  return self;
}

/* ---------------------------------------------------------------- openTun --------------- */

/* Reads options[key] of function `fn` as an integer in [min, max]. Returns false with an
 * exception pending. */
static bool get_int_option(napi_env env, napi_value opts, const char *fn, const char *key, uint32_t min,
                           uint32_t max, uint32_t *out) {
  napi_value v;
  napi_valuetype t;
  CHECK_RET(env, napi_get_named_property(env, opts, key, &v), false);
  CHECK_RET(env, napi_typeof(env, v, &t), false);
  if (t != napi_number) {
    throw_type(env, "%s: options.%s must be a number", fn, key);
    return false;
  }
  double d;
  CHECK_RET(env, napi_get_value_double(env, v, &d), false);
  if (!(d >= (double)min && d <= (double)max) || d != (double)(uint32_t)d) {
    throw_range(env, "%s: options.%s must be an integer in %u..%u, got %g", fn, key, min, max, d);
    return false;
  }
  *out = (uint32_t)d;
  return true;
}

/* options.key as an integer in min..max; undefined gives `def`. Returns false with an
 * exception pending. */
static bool get_opt_int_option(napi_env env, napi_value opts, const char *fn, const char *key, uint32_t min,
                               uint32_t max, uint32_t def, uint32_t *out) {
  napi_value v;
  napi_valuetype t;
  CHECK_RET(env, napi_get_named_property(env, opts, key, &v), false);
  CHECK_RET(env, napi_typeof(env, v, &t), false);
  if (t == napi_undefined) {
    *out = def;
    return true;
  }
  return get_int_option(env, opts, fn, key, min, max, out);
}

/* options.key as a boolean; undefined gives `def`. Returns false with an exception pending. */
static bool get_bool_option(napi_env env, napi_value opts, const char *fn, const char *key, bool def, bool *out) {
  napi_value v;
  napi_valuetype t;
  CHECK_RET(env, napi_get_named_property(env, opts, key, &v), false);
  CHECK_RET(env, napi_typeof(env, v, &t), false);
  if (t == napi_undefined) {
    *out = def;
    return true;
  }
  if (t != napi_boolean) {
    throw_type(env, "%s: options.%s must be a boolean or undefined", fn, key);
    return false;
  }
  CHECK_RET(env, napi_get_value_bool(env, v, out), false);
  return true;
}

/* Reads options[key]: undefined (*present false) or a Uint32Array of 4 words, an IPv6
 * address as four big-endian 32-bit chunks (word i = bytes 4i..4i+3), into out (16 bytes,
 * network order). False with an exception pending. */
static bool get_addr6_option(napi_env env, napi_value opts, const char *fn, const char *key, bool *present,
                             uint8_t out[16]) {
  napi_value v;
  napi_valuetype t;
  *present = false;
  CHECK_RET(env, napi_get_named_property(env, opts, key, &v), false);
  CHECK_RET(env, napi_typeof(env, v, &t), false);
  if (t == napi_undefined) return true;
  void *data;
  size_t len;
  bool ok;
  if (!get_typed(env, v, napi_uint32_array, &data, &len, &ok)) return false;
  if (!ok || len != 4) {
    throw_type(env, "%s: options.%s must be a Uint32Array of 4 words (an IPv6 address) or undefined", fn, key);
    return false;
  }
  const uint32_t *w = data;
  for (int i = 0; i < 4; i++)
    for (int b = 0; b < 4; b++) out[4 * i + b] = (uint8_t)(w[i] >> (24 - 8 * b));
  *present = true;
  return true;
}

/* Reads a device name argument of function `fn` into name and sets context to
 * `fn("name")` for error messages. A longer name is cut to NAME_ECHO_MAX bytes, which
 * still makes ovl_tun_open() refuse it as too long; *name_len keeps the full length.
 * Returns false with an exception pending. */
static bool get_tun_name(napi_env env, napi_value v, const char *fn, char name[NAME_ECHO_MAX + 1], size_t *name_len,
                         char context[NAME_ECHO_MAX + 32]) {
  napi_valuetype t;
  CHECK_RET(env, napi_typeof(env, v, &t), false);
  if (t != napi_string) {
    throw_type(env, "%s: name must be a string", fn);
    return false;
  }
  size_t copied;
  CHECK_RET(env, napi_get_value_string_utf8(env, v, NULL, 0, name_len), false);
  CHECK_RET(env, napi_get_value_string_utf8(env, v, name, NAME_ECHO_MAX + 1, &copied), false);
  if (strlen(name) != copied) {
    throw_type(env, "%s: name must not contain NUL characters", fn);
    return false;
  }
  snprintf(context, NAME_ECHO_MAX + 32, "%s(\"%s%s\")", fn, name, *name_len > copied ? "..." : "");
  return true;
}

/* Throws the error of a failed ovl_tun_open (fd = -errno), with a hint for the usual causes. */
static napi_value throw_tun_open(napi_env env, int fd, const char *syscall, size_t name_len, const char *context) {
  char hint[96];
  const char *h = NULL;
  if (fd == -ENAMETOOLONG) {
    snprintf(hint, sizeof(hint), "the name has %zu bytes, an interface name at most %d", name_len, OVL_IFNAMSIZ - 1);
    h = hint;
  } else if (fd == -EPERM) {
    h = "opening a TUN device needs CAP_NET_ADMIN";
  } else if (fd == -EBUSY) {
    h = "the device exists and is in use, or is not a TUN of the same queue mode";
  } else if (fd == -EINVAL) {
    h = "the kernel refused the name or the flags";
  }
  return throw_errno(env, -fd, syscall, context, h);
}

/* Creates an instance of the class behind `cls_ref` (whose constructor refuses direct
 * calls), wraps `native` in it with `finalize` and tags it. On failure before the wrap
 * `native` is not owned (the caller frees it) and *wrapped is false; after it, the wrap
 * finalizer owns it. Returns false with an exception pending. */
static bool new_wrapped(napi_env env, napi_ref cls_ref, void *native, napi_finalize finalize, const napi_type_tag *tag,
                        const char *what, napi_value *obj, bool *wrapped) {
  struct addon_data *ad;
  napi_value cls;
  *wrapped = false;
  CHECK_RET(env, napi_get_instance_data(env, (void **)&ad), false);
  napi_status nst = napi_get_reference_value(env, cls_ref, &cls);
  if (nst == napi_ok) {
    ad->constructing = true;
    nst = napi_new_instance(env, cls, 0, NULL, obj);
    ad->constructing = false;
  }
  if (nst == napi_ok) nst = napi_wrap(env, *obj, native, finalize, NULL, NULL);
  if (nst != napi_ok) {
    throw_status(env, nst, what);
    return false;
  }
  *wrapped = true;
  CHECK_RET(env, napi_type_tag_object(env, *obj, tag), false);
  return true;
}

static napi_value open_tun(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) return throw_type(env, "openTun(name, options, onReadable): expected 3 arguments, got %zu", argc);

  char name[NAME_ECHO_MAX + 1], context[NAME_ECHO_MAX + 32];
  size_t name_len;
  if (!get_tun_name(env, argv[0], "openTun", name, &name_len, context)) return NULL;
  napi_valuetype t;

  /* options */
  uint32_t slot_size = 0, ring_slots = 0;
  bool multi_queue = false;
  CHECK(env, napi_typeof(env, argv[1], &t));
  if (t != napi_object) return throw_type(env, "openTun: options must be an object {slotSize, ringSlots, multiQueue?}");
  if (!get_int_option(env, argv[1], "openTun", "slotSize", SLOT_SIZE_MIN, SLOT_SIZE_MAX, &slot_size)) return NULL;
  if (!get_int_option(env, argv[1], "openTun", "ringSlots", RING_SLOTS_MIN, RING_SLOTS_MAX, &ring_slots)) return NULL;
  if ((ring_slots & (ring_slots - 1)) != 0)
    return throw_range(env, "openTun: options.ringSlots must be a power of two, got %u", ring_slots);
  if (ovl_ring_memory_size(slot_size, ring_slots) == 0)
    return throw_range(env, "openTun: slotSize %u * ringSlots %u exceeds %zu MiB per ring", slot_size, ring_slots,
                       OVL_RING_BYTES_MAX >> 20);
  napi_value mq;
  CHECK(env, napi_get_named_property(env, argv[1], "multiQueue", &mq));
  CHECK(env, napi_typeof(env, mq, &t));
  if (t == napi_boolean)
    CHECK(env, napi_get_value_bool(env, mq, &multi_queue));
  else if (t != napi_undefined)
    return throw_type(env, "openTun: options.multiQueue must be a boolean or undefined");

  /* onReadable */
  CHECK(env, napi_typeof(env, argv[2], &t));
  if (t != napi_function) return throw_type(env, "openTun: onReadable must be a function");

  /* The JS object first. Once wrapped, `pt` belongs to the wrap finalizer, which frees it
   * whatever happens below (pt->l.closed stays true until the port is fully open). */
  struct addon_data *ad;
  CHECK(env, napi_get_instance_data(env, (void **)&ad));
  struct port *pt = calloc(1, sizeof(*pt));
  if (pt == NULL) return throw_errno(env, ENOMEM, "malloc", context, NULL);
  pt->l.env = env;
  pt->fd = -1;
  pt->l.closed = true;
  pt->slot_size = slot_size;

  napi_value obj;
  bool wrapped;
  if (!new_wrapped(env, ad->port_class, pt, port_finalize, &TUNPORT_TAG, "creating the TunPort object", &obj,
                   &wrapped)) {
    if (!wrapped) free(pt);
    return NULL;
  }

  /* The counters: owned by their ArrayBuffer once it exists (see the header comment). */
  napi_value counters;
  struct counters_box *box = box_new(env, sizeof(struct ovl_tun_counters), OVL_TC_COUNT, context, &counters);
  if (box == NULL) return NULL;

  /* The device. */
  char actual[OVL_IFNAMSIZ];
  const char *sc = NULL;
  int fd = ovl_tun_open(name, multi_queue ? OVL_TUN_MULTI_QUEUE : 0, actual, &sc);
  if (fd < 0) return throw_tun_open(env, fd, sc, name_len, context);

  /* The thread-safe function (owns nctx) and the I/O thread. */
  if (!live_tsfn_create(env, &pt->l, argv[2], "overlayd.TunPort.onReadable", TSFN_QUEUE_MAX, tsfn_call_js, context)) {
    (void)close(fd);
    return NULL;
  }
  struct ovl_tunport_config cfg = {
      .fd = fd,
      .slot_size = slot_size,
      .ring_slots = ring_slots,
      .notify = port_notify,
      .opaque = pt,
      .counters = box->mem,
  };
  int err = ovl_tunport_start(&pt->tp, &cfg, &sc);
  if (err < 0) {
    live_tsfn_abort(&pt->l);
    (void)close(fd);
    return throw_errno(env, -err, sc, context, NULL);
  }
  pt->fd = fd;

  /* From here on a failure closes the port: close_port() undoes everything above. */
  if (!live_opened(env, &pt->l, box, port_cleanup_hook, pt, obj, actual, counters, 0, NULL, NULL)) {
    close_port(pt, false);
    return NULL;
  }
  return obj;
}

/* ---------------------------------------------------------------- EnginePort ------------ */
/*
 * exports.openEngine(name, {queues}, onFatal) -> EnginePort: the native engine
 * (native/src/engine.c). Lifetimes of one EnginePort, like a TunPort's:
 *  - struct engine_port: owned by the JS object (napi_wrap), freed by its finalizer.
 *  - the TUN queue fds and the route domain: from openEngine() until close_engine();
 *    the UDP fds and the forwarding threads: from start() until close_engine(), which
 *    runs from close(), the wrap finalizer or the env cleanup hook, whichever is first.
 *    It joins the threads before it closes any fd or frees the route domain.
 *  - the thread-safe function for onFatal: unref'd, queue bounded by `queues` (each thread
 *    reports at most one fatal error, so it never fills), released after the join; a call
 *    still queued then finds ectx->closed. Its events are malloc'd by the reporting thread
 *    and freed by engine_fatal_call_js (which also runs, with env NULL, on teardown).
 *  - the counters: queues x OVL_EC_STRIDE words, a counters_box as for a TunPort.
 */

struct fatal_event {
  uint32_t queue;
  int err;
  const char *syscall; /* static string */
};

struct engine_port {
  struct live l; /* its thread-safe function calls onFatal */
  uint32_t queues;
  char name[OVL_IFNAMSIZ];
  int tun_fds[OVL_ENGINE_QUEUES_MAX]; /* -1 when not open */
  int udp_fds[OVL_ENGINE_QUEUES_MAX]; /* -1 when not open */
  int udp6_fds[OVL_ENGINE_QUEUES_MAX]; /* the IPv6 underlay's; -1 when not open */
  struct ovl_routes *routes;          /* NULL after close */
  struct ovl_engine *eng;             /* NULL until start() and after close */
  /* offloads asked for, and in force (the TUN's from openEngine, the sockets' from start) */
  bool want_tun, want_gso, want_gro;
  bool tun_offload, udp_gso, udp_gro;
  int tun_offload_err; /* errno of a refused IFF_VNET_HDR/TUNSETOFFLOAD, 0 */
};

static napi_value throw_engine_closed(napi_env env, const char *method) {
  char msg[128];
  snprintf(msg, sizeof(msg), "EnginePort.%s: the engine is closed", method);
  (void)napi_throw_error(env, "ERR_ENGINE_CLOSED", msg);
  return NULL;
}

/* Forwarding thread: a thread stopped on a fatal error. napi_queue_full cannot happen
 * (one event per thread at most, queue size = threads); napi_closing means the env is
 * going away. In either case the event is not delivered and is freed here. */
static void engine_on_fatal(void *opaque, uint32_t queue, int err, const char *syscall) {
  struct engine_port *ep = opaque;
  struct fatal_event *ev = malloc(sizeof(*ev));
  if (ev == NULL) return; /* out of memory: the daemon's liveness check (alive()) remains */
  *ev = (struct fatal_event){.queue = queue, .err = err, .syscall = syscall};
  if (napi_call_threadsafe_function(ep->l.tsfn, ev, napi_tsfn_nonblocking) != napi_ok) free(ev);
}

/* JS thread: onFatal(err) with an errno Error. env and js_cb are NULL during teardown. */
static void engine_fatal_call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  struct fatal_event *ev = data;
  const struct notify_ctx *ectx = context;
  struct fatal_event e = *ev;
  free(ev);
  if (env == NULL || js_cb == NULL || ectx->closed) return;
  char ctx[64];
  snprintf(ctx, sizeof(ctx), "native engine queue %u", e.queue);
  napi_value jerr;
  if (!make_errno_error(env, e.err, e.syscall, ctx, "the forwarding thread stopped", &jerr)) return;
  call_js_callback(env, js_cb, 1, &jerr, "calling onFatal");
}

static void engine_cleanup_hook(void *arg);

static void close_fds(int *fds, uint32_t n) {
  /* A TUN queue or socket fd has no buffered data an error could lose, and Linux releases
   * the descriptor even when close() reports an error. */
  for (uint32_t i = 0; i < n; i++) {
    if (fds[i] >= 0) (void)close(fds[i]);
    fds[i] = -1;
  }
}

/* JS thread. Idempotent. Joins the threads first, so nothing races the releases. */
static void close_engine(struct engine_port *ep, bool from_hook) {
  if (ep->l.closed) return;
  ep->l.closed = true;
  ovl_engine_stop(ep->eng); /* NULL ok: never started */
  ep->eng = NULL;
  close_fds(ep->udp_fds, ep->queues);
  close_fds(ep->udp6_fds, ep->queues);
  close_fds(ep->tun_fds, ep->queues);
  ovl_routes_destroy(ep->routes);
  ep->routes = NULL;
  live_release(&ep->l, engine_cleanup_hook, ep, from_hook);
}

static void engine_cleanup_hook(void *arg) { close_engine(arg, true); }

static void engine_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct engine_port *ep = data;
  close_engine(ep, false);
  free(ep);
}

static struct engine_port *this_engine(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv,
                                       const char *method) {
  return this_wrapped(env, info, argc, argv, &ENGINE_TAG, "EnginePort", method);
}

/* start({port, tunAddress, tunMtu, subnet, subnetLen, bindAddress?, subnet6?, subnet6Len?,
 * tunAddress6?, bindAddress6?}): opens the UDP sockets (SO_REUSEPORT when queues > 1) on
 * bindAddress:port (uint32 host order; undefined or 0 = 0.0.0.0), with bindAddress6 also
 * AF_INET6 sockets on [bindAddress6]:port, and starts one forwarding thread per queue.
 * subnet6 (with subnet6Len, tunAddress6) turns inner IPv6 on; IPv6 addresses are
 * Uint32Arrays of 4 big-endian words (get_addr6_option). */
static napi_value engine_start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  struct engine_port *ep = this_engine(env, info, &argc, argv, "start");
  if (ep == NULL) return NULL;
  if (ep->l.closed) return throw_engine_closed(env, "start");
  if (ep->eng != NULL) {
    (void)napi_throw_error(env, "ERR_ENGINE_STARTED", "EnginePort.start: already started");
    return NULL;
  }
  napi_valuetype t;
  CHECK(env, napi_typeof(env, argv[0], &t));
  if (t != napi_object)
    return throw_type(env, "EnginePort.start: options must be an object {port, tunAddress, tunMtu, subnet, subnetLen}");
  const char *fn = "EnginePort.start";
  uint32_t port, tun_address, tun_mtu, subnet, subnet_len;
  if (!get_int_option(env, argv[0], fn, "port", 1, 65535, &port) ||
      !get_int_option(env, argv[0], fn, "tunAddress", 0, UINT32_MAX, &tun_address) ||
      !get_int_option(env, argv[0], fn, "tunMtu", 68, 65535, &tun_mtu) ||
      !get_int_option(env, argv[0], fn, "subnet", 0, UINT32_MAX, &subnet) ||
      !get_int_option(env, argv[0], fn, "subnetLen", 0, 32, &subnet_len))
    return NULL;
  if (subnet_len < 32 && (subnet & (UINT32_MAX >> subnet_len)) != 0)
    return throw_range(env, "EnginePort.start: options.subnet has host bits set for /%u", subnet_len);
  uint32_t bind_address;
  if (!get_opt_int_option(env, argv[0], fn, "bindAddress", 0, UINT32_MAX, 0, &bind_address))
    return NULL;
  bool ipv6, has_tun6, has_bind6;
  uint8_t subnet6[16] = {0}, tun6[16] = {0}, bind6[16] = {0};
  uint32_t subnet6_len = 0;
  if (!get_addr6_option(env, argv[0], fn, "subnet6", &ipv6, subnet6) ||
      !get_addr6_option(env, argv[0], fn, "tunAddress6", &has_tun6, tun6) ||
      !get_addr6_option(env, argv[0], fn, "bindAddress6", &has_bind6, bind6) ||
      (ipv6 && !get_int_option(env, argv[0], fn, "subnet6Len", 0, 128, &subnet6_len)))
    return NULL;
  if ((has_tun6 || has_bind6) && !ipv6)
    return throw_type(env, "%s: options.tunAddress6 and options.bindAddress6 need options.subnet6", fn);
  if (ipv6 && !has_tun6) return throw_type(env, "%s: options.subnet6 needs options.tunAddress6", fn);
  for (uint32_t i = 0; i < 16; i++) {
    uint32_t bits = subnet6_len >= 8 * (i + 1) ? 8 : subnet6_len > 8 * i ? subnet6_len - 8 * i : 0;
    if ((subnet6[i] & (uint8_t)~(bits == 0 ? 0 : 0xffu << (8 - bits))) != 0)
      return throw_range(env, "EnginePort.start: options.subnet6 has host bits set for /%u", subnet6_len);
  }

  char context[64];
  snprintf(context, sizeof(context), "EnginePort.start(port %u)", port);
  const char *sc = NULL;
  int err = ovl_udp_open(ep->udp_fds, ep->queues, bind_address, (uint16_t)port, OVL_UDP_SOCKBUF_BYTES, &sc);
  if (err < 0) {
    char hint[64];
    snprintf(hint, sizeof(hint), "UDP port %u is in use", port);
    return throw_errno(env, -err, sc, context, err == -EADDRINUSE ? hint : NULL);
  }
  if (has_bind6) {
    err = ovl_udp_open6(ep->udp6_fds, ep->queues, bind6, (uint16_t)port, OVL_UDP_SOCKBUF_BYTES, &sc);
    if (err < 0) {
      close_fds(ep->udp_fds, ep->queues);
      char hint[64];
      snprintf(hint, sizeof(hint), "UDP port %u (IPv6) is in use", port);
      return throw_errno(env, -err, sc, "EnginePort.start(IPv6 underlay)", err == -EADDRINUSE ? hint : NULL);
    }
  }
  bool gso = false, gro = false;
  uint32_t icmp_rate = 0, icmp_burst = 0;
  if (!get_bool_option(env, argv[0], fn, "udpGso", false, &gso) || !get_bool_option(env, argv[0], fn, "udpGro", false, &gro) ||
      !get_opt_int_option(env, argv[0], fn, "icmpRatelimitRate", 0, UINT32_MAX, OVL_ICMP_RATELIMIT_RATE, &icmp_rate) ||
      !get_opt_int_option(env, argv[0], fn, "icmpRatelimitBurst", 1, UINT32_MAX, OVL_ICMP_RATELIMIT_BURST, &icmp_burst)) {
    close_fds(ep->udp_fds, ep->queues);
    close_fds(ep->udp6_fds, ep->queues);
    return NULL;
  }
  /* Probed on every socket: in force only when each of them takes it. */
  ep->want_gso = gso;
  ep->want_gro = gro;
  for (uint32_t q = 0; q < ep->queues && gso; q++)
    gso = ovl_udp_gso_probe(ep->udp_fds[q]) && (!has_bind6 || ovl_udp_gso_probe(ep->udp6_fds[q]));
  for (uint32_t q = 0; q < ep->queues && gro; q++)
    gro = ovl_udp_gro_enable(ep->udp_fds[q]) && (!has_bind6 || ovl_udp_gro_enable(ep->udp6_fds[q]));
  ep->udp_gso = gso;
  ep->udp_gro = gro;
  struct ovl_engine_config cfg = {
      .tun_vnet_hdr = ep->tun_offload,
      .tun_gro = ep->tun_offload,
      .udp_gso = gso,
      .udp_gro = gro,
      .queues = ep->queues,
      .tun_fds = ep->tun_fds,
      .udp_fds = ep->udp_fds,
      .port = (uint16_t)port,
      .tun_address = tun_address,
      .tun_mtu = tun_mtu,
      .subnet = subnet,
      .subnet_len = (uint8_t)subnet_len,
      .routes = ep->routes,
      .counters = ep->l.box->mem,
      .on_fatal = engine_on_fatal,
      .opaque = ep,
      .icmp_rate = icmp_rate,
      .icmp_burst = icmp_burst,
      .ipv6 = ipv6,
      .subnet6_len = (uint8_t)subnet6_len,
      .udp6_fds = has_bind6 ? ep->udp6_fds : NULL,
  };
  memcpy(cfg.subnet6, subnet6, 16);
  memcpy(cfg.tun_address6, tun6, 16);
  err = ovl_engine_start(&ep->eng, &cfg, &sc);
  if (err < 0) {
    ep->eng = NULL;
    close_fds(ep->udp_fds, ep->queues);
    close_fds(ep->udp6_fds, ep->queues);
    return throw_errno(env, -err, sc, context, NULL);
  }
  return NULL;
}

/* The second word of a route triple: the prefix length in the low byte, OVL_ROUTE_* flags
 * above it (native-engine.ts ROUTE_FLAGS_SHIFT). */
#define ROUTE_LEN_MASK 0xffu
#define ROUTE_FLAGS_SHIFT 8u

/* Reads a Uint32Array of [net, len | flags << 8, peer] triples (uint32 host order) of function `fn` into
 * a malloc'd array (*n routes; the caller frees it), checking each is a valid prefix.
 * Returns NULL with an exception pending (TypeError, RangeError naming the route). */
static struct ovl_route *get_routes(napi_env env, napi_value v, const char *fn, size_t *n) {
  void *data;
  size_t len;
  bool ok;
  if (!get_typed(env, v, napi_uint32_array, &data, &len, &ok)) return NULL;
  if (!ok) {
    throw_type(env, "%s: routes must be a Uint32Array of [net, len, peer] triples", fn);
    return NULL;
  }
  if (len % 3 != 0) {
    throw_range(env, "%s: routes.length %zu is not a multiple of 3", fn, len);
    return NULL;
  }
  *n = len / 3;
  const uint32_t *w = data;
  struct ovl_route *r = malloc(sizeof(*r) * (*n ? *n : 1));
  if (r == NULL) {
    throw_errno(env, ENOMEM, "malloc", fn, NULL);
    return NULL;
  }
  for (size_t i = 0; i < *n; i++) {
    uint32_t net = w[3 * i], plen = w[3 * i + 1] & ROUTE_LEN_MASK, flags = w[3 * i + 1] >> ROUTE_FLAGS_SHIFT;
    if ((flags & ~OVL_ROUTE_FLAGS) != 0) {
      free(r);
      throw_range(env, "%s: route %zu has unknown flags %#x", fn, i, flags);
      return NULL;
    }
    if (w[3 * i + 1] > (OVL_ROUTE_FLAGS << ROUTE_FLAGS_SHIFT | ROUTE_LEN_MASK) || plen > 32 ||
        (plen < 32 && (net & (UINT32_MAX >> plen)) != 0)) {
      free(r);
      throw_range(env, "%s: route %zu is not a valid prefix (%#x/%u)", fn, i, net, plen);
      return NULL;
    }
    r[i] = (struct ovl_route){.net = net, .len = (uint8_t)plen, .peer = w[3 * i + 2], .flags = (uint8_t)flags};
  }
  return r;
}

/* setRoutes(routes: Uint32Array): the complete route set, [net, len, peer] per route, all
 * uint32 host order; replaces the table in force (published to the threads lock-free). */
static napi_value engine_set_routes(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  struct engine_port *ep = this_engine(env, info, &argc, argv, "setRoutes");
  if (ep == NULL) return NULL;
  if (ep->l.closed) return throw_engine_closed(env, "setRoutes");
  size_t n;
  struct ovl_route *r = get_routes(env, argv[0], "EnginePort.setRoutes", &n);
  if (r == NULL) return NULL;
  int err = ovl_routes_set(ep->routes, r, n);
  free(r);
  if (err == -E2BIG) return throw_range(env, "EnginePort.setRoutes: %zu routes, more than 2^24", n);
  if (err < 0) return throw_errno(env, -err, "ovl_routes_set", "EnginePort.setRoutes", NULL);
  return NULL;
}

/* setRoutes6(routes: Uint32Array): the complete IPv6 route set, 11 words per route:
 * net (4 big-endian words), len (0..128), peer (IPv4, host order), hasPeer6 (0/1), peer6
 * (4 big-endian words, ignored when hasPeer6 is 0). Replaces the IPv6 table in force. */
static napi_value engine_set_routes6(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  const char *fn = "EnginePort.setRoutes6";
  struct engine_port *ep = this_engine(env, info, &argc, argv, "setRoutes6");
  if (ep == NULL) return NULL;
  if (ep->l.closed) return throw_engine_closed(env, "setRoutes6");
  void *data;
  size_t len;
  bool ok;
  if (!get_typed(env, argv[0], napi_uint32_array, &data, &len, &ok)) return NULL;
  if (!ok) return throw_type(env, "%s: routes must be a Uint32Array of 11 words per route", fn);
  if (len % 11 != 0) return throw_range(env, "%s: routes.length %zu is not a multiple of 11", fn, len);
  size_t n = len / 11;
  const uint32_t *w = data;
  struct ovl_route6 *r = calloc(n ? n : 1, sizeof(*r));
  if (r == NULL) return throw_errno(env, ENOMEM, "malloc", fn, NULL);
  for (size_t i = 0; i < n; i++) {
    const uint32_t *x = w + 11 * i;
    for (int k = 0; k < 4; k++)
      for (int b = 0; b < 4; b++) {
        r[i].net[4 * k + b] = (uint8_t)(x[k] >> (24 - 8 * b));
        r[i].peer6[4 * k + b] = (uint8_t)(x[7 + k] >> (24 - 8 * b));
      }
    if (x[4] > 128 || x[6] > 1) {
      free(r);
      return throw_range(env, "%s: route %zu: len %u (0..128) or hasPeer6 %u (0/1) out of range", fn, i, x[4], x[6]);
    }
    r[i].len = (uint8_t)x[4];
    r[i].peer = x[5];
    r[i].has_peer6 = x[6] == 1;
    if (!r[i].has_peer6) memset(r[i].peer6, 0, 16);
  }
  int err = ovl_routes_set6(ep->routes, r, n);
  free(r);
  if (err == -EINVAL) return throw_range(env, "%s: a route has host bits set", fn);
  if (err == -E2BIG) return throw_range(env, "%s: %zu routes, more than 2^24", fn, n);
  if (err < 0) return throw_errno(env, -err, "ovl_routes_set6", fn, NULL);
  return NULL;
}

/* offloads(): {tun, udpGso, udpGro} in force (asked for and taken by the kernel; the UDP
 * ones false before start), and {tunAsked, udpGsoAsked, udpGroAsked}. */
static napi_value engine_offloads(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  struct engine_port *ep = this_engine(env, info, &argc, NULL, "offloads");
  if (ep == NULL) return NULL;
  napi_value obj, v;
  CHECK(env, napi_create_object(env, &obj));
  const struct {
    const char *k;
    bool b;
  } kv[] = {{"tun", ep->tun_offload}, {"udpGso", ep->udp_gso},        {"udpGro", ep->udp_gro},
            {"tunAsked", ep->want_tun}, {"udpGsoAsked", ep->want_gso}, {"udpGroAsked", ep->want_gro}};
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
    CHECK(env, napi_get_boolean(env, kv[i].b, &v));
    CHECK(env, napi_set_named_property(env, obj, kv[i].k, v));
  }
  return obj;
}

/* close(): undefined. Idempotent. */
static napi_value engine_close(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  struct engine_port *ep = this_engine(env, info, &argc, NULL, "close");
  if (ep == NULL) return NULL;
  close_engine(ep, false);
  return NULL;
}

/* openEngine(name, {queues}, onFatal): opens the TUN device with `queues` queues
 * (IFF_MULTI_QUEUE when more than one) and creates the route domain; no thread yet. */
static napi_value open_engine(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) return throw_type(env, "openEngine(name, options, onFatal): expected 3 arguments, got %zu", argc);
  char name[NAME_ECHO_MAX + 1], context[NAME_ECHO_MAX + 32];
  size_t name_len;
  if (!get_tun_name(env, argv[0], "openEngine", name, &name_len, context)) return NULL;
  napi_valuetype t;
  CHECK(env, napi_typeof(env, argv[1], &t));
  if (t != napi_object) return throw_type(env, "openEngine: options must be an object {queues}");
  uint32_t queues;
  if (!get_int_option(env, argv[1], "openEngine", "queues", 1, OVL_ENGINE_QUEUES_MAX, &queues)) return NULL;
  bool want_tun;
  if (!get_bool_option(env, argv[1], "openEngine", "tunOffload", false, &want_tun)) return NULL;
  CHECK(env, napi_typeof(env, argv[2], &t));
  if (t != napi_function) return throw_type(env, "openEngine: onFatal must be a function");

  /* The JS object first; once wrapped, the finalizer owns `ep` (closed until fully open). */
  struct addon_data *ad;
  CHECK(env, napi_get_instance_data(env, (void **)&ad));
  struct engine_port *ep = calloc(1, sizeof(*ep));
  if (ep == NULL) return throw_errno(env, ENOMEM, "malloc", context, NULL);
  ep->l.env = env;
  ep->queues = queues;
  ep->want_tun = want_tun;
  ep->l.closed = true;
  for (uint32_t q = 0; q < OVL_ENGINE_QUEUES_MAX; q++) ep->tun_fds[q] = ep->udp_fds[q] = ep->udp6_fds[q] = -1;
  napi_value obj;
  bool wrapped;
  if (!new_wrapped(env, ad->engine_class, ep, engine_finalize, &ENGINE_TAG, "creating the EnginePort object", &obj,
                   &wrapped)) {
    if (!wrapped) free(ep);
    return NULL;
  }

  napi_value counters;
  struct counters_box *box =
      box_new(env, sizeof(struct ovl_engine_counters) * queues, (size_t)OVL_EC_STRIDE * queues, context, &counters);
  if (box == NULL) return NULL;

  /* The device: queue 0 creates it (and learns the name a "%d" pattern got), the other
   * queues attach to that name. */
  const char *sc = NULL;
  unsigned flags = queues > 1 ? OVL_TUN_MULTI_QUEUE : 0;
  /* With tunOffload: IFF_VNET_HDR + TUNSETOFFLOAD first; a kernel that refuses either
   * (EINVAL) gets the device opened again without (the first fd's close removed it). */
  bool vnet = want_tun;
  for (uint32_t q = 0; q < queues; q++) {
    char actual[OVL_IFNAMSIZ];
    int fd = ovl_tun_open(q == 0 ? name : ep->name, flags | (vnet ? OVL_TUN_VNET_HDR : 0), actual, &sc);
    if (fd == -EINVAL && vnet && q == 0) {
      ep->tun_offload_err = EINVAL;
      vnet = false;
      fd = ovl_tun_open(name, flags, actual, &sc);
    }
    if (fd < 0) {
      close_fds(ep->tun_fds, q);
      return throw_tun_open(env, fd, sc, name_len, context);
    }
    ep->tun_fds[q] = fd;
    if (q == 0) memcpy(ep->name, actual, sizeof(ep->name));
  }
  ep->tun_offload = vnet;
  int err = ovl_routes_create(&ep->routes, queues);
  if (err < 0) {
    close_fds(ep->tun_fds, queues);
    return throw_errno(env, -err, "ovl_routes_create", context, NULL);
  }

  if (!live_tsfn_create(env, &ep->l, argv[2], "overlayd.EnginePort.onFatal", queues, engine_fatal_call_js, context)) {
    close_fds(ep->tun_fds, queues);
    ovl_routes_destroy(ep->routes);
    ep->routes = NULL;
    return NULL;
  }

  /* From here on a failure closes the engine: close_engine() undoes everything above. */
  static const char *const extra_names[] = {"queues"};
  napi_value jqueues;
  if (napi_create_uint32(env, queues, &jqueues) != napi_ok ||
      !live_opened(env, &ep->l, box, engine_cleanup_hook, ep, obj, ep->name, counters, 1, extra_names, &jqueues)) {
    throw_status(env, napi_generic_failure, "creating EnginePort properties"); /* no-op if one is pending */
    close_engine(ep, false);
    return NULL;
  }
  return obj;
}

/* ---------------------------------------------------------------- routeBench ------------ */

/* routeBench(routes: Uint32Array, addrs: Uint32Array, rounds, cached): times the C route
 * table for the benchmarks (bench/): builds a table from [net, len, peer] triples, then
 * looks up every address of addrs, `rounds` times, through a per-thread cache (cached) or
 * the bare LPM. Returns {lookups, found, ns}: ns is the wall time of the lookups only
 * (CLOCK_MONOTONIC), so ns / lookups is the cost of one lookup without any call overhead.
 * Runs on the JS thread (it blocks it for the duration). */
static napi_value route_bench(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *adata;
  size_t alen = 0;
  bool ok = false;
  if (argc >= 2 && !get_typed(env, argv[1], napi_uint32_array, &adata, &alen, &ok)) return NULL;
  if (!ok) return throw_type(env, "routeBench(routes: Uint32Array of triples, addrs: Uint32Array, rounds, cached)");
  napi_valuetype t = napi_undefined;
  if (argc >= 3) CHECK(env, napi_typeof(env, argv[2], &t));
  double rounds_d = 0;
  if (t == napi_number) CHECK(env, napi_get_value_double(env, argv[2], &rounds_d));
  if (!(rounds_d >= 1 && rounds_d <= 1e6) || rounds_d != (double)(uint32_t)rounds_d)
    return throw_range(env, "routeBench: rounds must be an integer in 1..1000000");
  bool cached = false;
  if (argc >= 4) {
    CHECK(env, napi_typeof(env, argv[3], &t));
    if (t != napi_boolean) return throw_type(env, "routeBench: cached must be a boolean");
    CHECK(env, napi_get_value_bool(env, argv[3], &cached));
  }
  size_t n;
  struct ovl_route *r = get_routes(env, argv[0], "routeBench", &n);
  if (r == NULL) return NULL;
  struct ovl_rcache *cache = malloc(sizeof(*cache));
  struct ovl_rtable *tbl = NULL;
  int err = cache ? ovl_rtable_build(&tbl, r, n) : -ENOMEM;
  free(r);
  if (err < 0) {
    free(cache);
    if (err == -E2BIG) return throw_range(env, "routeBench: %zu routes, more than 2^24", n);
    return throw_errno(env, -err, "malloc", "routeBench", NULL);
  }
  ovl_rcache_init(cache);
  const uint32_t *addrs = adata;
  uint32_t rounds = (uint32_t)rounds_d;
  uint64_t found = 0;
  struct timespec t0, t1;
  (void)clock_gettime(CLOCK_MONOTONIC, &t0); /* cannot fail for CLOCK_MONOTONIC */
  for (uint32_t k = 0; k < rounds; k++) {
    for (size_t i = 0; i < alen; i++) {
      uint32_t peer;
      found += cached ? ovl_rcache_lookup(cache, tbl, addrs[i], &peer) : ovl_rtable_lookup(tbl, addrs[i], &peer);
    }
  }
  (void)clock_gettime(CLOCK_MONOTONIC, &t1);
  ovl_rtable_free(tbl);
  free(cache);
  double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
  napi_value out, v;
  CHECK(env, napi_create_object(env, &out));
  CHECK(env, napi_create_double(env, (double)rounds * (double)alen, &v));
  CHECK(env, napi_set_named_property(env, out, "lookups", v));
  CHECK(env, napi_create_double(env, (double)found, &v));
  CHECK(env, napi_set_named_property(env, out, "found", v));
  CHECK(env, napi_create_double(env, ns, &v));
  CHECK(env, napi_set_named_property(env, out, "ns", v));
  return out;
}

/* ---------------------------------------------------------------- sd_notify ------------- */

/* sdNotify(path: string, message: string): void; throws an errno Error on failure. */
static napi_value sd_notify(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char path[128];
  char msg[4096];
  size_t plen = 0, mlen = 0;
  napi_valuetype t0 = napi_undefined, t1 = napi_undefined;
  if (argc >= 2) {
    CHECK(env, napi_typeof(env, argv[0], &t0));
    CHECK(env, napi_typeof(env, argv[1], &t1));
  }
  if (t0 != napi_string || t1 != napi_string) return throw_type(env, "sdNotify(path, message): both must be strings");
  CHECK(env, napi_get_value_string_utf8(env, argv[0], path, sizeof(path), &plen));
  if (plen >= sizeof(path) - 1) return throw_range(env, "sdNotify: path longer than %zu bytes", sizeof(path) - 2);
  CHECK(env, napi_get_value_string_utf8(env, argv[1], msg, sizeof(msg), &mlen));
  if (mlen >= sizeof(msg) - 1) return throw_range(env, "sdNotify: message longer than %zu bytes", sizeof(msg) - 2);
  const char *syscall = "sendto";
  int rc = ovl_sd_notify(path, msg, mlen, &syscall);
  if (rc < 0) return throw_errno(env, -rc, syscall, "sdNotify", path);
  return NULL;
}

/* ---------------------------------------------------------------- module ---------------- */

static void addon_data_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  struct addon_data *ad = data;
  /* The env is going away: a failed delete leaks nothing that outlives it. */
  if (ad->port_class) (void)napi_delete_reference(env, ad->port_class);
  if (ad->engine_class) (void)napi_delete_reference(env, ad->engine_class);
  free(ad);
}

/* A frozen array of n static strings. */
static bool make_names(napi_env env, const char *const *names, uint32_t n, napi_value *out) {
  CHECK_RET(env, napi_create_array_with_length(env, n, out), false);
  for (uint32_t i = 0; i < n; i++) {
    napi_value s;
    CHECK_RET(env, napi_create_string_utf8(env, names[i], NAPI_AUTO_LENGTH, &s), false);
    CHECK_RET(env, napi_set_element(env, *out, i, s), false);
  }
  CHECK_RET(env, napi_object_freeze(env, *out), false);
  return true;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  struct addon_data *ad = calloc(1, sizeof(*ad));
  if (ad == NULL) return throw_errno(env, ENOMEM, "malloc", "overlayd addon init", NULL);
  napi_status st = napi_set_instance_data(env, ad, addon_data_finalize, NULL);
  if (st != napi_ok) {
    free(ad);
    throw_status(env, st, "napi_set_instance_data");
    return NULL;
  }

  napi_property_descriptor methods[] = {
      {"readBatch", NULL, port_read_batch, NULL, NULL, NULL, napi_default_method, NULL},
      {"write", NULL, port_write, NULL, NULL, NULL, napi_default_method, NULL},
      {"close", NULL, port_close, NULL, NULL, NULL, napi_default_method, NULL},
  };
  napi_value cls;
  CHECK(env, napi_define_class(env, "TunPort", NAPI_AUTO_LENGTH, guarded_ctor,
                               (void *)"TunPort cannot be constructed directly: use openTun()",
                               sizeof(methods) / sizeof(methods[0]), methods, &cls));
  CHECK(env, napi_create_reference(env, cls, 1, &ad->port_class));

  napi_property_descriptor engine_methods[] = {
      {"start", NULL, engine_start, NULL, NULL, NULL, napi_default_method, NULL},
      {"setRoutes", NULL, engine_set_routes, NULL, NULL, NULL, napi_default_method, NULL},
      {"setRoutes6", NULL, engine_set_routes6, NULL, NULL, NULL, napi_default_method, NULL},
      {"offloads", NULL, engine_offloads, NULL, NULL, NULL, napi_default_method, NULL},
      {"close", NULL, engine_close, NULL, NULL, NULL, napi_default_method, NULL},
  };
  napi_value engine_cls;
  CHECK(env, napi_define_class(env, "EnginePort", NAPI_AUTO_LENGTH, guarded_ctor,
                               (void *)"EnginePort cannot be constructed directly: use openEngine()",
                               sizeof(engine_methods) / sizeof(engine_methods[0]), engine_methods, &engine_cls));
  CHECK(env, napi_create_reference(env, engine_cls, 1, &ad->engine_class));

  napi_value names, engine_names, stride;
  if (!make_names(env, ovl_tun_counter_names, OVL_TC_COUNT, &names)) return NULL;
  if (!make_names(env, ovl_engine_counter_names, OVL_EC_COUNT, &engine_names)) return NULL;
  CHECK(env, napi_create_uint32(env, OVL_EC_STRIDE, &stride));

  napi_value open_fn, notify_fn, open_engine_fn, bench_fn;
  CHECK(env, napi_create_function(env, "openTun", NAPI_AUTO_LENGTH, open_tun, NULL, &open_fn));
  CHECK(env, napi_create_function(env, "sdNotify", NAPI_AUTO_LENGTH, sd_notify, NULL, &notify_fn));
  CHECK(env, napi_create_function(env, "openEngine", NAPI_AUTO_LENGTH, open_engine, NULL, &open_engine_fn));
  CHECK(env, napi_create_function(env, "routeBench", NAPI_AUTO_LENGTH, route_bench, NULL, &bench_fn));
  napi_property_descriptor exports_props[] = {
      {"openTun", NULL, NULL, NULL, NULL, open_fn, napi_enumerable, NULL},
      {"sdNotify", NULL, NULL, NULL, NULL, notify_fn, napi_enumerable, NULL},
      {"tunCounterNames", NULL, NULL, NULL, NULL, names, napi_enumerable, NULL},
      {"openEngine", NULL, NULL, NULL, NULL, open_engine_fn, napi_enumerable, NULL},
      {"engineCounterNames", NULL, NULL, NULL, NULL, engine_names, napi_enumerable, NULL},
      {"engineCounterStride", NULL, NULL, NULL, NULL, stride, napi_enumerable, NULL},
      {"routeBench", NULL, NULL, NULL, NULL, bench_fn, napi_enumerable, NULL},
  };
  CHECK(env, napi_define_properties(env, exports, sizeof(exports_props) / sizeof(exports_props[0]), exports_props));
  return exports;
}
