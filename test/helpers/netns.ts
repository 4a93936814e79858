/** Moved to src/lab/netns.ts (shared by tests, benchmarks and the demo). */
export * from '../../src/lab/netns';
