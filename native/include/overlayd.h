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

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
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
/* sys.c: helpers of the I/O threads                                                     */
/* ------------------------------------------------------------------------------------ */

/* True for a read/receive error (a positive errno) after which the fd will never work
 * again (EBADF, EBADFD: a deleted TUN, EINVAL, ENXIO, ENODEV, ENOTCONN, ECONNRESET,
 * ENOTSOCK, EFAULT). Any thread. */
bool ovl_io_error_is_fatal(int err);

/* Starts fn(arg) on a new thread with every signal blocked (process-directed signals go to
 * the application's threads; a write to a broken socket cannot kill with SIGPIPE); the
 * caller's mask is unchanged. Returns 0, or a negative errno with *syscall set
 * ("pthread_sigmask", "pthread_create"). */
int ovl_thread_spawn(pthread_t *thread, void *(*fn)(void *), void *arg, const char **syscall);

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
#define OVL_TUN_VNET_HDR 0x2u    /* open with IFF_VNET_HDR and TUNSETOFFLOAD(CSUM | TSO4 [| TSO6 [| USO4 | USO6]]) */

/* Opens (creating if needed) the TUN device `name` with IFF_TUN | IFF_NO_PI, plus
 * IFF_MULTI_QUEUE when flags has OVL_TUN_MULTI_QUEUE. The fd is O_NONBLOCK and O_CLOEXEC;
 * the caller owns it. `name` may be "" or contain one "%d" (the kernel picks); the name the
 * kernel gave is stored in actual[] (NUL-terminated). Returns the fd, or a negative errno
 * with *syscall set: "open" (/dev/net/tun), "ioctl(TUNSETIFF)". A name longer than
 * OVL_IFNAMSIZ-1 bytes gives -ENAMETOOLONG with "ioctl(TUNSETIFF)" without calling it (the
 * name cannot be expressed in its struct ifreq). With OVL_TUN_VNET_HDR: IFF_VNET_HDR, then
 * TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6), without
 * USO4/6, then without TSO6 too, when the kernel refuses a set (EINVAL)
 * ("ioctl(TUNSETOFFLOAD)" on failure of all; the fd is closed):
 * every read and write then carries a struct ovl_vnet_hdr first. Any thread. */
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

/* ------------------------------------------------------------------------------------ */
/* packet.c: IPv4 validation, checksums, the TTL rule, ICMP errors (the C twin of        */
/* src/net/ipv4.ts and src/net/icmp.ts: same rules, keep the two in step)                */
/* ------------------------------------------------------------------------------------ */
/* Every function here is pure (no globals, no allocation, any thread). Packets start at
 * offset 0 of their buffer; addresses are uint32 in host order (10.0.0.1 == 0x0a000001). */

#define OVL_IPV4_MIN_HEADER 20u /* bytes */
#define OVL_IPV4_MAX_HEADER 60u /* bytes: IHL 15 */
#define OVL_TCP_MIN_HEADER 20u  /* bytes: data offset 5 */
#define OVL_TCP_MAX_HEADER 60u  /* bytes: data offset 15 (40 bytes of options) */
#define OVL_PROTO_ICMP 1u
#define OVL_PROTO_TCP 6u
#define OVL_PROTO_UDP 17u

/* ovl_ipv4_validate results: the same codes, in the same order, as validateIpv4. */
enum ovl_ipv4_check {
  OVL_IPV4_OK = 0,
  OVL_IPV4_TOO_SHORT = 1,
  OVL_IPV4_BAD_VERSION = 2,
  OVL_IPV4_BAD_IHL = 3,
  OVL_IPV4_BAD_LENGTH = 4,
  OVL_IPV4_BAD_CHECKSUM = 5,
};

/* Checks a datagram of `len` bytes: len >= 20, version 4, IHL >= 5 and IHL*4 <= len, total
 * length field == len exactly, header checksum valid (RFC 1071: the sum over the header is
 * 0xffff, so both encodings of zero pass). The first failure in that order is returned.
 * Reads only bytes [0, min(len, IHL*4)), so `len` may exceed what the buffer holds (a
 * datagram received truncated with its real length) as long as the buffer holds
 * OVL_IPV4_MAX_HEADER bytes or len bytes, whichever is less. */
enum ovl_ipv4_check ovl_ipv4_validate(const uint8_t *pkt, size_t len);

/* Header fields; no bounds checks: validate first (or know len >= 20). */
static inline uint32_t ovl_be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}
static inline uint32_t ovl_ipv4_src(const uint8_t *pkt) { return ovl_be32(pkt + 12); }
static inline uint32_t ovl_ipv4_dst(const uint8_t *pkt) { return ovl_be32(pkt + 16); }
static inline size_t ovl_ipv4_header_len(const uint8_t *pkt) { return (size_t)(pkt[0] & 0x0fu) << 2; }
/* The DF (don't fragment) flag (the twin of ipv4DontFragment). */
static inline bool ovl_ipv4_dont_fragment(const uint8_t *pkt) { return (pkt[6] & 0x40u) != 0; }

/* Folded (not complemented) one's-complement sum of len bytes, added to `initial` (a
 * previous folded sum, 0..0xffff); a trailing odd byte is padded with a zero low byte.
 * 0..0xffff, and 0 only when every word and `initial` are 0. len <= 131070. */
uint32_t ovl_ones_sum(const uint8_t *buf, size_t len, uint32_t initial);
/* RFC 1071 Internet checksum of len bytes: ~sum, 0..0xffff. */
uint16_t ovl_inet_checksum(const uint8_t *buf, size_t len);
/* Full header checksum of the first hlen bytes with the checksum field taken as 0: the
 * value to store big-endian at bytes 10-11 (canonical: never 0xffff for a real header). */
uint16_t ovl_ipv4_header_checksum(const uint8_t *pkt, size_t hlen);

/* THE TTL rule of the C core (the twin of decrementTtl in src/net/ipv4.ts). If TTL > 1:
 * TTL -= 1 and the header checksum updated incrementally per RFC 1624 eqn. 3
 * (HC' = ~(~HC + ~m + m'), m = the 16-bit word TTL|protocol), returns true; the result
 * equals a full recomputation, including HC' == 0x0000 (never 0xffff). A wrong incoming
 * checksum stays exactly as wrong: validate first. If TTL <= 1: the packet is untouched,
 * returns false (drop, and answer ICMP time exceeded where allowed). */
