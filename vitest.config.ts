import { defineConfig } from 'vitest/config';

// GPU suites run on a CPU Vulkan driver in CI (~1000x slower than a GPU): long timeouts, one file at a time so
// two suites never fight over the two cores and one WebGPU device.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // every GPU buffer followed by NaN words: a kernel reading past its data fails its comparison (runner.ts)
    env: { LOCRET_GUARD_BUFFERS: '1' },
    testTimeout: 600_000,
    hookTimeout: 600_000,
    pool: 'forks',
    fileParallelism: false,
    reporters: ['default'],
  },
});
