import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['__test__/**/*.spec.ts'],
    // Native addons are unsafe in worker threads; forks is vitest's default, kept explicit.
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
})