bool ovl_ipv4_decrement_ttl(uint8_t *pkt);

#define OVL_ICMP_DEST_UNREACH 3u
#define OVL_ICMP_NET_UNREACH 0u /* code of DEST_UNREACH */
#define OVL_ICMP_FRAG_NEEDED 4u /* code of DEST_UNREACH */
#define OVL_ICMP_TIME_EXCEEDED 11u
#define OVL_ICMP_TTL_EXCEEDED 0u /* code of TIME_EXCEEDED */
#define OVL_ICMP_HEADER_LEN 8u
#define OVL_ICMP_QUOTE_PAYLOAD 8u /* bytes of the offending payload quoted (RFC 792) */
#define OVL_ICMP_ERROR_TTL 64u
#define OVL_ICMP_ERROR_TOS 0xc0u /* precedence 6, internetwork control (RFC 1812 4.3.2.5) */
/* Largest error packet: IP header + ICMP header + a 60-byte header + 8 bytes quoted. */
#define OVL_ICMP_ERROR_MAX (OVL_IPV4_MIN_HEADER + OVL_ICMP_HEADER_LEN + OVL_IPV4_MAX_HEADER + OVL_ICMP_QUOTE_PAYLOAD)

/* RFC 1812 4.3.2.7, the twin of mayRespondWithIcmpError: false for ICMP errors (types
 * 3,4,5,11,12) and ICMP with fewer than 8 header bytes, non-first fragments, sources
 * 0.0.0.0, loopback, multicast, class E and broadcast, multicast/broadcast destinations,
 * and when len bytes cannot hold the IP header (len < 20, IHL < 5, IHL*4 > len). `len`
 * valid bytes at pkt; the total length field is not used. */
bool ovl_icmp_may_respond(const uint8_t *pkt, size_t len);

/* THE ICMP error builder of the C core (the twin of buildIcmpError). Writes into out
 * (OVL_ICMP_ERROR_MAX bytes) an IPv4 packet: IHL 5, TOS OVL_ICMP_ERROR_TOS, id `id`, DF
 * clear, TTL 64, proto 1, src `from`, dst = the offending packet's source (0 when
 * off_len < 20), valid header checksum; ICMP `type`/`code`, bytes 4-7 zero except for
 * type 3 code 4 where bytes 6-7 carry next_hop_mtu; then the offending IP header and 8
 * bytes of its payload (fewer if off_len is shorter); valid ICMP checksum. `off` is only
 * read; its header must be complete (ovl_icmp_may_respond first). Returns the length. */
size_t ovl_icmp_error_build(uint8_t out[OVL_ICMP_ERROR_MAX], uint8_t type, uint8_t code, uint32_t from,
                            const uint8_t *off, size_t off_len, uint16_t next_hop_mtu, uint16_t id);

/* ------------------------------------------------------------------------------------ */
/* packet6.c: IPv6 validation (a bounded extension-header walk), the hop limit rule and  */
/* ICMPv6 errors (RFC 8200, RFC 4443). Pure functions, any thread, as packet.c.          */
/* ------------------------------------------------------------------------------------ */

#define OVL_IPV6_HEADER 40u     /* bytes: the fixed header */
#define OVL_IPV6_EXT_MAX 8u     /* extension headers walked at most: more is malformed */
#define OVL_PROTO_ICMPV6 58u
#define OVL_IPV6_MIN_MTU 1280u  /* RFC 8200: every link carries 1280 bytes */
#define OVL_ICMP6_DEST_UNREACH 1u
#define OVL_ICMP6_NO_ROUTE 0u   /* code of DEST_UNREACH */
#define OVL_ICMP6_PACKET_TOO_BIG 2u
#define OVL_ICMP6_TIME_EXCEEDED 3u
#define OVL_ICMP6_HOP_LIMIT 0u  /* code of TIME_EXCEEDED */
#define OVL_ICMP6_ERROR_HOP_LIMIT 64u
/* Largest ICMPv6 error: the minimum MTU (RFC 4443 2.4(c): as much of the packet as fits). */
#define OVL_ICMP6_ERROR_MAX OVL_IPV6_MIN_MTU

enum ovl_ipv6_check {
  OVL_IPV6_OK = 0,
  OVL_IPV6_TOO_SHORT = 1,   /* len < 40 */
  OVL_IPV6_BAD_VERSION = 2, /* version nibble != 6 */
  OVL_IPV6_BAD_LENGTH = 3,  /* 40 + payload length != len (a jumbogram's 0 included) */
  OVL_IPV6_BAD_EXT = 4,     /* an extension header truncated, beyond `avail`, Hop-by-hop not
                               first, or more than OVL_IPV6_EXT_MAX of them */
};

/* What the walk found. proto/l4_off: the upper-layer header (next header value and its
 * offset), or for a non-first fragment the Fragment header's next header and the offset
 * after it (the bytes there are not a header). */
struct ovl_ipv6_info {
  uint8_t proto;
  bool fragment;       /* a Fragment header was seen */
  bool later_fragment; /* its offset is not 0: a non-first fragment */
  uint32_t l4_off;
};

/* Checks an IPv6 packet of `len` bytes of which the first `avail` (<= len) are in the
 * buffer: len >= 40, version 6, 40 + payload length == len, then walks Hop-by-hop (first
 * only), Routing, Destination options, Authentication and Fragment headers, each length
 * checked against len and avail before it is read, at most OVL_IPV6_EXT_MAX of them, and
 * stops at the first other next header (upper layer or unknown) or at a non-first
 * fragment. Reads only bytes [0, avail). *info is set on OVL_IPV6_OK. */
enum ovl_ipv6_check ovl_ipv6_validate(const uint8_t *pkt, size_t len, size_t avail, struct ovl_ipv6_info *info);

/* Header fields; no bounds checks: validate first (or know avail >= 40). */
static inline const uint8_t *ovl_ipv6_src(const uint8_t *pkt) { return pkt + 8; }
static inline const uint8_t *ovl_ipv6_dst(const uint8_t *pkt) { return pkt + 24; }

/* The hop limit rule: > 1: decremented (no checksum in IPv6), true; else untouched, false. */
bool ovl_ipv6_decrement_hop_limit(uint8_t *pkt);

