/*
 * overlayd native core: the C API below has no Node-API types in it, so the C unit tests
 * (native/test) drive it without Node. native/binding.c is the only Node-API consumer.
 *
 * Conventions of this API:
 *  - Functions that can fail return a negative errno (-EINVAL, -ENOMEM, ...) and, where a
 *    `syscall` out-parameter exists, store there a static string naming the call that
 *    failed (e.g. "open", "ioctl(TUNSETIFF)"). They never log and never abort.
 *  - Sizes are in bytes, counts in packets (slots), unless a name says otherwise.
 *  - Thread roles are stated per function: "producer" and "consumer" are the one thread
 *    on each side of a single-producer single-consumer ring.
 */
#ifndef OVERLAYD_H
#define OVERLAYD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------ */
/* Errors                                                                                */
/* ------------------------------------------------------------------------------------ */

/* Name of a positive errno value, e.g. ovl_errno_name(EPERM) == "EPERM". Never NULL:
 * unknown values give "EUNKNOWN". Static storage, any thread. */
const char *ovl_errno_name(int err);

/* ------------------------------------------------------------------------------------ */
/* ring.c: single-producer single-consumer ring of fixed-size packet slots               */
/* ------------------------------------------------------------------------------------ */

/* Largest slot payload: the largest IPv4 packet. */
#define OVL_RING_SLOT_SIZE_MAX 65535u
/* Largest slot count (a power of two). */
#define OVL_RING_SLOTS_MAX (1u << 24)
/* Largest memory of one ring's slots, in bytes (slot stride * slot count). */
#define OVL_RING_BYTES_MAX ((size_t)1 << 30)

/* One slot as laid out in ring memory. `len` is the packet length in bytes
 * (0..slot_size); `data` holds slot_size bytes. Slots are 64-byte aligned. */
struct ovl_slot {
  uint32_t len;
  uint8_t data[];
};

struct ovl_ring;

/* Bytes of ring memory (header + slots) a ring with these parameters would take, or 0 when
 * the parameters are invalid (slot_size not in 1..OVL_RING_SLOT_SIZE_MAX, slot_count not
 * a power of two in 2..OVL_RING_SLOTS_MAX, or more than OVL_RING_BYTES_MAX of slots). */
size_t ovl_ring_memory_size(uint32_t slot_size, uint32_t slot_count);

/* Creates an empty ring. Returns 0 and *out, -EINVAL for invalid parameters (see
 * ovl_ring_memory_size), -ENOMEM. Any thread; the ring is then shared by exactly one
 * producer thread and one consumer thread (they may be the same thread). */
int ovl_ring_create(struct ovl_ring **out, uint32_t slot_size, uint32_t slot_count);

/* Frees the ring. Neither side may use it any more (join the other thread first). NULL ok. */
void ovl_ring_destroy(struct ovl_ring *r);

uint32_t ovl_ring_slot_size(const struct ovl_ring *r); /* bytes per slot payload */
uint32_t ovl_ring_capacity(const struct ovl_ring *r);  /* slots */

/* Packets in the ring as seen by the calling thread: exact on the consumer side for the
 * moment of the call (more may arrive), an upper bound on the producer side. */
uint32_t ovl_ring_count(const struct ovl_ring *r);

/* The slot at free-running position `pos` (positions come from reserve/peek; they wrap
 * modulo 2^32, which is harmless because the capacity is a power of two). */
struct ovl_slot *ovl_ring_slot(const struct ovl_ring *r, uint32_t pos);

/* Producer, batch: makes up to `max` free slots available at positions *pos .. *pos+n-1
 * and returns n (0 when full). The producer fills each slot's data and sets its len, then
 * publishes the first k <= n of them, in order, with one ovl_ring_commit(r, k). Slots
 * reserved but not committed stay free and are offered again by the next reserve. */
