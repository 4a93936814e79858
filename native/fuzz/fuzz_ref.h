/* Independent references of the fuzz targets' checks: byte-wise one's-complement sums and
 * big-endian access, deliberately not packet.c's word-at-a-time code they check. */
#ifndef OVL_FUZZ_REF_H
#define OVL_FUZZ_REF_H

#include <stddef.h>
#include <stdint.h>

/* Folded one's-complement sum of len bytes added to s (0..0xffff), byte by byte. */
static inline uint32_t rsum(const uint8_t *b, size_t len, uint32_t s) {
  uint64_t x = s;
  for (size_t i = 0; i < len; i++) x += (i & 1) ? b[i] : (uint32_t)b[i] << 8;
  while (x >> 16) x = (x & 0xffff) + (x >> 16);
  return (uint32_t)x;
}
static inline uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static inline uint32_t rd32(const uint8_t *p) { return rd16(p) << 16 | rd16(p + 2); }
static inline void wr16(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

#endif