/* Folded one's-complement sum of the IPv6 pseudo header (RFC 8200 8.1: src, dst, 32-bit
 * upper-layer length, next header) of the packet at ip6. 0..0xffff. */
uint32_t ovl_ipv6_pseudo_sum(const uint8_t *ip6, uint32_t proto, uint32_t l4len);

/* RFC 4443 2.4(e): may an ICMPv6 error of `type` answer this validated packet (`avail`
 * bytes present, info from ovl_ipv6_validate)? False for an ICMPv6 error message (type <
 * 128; or an ICMPv6 header not present), a non-first fragment, an unspecified (::),
 * loopback or multicast source, and a multicast destination unless type is packet too big. */
bool ovl_icmp6_may_respond(const uint8_t *pkt, size_t avail, const struct ovl_ipv6_info *info, uint8_t type);

/* Builds into out an ICMPv6 error from `from` (16 bytes) to the offending packet's source:
 * IPv6 header (traffic class 0, flow 0, hop limit OVL_ICMP6_ERROR_HOP_LIMIT), ICMPv6
 * type/code, bytes 4-7 = mtu for packet too big (else 0), then the first bytes of the
 * offending packet, as many as fit OVL_ICMP6_ERROR_MAX (off_avail >= 40 bytes present),
 * checksum with the pseudo header. Returns the length. */
size_t ovl_icmp6_error_build(uint8_t out[OVL_ICMP6_ERROR_MAX], uint8_t type, uint8_t code, const uint8_t from[16],
                             const uint8_t *off, size_t off_avail, uint32_t mtu);

/* ------------------------------------------------------------------------------------ */
/* offload.c: userspace GSO (cutting TUN super-packets) and GRO (coalescing TUN writes)   */
/* ------------------------------------------------------------------------------------ */

/* struct virtio_net_hdr as the TUN reads and writes it with IFF_VNET_HDR (10 bytes, fields
 * in host byte order: a TUN without TUNSETVNETBE/LE uses the legacy native order). */
struct ovl_vnet_hdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
};
#define OVL_VNET_HDR_LEN 10u
#define OVL_VNET_F_NEEDS_CSUM 1u
#define OVL_VNET_GSO_NONE 0u
#define OVL_VNET_GSO_TCPV4 1u
#define OVL_VNET_GSO_TCPV6 4u
#define OVL_VNET_GSO_UDP_L4 5u /* USO: UDP super-packet, gso_size = payload per datagram */
#define OVL_VNET_GSO_ECN 0x80u
/* Most segments one super-packet is cut into (a smaller gso_size is refused: -E2BIG). */
#define OVL_GSO_SEGS_MAX 256u
/* Most segments coalesced into one super-packet written to the TUN. */
#define OVL_GRO_SEGS_MAX 64u
/* The longest IP header of a coalesced flow: GRO takes IPv4 without options (20 bytes) and
 * IPv6 without extension headers (the fixed 40-byte header). */
#define OVL_GRO_IP_HEADER_MAX 40u
/* Most IP + TCP header bytes of a coalesced flow: a TCP header is up to 60 bytes
 * (timestamps + SACK blocks fill its 40 option bytes). */
#define OVL_GRO_HDR_MAX (OVL_GRO_IP_HEADER_MAX + OVL_TCP_MAX_HEADER)
/* Most flows coalesced at once (per forwarding thread, per batch of receives). */
#define OVL_GRO_FLOWS_MAX 8u

/* True when the TCP/UDP checksum of the IPv4 packet (len bytes, header sane) verifies
 * (full sum over pseudo header + segment). */
bool ovl_l4_checksum_ok(const uint8_t *pkt, size_t len);
/* A packet read with NEEDS_CSUM: stores the complemented sum of [csum_start, len) at
 * csum_start + csum_offset (the field holds the pseudo-header sum); a result of 0 is
 * stored as 0xffff (RFC 768: a UDP checksum of 0 means none). 0, or -EINVAL when
 * the offsets are outside the packet. No-op without NEEDS_CSUM. */
int ovl_vnet_csum_finish(uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h);
/* Cuts the IPv4/TCP super-packet pkt (len bytes, gso_type TCPV4[|ECN], gso_size = MSS)
 * into segments written back to back into out (out_cap bytes), segment i's length in
 * seg_lens[i]: headers copied, IPv4 total length, id + i and header checksum, TCP seq +
 * i * MSS, FIN/PSH only on the last segment, CWR only on the first, TCP checksum computed
 * in full. Returns the segment count, or -EPROTONOSUPPORT (other gso_type), -EINVAL
 * (not IPv4/TCP, headers beyond len, gso_size 0), -E2BIG (more than max_segs), -ENOBUFS.
 * gso_type TCPV6[|ECN]: an IPv6/TCP super-packet with TCP right after the fixed header
 * (extension headers: -EINVAL), cut the same way with the payload length per segment and
 * the TCP checksum over the IPv6 pseudo header (len up to 65535 + 40). */
int ovl_gso_segment(const uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h, uint8_t *out, size_t out_cap,
                    uint32_t *seg_lens, uint32_t max_segs);
/* One segment of a zero-copy cut (ovl_gso_cut): its headers, then its payload. */
struct ovl_gso_seg {
  uint8_t *hdr;           /* IP + TCP headers (hdr_len bytes), in the caller's stub arena */
  const uint8_t *payload; /* payload_len bytes inside the super-packet (never copied) */
  uint32_t hdr_len, payload_len;
};
/* ovl_gso_segment without copying the payload: segment i's headers are written into
 * stubs (stubs_cap bytes; segment i at stubs + i * hdr_len) and its payload is a slice of
 * pkt; the TCP checksum is summed over the stub and the slice in place. Same segments,
 * bytes and errors as ovl_gso_segment (-ENOBUFS: the stubs do not fit). pkt is not
 * written. Lifetime: segs[] point into pkt and stubs, so both must stay unchanged for as
 * long as the segments are used (the engine: until the sendmmsg of its burst returned). */
int ovl_gso_cut(const uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h, uint8_t *stubs, size_t stubs_cap,
                struct ovl_gso_seg *segs, uint32_t max_segs, unsigned flags);
