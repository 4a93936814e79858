/*
 * The native engine's UDP side (engine_int.h). Sending: the policy queues datagrams
 * (queue_tx) as messages of iovecs pointing where the datagrams lie (a packet as read, or
 * a header stub + a payload slice of a super-packet: nothing is copied); consecutive
 * datagrams to one peer of one size join one UDP_SEGMENT message; udp_flush sends the
 * burst with as few sendmmsg calls as the sockets allow. A full UDP send buffer (EAGAIN)
 * is waited out with poll(POLLOUT, stop) for at most SEND_WAITS x SEND_WAIT_MS per burst;
 * what is still unsent then counts as tx_error. A UDP_SEGMENT the kernel refuses at run
 * time is off on this queue for a back-off (backoff.c), the message sent datagram by
 * datagram. Receiving: one recvmmsg per burst (MSG_TRUNC: the real length of an
 * oversize datagram is seen and it is dropped at the same check as in the js engine);
 * with UDP_GRO a receive is split by its segment size; each datagram goes to the policy.
 * Runs on the worker's thread.
 */
#include "engine_int.h"

#include <assert.h>
#include <errno.h>
#include <netinet/udp.h>
#include <poll.h>
#include <string.h>

static bool same_dest(const union ovl_sa *a, const struct dest *d) {
  if (d->over6) return a->sa.sa_family == AF_INET6 && memcmp(&a->v6.sin6_addr, d->v6, 16) == 0;
  return a->sa.sa_family == AF_INET && a->v4.sin_addr.s_addr == htonl(d->v4);
}

/* The socket message i is sent on (its family's). */
static int tx_fd(const struct worker *w, uint32_t i) {
  return w->tx_to[i].sa.sa_family == AF_INET6 ? w->udp6_fd : w->udp_fd;
}

/* Appends the datagram's pieces to the iovecs of message i (the last one queued). */
static void append_iov(struct worker *w, uint32_t i, uint8_t *pkt, size_t len, const uint8_t *tail, size_t tail_len) {
  w->tx_iov[w->niov++] = (struct iovec){.iov_base = pkt, .iov_len = len};
  if (tail_len) w->tx_iov[w->niov++] = (struct iovec){.iov_base = (void *)tail, .iov_len = tail_len};
  w->tx_msgs[i].msg_hdr.msg_iovlen += tail_len ? 2 : 1;
  w->tx_bytes[i] += (uint32_t)(len + tail_len);
}

void queue_tx(struct worker *w, uint8_t *pkt, size_t len, const uint8_t *tail, size_t tail_len,
                     const struct dest *d) {
  /* tun_burst leaves room for one packet's datagrams (IOV_NEED, OVL_GSO_SEGS_MAX) */
  assert(w->niov + 2 <= IOV_CAP && w->ntx < TXMAX);
  size_t dlen = len + tail_len;
  if (w->udp_gso && w->ntx > 0) { /* joins the previous message when UDP_SEGMENT allows it */
    uint32_t i = w->ntx - 1;
    if (same_dest(&w->tx_to[i], d) && !w->tx_closed[i] && dlen <= w->tx_seg[i] && w->tx_nseg[i] < GSO_SEGS &&
        w->tx_bytes[i] + dlen <= GSO_BYTES) {
      append_iov(w, i, pkt, len, tail, tail_len);
      w->tx_nseg[i]++;
      if (dlen < w->tx_seg[i]) w->tx_closed[i] = true;
      return;
    }
  }
  uint32_t i = w->ntx++;
  if (d->over6) {
    w->tx_to[i].v6 = (struct sockaddr_in6){.sin6_family = AF_INET6, .sin6_port = htons(w->e->port)};
    memcpy(&w->tx_to[i].v6.sin6_addr, d->v6, 16);
    w->tx_msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in6);
  } else {
    w->tx_to[i].v4 = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(w->e->port), .sin_addr.s_addr = htonl(d->v4)};
    w->tx_msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
  }
  w->tx_msgs[i].msg_hdr.msg_iov = &w->tx_iov[w->niov];
  w->tx_msgs[i].msg_hdr.msg_iovlen = 0;
  w->tx_bytes[i] = 0;
  append_iov(w, i, pkt, len, tail, tail_len);
  w->tx_seg[i] = (uint16_t)dlen;
  w->tx_nseg[i] = 1;
  w->tx_closed[i] = false;
}