uint32_t ovl_ring_reserve(struct ovl_ring *r, uint32_t max, uint32_t *pos);
/* Producer: publishes the next n reserved slots (one release store). */
void ovl_ring_commit(struct ovl_ring *r, uint32_t n);

/* Consumer, batch: makes up to `max` filled slots readable at positions *pos .. *pos+n-1
 * and returns n (0 when empty). The consumer reads them, then hands the first k <= n back
 * to the producer with one ovl_ring_release(r, k); it must not touch them afterwards. */
uint32_t ovl_ring_peek(struct ovl_ring *r, uint32_t max, uint32_t *pos);
/* Consumer: frees the next n peeked slots (one release store). */
void ovl_ring_release(struct ovl_ring *r, uint32_t n);

/* Producer, one packet: copies len bytes in and publishes the slot. Returns 0, -ENOBUFS
 * when the ring is full, -EMSGSIZE when len > slot size (nothing queued). */
int ovl_ring_push(struct ovl_ring *r, const void *data, uint32_t len);
/* Consumer, one packet: copies the oldest packet to buf (cap bytes) and frees its slot.
 * Returns its length, -EAGAIN when empty, -EMSGSIZE when cap is too small (the packet
 * stays queued). */
int ovl_ring_pop(struct ovl_ring *r, void *buf, uint32_t cap);

/* ------------------------------------------------------------------------------------ */
/* tun.c: opening a TUN device                                                           */
/* ------------------------------------------------------------------------------------ */

#define OVL_IFNAMSIZ 16 /* == IFNAMSIZ, including the terminating NUL */

#define OVL_TUN_MULTI_QUEUE 0x1u /* open with IFF_MULTI_QUEUE */

/* Opens (creating if needed) the TUN device `name` with IFF_TUN | IFF_NO_PI, plus
 * IFF_MULTI_QUEUE when flags has OVL_TUN_MULTI_QUEUE. The fd is O_NONBLOCK and O_CLOEXEC;
 * the caller owns it. `name` may be "" or contain one "%d" (the kernel picks); the name the
 * kernel gave is stored in actual[] (NUL-terminated). Returns the fd, or a negative errno
 * with *syscall set: "open" (/dev/net/tun), "ioctl(TUNSETIFF)". A name longer than
 * OVL_IFNAMSIZ-1 bytes gives -ENAMETOOLONG with "ioctl(TUNSETIFF)" without calling it (the
 * name cannot be expressed in its struct ifreq). Any thread. */
int ovl_tun_open(const char *name, unsigned flags, char actual[OVL_IFNAMSIZ], const char **syscall);

/* ------------------------------------------------------------------------------------ */
/* tunport.c: the I/O thread between a packet fd and two rings                          */
/* ------------------------------------------------------------------------------------ */

/* Packets the I/O thread reads from the fd in one burst before it services tx and polls. */
#define OVL_TUNPORT_RX_BATCH 64u
/* Packets the I/O thread takes from the tx ring per peek (it loops until empty/EAGAIN). */
#define OVL_TUNPORT_TX_BATCH 64u

/* Counter indices. Names (ovl_tun_counter_names) are the same words in lower case. */
enum ovl_tun_counter {
  OVL_TC_TUN_RX_PACKETS,     /* packets read from the fd and queued to rx */
  OVL_TC_TUN_RX_BYTES,       /* their bytes */
  OVL_TC_TUN_TX_PACKETS,     /* packets from tx written to the fd */
  OVL_TC_TUN_TX_BYTES,       /* their bytes */
  OVL_TC_RX_RING_FULL_DROPS, /* packets read from the fd and dropped: rx ring full */
  OVL_TC_RX_OVERSIZE_DROPS,  /* packets read from the fd and dropped: longer than a slot */
  OVL_TC_TUN_READ_ERRORS,    /* read errors other than EAGAIN/EINTR */
  OVL_TC_TUN_WRITE_ERRORS,   /* write errors other than EAGAIN/EINTR (the packet is dropped) */
  OVL_TC_TUN_READ_STOPPED,   /* 1 once the fd hit EOF/hangup or a fatal read error and the
                                thread stopped reading it (writes are still attempted) */
  OVL_TC_WAKEUPS,            /* times the thread consumed an eventfd wakeup */
  OVL_TC_RX_NOTIFIES,        /* times the notify callback was called */
  OVL_TC_POLLS,              /* poll() calls: measures batching, and idle means flat */
  OVL_TC_COUNT
};