/* flags of ovl_gso_cut / ovl_uso_cut: leave each segment's TCP/UDP checksum partial (the
 * pseudo-header sum, as the kernel hands it to a virtio device) instead of summing the
 * segment: only toward a peer that takes partial checksums (ovl_csum_partial). */
#define OVL_CUT_PARTIAL_CSUM 1u

/* Partial checksums between overlayd peers. A TCP or UDP packet (IPv4 not a fragment,
 * total length = len; or IPv6 with TCP/UDP right after the fixed header, payload length =
 * len - 40) whose checksum field holds exactly its pseudo-header sum: true, and *h =
 * NEEDS_CSUM for it (csum_start = the L4 offset, csum_offset 16 or 6, no GSO), the header
 * to write it into a TUN with (the pod's stack or the kernel finishes the sum). Safe for
 * every sender: a packet with a valid full checksum whose field happens to equal the
 * pseudo-header sum (1 in 65535) gets the same checksum when finished. */
bool ovl_csum_partial(const uint8_t *pkt, size_t len, struct ovl_vnet_hdr *h);
/* A packet read with virtio header h may be sent as it is to a peer that takes partial
 * checksums: NEEDS_CSUM, and ovl_csum_partial recognises it with the same offsets. */
bool ovl_vnet_csum_is_partial(const uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h);

/* uso.c: cuts the UDP super-packet pkt (len bytes, gso_type UDP_L4, gso_size = payload
 * bytes per datagram) into datagrams written back to back into out (out_cap bytes),
 * datagram i's length in seg_lens[i]; the last one carries the rest (shorter or equal).
 * IPv4 (options copied; no fragment): total length, id + i, header checksum per datagram;
 * IPv6 (UDP right after the fixed header): payload length. Each UDP length, and the UDP
 * checksum computed in full with the pseudo header (0 stored as 0xffff). The super-packet
 * must be consistent: IPv4 total length / IPv6 payload length and the UDP length equal to
 * len, with NEEDS_CSUM csum_start = the UDP header's offset and csum_offset = 6,
 * hdr_len <= len, gso_size > 0, no ECN bit. Returns the datagram count, or
 * -EPROTONOSUPPORT (other gso_type), -EINVAL (malformed as above), -E2BIG (more than
 * max_segs), -ENOBUFS (out_cap too small). */
int ovl_uso_segment(const uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h, uint8_t *out, size_t out_cap,
                    uint32_t *seg_lens, uint32_t max_segs);
/* ovl_uso_segment without copying the payload, as ovl_gso_cut is to ovl_gso_segment:
 * segment i's headers in stubs (stubs_cap bytes, at stubs + i * header bytes), its payload a
 * slice of pkt, the UDP checksum summed over both in place; same segments, bytes and errors
 * (-ENOBUFS: the stubs do not fit). Same lifetime rule as ovl_gso_cut. */
int ovl_uso_cut(const uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h, uint8_t *stubs, size_t stubs_cap,
                struct ovl_gso_seg *segs, uint32_t max_segs, unsigned flags);

/* One flow being coalesced (userspace GRO on TUN writes). Owned by one thread. */
struct ovl_gro {
  uint32_t len;      /* bytes in buf; 0 with nseg 0 = empty */
  uint32_t nseg;     /* segments in it */
  uint32_t next_seq; /* the sequence number the next segment must have */
  uint16_t iphl;     /* IP header bytes: 20 (IPv4) or 40 (IPv6) */
  uint16_t hdr;      /* IP + TCP header bytes */
  uint16_t gso_size; /* payload of the first segment: the most any later one may carry */
  uint8_t proto;     /* OVL_PROTO_TCP or OVL_PROTO_UDP (a run of datagrams: gso_type UDP_L4) */
  bool closed;       /* PSH or a short segment seen: nothing more may join */
  bool edited;       /* ovl_gro_finish rewrote the first segment's headers */
  uint8_t *segs[OVL_GRO_SEGS_MAX]; /* the segments, where they were received (no copy) */
  uint32_t seg_lens[OVL_GRO_SEGS_MAX];
  uint8_t saved[OVL_GRO_HDR_MAX]; /* the first segment's IP + TCP headers as received */
};
void ovl_gro_init(struct ovl_gro *g);
/* May this packet (a valid IPv4 or IPv6 packet of len bytes) be coalesced? TCP directly
 * after the IP header: IPv4 with IHL 5, DF, no fragment bits, total length = len; IPv6
 * with next header TCP (no extension headers), payload length = len - 40. Flags ACK with
 * optional PSH/ECE only, payload > 0, TCP checksum (with the family's pseudo header)
 * verified in full, or left partial (the field = the pseudo-header sum: nothing to verify,
 * the run is written with NEEDS_CSUM; see ovl_csum_partial). Or UDP directly after the
 * same IP headers (IPv4 with or without DF, no fragment bits), UDP length = the rest of
 * the packet, payload > 0, checksum not 0 and verified in full or left partial. */
bool ovl_gro_eligible(const uint8_t *pkt, size_t len);
/* ovl_gro_eligible, telling how: 0 not eligible, OVL_GRO_VERIFIED (its full TCP checksum
 * verified) or OVL_GRO_PARTIAL (its checksum field holds the pseudo-header sum: left
 * partial by the sending peer, see ovl_csum_partial). */
#define OVL_GRO_VERIFIED 1
#define OVL_GRO_PARTIAL 2
int ovl_gro_check(const uint8_t *pkt, size_t len);
/* Appends an eligible packet to the flow (it starts the flow when empty). False when it
 * does not continue the flow: other family/addresses/ports/ack/window/urgent pointer/
 * options, IPv4 TOS/TTL/flags, IPv6 version-class-label word/next header/hop limit,
 * sequence not the next one, payload larger than the first's, the flow closed (PSH, short
 * segment) or full; the caller then writes the flow and starts a new one with it. A UDP
 * run takes datagrams with the same IP fields, addresses and ports, payload at most the
 * first's (a shorter one ends the run), and without DF the next IPv4 id (first + i, as the
 * kernel numbers the datagrams it cuts from a UDP_L4 super-packet). Nothing
 * is copied: pkt must stay valid (and writable: finish edits the first one) until the flow
 * is written. */
