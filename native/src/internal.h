/*
 * Helpers shared by the core's .c files and nobody else (not part of the C API in
 * overlayd.h): big-endian field access on packet bytes, and socket option numbers that
 * older libc headers lack.
 */
#ifndef OVERLAYD_INTERNAL_H
#define OVERLAYD_INTERNAL_H

#include <stdint.h>

/* Network byte order 16-bit field at p. */
static inline uint32_t be16(const uint8_t *p) { return ((uint32_t)p[0] << 8) | (uint32_t)p[1]; }

/* Stores the low 16 bits of v at p in network byte order. */
static inline void put16(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

/* Stores v at p in network byte order. */
static inline void put32(uint8_t *p, uint32_t v) {
  put16(p, v >> 16);
  put16(p + 2, v);
}

struct ovl_rtable6;
/* route6.c's writer-only bookkeeping, used by route.c's publication (retired list). */
uint64_t *ovl_rtable6_retired_at(struct ovl_rtable6 *t);
struct ovl_rtable6 **ovl_rtable6_next_retired(struct ovl_rtable6 *t);

/* UDP GSO/GRO socket options (linux/udp.h), for libc headers older than them. */
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

/* TUN USO offload flags (linux/if_tun.h, Linux 6.2), for libc headers older than them. */
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

#endif
