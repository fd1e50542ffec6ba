// cache.warm(configs, { concurrency, onProgress }) (lib/warm.js) against a private
// PostgreSQL database: failures by index without rejecting, progress counts, hits on a
// second pass, and the checks of its arguments.
import { availableParallelism } from 'node:os'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { canonicalKey, ScenarioMatrixCache, type WarmProgress } from '../lib/index.js'
import { config, createDatabase, query } from './helpers/services'
import { rejection } from './helpers/rejection'

// lib/warm.js on its own, for what a real cache cannot show: how many calls are in flight.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { warm } = require('../lib/warm.js') as { warm: (this: unknown, configs: unknown[], options?: object) => Promise<{ failed: unknown[]; generated: number; hits: number }> }

let db: Awaited<ReturnType<typeof createDatabase>>
let cache: ScenarioMatrixCache

beforeAll(async () => {
  db = await createDatabase()
  cache = await ScenarioMatrixCache.open({ databaseUrl: db.url, redisUrl: '' })
})

afterAll(async () => {
  await cache?.close()
  await db?.drop()
})

const good = (fund: string) => config(fund, 1_000)
const bad = { ...config('warm-bad', 1_000), numScenarios: 1.5 }

describe('warm', () => {
  const configs = [good('warm-a'), good('warm-b'), bad, good('warm-c'), good('warm-d')]

  it('warms every good config around a bad one in the middle, reporting it by index; progress counts 1..total', async () => {
    const seen: WarmProgress[] = []
    const result = await cache.warm(configs as never, { concurrency: 2, onProgress: (p) => seen.push(p) })
    expect(result.total).toBe(5)
    expect(result.generated).toBe(4)
    expect(result.hits).toBe(0)
    expect(result.failed).toHaveLength(1)
    expect(result.failed[0]).toMatchObject({ index: 2, code: 'E_CONFIG' })
    expect(result.failed[0].message).toContain('numScenarios')
    expect(result.durationMs).toBeGreaterThan(0)

    expect(seen.map((p) => p.done)).toStrictEqual([1, 2, 3, 4, 5])
    expect(seen.every((p) => p.total === 5)).toBe(true)
    expect(seen.map((p) => p.index).sort()).toStrictEqual([0, 1, 2, 3, 4])
    const failedCall = seen.find((p) => p.index === 2)!
    expect(failedCall.error?.code).toBe('E_CONFIG')
    expect(failedCall.source).toBeUndefined()
    for (const p of seen.filter((p) => p.index !== 2)) {
      expect(p.source).toBe('generated')
      expect(p.error).toBeUndefined()
    }

    const rows = await query<{ matrix_key: string }>(db.url, 'SELECT matrix_key FROM scenario_matrices')
    expect(rows.map((r) => r.matrix_key).sort()).toStrictEqual(
      [0, 1, 3, 4].map((i) => canonicalKey(configs[i] as never)).sort(),
    )
  })

  it('a second warm of the same configs finds every one cached', async () => {
    const sources: string[] = []
    const result = await cache.warm(configs as never, { onProgress: (p) => p.source && sources.push(p.source) })
    expect(result).toMatchObject({ total: 5, generated: 0, hits: 4 })
    expect(result.failed.map((f) => f.index)).toStrictEqual([2])
    expect(sources).toHaveLength(4)
    for (const s of sources) expect(['memory', 'postgres']).toContain(s)
  })

  it('with concurrency 1, configs go one at a time in order', async () => {
    const order: number[] = []
    const result = await cache.warm([good('warm-e'), good('warm-f'), good('warm-a')] as never, {
      concurrency: 1,
      onProgress: (p) => order.push(p.index),
    })
    expect(order).toStrictEqual([0, 1, 2])
    expect(result).toMatchObject({ total: 3, generated: 2, hits: 1, failed: [] })
  })

  it('an onProgress that throws neither stops warming nor changes the result: one process warning', async () => {
    const warnings: Error[] = []
    const onWarning = (w: Error) => warnings.push(w)
    process.on('warning', onWarning)
    try {
      let calls = 0
      const result = await cache.warm([good('warm-g'), good('warm-h'), good('warm-i')] as never, {
        onProgress: () => {
          calls++
          throw new Error('listener broke')
        },
      })
      expect(result).toMatchObject({ total: 3, generated: 3, hits: 0, failed: [] })
      expect(calls).toBe(3)
      await new Promise((r) => setImmediate(r))
      expect(warnings).toHaveLength(1)
      expect(warnings[0].message).toContain('listener broke')
    } finally {
      process.off('warning', onWarning)
    }
  })

  it('a config listed three times is generated once: the calls that joined that generation count as hits', async () => {
    const same = good('warm-same')
    const result = await cache.warm([same, same, same] as never, { concurrency: 3 })
    expect(result).toMatchObject({ total: 3, generated: 1, hits: 2, failed: [] })
    expect(cache.stats().generations).toBeGreaterThanOrEqual(1)
    const rows = await query<{ n: string }>(db.url, 'SELECT count(*) AS n FROM scenario_matrices WHERE matrix_key = $1', [canonicalKey(same as never)])
    expect(Number(rows[0].n)).toBe(1)
  })

  it('an empty list resolves at once', async () => {
    expect(await cache.warm([])).toMatchObject({ total: 0, generated: 0, hits: 0, failed: [] })
  })

  it('rejects (never throws) with E_INVALID_ARGUMENT for a concurrency that is not an integer of at least 1, and other wrong arguments', async () => {
    for (const concurrency of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '2', null]) {
      const e = await rejection(() => cache.warm([good('warm-a')] as never, { concurrency } as never))
      expect(e.code, String(concurrency)).toBe('E_INVALID_ARGUMENT')
      expect(e.message).toContain('concurrency: expected an integer of at least 1')
    }
    expect((await rejection(() => cache.warm(good('warm-a') as never))).message).toContain('configs: expected an array')
    expect((await rejection(() => cache.warm([], { onProgress: 'yes' } as never))).message).toContain('onProgress: expected a function')
    expect((await rejection(() => cache.warm([], { concurency: 2 } as never))).message).toContain('concurency: not a warm option')
  })

  it('configs that are all bad fail without rejecting', async () => {
    const result = await cache.warm([bad, { nonsense: true }] as never)
    expect(result.failed.map((f) => [f.index, f.code])).toStrictEqual([
      [0, 'E_CONFIG'],
      [1, 'E_CONFIG'],
    ])
  })
})