bool ovl_gro_add(struct ovl_gro *g, uint8_t *pkt, size_t len);
/* Finishes the flow for one writev: iov[0..*iovcnt) (OVL_GRO_SEGS_MAX entries) = the first
 * segment whole, then the payload of every other one. One segment: *h all zero, the packet
 * as it came. More: the first segment's headers become the super-packet's (IPv4 total
 * length and header checksum, or IPv6 payload length; PSH of the last segment; TCP
 * checksum field = the pseudo-header sum) and *h = {NEEDS_CSUM, TCPV4 or TCPV6, hdr_len,
 * gso_size, csum_start = IP header length, csum_offset 16}; a UDP run: the UDP length
 * too, and *h = {NEEDS_CSUM, UDP_L4, hdr_len = IP + 8, gso_size, csum_offset 6}. Returns
 * the total length.
 * Then: ovl_gro_init (written), or ovl_gro_restore (not written). */
size_t ovl_gro_finish(struct ovl_gro *g, struct ovl_vnet_hdr *h, struct iovec *iov, uint32_t *iovcnt);
/* Puts the first segment's headers back as received (after finish, for writing the
 * segments one by one instead). */
void ovl_gro_restore(struct ovl_gro *g);

/* The flows of one batch of received packets (wireguard-go's tcpGROTable, without
 * allocation): up to OVL_GRO_FLOWS_MAX flows coalesce side by side, each into its own
 * super-packet, so that TCP streams interleaved in one UDP GRO receive still coalesce.
 * Per flow (IP version, protocol TCP or UDP, addresses, ports) the table holds at most one run, and the
 * caller keeps the order of each flow: a packet of a flow that does not join its run is
 * written only after that run; a packet whose flow cannot be told (see find) only after
 * every run. The caller writes every run at the end of the batch. One thread. */
struct ovl_gro_table {
  uint32_t used;   /* flows[0..used) may hold runs (nseg > 0); the rest are empty */
  uint32_t victim; /* the run given up next when every flow is in use (round robin) */
  struct ovl_gro flows[OVL_GRO_FLOWS_MAX];
};
/* Empties the table (after its runs were written or abandoned). */
void ovl_gro_table_init(struct ovl_gro_table *t);
/* ovl_gro_table_find results other than an index. */
#define OVL_GRO_FIND_NONE (-1) /* not TCP or UDP (ICMP, ...), a later UDP fragment, or no run of its flow */
#define OVL_GRO_FIND_ALL (-2)  /* TCP whose ports cannot be read here (an IPv4 fragment, IPv6
                                  extension headers, unknown next header): after every run */
/* The run of the packet's flow: its index in flows[], or OVL_GRO_FIND_NONE/ALL. Reads only
 * bytes below len; a packet too short for its IP header is NONE. */
int ovl_gro_table_find(const struct ovl_gro_table *t, const uint8_t *pkt, size_t len);
/* The flow to start a new run in: an empty one if any, else the next victim, whose run the
 * caller must write (or abandon) and ovl_gro_init first. */
uint32_t ovl_gro_table_slot(struct ovl_gro_table *t);

/* ------------------------------------------------------------------------------------ */
/* backoff.c: an offload the kernel refused at run time comes back after a back-off     */
/* ------------------------------------------------------------------------------------ */

/* Back-off before an offload refused at run time is tried again: 1 s after the first
 * refusal, doubled after each refusal that follows a re-enable, at most 60 s; back to 1 s
 * once it stayed on for 60 s. */
#define OVL_OFFLOAD_RETRY_MIN_NS 1000000000ull
#define OVL_OFFLOAD_RETRY_MAX_NS 60000000000ull

enum ovl_offload_state {
  OVL_OFFLOAD_OFF = 0, /* never on (not asked for, or the kernel refused it at start): final */
  OVL_OFFLOAD_ON,
  OVL_OFFLOAD_BACKOFF, /* refused at run time: off until retry_at_ns */
};

/* One offload of one queue; owned by that queue's thread. Times are CLOCK_MONOTONIC ns
 * (any monotonic source: the tests inject theirs). */
struct ovl_offload_gate {
  uint8_t state;         /* enum ovl_offload_state */
  uint64_t delay_ns;     /* the next back-off */
  uint64_t retry_at_ns;  /* BACKOFF: on again from this time */
  uint64_t on_since_ns;  /* when it last came back on (0: since start) */
};
/* on: the offload was taken at start (OVL_OFFLOAD_ON), else OVL_OFFLOAD_OFF for good. */
void ovl_offload_gate_init(struct ovl_offload_gate *g, bool on);
/* The kernel refused the offload at now_ns: ON -> BACKOFF for the current delay (then
 * doubled). Returns true when this switched it off (count it), false when it was not on. */
bool ovl_offload_gate_fail(struct ovl_offload_gate *g, uint64_t now_ns);
/* BACKOFF and the back-off is over: -> ON, returns true (count it). Else false. */
bool ovl_offload_gate_poll(struct ovl_offload_gate *g, uint64_t now_ns);

/* ------------------------------------------------------------------------------------ */
/* ratelimit.c: the ICMP error rate limit (RFC 1812 4.3.2.8)                             */
/* ------------------------------------------------------------------------------------ */

/* Defaults: Linux's net.ipv4.icmp_msgs_per_sec (1000) and net.ipv4.icmp_msgs_burst (50),
 * the host-wide token bucket of ICMP errors (here: one bucket per engine). */
#define OVL_ICMP_RATELIMIT_RATE 1000u
#define OVL_ICMP_RATELIMIT_BURST 50u

/* A token bucket of `burst` tokens refilled at rate_per_sec, shared by any number of
 * threads (lock-free: one atomic word). Over any interval of E seconds at most
 * burst + rate_per_sec * E takes succeed. Unlike Linux, the cost of a message is exactly
 * one token (no randomization) and refill is continuous (not in 20 ms steps). */
struct ovl_ratelimit {
  _Atomic uint64_t tat_ns; /* when the bucket is full again, minus nothing taken since */
  uint64_t interval_ns;    /* per token: ceil(1e9 / rate); 0 = no limit */
  uint64_t tolerance_ns;   /* burst * interval_ns */
};
/* rate_per_sec 0: no limit (every take succeeds). Returns 0, or -EINVAL (rate > 0 with
 * burst 0). Before any thread uses it. */
int ovl_ratelimit_init(struct ovl_ratelimit *r, uint32_t rate_per_sec, uint32_t burst);
/* Takes one token at now_ns (a monotonic clock shared by the callers). True: send the
 * message; false: suppress it. Any thread. */
