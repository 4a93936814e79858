/** Moved to src/lab/topology.ts (shared by tests, benchmarks and the demo). */
export * from '../../src/lab/topology';