void tx_reset(struct worker *w) {
  w->ntx = 0;
  w->niov = 0;
}

/* Message i (several datagrams) after the kernel refused UDP_SEGMENT: its datagrams one
 * by one. Each datagram is whole iovecs of the message (1 or 2: append_iov), all of
 * tx_seg bytes but a shorter last one. Counts tx / tx_error per datagram. */
static void send_split(struct worker *w, uint32_t i) {
  const struct msghdr *m = &w->tx_msgs[i].msg_hdr;
  size_t k = 0, seg = w->tx_seg[i];
  while (k < m->msg_iovlen) {
    size_t first = k, l = 0;
    while (k < m->msg_iovlen && l < seg) l += m->msg_iov[k++].iov_len;
    struct msghdr one = {.msg_name = m->msg_name, .msg_namelen = m->msg_namelen, .msg_iov = m->msg_iov + first,
                         .msg_iovlen = k - first};
    ssize_t r = sendmsg(tx_fd(w, i), &one, 0);
    if (r == (ssize_t)l) {
      w->acc[OVL_EC_TX]++;
      w->acc[OVL_EC_TX_BYTES] += l;
    } else {
      w->acc[OVL_EC_TX_ERROR]++;
    }
  }
}

/* Sends the queued messages with as few sendmmsg calls as the socket allows. */
static void flush_tx(struct worker *w) {
  uint32_t i = 0, n = w->ntx, waits = 0;
  for (uint32_t j = 0; j < n; j++) {
    struct msghdr *m = &w->tx_msgs[j].msg_hdr;
    if (w->tx_nseg[j] > 1) {
      m->msg_control = w->tx_ctl[j];
      m->msg_controllen = sizeof(w->tx_ctl[j]);
      struct cmsghdr *c = CMSG_FIRSTHDR(m);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t seg = w->tx_seg[j];
      memcpy(CMSG_DATA(c), &seg, sizeof(seg));
    } else {
      m->msg_control = NULL;
      m->msg_controllen = 0;
    }
  }
  /* Each iteration sends >= 1 message, skips a failed one, or waits (at most SEND_WAITS
   * times); EINTR cannot happen with every signal blocked, and is bounded anyway. */
  for (uint32_t iter = 0; i < n && iter < 2 * TXMAX + SEND_WAITS; iter++) {
    uint32_t end = i + 1; /* one call per run of messages of one family (one socket) */
    while (end < n && w->tx_to[end].sa.sa_family == w->tx_to[i].sa.sa_family) end++;
    int r = sendmmsg(tx_fd(w, i), &w->tx_msgs[i], end - i, 0);
    w->acc[OVL_EC_SENDMMSG_CALLS]++;
    if (r > 0) {
      for (uint32_t j = i; j < i + (uint32_t)r; j++) {
        w->acc[OVL_EC_TX_BYTES] += w->tx_bytes[j];
        w->acc[OVL_EC_TX] += w->tx_nseg[j];
        if (w->tx_nseg[j] > 1) w->acc[OVL_EC_UDP_GSO_SENDS]++;
      }
      i += (uint32_t)r;
      continue;
    }
    int err = r == 0 ? EAGAIN : errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      if (waits++ == SEND_WAITS || atomic_load_explicit(&w->e->stop, memory_order_relaxed)) break;
      struct pollfd pfd[2] = {{.fd = tx_fd(w, i), .events = POLLOUT}, {.fd = w->e->stop_efd, .events = POLLIN}};
      (void)poll(pfd, 2, SEND_WAIT_MS); /* any outcome: the next sendmmsg tells */
      w->acc[OVL_EC_POLLS]++;
      continue;
    }
    if (w->tx_nseg[i] > 1 && (err == EIO || err == EINVAL || err == EMSGSIZE)) {
      /* the kernel refuses UDP_SEGMENT (a device without checksum offload, a smaller path
       * MTU, a kernel bug): this message goes out datagram by datagram, and the queue
       * sends plainly until its back-off is over (gso_gate) */
      if (ovl_offload_gate_fail(&w->gso_gate, mono_ns())) w->acc[OVL_EC_UDP_GSO_FALLBACK]++;
      w->udp_gso = false;
      send_split(w, i);
      i++;
      continue;
    }
    w->acc[OVL_EC_TX_ERROR] += w->tx_nseg[i]; /* the message at i failed (unreachable, EPERM, ...): skip it */
    i++;
  }
  for (; i < n; i++) w->acc[OVL_EC_TX_ERROR] += w->tx_nseg[i];
  tx_reset(w);
}

