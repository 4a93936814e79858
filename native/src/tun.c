/* Opening a TUN device through /dev/net/tun. */
#include "overlayd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

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
  /* TSO6 too (IPv6 TCP super-packets, cut by ovl_gso_segment); a kernel that refuses it
   * keeps TSO4 only. */
  if ((flags & OVL_TUN_VNET_HDR) && ioctl(fd, TUNSETOFFLOAD, (unsigned long)(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)) < 0 &&
      (errno != EINVAL || ioctl(fd, TUNSETOFFLOAD, (unsigned long)(TUN_F_CSUM | TUN_F_TSO4)) < 0)) {
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