bool ovl_ratelimit_take(struct ovl_ratelimit *r, uint64_t now_ns);

/* ------------------------------------------------------------------------------------ */
/* route.c: the peer route table (longest-prefix match), a per-thread lookup cache, and  */
/* lock-free publication of new tables to the forwarding threads (see route.c's header)  */
/* ------------------------------------------------------------------------------------ */

/* One route: packets for net/len go to peer (the peer node's underlay address). */
struct ovl_route {
  uint32_t net;  /* host order; host bits must be zero */
  uint32_t peer; /* host order */
  uint8_t len;   /* 0..32 */
  uint8_t flags; /* OVL_ROUTE_*: what the peer's node advertised (its lease) */
};
/* The peer takes TCP/UDP checksums left partial (ovl_csum_partial): an overlayd native
 * engine that advertised it. A peer has it when any of its routes has it. */
#define OVL_ROUTE_PARTIAL_CSUM 1u
#define OVL_ROUTE_FLAGS 1u /* every flag defined */

/* An immutable table: routes plus the set of their peers. Built by one thread, then
 * read by any number of threads without synchronization (it never changes). */
struct ovl_rtable;

/* Builds a table from n routes. A subnet given twice keeps the last one (upsert order).
 * Returns 0 and *out, -EINVAL (a len > 32 or host bits set; nothing built), -E2BIG (more
 * than 2^24 routes), -ENOMEM. */
int ovl_rtable_build(struct ovl_rtable **out, const struct ovl_route *routes, size_t n);
void ovl_rtable_free(struct ovl_rtable *t); /* NULL ok */
/* Longest-prefix match of addr; true and *peer when a route covers it. Uncached. */
bool ovl_rtable_lookup(const struct ovl_rtable *t, uint32_t addr, uint32_t *peer);
/* True when some route points at `ip` (the inbound "known peer" check). */
bool ovl_rtable_is_peer(const struct ovl_rtable *t, uint32_t ip);
/* The OVL_ROUTE_* flags of peer `ip` (the OR over the routes that point at it); 0 for an
 * unknown peer. */
uint32_t ovl_rtable_peer_flags(const struct ovl_rtable *t, uint32_t ip);
size_t ovl_rtable_size(const struct ovl_rtable *t); /* routes */

/* A small direct-mapped cache of recent lookups (hits and misses) in front of one table;
 * owned by one thread. It remembers which table it caches (by a generation number unique
 * within the process) and empties itself when asked about another one. Tables with one or
 * two prefix lengths bypass it (a lookup there costs what a cache probe costs). */
#define OVL_RCACHE_SLOTS 256u /* entries, a power of two */
struct ovl_rcache {
  uint64_t gen; /* generation of the table cached; 0 = none */
  struct {
    uint32_t addr;
    uint32_t peer;
    uint32_t state; /* 0 empty, 1 miss, 2 hit */
  } e[OVL_RCACHE_SLOTS];
};
void ovl_rcache_init(struct ovl_rcache *c);
/* ovl_rtable_lookup through the cache. */
bool ovl_rcache_lookup(struct ovl_rcache *c, const struct ovl_rtable *t, uint32_t addr, uint32_t *peer);

/* The publication domain: the current table, the forwarding threads ("readers", a fixed
 * number, each with its own index) and the tables retired but not yet freed. */
struct ovl_routes;
/* Creates a domain with an empty current table for `readers` reader indices (1..1024).
 * Returns 0, -EINVAL, -ENOMEM. */
int ovl_routes_create(struct ovl_routes **out, uint32_t readers);
/* Frees the domain, its current table and every retired one. No reader may be inside
 * enter/leave (join the threads first). Writer thread. NULL ok. */
void ovl_routes_destroy(struct ovl_routes *r);
/* Writer (one thread at a time, e.g. the JS thread): builds a table from the routes,
 * publishes it (release), retires the old one and frees every retired table no reader can
 * still see. Returns 0, or what ovl_rtable_build returned (the current table stays). */
int ovl_routes_set(struct ovl_routes *r, const struct ovl_route *routes, size_t n);
/* Writer: frees the retired tables no reader can see any more; returns how many remain. */
size_t ovl_routes_reclaim(struct ovl_routes *r);
/* Reader `reader` (its own thread only): enters a read-side section and returns the table
 * current at that moment; the table stays valid until ovl_routes_leave. Sections must not
 * nest; keep them short (one batch) and never block inside one (poll outside). */
const struct ovl_rtable *ovl_routes_enter(struct ovl_routes *r, uint32_t reader);
void ovl_routes_leave(struct ovl_routes *r, uint32_t reader);

/* One IPv6 route: inner packets for net/len go to the peer node, over the IPv6 underlay to
 * peer6 when has_peer6 (the route source decided both ends use it), else over the IPv4
 * underlay to peer. */
struct ovl_route6 {
  uint8_t net[16]; /* network byte order; host bits must be zero */
  uint8_t len;     /* 0..128 */
  bool has_peer6;
  uint32_t peer;     /* the peer's IPv4 underlay address (PublicIP), host order */
  uint8_t peer6[16]; /* the peer's IPv6 underlay address (PublicIPv6), when has_peer6 */
};
/* route6.c: an immutable IPv6 table (per-length hash tables probed longest first), built
 * by one thread, then read by any number without synchronization. */
struct ovl_rtable6;
/* Builds a table of n routes; a subnet given twice keeps the last one. 0 and *out,
 * -EINVAL (len > 128 or host bits set; nothing built), -E2BIG (> 2^24), -ENOMEM. */
int ovl_rtable6_build(struct ovl_rtable6 **out, const struct ovl_route6 *routes, size_t n);
void ovl_rtable6_free(struct ovl_rtable6 *t); /* NULL ok */
/* Longest-prefix match of addr (16 bytes, network order): the route, or NULL. The pointer
 * lives as long as the table. */
const struct ovl_route6 *ovl_rtable6_lookup(const struct ovl_rtable6 *t, const uint8_t addr[16]);
/* True when some route has has_peer6 and peer6 == ip (inbound known-peer check over IPv6). */
bool ovl_rtable6_is_peer6(const struct ovl_rtable6 *t, const uint8_t ip[16]);
size_t ovl_rtable6_size(const struct ovl_rtable6 *t); /* routes */
/* Writer: publishes a new IPv6 table in the domain, exactly as ovl_routes_set does the
 * IPv4 one (the two are independent). 0, or what ovl_rtable6_build returned. */