bool udp_tx_room(const struct worker *w) { return w->ntx + OVL_GSO_SEGS_MAX <= TXMAX && w->niov + IOV_NEED <= IOV_CAP; }

void udp_flush(struct worker *w) {
  if (w->ntx) flush_tx(w);
  tx_reset(w);
}

void udp_reply(struct worker *w, const union ovl_sa *from, const uint8_t *buf, size_t n) {
  bool over6 = from->sa.sa_family == AF_INET6;
  socklen_t sl = over6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  ssize_t r = sendto(over6 ? w->udp6_fd : w->udp_fd, buf, n, MSG_DONTWAIT, &from->sa, sl);
  if (r == (ssize_t)n) {
    w->acc[OVL_EC_TX]++;
    w->acc[OVL_EC_TX_BYTES] += n;
  } else {
    w->acc[OVL_EC_TX_ERROR]++;
  }
}

/* The segment size of a receive coalesced by UDP_GRO, or 0. */
static uint32_t gro_size(struct msghdr *m) {
  if (m->msg_controllen == 0) return 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR(m, c)) {
    if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
      int v;
      memcpy(&v, CMSG_DATA(c), sizeof(v));
      return v > 0 ? (uint32_t)v : 0;
    }
  }
  return 0;
}

/* One receive of `len` bytes (the real length; buf holds min(len, rx_cap)) from `from`:
 * one datagram, or with a UDP_GRO segment size `seg` (0 = none) several of seg bytes each
 * (the last may be shorter), each through inbound(). The GRO flow may point into buf
 * afterwards: gro_flush before buf is reused. */
static void udp_receive(struct worker *w, const struct ovl_rtable *t, uint8_t *buf, size_t len, uint32_t seg,
                        const union ovl_sa *from, socklen_t fromlen) {
  if (seg == 0 || len <= seg) {
    inbound(w, t, buf, len, from, fromlen);
    return;
  }
  w->acc[OVL_EC_UDP_GRO_RECVS]++;
  for (size_t off = 0; off < len; off += seg) {
    size_t l = len - off < seg ? len - off : seg;
    if (off + l > w->rx_cap) { /* cannot happen with 64 KB buffers; never read beyond */
      w->acc[OVL_EC_RX]++;
      w->acc[OVL_EC_RX_BYTES] += l;
      w->acc[OVL_EC_DROP_MALFORMED]++;
      continue;
    }
    inbound(w, t, buf + off, l, from, fromlen);
  }
}

bool udp_burst(struct worker *w, const struct ovl_rtable *t, int fd) {
  w->t6 = NULL;
  for (uint32_t i = 0; i < w->rx_n; i++) {
    w->rx_msgs[i].msg_hdr.msg_namelen = sizeof(w->rx_from[i]);
    w->rx_msgs[i].msg_hdr.msg_control = w->udp_gro ? w->rx_ctl[i] : NULL;
    w->rx_msgs[i].msg_hdr.msg_controllen = w->udp_gro ? CTL_BYTES : 0;
  }
  int r = recvmmsg(fd, w->rx_msgs, w->rx_n, MSG_DONTWAIT | MSG_TRUNC, NULL);
  if (r < 0) {
    int err = errno;
    if (err == EINTR) return true;
    if (err == EAGAIN || err == EWOULDBLOCK) return false;
    w->acc[OVL_EC_UDP_RECV_ERRORS]++;
    /* Other errors are pending socket errors, reported once each (and cleared). */
    if (ovl_io_error_is_fatal(err) || ++w->udp_errors_in_row >= ERRORS_IN_ROW_MAX) set_fatal(w, err, "recvmmsg");
    return false;
  }
  w->udp_errors_in_row = 0;
  if (r > 0) w->acc[OVL_EC_UDP_BURSTS]++;
  for (int i = 0; i < r; i++) {
    uint32_t seg = w->udp_gro ? gro_size(&w->rx_msgs[i].msg_hdr) : 0;
    udp_receive(w, t, w->udp_buf + (size_t)i * w->rx_cap, w->rx_msgs[i].msg_len, seg, &w->rx_from[i],
                w->rx_msgs[i].msg_hdr.msg_namelen);
  }
  return r == (int)w->rx_n;
}
