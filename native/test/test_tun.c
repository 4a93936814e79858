/* ovl_tun_open(): name checks everywhere; the real open only as root, inside a private
 * network namespace (unshare), so no device ever appears in the host's namespace. */
#include "overlayd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "tap.h"

int main(void) {
  char actual[OVL_IFNAMSIZ];
  const char *sc = NULL;

  int fd = ovl_tun_open("a-name-of-16-byt", 0, actual, &sc);
  tap_ok(fd == -ENAMETOOLONG && sc && strcmp(sc, "ioctl(TUNSETIFF)") == 0,
         "16-byte name: -ENAMETOOLONG for ioctl(TUNSETIFF) (got %d, %s)", fd, sc ? sc : "NULL");
  tap_ok(strcmp(ovl_errno_name(ENAMETOOLONG), "ENAMETOOLONG") == 0 && strcmp(ovl_errno_name(EPERM), "EPERM") == 0 &&
             strcmp(ovl_errno_name(EBUSY), "EBUSY") == 0 && strcmp(ovl_errno_name(99999), "EUNKNOWN") == 0,
         "errno names");

  if (geteuid() != 0) {
    printf("ok %d - # SKIP opening TUN devices needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN for unshare)\n", ++tap_n);
    return tap_done();
  }
  TAP_REQUIRE(unshare(CLONE_NEWNET) == 0, "private network namespace (unshare CLONE_NEWNET)");

  fd = ovl_tun_open("ovltest0", 0, actual, &sc);
  TAP_REQUIRE(fd >= 0, "open ovltest0 (got %d, %s)", fd, sc ? sc : "");
  tap_ok(strcmp(actual, "ovltest0") == 0 && sc == NULL, "actual name ovltest0");
  int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
  tap_ok(fl >= 0 && (fl & O_NONBLOCK), "O_NONBLOCK");
  tap_ok(fdfl >= 0 && (fdfl & FD_CLOEXEC), "FD_CLOEXEC");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  tap_ok(ioctl(fd, TUNGETIFF, &ifr) == 0 && (ifr.ifr_flags & (IFF_TUN | IFF_NO_PI | IFF_TAP)) == (IFF_TUN | IFF_NO_PI),
         "IFF_TUN | IFF_NO_PI");
  char buf[64];
  tap_ok(read(fd, buf, sizeof(buf)) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK), "read on an idle TUN: EAGAIN");

  int fd2 = ovl_tun_open("ovltest0", 0, actual, &sc);
  tap_ok(fd2 == -EBUSY && sc && strcmp(sc, "ioctl(TUNSETIFF)") == 0, "second open of a busy TUN: -EBUSY (got %d)", fd2);
  int fd3 = ovl_tun_open("ovltest0", OVL_TUN_MULTI_QUEUE, actual, &sc);
  tap_ok(fd3 < 0 && sc && strcmp(sc, "ioctl(TUNSETIFF)") == 0, "multi-queue open of a single-queue TUN fails (%d, %s)",
         fd3, ovl_errno_name(-fd3));
  close(fd);

  fd = ovl_tun_open("ovl%d", 0, actual, &sc);
  tap_ok(fd >= 0 && strcmp(actual, "ovl0") == 0, "pattern ovl%%d gives ovl0 (got %s)", fd >= 0 ? actual : "-");
  if (fd >= 0) close(fd);

  fd = ovl_tun_open("ovlmq0", OVL_TUN_MULTI_QUEUE, actual, &sc);
  fd2 = ovl_tun_open("ovlmq0", OVL_TUN_MULTI_QUEUE, actual, &sc);
  tap_ok(fd >= 0 && fd2 >= 0, "multi-queue: two queues of ovlmq0");
  memset(&ifr, 0, sizeof(ifr));
  tap_ok(fd >= 0 && ioctl(fd, TUNGETIFF, &ifr) == 0 && (ifr.ifr_flags & IFF_MULTI_QUEUE), "IFF_MULTI_QUEUE set");
  if (fd >= 0) close(fd);
  if (fd2 >= 0) close(fd2);

  fd = ovl_tun_open("bad/name", 0, actual, &sc);
  tap_ok(fd == -EINVAL && sc && strcmp(sc, "ioctl(TUNSETIFF)") == 0, "name with '/': -EINVAL from the kernel");
  return tap_done();
}
