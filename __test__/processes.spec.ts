import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { canonicalKey } from '../lib/index.js'
import { config, createDatabase, dropRedisPrefix, query, REDIS_URL, uniqueName } from './helpers/services'
import { runWorker } from './helpers/spawn'

let db: Awaited<ReturnType<typeof createDatabase>>

beforeAll(async () => {
  db = await createDatabase()
})
afterAll(async () => {
  await db?.drop()
})

describe('several server processes', () => {
  it('4 processes x 8 concurrent calls for a new key: exactly one generation and one row', async () => {
    const c = config('vitest-processes', 20_000)
    const prefix = `${uniqueName('smc_vitest')}:`
    const env = {
      SMC_OPTIONS: JSON.stringify({ databaseUrl: db.url, redisUrl: REDIS_URL, redisKeyPrefix: prefix }),
      SMC_CONFIG: JSON.stringify(c),
      SMC_CALLS: '8',
    }
    const reports = await Promise.all([1, 2, 3, 4].map(() => runWorker(env)))
    expect(reports.reduce((n, r) => n + r.generations, 0)).toBe(1)
    expect(reports.flatMap((r) => r.keys)).toEqual(Array(4).fill(canonicalKey(c)))
    const rows = await query(db.url, 'SELECT 1 FROM scenario_matrices WHERE matrix_key = $1', [canonicalKey(c)])
    expect(rows).toHaveLength(1)
    await dropRedisPrefix(prefix)
  })

  it('4 processes x 50 concurrent calls over 20 new keys: exactly 20 generations and 20 rows', async () => {
    const configs = Array.from({ length: 20 }, (_, i) => config(`vitest-burst-${i}`, 5_000))
    const prefix = `${uniqueName('smc_vitest')}:`
    const env = {
      SMC_OPTIONS: JSON.stringify({ databaseUrl: db.url, redisUrl: REDIS_URL, redisKeyPrefix: prefix }),
      SMC_CONFIGS: JSON.stringify(configs),
      SMC_CALLS: '50',
    }
    const reports = await Promise.all([1, 2, 3, 4].map(() => runWorker(env)))
    expect(reports.reduce((n, r) => n + r.generations, 0)).toBe(20)
    const keys = configs.map((c) => canonicalKey(c as never)).sort()
    for (const r of reports) expect([...r.keys].sort()).toEqual(keys)
    const rows = await query<{ matrix_key: string }>(
      db.url,
      "SELECT matrix_key FROM scenario_matrices WHERE fund_id LIKE 'vitest-burst-%' ORDER BY matrix_key",
    )
    expect(rows.map((r) => r.matrix_key)).toEqual(keys)
    await dropRedisPrefix(prefix)
  })

  it('a process exits after its last call, even without close()', async () => {
    const prefix = `${uniqueName('smc_vitest')}:`
    const env = {
      SMC_OPTIONS: JSON.stringify({ databaseUrl: db.url, redisUrl: REDIS_URL, redisKeyPrefix: prefix }),
      SMC_CONFIG: JSON.stringify(config('vitest-exit', 1_000)),
      SMC_SKIP_CLOSE: '1',
    }
    const report = await runWorker(env) // rejects if the process is still alive after 60 s
    expect(report.sources).toEqual(['generated'])
    await dropRedisPrefix(prefix)
  })

  it('a malformed TOKIO_WORKER_THREADS is ignored, not a crash at the first call', async () => {
    // Tokio itself panics on such a value, which aborted the process (before
    // the addon built its runtime itself); 1 is honoured.
    const dir = mkdtempSync(join(tmpdir(), 'smc-vitest-'))
    try {
      for (const workers of ['', 'many', '0', '1']) {
        const env = {
          TOKIO_WORKER_THREADS: workers,
          DATABASE_URL: '',
          REDIS_URL: '',
          SMC_OPTIONS: '{}',
          SMC_CONFIG: JSON.stringify(config('vitest-workers', 1_000)),
        }
        const report = await runWorker(env, dir)
        expect(report.keys).toHaveLength(1)
      }
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('the embedded SQLite default is shared by a second process', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'smc-vitest-'))
    try {
      // No DATABASE_URL / REDIS_URL: the zero-setup default in the working directory.
      const env = { DATABASE_URL: '', REDIS_URL: '', SMC_OPTIONS: '{}', SMC_CONFIG: JSON.stringify(config('vitest-sqlite', 3_000)) }
      const first = await runWorker(env, dir)
      expect(first.sources).toEqual(['generated'])
      const second = await runWorker(env, dir)
      expect(second.sources).toEqual(['sqlite'])
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
