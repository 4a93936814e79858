/** Moved to src/lab/exec.ts (shared by tests, benchmarks and the demo). */
export * from '../../src/lab/exec';