/* Live counters, written by the I/O thread only (relaxed atomic stores), readable by any
 * thread at any time (relaxed atomic loads; JS reads them as a BigUint64Array). Monotonic.
 * _Atomic uint64_t is a plain 8-byte word on the supported targets (checked in tunport.c). */
struct ovl_tun_counters {
  _Alignas(64) _Atomic uint64_t v[OVL_TC_COUNT];
};

/* "tun_rx_packets", ... in enum order. */
extern const char *const ovl_tun_counter_names[OVL_TC_COUNT];

struct ovl_tunport;

struct ovl_tunport_config {
  /* A nonblocking packet fd (TUN, or a SOCK_SEQPACKET socket in tests): one read() is one
   * packet, one write() is one packet. Borrowed: the port never closes it; close it after
   * ovl_tunport_stop(). */
  int fd;
  uint32_t slot_size;  /* bytes: the largest packet carried either way */
  uint32_t ring_slots; /* slots per ring (rx and tx each), a power of two */
  /* Called on the I/O thread when the rx ring went from empty (as last seen by the
   * consumer) to non-empty. Called again only after the consumer's ovl_tunport_recv found
   * the ring empty; spurious calls are possible, lost ones are not. Must not block and must
   * not call back into the port. */
  void (*notify)(void *opaque);
  void *opaque;
  /* Borrowed; must stay valid until ovl_tunport_stop() returns. Not reset by the port. */
  struct ovl_tun_counters *counters;
};

/* Creates the rings and the wake eventfd and starts the I/O thread. Returns 0 and *out, or
 * a negative errno with *syscall set ("malloc", "eventfd", "pthread_create"); -EINVAL
 * ("config") for bad parameters. Call from the thread that will be the consumer of rx and
 * the producer of tx (the "owner" thread). */
int ovl_tunport_start(struct ovl_tunport **out, const struct ovl_tunport_config *cfg,
                      const char **syscall);

/* Owner thread: sets the stop flag, wakes and joins the I/O thread (promptly: it never
 * blocks anywhere but poll()), closes the eventfd, frees the rings and the port. Packets
 * still in the rings are discarded. Does not close cfg->fd. NULL ok. */
void ovl_tunport_stop(struct ovl_tunport *p);

/* Owner thread, consumer of rx: copies up to max packets to buf, packet i at buf + i*stride
 * (stride >= slot_size), its length to lens[i]. Returns the count; when it is less than
 * max the ring was found empty and the notify callback is re-armed. */
uint32_t ovl_tunport_recv(struct ovl_tunport *p, uint8_t *buf, size_t stride, uint32_t *lens,
                          uint32_t max);

/* Owner thread, producer of tx: queues packets pkts[0..n-1] in order and wakes the I/O
 * thread. Returns how many were queued (fewer than n when the tx ring filled up), or
 * -EMSGSIZE, with nothing queued, when any packet is longer than slot_size. */
int ovl_tunport_send(struct ovl_tunport *p, const struct iovec *pkts, uint32_t n);

uint32_t ovl_tunport_slot_size(const struct ovl_tunport *p);

#ifdef __cplusplus
}
#endif

/* ---------------------------------------------------------------- sd_notify ------------- */

/* Sends `msg` (msg_len bytes) as one datagram to the unix socket `path` ("/..." or "@abstract").
 * Returns 0, or -errno with *syscall naming the failed call. JS thread only. */
int ovl_sd_notify(const char *path, const char *msg, size_t msg_len, const char **syscall);

#endif /* OVERLAYD_H */