int ovl_routes_set6(struct ovl_routes *r, const struct ovl_route6 *routes, size_t n);
/* Reader, between ovl_routes_enter and ovl_routes_leave only: the IPv6 table current now,
 * valid until ovl_routes_leave. */
const struct ovl_rtable6 *ovl_routes_table6(struct ovl_routes *r);

/* ------------------------------------------------------------------------------------ */
/* udp.c: the UDP sockets of the engine                                                  */
/* ------------------------------------------------------------------------------------ */

/* Bytes asked for as SO_RCVBUF and SO_SNDBUF of each engine socket: bursts of several
 * batches from every queue must fit while the thread is busy with the other direction. */
#define OVL_UDP_SOCKBUF_BYTES (4 << 20)

/* Opens n UDP sockets bound to addr:port (host order; addr 0 = any), nonblocking and
 * cloexec, with SO_RCVBUF/SO_SNDBUF of buf_bytes (the *FORCE variants first, for a
 * process with CAP_NET_ADMIN; the plain ones, capped by net.core.[rw]mem_max, after
 * EPERM). n > 1: all with SO_REUSEPORT, after a probe bind without it, so that a port
 * already held by anyone gives -EADDRINUSE instead of joining a foreign group. port 0
 * picks a free port (the same for all n). On success fds[0..n-1] are the caller's;
 * on failure none is left open. Returns 0 or a negative errno with *syscall set. */
int ovl_udp_open(int *fds, uint32_t n, uint32_t addr, uint16_t port, int buf_bytes, const char **syscall);

/* ovl_udp_open for the IPv6 underlay: AF_INET6 sockets with IPV6_V6ONLY bound to
 * [addr6]:port (16 bytes, network order; all zero = any), otherwise the same. */
int ovl_udp_open6(int *fds, uint32_t n, const uint8_t addr6[16], uint16_t port, int buf_bytes, const char **syscall);

/* Probes UDP GSO on a socket: sets UDP_SEGMENT to 1400 and back to 0. True when the kernel
 * takes it (Linux >= 4.18). The socket is left without a default segment size. */
bool ovl_udp_gso_probe(int fd);
/* Turns UDP_GRO on (Linux >= 5.0): receives then may carry several datagrams of one sender
 * with a UDP_GRO control message giving the segment size. True when the kernel took it. */
bool ovl_udp_gro_enable(int fd);

/* ------------------------------------------------------------------------------------ */
/* engine.c: the forwarding threads of the native engine                                 */
/* ------------------------------------------------------------------------------------ */

/* Packets one thread takes per burst from one side: TUN reads until EAGAIN or this many,
 * then one sendmmsg; one recvmmsg of at most this many, then the TUN writes. */
#define OVL_ENGINE_BATCH 64u
/* Most forwarding threads (queues) of one engine. */
#define OVL_ENGINE_QUEUES_MAX 64u

/* Counter indices of one queue. The first OVL_EC_COMMON are ENGINE_COUNTERS of
 * src/dataplane/engine.ts, same names, same order, same meaning; the rest are the native
 * engine's own (diagnostics). Names: ovl_engine_counter_names. */
enum ovl_engine_counter {
  OVL_EC_TUN_RX,            /* packets read from the TUN (oversize ones excluded) */
  OVL_EC_TX,                /* datagrams sent to peers */
  OVL_EC_TX_BYTES,          /* their payload bytes */
  OVL_EC_RX,                /* datagrams received on the UDP socket (all, before checks) */
  OVL_EC_RX_BYTES,          /* their payload bytes (real length, also when truncated) */
  OVL_EC_TUN_TX,            /* packets written into the TUN (forwarded inbound + ICMP) */
  OVL_EC_ICMP_SENT,         /* ICMP errors generated */
  OVL_EC_DROP_NO_ROUTE,     /* outbound: no route for the destination */
  OVL_EC_DROP_TTL,          /* TTL would reach 0 */
  OVL_EC_DROP_MALFORMED,    /* not a well-formed IPv4 packet (either direction) */
  OVL_EC_DROP_UNKNOWN_PEER, /* inbound: sender is not a known peer's address with port P */
  OVL_EC_DROP_SPOOFED,      /* inbound: inner source's route does not point at the sender */
  OVL_EC_DROP_WRONG_DST,    /* inbound: inner destination not inside this node's subnet */
  OVL_EC_DROP_TOO_BIG,      /* inbound: packet larger than the TUN MTU */
  OVL_EC_DROP_RING_FULL,    /* a TUN write would block (EAGAIN/ENOBUFS): the TUN-bound
                               queue was full; the packet is dropped */
  OVL_EC_TX_ERROR,          /* UDP send failed (or the socket stayed full, see engine.c) */
  OVL_EC_DROP_ICMP_RATELIMIT, /* ICMP errors not sent: the engine's rate limit (the packet
                               that caused each is counted under its own drop reason) */
  OVL_EC_COMMON,            /* ---- native only from here ---- */
  OVL_EC_DROP_TUN_OVERSIZE = OVL_EC_COMMON, /* TUN packets longer than the buffer (MTU raised) */
  OVL_EC_TUN_READ_ERRORS,   /* TUN read errors other than EAGAIN/EINTR */
  OVL_EC_TUN_WRITE_ERRORS,  /* TUN write errors other than the ones of drop_ring_full */
  OVL_EC_UDP_RECV_ERRORS,   /* recvmmsg errors other than EAGAIN/EINTR */
  OVL_EC_POLLS,             /* poll() calls: low per packet = good batching; flat when idle */
  OVL_EC_TUN_BURSTS,        /* TUN read bursts that got at least one packet */
  OVL_EC_UDP_BURSTS,        /* recvmmsg calls that got at least one datagram */
  OVL_EC_SENDMMSG_CALLS,    /* sendmmsg calls */
  OVL_EC_TUN_GSO_READS,     /* TUN super-packets (virtio_net_hdr GSO) read and cut here */
  OVL_EC_TUN_GRO_WRITES,    /* coalesced super-packets written into the TUN */
  OVL_EC_UDP_GSO_SENDS,     /* messages sent with UDP_SEGMENT (several datagrams each) */
  OVL_EC_UDP_GRO_RECVS,     /* receives that carried several datagrams (UDP_GRO) */
  OVL_EC_UDP_GSO_FALLBACK,  /* UDP_SEGMENT refused at run time: this queue sends plainly
                               for a back-off (backoff.c) */
  OVL_EC_TUN_GRO_FALLBACK,  /* a GSO write refused by the TUN: this queue writes plainly
                               for a back-off */
  OVL_EC_UDP_GSO_REENABLE,  /* UDP_SEGMENT back on after its back-off */
  OVL_EC_TUN_GRO_REENABLE,  /* TUN GRO back on after its back-off */
  OVL_EC_TUN_USO_READS,     /* of tun_gso_reads: UDP super-packets (USO, gso_type UDP_L4)
                               cut into datagrams by ovl_uso_segment */
  OVL_EC_CSUM_PARTIAL_SENT, /* datagrams sent with their TCP/UDP checksum left partial (to
                               peers that take them: OVL_ROUTE_PARTIAL_CSUM) */
  OVL_EC_CSUM_PARTIAL_RECEIVED, /* packets from peers written into the TUN whose checksum
                                   was partial (NEEDS_CSUM, or finished here) */
  OVL_EC_COUNT
};
/* uint64 words per queue in the counter block (OVL_EC_COUNT rounded up to 64 bytes). */
#define OVL_EC_STRIDE ((OVL_EC_COUNT + 7u) & ~7u)

