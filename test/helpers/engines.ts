/** The forwarding engines every behaviour test runs against (DESIGN.md: two engines, one contract). */
export const ENGINES = ['js', 'native'] as const;
