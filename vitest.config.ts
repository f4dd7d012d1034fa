import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['__test__/**/*.test.ts'],
    // Learning and CLI tests train real (small) models on 2 cores.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Native training already uses every core; running test files side by side only adds contention.
    fileParallelism: false,
  },
});