/* One queue's counters: written by its thread only (relaxed stores, once per burst),
 * readable from any thread (relaxed loads; JS sums them as a BigUint64Array). */
struct ovl_engine_counters {
  _Alignas(64) _Atomic uint64_t v[OVL_EC_STRIDE];
};
extern const char *const ovl_engine_counter_names[OVL_EC_COUNT];

struct ovl_engine;

struct ovl_engine_config {
  uint32_t queues;     /* 1..OVL_ENGINE_QUEUES_MAX threads */
  const int *tun_fds;  /* [queues] nonblocking packet fds (TUN queues; SOCK_SEQPACKET in
                          tests): one read = one packet. Borrowed: close after stop. */
  const int *udp_fds;  /* [queues] nonblocking UDP sockets bound to port. Borrowed. */
  uint16_t port;       /* P: the source port a peer must use; peers are sent to peer:P */
  uint32_t tun_address; /* source of the ICMP errors (the lease's network address) */
  uint32_t tun_mtu;    /* bytes, 68..65535: larger inbound packets are drop_too_big */
  uint32_t subnet;     /* this node's subnet (inbound destinations must be inside) */
  uint8_t subnet_len;  /* 0..32 */
  struct ovl_routes *routes; /* borrowed; reader index q = queue q; outlives the engine */
  /* [queues] counter blocks, borrowed, zeroed by the caller; valid until stop returns */
  struct ovl_engine_counters *counters;
  /* Called at most once per queue, on that queue's thread, when the thread stops on an
   * error it cannot recover from (err a positive errno, syscall a static string); the
   * thread then exits. Must not block and must not call back into the engine. */
  void (*on_fatal)(void *opaque, uint32_t queue, int err, const char *syscall);
  void *opaque;
  /* Offloads (all false: one packet per read, write, datagram, as before):
   * tun_vnet_hdr: the tun_fds were opened with OVL_TUN_VNET_HDR; reads carry a
   *   virtio_net_hdr (super-packets are cut with ovl_gso_segment, partial checksums
   *   finished) and writes carry one.
   * tun_gro: coalesce inbound TCP segments into super-packets (needs tun_vnet_hdr).
   * udp_gso: send runs of datagrams to one peer of one size as one UDP_SEGMENT message
   *   (the kernel or NIC cuts them: still one inner packet per datagram on the wire).
   * udp_gro: the sockets have UDP_GRO on; receives are split by the segment size. */
  bool tun_vnet_hdr, tun_gro, udp_gso, udp_gro;
  /* ICMP errors of all queues together: at most icmp_burst at once, refilled at icmp_rate
   * per second (ratelimit.c; icmp_rate 0 = no limit). Suppressed: drop_icmp_ratelimit. */
  uint32_t icmp_rate, icmp_burst;
  /* IPv6 (all zero / NULL: an IPv4-only engine, byte for byte as before: an inner IPv6
   * packet is drop_malformed). With ipv6, inner IPv6 is forwarded with the IPv6 route
   * table of `routes` (ovl_routes_set6) and packet6.c's rules; ICMPv6 errors come from
   * tun_address6 and share icmp_rate/icmp_burst and the counters with IPv4. */
  bool ipv6;
  uint8_t tun_address6[16]; /* network order */
  uint8_t subnet6[16];      /* this node's IPv6 subnet (host bits zero) */
  uint8_t subnet6_len;      /* 0..128 */
  /* [queues] nonblocking AF_INET6 UDP sockets bound to port (the IPv6 underlay), or NULL
   * (no IPv6 underlay: every inner IPv6 packet rides the IPv4 sockets). Borrowed. Needs
   * ipv6. */
  const int *udp6_fds;
};

/* Allocates the buffers, the stop eventfd and starts one thread per queue (all signals
 * blocked on them). Returns 0 and *out, or a negative errno with *syscall ("config" for
 * -EINVAL, "malloc", "eventfd", "pthread_create"); on failure nothing is left running. */
int ovl_engine_start(struct ovl_engine **out, const struct ovl_engine_config *cfg, const char **syscall);
/* Sets the stop flag, wakes every thread (they block only in poll(), and in a send wait
 * bounded by a few ms) and joins them; frees everything it allocated. Does not close the
 * fds. Call from the thread that started it. NULL ok. */
void ovl_engine_stop(struct ovl_engine *e);

#ifdef __cplusplus
}
#endif

/* ---------------------------------------------------------------- sd_notify ------------- */

/* Sends `msg` (msg_len bytes) as one datagram to the unix socket `path` ("/..." or "@abstract").
 * Returns 0, or -errno with *syscall naming the failed call. JS thread only. */
int ovl_sd_notify(const char *path, const char *msg, size_t msg_len, const char **syscall);

#endif /* OVERLAYD_H */
