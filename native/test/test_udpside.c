/*
 * The engine's UDP side alone (udpside.c through engine_int.h): a hand-made worker with
 * no TUN, no policy and no thread queues datagrams the way the policy does (a packet in
 * one piece, or a header stub + a payload slice elsewhere), and the test checks the
 * messages built (UDP_SEGMENT joins by peer and size, iovecs, byte counts), then sends
 * them with udp_flush to a socket on 127.0.0.1 and checks every datagram received, byte
 * for byte and in order, and the counters. No root needed.
 */
#include "../src/engine_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"

static struct ovl_engine eng;
static struct worker w;
static int rx_fd;
static uint8_t stubs[4][40], payload[4][1400], plain[2][1100];

/* A worker with only its UDP side: the sending socket and the message table as
 * worker_init sets it up. */
static void worker_setup(int tx_fd, bool gso) {
  memset(&w, 0, sizeof(w));
  w.e = &eng;
  w.udp_fd = tx_fd;
  w.udp6_fd = -1;
  w.udp_gso = gso;
  ovl_offload_gate_init(&w.gso_gate, gso);
  for (uint32_t i = 0; i < TXMAX; i++) w.tx_msgs[i].msg_hdr = (struct msghdr){.msg_name = &w.tx_to[i]};
}

static const struct dest LOCAL = {.over6 = false, .v4 = 0x7f000001u};

/* Receives the next datagram on rx_fd (waits up to 2 s): its length, or -1. */
static ssize_t recv_one(uint8_t *buf, size_t cap) {
  struct timeval tv = {.tv_sec = 2};
  (void)setsockopt(rx_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return recv(rx_fd, buf, cap, 0);
}

/* The datagram received equals a then b (b may be NULL). */
static int received_is(const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
  static uint8_t buf[70000];
  ssize_t n = recv_one(buf, sizeof(buf));
  return n == (ssize_t)(al + bl) && memcmp(buf, a, al) == 0 && (bl == 0 || memcmp(buf + al, b, bl) == 0);
}

static void test_gso(int tx_fd) {
  worker_setup(tx_fd, true);
  /* three segments of 40 + 960 (stub + slice), a shorter one in one piece, then one more */
  for (int i = 0; i < 3; i++) queue_tx(&w, stubs[i], 40, payload[i], 960, &LOCAL);
  queue_tx(&w, plain[0], 500, NULL, 0, &LOCAL);
  tap_ok(w.ntx == 1 && w.tx_nseg[0] == 4 && w.tx_seg[0] == 1000 && w.tx_bytes[0] == 3500 &&
             w.tx_msgs[0].msg_hdr.msg_iovlen == 7 && w.tx_closed[0],
         "3 x (stub + slice) of 1000 B and one 500 B piece: one UDP_SEGMENT message of 7 iovecs, 3500 B, closed");
  tap_ok(w.tx_msgs[0].msg_hdr.msg_iov[1].iov_base == payload[0] && w.tx_msgs[0].msg_hdr.msg_iov[0].iov_base == stubs[0],
         "the iovecs point at the stub and the slice (nothing copied)");
  queue_tx(&w, stubs[3], 40, payload[3], 960, &LOCAL);
  tap_ok(w.ntx == 2 && w.tx_nseg[1] == 1, "after a shorter datagram the message is closed: the next starts a new one");
  queue_tx(&w, plain[1], 1000, NULL, 0, &LOCAL);
  tap_ok(w.ntx == 2 && w.tx_nseg[1] == 2 && w.tx_msgs[1].msg_hdr.msg_iovlen == 3, "a piece of the same size joins it");
  queue_tx(&w, plain[1], 1001, NULL, 0, &LOCAL);
  tap_ok(w.ntx == 3, "a larger datagram never joins (UDP_SEGMENT cuts at the first one's size)");
  tap_ok(udp_tx_room(&w), "room for a whole super-packet's datagrams");
  udp_flush(&w);
  tap_ok(w.ntx == 0 && w.niov == 0, "udp_flush empties the queue");
  tap_ok(w.acc[OVL_EC_TX] == 7 && w.acc[OVL_EC_TX_BYTES] == 3500 + 2000 + 1001 && w.acc[OVL_EC_UDP_GSO_SENDS] == 2 &&
             w.acc[OVL_EC_SENDMMSG_CALLS] == 1 && w.acc[OVL_EC_TX_ERROR] == 0,
         "counters: 7 datagrams, their bytes, 2 UDP_SEGMENT messages, one sendmmsg (tx %llu, gso %llu, calls %llu)",
         (unsigned long long)w.acc[OVL_EC_TX], (unsigned long long)w.acc[OVL_EC_UDP_GSO_SENDS],
         (unsigned long long)w.acc[OVL_EC_SENDMMSG_CALLS]);
  int ok = 1;
  for (int i = 0; i < 3; i++) ok &= received_is(stubs[i], 40, payload[i], 960);
  ok &= received_is(plain[0], 500, NULL, 0);
  ok &= received_is(stubs[3], 40, payload[3], 960);
  ok &= received_is(plain[1], 1000, NULL, 0);
  ok &= received_is(plain[1], 1001, NULL, 0);
  tap_ok(ok, "the peer receives the 7 datagrams in order, each = its stub + slice (or piece) byte for byte");
}

static void test_plain(int tx_fd) {
  worker_setup(tx_fd, false);
  for (int i = 0; i < 3; i++) queue_tx(&w, stubs[i], 40, payload[i], 1000, &LOCAL);
  tap_ok(w.ntx == 3 && w.tx_msgs[2].msg_hdr.msg_iovlen == 2 && w.tx_bytes[2] == 1040,
         "UDP GSO off: one message per datagram, 2 iovecs each (stub + slice)");
  udp_flush(&w);
  int ok = w.acc[OVL_EC_TX] == 3 && w.acc[OVL_EC_UDP_GSO_SENDS] == 0;
  for (int i = 0; i < 3; i++) ok &= received_is(stubs[i], 40, payload[i], 1000);
  tap_ok(ok, "sent plainly: 3 datagrams received, each = stub + slice");
}

int main(void) {
  for (int i = 0; i < 4; i++) {
    for (int k = 0; k < 40; k++) stubs[i][k] = (uint8_t)(0x40 + i * 7 + k);
    for (int k = 0; k < 1400; k++) payload[i][k] = (uint8_t)(i * 31 + k * 13);
  }
  for (int i = 0; i < 2; i++)
    for (int k = 0; k < 1100; k++) plain[i][k] = (uint8_t)(0x90 + i + k * 3);
  rx_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int tx_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001u)};
  socklen_t al = sizeof(a);
  TAP_REQUIRE(rx_fd >= 0 && tx_fd >= 0 && bind(rx_fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
                  getsockname(rx_fd, (struct sockaddr *)&a, &al) == 0,
              "two UDP sockets on 127.0.0.1");
  eng.port = ntohs(a.sin_port);
  eng.stop_efd = -1;
  atomic_init(&eng.stop, false);
  if (ovl_udp_gso_probe(tx_fd))
    test_gso(tx_fd);
  else
    printf("# SKIP UDP_SEGMENT cases: the kernel refuses UDP GSO\n");
  test_plain(tx_fd);
  close(tx_fd);
  close(rx_fd);
  return tap_done();
}
