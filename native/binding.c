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

struct addon_data {
  napi_ref port_class; /* the TunPort constructor */
  bool constructing;   /* set only while openTun() instantiates a TunPort */
};

struct counters_box {
  struct ovl_tun_counters c; /* first: 64-byte aligned */
  uint32_t refs;             /* JS thread only: the ArrayBuffer, and an open port */
};

struct notify_ctx {
  bool closed; /* JS thread only */
};

struct port {
  napi_env env;
  struct ovl_tunport *tp;             /* NULL until open and after close */
  int fd;                             /* -1 when not open */
  bool closed;                        /* true until fully opened, and after close */
  bool hook_added;
  napi_threadsafe_function tsfn;      /* read by the I/O thread while it runs */
  struct notify_ctx *nctx;            /* owned by tsfn */
  struct counters_box *box;           /* one reference while open */
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

/* Throws Error{code: errno name, errno: -err, syscall} with message
 * "<context>: <syscall> failed: <strerror> (<CODE>)[: <hint>]". err is a positive errno. */
static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *context,
                              const char *hint) {
  char ebuf[128], msg[512];
  const char *code = ovl_errno_name(err);
  const char *text = strerror_r(err, ebuf, sizeof(ebuf)); /* GNU variant (_GNU_SOURCE) */
  snprintf(msg, sizeof(msg), "%s: %s failed: %s (%s)%s%s", context, syscall, text, code,
           hint ? ": " : "", hint ? hint : "");
  napi_value jcode, jmsg, jerr, jsys, jerrno;
  CHECK(env, napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &jcode));
  CHECK(env, napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &jmsg));
  CHECK(env, napi_create_error(env, jcode, jmsg, &jerr));
  CHECK(env, napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &jsys));
  CHECK(env, napi_set_named_property(env, jerr, "syscall", jsys));
  CHECK(env, napi_create_int32(env, -err, &jerrno));
  CHECK(env, napi_set_named_property(env, jerr, "errno", jerrno));
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
  if (--box->refs == 0) free(box);
}

static void counters_ab_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  box_unref(hint);
}

static void tsfn_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data); /* struct notify_ctx */
}

/* JS thread: runs queued onReadable calls. env and js_cb are NULL during env teardown. */
static void tsfn_call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)data;
  const struct notify_ctx *nctx = context;
  if (env == NULL || js_cb == NULL || nctx->closed) return;
  napi_value undef;
  CHECK_RET(env, napi_get_undefined(env, &undef), );
  napi_status st = napi_call_function(env, undef, js_cb, 0, NULL, NULL);
  if (st == napi_pending_exception) {
    /* onReadable threw: hand it to 'uncaughtException' like any callback from the loop
     * (left pending, Node 20 would only print a deprecation warning and drop it). */
    napi_value exc;
    CHECK_RET(env, napi_get_and_clear_last_exception(env, &exc), );
    CHECK_RET(env, napi_fatal_exception(env, exc), );
  } else if (st != napi_ok) {
    throw_status(env, st, "calling onReadable");
  }
}

/* I/O thread: the rx ring became non-empty. napi_queue_full means calls are already queued,
 * and they run after this commit, so JS still drains it; napi_closing means the env is
 * going away. Neither needs action, and nothing else can fail for a live tsfn. */
static void port_notify(void *opaque) {
  struct port *pt = opaque;
  (void)napi_call_threadsafe_function(pt->tsfn, NULL, napi_tsfn_nonblocking);
}

static void port_cleanup_hook(void *arg);

