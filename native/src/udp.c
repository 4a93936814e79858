/* The engine's UDP sockets: n sockets on one port (SO_REUSEPORT when n > 1), buffers sized
 * for bursts. Called on the JS thread (or a test's thread); the fds are then handed to the
 * forwarding threads, one each. */
#include "overlayd.h"
#include "internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Sets a socket buffer: the FORCE variant first (ignores net.core.[rw]mem_max, needs
 * CAP_NET_ADMIN), the plain one (capped by the sysctl) when that is not permitted. */
static int set_buf(int fd, int force_opt, int opt, int bytes, const char *force_name, const char *name,
                   const char **syscall) {
  if (setsockopt(fd, SOL_SOCKET, force_opt, &bytes, sizeof(bytes)) == 0) return 0;
  if (errno != EPERM) {
    *syscall = force_name;
    return -errno;
  }
  if (setsockopt(fd, SOL_SOCKET, opt, &bytes, sizeof(bytes)) == 0) return 0;
  *syscall = name;
  return -errno;
}

static void close_all(int *fds, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) {
    (void)close(fds[i]); /* never used for data yet: nothing a close error could lose */
    fds[i] = -1;
  }
}

/* One socket bound to addr:*port (IPv6 with IPV6_V6ONLY when addr6 is not NULL, else IPv4
 * addr); *port is updated to the bound port (for port 0). */
static int open_one(uint32_t addr, const uint8_t *addr6, uint16_t *port, bool reuseport, int buf_bytes,
                    const char **syscall) {
  int fd = socket(addr6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *syscall = "socket";
    return -errno;
  }
  int err = 0, one = 1;
  if (addr6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) {
    *syscall = "setsockopt(IPV6_V6ONLY)";
    err = -errno;
  }
  if (!err && reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    *syscall = "setsockopt(SO_REUSEPORT)";
    err = -errno;
  }
  if (!err && buf_bytes > 0) {
    err = set_buf(fd, SO_RCVBUFFORCE, SO_RCVBUF, buf_bytes, "setsockopt(SO_RCVBUFFORCE)", "setsockopt(SO_RCVBUF)",
                  syscall);
    if (!err)
      err = set_buf(fd, SO_SNDBUFFORCE, SO_SNDBUF, buf_bytes, "setsockopt(SO_SNDBUFFORCE)",
                    "setsockopt(SO_SNDBUF)", syscall);
  }
  union {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
  } sa;
  socklen_t sl;
  memset(&sa, 0, sizeof(sa));
  if (addr6) {
    sa.v6.sin6_family = AF_INET6;
    sa.v6.sin6_port = htons(*port);
    memcpy(&sa.v6.sin6_addr, addr6, 16);
    sl = sizeof(sa.v6);
  } else {
    sa.v4 = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(*port), .sin_addr.s_addr = htonl(addr)};
    sl = sizeof(sa.v4);
  }
  if (!err && bind(fd, &sa.sa, sl) != 0) {
    *syscall = "bind";
    err = -errno;
  }
  if (!err && *port == 0) {
    if (getsockname(fd, &sa.sa, &sl) != 0) {
      *syscall = "getsockname";
      err = -errno;
    } else {
      *port = ntohs(addr6 ? sa.v6.sin6_port : sa.v4.sin_port);
    }
  }
  if (err) {
    (void)close(fd); /* fresh socket: nothing to lose */
    return err;
  }
  return fd;
}

static int open_n(int *fds, uint32_t n, uint32_t addr, const uint8_t *addr6, uint16_t port, int buf_bytes,
                  const char **syscall) {
  *syscall = "config";
  if (n == 0 || n > OVL_ENGINE_QUEUES_MAX) return -EINVAL;
  if (n > 1) {
    /* Probe: a socket without SO_REUSEPORT binds only where nobody listens (and learns the
     * port when 0 was asked). A daemon that starts between this close and the bind below
     * would share the port; the window is a few microseconds. */
    int probe = open_one(addr, addr6, &port, false, 0, syscall);
    if (probe < 0) return probe;
    (void)close(probe);
  }
  for (uint32_t i = 0; i < n; i++) {
    int fd = open_one(addr, addr6, &port, n > 1, buf_bytes, syscall);
    if (fd < 0) {
      close_all(fds, i);
      return fd;
    }
    fds[i] = fd;
  }
  *syscall = NULL;
  return 0;
}

int ovl_udp_open(int *fds, uint32_t n, uint32_t addr, uint16_t port, int buf_bytes, const char **syscall) {
  return open_n(fds, n, addr, NULL, port, buf_bytes, syscall);
}

int ovl_udp_open6(int *fds, uint32_t n, const uint8_t addr6[16], uint16_t port, int buf_bytes, const char **syscall) {
  return open_n(fds, n, 0, addr6, port, buf_bytes, syscall);
}

bool ovl_udp_gso_probe(int fd) {
  int size = 1400, zero = 0;
  if (setsockopt(fd, SOL_UDP, UDP_SEGMENT, &size, sizeof(size)) != 0) return false;
  return setsockopt(fd, SOL_UDP, UDP_SEGMENT, &zero, sizeof(zero)) == 0;
}

bool ovl_udp_gro_enable(int fd) {
  int one = 1;
  return setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof(one)) == 0;
}
