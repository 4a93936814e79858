/**
 * The forwarding engines every behaviour test runs against (DESIGN.md: two engines, one
 * contract). OVERLAYD_TEST_ENGINES=native (or js) narrows a run while debugging.
 */
const ALL = ['js', 'native'] as const;
const only = process.env['OVERLAYD_TEST_ENGINES']?.split(',').map((s) => s.trim());
export const ENGINES: readonly (typeof ALL)[number][] = only ? ALL.filter((e) => only.includes(e)) : ALL;