/* JS thread. Idempotent. Joins the I/O thread first, so nothing races the releases. */
static void close_port(struct port *pt, bool from_hook) {
  if (pt->closed) return;
  pt->closed = true;
  ovl_tunport_stop(pt->tp);
  pt->tp = NULL;
  /* Linux releases the descriptor even when close() reports an error, and a TUN or
   * socket fd has no buffered data that an error could have lost. */
  (void)close(pt->fd);
  pt->fd = -1;
  pt->nctx->closed = true;
  /* Fails only for an already released tsfn, which the `closed` flag rules out. */
  (void)napi_release_threadsafe_function(pt->tsfn, napi_tsfn_abort);
  pt->tsfn = NULL;
  box_unref(pt->box);
  pt->box = NULL;
  if (pt->hook_added && !from_hook) {
    /* Fails only if the hook is unknown, i.e. already run: nothing to undo then. */
    (void)napi_remove_env_cleanup_hook(pt->env, port_cleanup_hook, pt);
  }
  pt->hook_added = false;
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

/* Fetches this (checked to be a TunPort) and up to *argc arguments (missing ones are
 * undefined). Returns NULL with an exception pending when this is not a TunPort. */
static struct port *this_port(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv,
                              const char *method) {
  napi_value self;
  CHECK(env, napi_get_cb_info(env, info, argc, argv, &self, NULL));
  napi_valuetype t;
  CHECK(env, napi_typeof(env, self, &t));
  bool tagged = false;
  if (t == napi_object) CHECK(env, napi_check_object_type_tag(env, self, &TUNPORT_TAG, &tagged));
  if (!tagged) {
    throw_type(env, "TunPort.%s: called on something that is not a TunPort", method);
    return NULL;
  }
  void *p = NULL;
  CHECK(env, napi_unwrap(env, self, &p));
  return p;
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
  if (pt->closed) return throw_closed(env, "readBatch");

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
  if (pt->closed) return throw_closed(env, "write");

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
  if (pt->closed) { /* a getter closed it */
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

static napi_value port_ctor(napi_env env, napi_callback_info info) {
  napi_value self;
  struct addon_data *ad;
  CHECK(env, napi_get_cb_info(env, info, NULL, NULL, &self, NULL));
  CHECK(env, napi_get_instance_data(env, (void **)&ad));
  if (!ad->constructing) return throw_type(env, "TunPort cannot be constructed directly: use openTun()");
  return self;
}

/* ---------------------------------------------------------------- openTun --------------- */

/* Reads options[key] as an integer in [min, max]. Returns false with an exception pending. */
static bool get_int_option(napi_env env, napi_value opts, const char *key, uint32_t min, uint32_t max,
                           uint32_t *out) {
  napi_value v;
  napi_valuetype t;
  CHECK_RET(env, napi_get_named_property(env, opts, key, &v), false);
  CHECK_RET(env, napi_typeof(env, v, &t), false);
  if (t != napi_number) {
    throw_type(env, "openTun: options.%s must be a number", key);
    return false;
  }
  double d;
  CHECK_RET(env, napi_get_value_double(env, v, &d), false);
  if (!(d >= (double)min && d <= (double)max) || d != (double)(uint32_t)d) {
    throw_range(env, "openTun: options.%s must be an integer in %u..%u, got %g", key, min, max, d);
    return false;
  }
  *out = (uint32_t)d;
  return true;
}

static napi_value open_tun(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) return throw_type(env, "openTun(name, options, onReadable): expected 3 arguments, got %zu", argc);

  /* name: a longer name is cut to NAME_ECHO_MAX bytes here, which still makes
   * ovl_tun_open() refuse it as too long; name_len keeps the full length. */
  napi_valuetype t;
  CHECK(env, napi_typeof(env, argv[0], &t));
  if (t != napi_string) return throw_type(env, "openTun: name must be a string");
  char name[NAME_ECHO_MAX + 1];
  size_t name_len, copied;
  CHECK(env, napi_get_value_string_utf8(env, argv[0], NULL, 0, &name_len));
  CHECK(env, napi_get_value_string_utf8(env, argv[0], name, sizeof(name), &copied));
  if (strlen(name) != copied) return throw_type(env, "openTun: name must not contain NUL characters");
  char context[NAME_ECHO_MAX + 32];
  snprintf(context, sizeof(context), "openTun(\"%s%s\")", name, name_len > copied ? "..." : "");

  /* options */
  uint32_t slot_size = 0, ring_slots = 0;
  bool multi_queue = false;
  CHECK(env, napi_typeof(env, argv[1], &t));
  if (t != napi_object) return throw_type(env, "openTun: options must be an object {slotSize, ringSlots, multiQueue?}");
  if (!get_int_option(env, argv[1], "slotSize", SLOT_SIZE_MIN, SLOT_SIZE_MAX, &slot_size)) return NULL;
  if (!get_int_option(env, argv[1], "ringSlots", RING_SLOTS_MIN, RING_SLOTS_MAX, &ring_slots)) return NULL;
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
   * whatever happens below (pt->closed stays true until the port is fully open). */
  struct addon_data *ad;
  CHECK(env, napi_get_instance_data(env, (void **)&ad));
  struct port *pt = calloc(1, sizeof(*pt));
  if (pt == NULL) return throw_errno(env, ENOMEM, "malloc", context, NULL);
  pt->env = env;
  pt->fd = -1;
  pt->closed = true;
  pt->slot_size = slot_size;

  napi_value cls, obj;
  napi_status nst = napi_get_reference_value(env, ad->port_class, &cls);
  if (nst == napi_ok) {
    ad->constructing = true;
    nst = napi_new_instance(env, cls, 0, NULL, &obj);
    ad->constructing = false;
  }
  if (nst == napi_ok) nst = napi_wrap(env, obj, pt, port_finalize, NULL, NULL);
  if (nst != napi_ok) {
    free(pt);
    throw_status(env, nst, "creating the TunPort object");
    return NULL;
  }
  CHECK(env, napi_type_tag_object(env, obj, &TUNPORT_TAG));

  /* The counters: owned by their ArrayBuffer once it exists (see the header comment). */
  struct counters_box *box = aligned_alloc(alignof(struct counters_box), sizeof(struct counters_box));
  if (box == NULL) return throw_errno(env, ENOMEM, "malloc", context, NULL);
  memset(box, 0, sizeof(*box));
  napi_value ab, counters;
  nst = napi_create_external_arraybuffer(env, &box->c, sizeof(box->c), counters_ab_finalize, box, &ab);
  if (nst != napi_ok) {
    free(box);
    throw_status(env, nst, "napi_create_external_arraybuffer(counters)");
    return NULL;
  }
  box->refs = 1; /* the ArrayBuffer */
  CHECK(env, napi_create_typedarray(env, napi_biguint64_array, OVL_TC_COUNT, ab, 0, &counters));

  /* The device. */
  char actual[OVL_IFNAMSIZ];
  const char *sc = NULL;
  int fd = ovl_tun_open(name, multi_queue ? OVL_TUN_MULTI_QUEUE : 0, actual, &sc);
  if (fd < 0) {
    char hint[96];
    const char *h = NULL;
    if (fd == -ENAMETOOLONG) {
      snprintf(hint, sizeof(hint), "the name has %zu bytes, an interface name at most %d", name_len,
               OVL_IFNAMSIZ - 1);
      h = hint;
    } else if (fd == -EPERM) {
      h = "opening a TUN device needs CAP_NET_ADMIN";
    } else if (fd == -EBUSY) {
      h = "the device exists and is in use, or is not a TUN of the same queue mode";
    } else if (fd == -EINVAL) {
      h = "the kernel refused the name or the flags";
    }
    return throw_errno(env, -fd, sc, context, h);
  }

  /* The thread-safe function (owns nctx) and the I/O thread. */
  struct notify_ctx *nctx = calloc(1, sizeof(*nctx));
  if (nctx == NULL) {
    (void)close(fd);
    return throw_errno(env, ENOMEM, "malloc", context, NULL);
  }
  napi_value res_name;
  nst = napi_create_string_utf8(env, "overlayd.TunPort.onReadable", NAPI_AUTO_LENGTH, &res_name);
  if (nst == napi_ok)
    nst = napi_create_threadsafe_function(env, argv[2], NULL, res_name, TSFN_QUEUE_MAX, 1, nctx, tsfn_finalize,
                                          nctx, tsfn_call_js, &pt->tsfn);
  if (nst != napi_ok) {
    free(nctx);
    (void)close(fd);
    throw_status(env, nst, "napi_create_threadsafe_function");
    return NULL;
  }
  pt->nctx = nctx;
  nst = napi_unref_threadsafe_function(env, pt->tsfn);
  if (nst != napi_ok) {
    (void)napi_release_threadsafe_function(pt->tsfn, napi_tsfn_abort);
    (void)close(fd);
    throw_status(env, nst, "napi_unref_threadsafe_function");
    return NULL;
  }

  struct ovl_tunport_config cfg = {
      .fd = fd,
      .slot_size = slot_size,
      .ring_slots = ring_slots,
      .notify = port_notify,
      .opaque = pt,
      .counters = &box->c,
  };
  int err = ovl_tunport_start(&pt->tp, &cfg, &sc);
  if (err < 0) {
    (void)napi_release_threadsafe_function(pt->tsfn, napi_tsfn_abort);
    (void)close(fd);
    return throw_errno(env, -err, sc, context, NULL);
  }
  pt->fd = fd;
  pt->box = box;
  box->refs++; /* the open port */
  pt->closed = false;

  /* From here on a failure closes the port: close_port() undoes everything above. */
  nst = napi_add_env_cleanup_hook(env, port_cleanup_hook, pt);
  if (nst != napi_ok) {
    throw_status(env, nst, "napi_add_env_cleanup_hook");
    close_port(pt, false);
    return NULL;
  }
  pt->hook_added = true;

  napi_value jname;
  napi_property_descriptor props[] = {
      {"name", NULL, NULL, NULL, NULL, NULL, napi_enumerable, NULL},
      {"counters", NULL, NULL, NULL, NULL, counters, napi_enumerable, NULL},
  };
  nst = napi_create_string_utf8(env, actual, NAPI_AUTO_LENGTH, &jname);
  if (nst == napi_ok) {
    props[0].value = jname;
    nst = napi_define_properties(env, obj, 2, props);
  }
  if (nst != napi_ok) {
    throw_status(env, nst, "defining TunPort properties");
    close_port(pt, false);
    return NULL;
  }
  return obj;
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
  if (ad->port_class) (void)napi_delete_reference(env, ad->port_class); /* env is going away */
  free(ad);
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
  CHECK(env, napi_define_class(env, "TunPort", NAPI_AUTO_LENGTH, port_ctor, NULL,
                               sizeof(methods) / sizeof(methods[0]), methods, &cls));
  CHECK(env, napi_create_reference(env, cls, 1, &ad->port_class));

  napi_value names;
  CHECK(env, napi_create_array_with_length(env, OVL_TC_COUNT, &names));
  for (uint32_t i = 0; i < OVL_TC_COUNT; i++) {
    napi_value s;
    CHECK(env, napi_create_string_utf8(env, ovl_tun_counter_names[i], NAPI_AUTO_LENGTH, &s));
    CHECK(env, napi_set_element(env, names, i, s));
  }
  CHECK(env, napi_object_freeze(env, names));

  napi_value open_fn;
  CHECK(env, napi_create_function(env, "openTun", NAPI_AUTO_LENGTH, open_tun, NULL, &open_fn));
  napi_value notify_fn;
  CHECK(env, napi_create_function(env, "sdNotify", NAPI_AUTO_LENGTH, sd_notify, NULL, &notify_fn));
  napi_property_descriptor exports_props[] = {
      {"openTun", NULL, NULL, NULL, NULL, open_fn, napi_enumerable, NULL},
      {"sdNotify", NULL, NULL, NULL, NULL, notify_fn, napi_enumerable, NULL},
      {"tunCounterNames", NULL, NULL, NULL, NULL, names, napi_enumerable, NULL},
  };
  CHECK(env, napi_define_properties(env, exports, sizeof(exports_props) / sizeof(exports_props[0]), exports_props));
  return exports;
}