describe('warm with a stand-in ensure', () => {
  /** An `ensure` that resolves after a tick and records the most calls in flight at once. */
  function standIn() {
    const state = { inFlight: 0, most: 0 }
    const self = {
      ensure: async (c: { fail?: unknown }) => {
        state.inFlight++
        state.most = Math.max(state.most, state.inFlight)
        await new Promise((r) => setTimeout(r, 2))
        state.inFlight--
        if (c.fail) throw c.fail
        return { key: 'k', source: 'postgres' }
      },
    }
    return { self, state }
  }

  it('keeps at most `concurrency` calls in flight, and the number of cores by default', async () => {
    const configs = Array.from({ length: 40 }, () => ({}))
    for (const concurrency of [1, 3]) {
      const { self, state } = standIn()
      await warm.call(self, configs, { concurrency })
      expect(state.most).toBe(concurrency)
    }
    const { self, state } = standIn()
    await warm.call(self, configs)
    expect(state.most).toBe(Math.min(40, availableParallelism()))
  })

  it('an uncoded rejection is reported as E_INTERNAL with its message', async () => {
    const { self } = standIn()
    const result = await warm.call(self, [{}, { fail: new Error('boom') }, { fail: 'plain string' }])
    expect(result.hits).toBe(1)
    expect(result.failed).toStrictEqual([
      { index: 1, code: 'E_INTERNAL', message: 'boom' },
      { index: 2, code: 'E_INTERNAL', message: 'plain string' },
    ])
  })
})
