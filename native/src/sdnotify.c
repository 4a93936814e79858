/*
 * sd_notify(3) without libsystemd: one datagram to the unix socket named by $NOTIFY_SOCKET.
 * Called on the JS thread only (rare: READY, STOPPING, WATCHDOG), blocking for at most one
 * sendto() on a datagram socket.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "overlayd.h"

int ovl_sd_notify(const char *path, const char *msg, size_t msg_len, const char **syscall) {
  struct sockaddr_un sa;
  size_t plen = strlen(path);
  *syscall = "connect";
  if (plen == 0 || plen >= sizeof(sa.sun_path) || (path[0] != '/' && path[0] != '@')) return -EINVAL;
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path, plen);
  if (path[0] == '@') sa.sun_path[0] = '\0'; /* abstract namespace */
  socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (path[0] == '/' ? 1 : 0));

  *syscall = "socket";
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  *syscall = "sendto";
  ssize_t n = sendto(fd, msg, msg_len, MSG_NOSIGNAL, (const struct sockaddr *)&sa, salen);
  int err = n < 0 ? errno : 0;
  close(fd);
  if (err) return -err;
  if ((size_t)n != msg_len) return -EMSGSIZE;
  return 0;
}
