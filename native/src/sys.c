/* Small system helpers shared by the I/O threads of the TUN port and the engine. */
#include "overlayd.h"

#include <errno.h>
#include <signal.h>

bool ovl_io_error_is_fatal(int err) {
  switch (err) {
    case EBADF:
#ifdef EBADFD
    case EBADFD: /* TUN: the device was deleted under us */
#endif
    case EINVAL:
    case ENXIO:
    case ENODEV:
    case ENOTCONN:
    case ECONNRESET:
    case ENOTSOCK:
    case EFAULT:
      return true;
    default:
      return false;
  }
}

int ovl_thread_spawn(pthread_t *thread, void *(*fn)(void *), void *arg, const char **syscall) {
  sigset_t all, old;
  sigfillset(&all);
  int e = pthread_sigmask(SIG_SETMASK, &all, &old);
  if (e != 0) {
    *syscall = "pthread_sigmask";
    return -e;
  }
  e = pthread_create(thread, NULL, fn, arg);
  /* Restoring the mask just read fails only for an invalid `how`: not reachable. */
  (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (e != 0) {
    *syscall = "pthread_create";
    return -e;
  }
  return 0;
}
