/* Opening a TUN device through /dev/net/tun. */
#include "overlayd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "internal.h" /* after linux/if_tun.h: fills in TUN_F_USO4/6 if it lacks them */

_Static_assert(OVL_IFNAMSIZ == IFNAMSIZ, "OVL_IFNAMSIZ must equal IFNAMSIZ");

int ovl_tun_open(const char *name, unsigned flags, char actual[OVL_IFNAMSIZ], const char **syscall) {
  *syscall = "ioctl(TUNSETIFF)";
  size_t len = strlen(name);
  if (len >= IFNAMSIZ) return -ENAMETOOLONG;

  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  memcpy(ifr.ifr_name, name, len);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  if (flags & OVL_TUN_MULTI_QUEUE) ifr.ifr_flags |= IFF_MULTI_QUEUE;
  if (flags & OVL_TUN_VNET_HDR) ifr.ifr_flags |= IFF_VNET_HDR;

  int fd;
  do {
    fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    *syscall = "open";
    return -errno;
  }
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    *syscall = "ioctl(TUNSETIFF)";
    (void)close(fd); /* a fresh fd that never carried data: nothing to report */
    return -err;
  }
  /* TSO6 too (IPv6 TCP super-packets, cut by ovl_gso_segment), and USO4 + USO6 (UDP
   * super-packets, cut by ovl_uso_segment; the kernel takes the two only together, since
   * Linux 6.2); a kernel that refuses a set (EINVAL) gets the next smaller one. */
  static const unsigned long offload_sets[] = {
      TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
      TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
      TUN_F_CSUM | TUN_F_TSO4,
  };
  int off_rc = 0;
  for (size_t i = 0; (flags & OVL_TUN_VNET_HDR) && i < sizeof(offload_sets) / sizeof(offload_sets[0]); i++) {
    off_rc = ioctl(fd, TUNSETOFFLOAD, offload_sets[i]);
    if (off_rc == 0 || errno != EINVAL) break;
  }
  if (off_rc < 0) {
    int err = errno;
    *syscall = "ioctl(TUNSETOFFLOAD)";
    (void)close(fd);
    return -err;
  }
  memcpy(actual, ifr.ifr_name, IFNAMSIZ);
  actual[IFNAMSIZ - 1] = '\0';
  *syscall = NULL;
  return fd;
}
