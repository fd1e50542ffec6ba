// portfolioStats against an independent JavaScript computation of the same
// definitions (bench/portfolio-baseline.js) on the matrix getMatrix returns,
// through real PostgreSQL and Redis (a database and a Redis prefix of its own).
import { createRequire } from 'node:module'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { canonicalKey, isScenarioMatrixCacheError, ScenarioMatrixCache } from '../lib/index.js'
import type { PortfolioStats } from '../lib/index.js'
import { config, createDatabase, dropRedisPrefix, REDIS_URL, uniqueName } from './helpers/services'

const { portfolioStatsJs } = createRequire(import.meta.url)('../bench/portfolio-baseline.js')

let db: Awaited<ReturnType<typeof createDatabase>>
let cache: ScenarioMatrixCache
const prefix = `${uniqueName('smc_portfolio')}:`

beforeAll(async () => {
  db = await createDatabase()
  cache = await ScenarioMatrixCache.open({ databaseUrl: db.url, redisUrl: REDIS_URL, redisKeyPrefix: prefix })
})
afterAll(async () => {
  await cache?.close()
  await dropRedisPrefix(prefix)
  await db?.drop()
})

function near(got: number, want: number, what: string) {
  const tol = 1e-9 * (1 + Math.abs(want))
  expect(Math.abs(got - want), `${what}: ${got} vs ${want}`).toBeLessThanOrEqual(tol)
}

function compare(got: PortfolioStats, want: ReturnType<typeof portfolioStatsJs>) {
  expect(got.numScenarios).toBe(want.numScenarios)
  expect(Object.keys(got.weights)).toEqual(Object.keys(want.weights))
  for (const [k, v] of Object.entries(want.weights)) near(got.weights[k], v as number, `weights.${k}`)
  near(got.mean, want.mean, 'mean')
  near(got.stdDev, want.stdDev, 'stdDev')
  for (const [k, v] of Object.entries(want.percentiles)) near((got.percentiles as never)[k], v as number, k)
  expect(got.lossProbability).toBe(want.lossProbability)
  near(got.valueAtRisk, want.valueAtRisk, 'valueAtRisk')
  near(got.conditionalValueAtRisk, want.conditionalValueAtRisk, 'conditionalValueAtRisk')
  expect(got.buckets.map((b) => b.name)).toEqual(want.buckets.map((b: { name: string }) => b.name))
  got.buckets.forEach((b, i) => {
    const w = want.buckets[i]
    near(b.mean, w.mean, `${b.name} mean`)
    expect([b.p10, b.p50, b.p90], b.name).toEqual([w.p10, w.p50, w.p90])
    expect(b.winnerProbability, b.name).toBe(w.winnerProbability)
  })
  expect(got.histogram.counts).toEqual(want.histogram.counts)
  got.histogram.edges.forEach((e, i) => near(e, want.histogram.edges[i], `edge ${i}`))
  expect(got.histogram.counts.reduce((a, b) => a + b, 0)).toBe(got.numScenarios)
}

describe('portfolioStats', () => {
  it('with the defaults equals the definitions computed in JS on getMatrix', async () => {
    // 20,001 scenarios: the worst 5 % is 1000.05 of them, so CVaR counts a boundary scenario fractionally.
    const cfg = config(uniqueName('fund'), 20_001)
    const stats = await cache.portfolioStats(cfg)
    const { matrix, metadata } = await cache.getMatrix(cfg)
    const names = cfg.buckets.map((b) => b.name)
    const weights = Object.fromEntries(cfg.buckets.map((b) => [b.name, b.capitalAllocation]))
    compare(stats, portfolioStatsJs(matrix, names, { weights, confidence: 0.95, winnerMultiple: 10, histogramBins: 50 }))
    expect(stats.histogram.counts).toHaveLength(50)
    expect({ ...stats.metadata, source: 'x' }).toEqual({ ...metadata, source: 'x' })
    // The first call generated the matrix; the second found it.
    expect(cache.stats().generations).toBe(1)
  })

  it('takes weights by bucket name in a config listing buckets out of key order', async () => {
    const base = config(uniqueName('fund'), 4_999)
    const cfg = { ...base, buckets: [base.buckets[2], base.buckets[0], base.buckets[1]] }
    const options = { weights: { Seed: 1, 'Series B': 3 }, confidence: 0.9, winnerMultiple: 3, histogramBins: 17 }
    const stats = await cache.portfolioStats(cfg, options)
    expect(stats.weights).toEqual({ 'Series B': 0.75, Seed: 0.25, 'Series A': 0 })
    const { matrix } = await cache.getMatrix(cfg)
    compare(stats, portfolioStatsJs(matrix, cfg.buckets.map((b) => b.name), options))
    // The same portfolio through the key-ordered config: the same columns, so the same bucket figures.
    const again = await cache.portfolioStats(base, options)
    expect(again.buckets.map((b) => b.name)).toEqual(['Seed', 'Series A', 'Series B'])
    expect(again.buckets[0]).toEqual(stats.buckets[1])
    near(again.conditionalValueAtRisk, stats.conditionalValueAtRisk, 'CVaR in either order')
  })

  it('keeps buckets named like Object.prototype members in its weights', async () => {
    const base = config(uniqueName('fund'), 1_000)
    const names = ['__proto__', 'constructor', 'Series B']
    const cfg = { ...base, buckets: base.buckets.map((b, i) => ({ ...b, name: names[i] })) }
    // JSON.parse makes "__proto__" an own key, as a server reading a request body would.
    const options = { weights: JSON.parse('{"__proto__": 3, "constructor": 1}') }
    const stats = await cache.portfolioStats(cfg, options)
    expect(Object.keys(stats.weights)).toEqual(names)
    expect(Object.getPrototypeOf(stats.weights)).toBe(Object.prototype)
    expect(Object.getOwnPropertyDescriptor(stats.weights, '__proto__')?.value).toBe(0.75)
    expect(stats.weights.constructor).toBe(0.25)
    expect(stats.weights['Series B']).toBe(0)
    const { matrix } = await cache.getMatrix(cfg)
    compare(stats, portfolioStatsJs(matrix, names, { ...options, confidence: 0.95, winnerMultiple: 10, histogramBins: 50 }))
  })

  it('rejects bad options with E_INVALID_ARGUMENT naming the field, and a bad config with E_CONFIG', async () => {
    const cfg = config(uniqueName('fund'), 100)
    const cases: Array<[unknown, string]> = [
      [{ weights: { Nope: 1 } }, 'weights.Nope: the config has no bucket named "Nope"'],
      [{ weights: { Seed: -1 } }, 'weights.Seed: expected a finite number of at least 0, got -1'],
      [{ weights: { Seed: 0, 'Series A': 0 } }, 'weights: the weights sum to 0'],
      [{ weights: { Seed: '1' } }, 'weights.Seed'],
      [{ confidence: 1 }, 'confidence: expected a number strictly between 0 and 1, got 1'],
      [{ confidence: 0 }, 'confidence'],
      [{ confidence: Number.NaN }, 'confidence'],
      [{ histogramBins: 0 }, 'histogramBins: expected an integer from 1'],
      [{ winnerMultiple: Infinity }, 'winnerMultiple'],
      [{ bins: 3 }, 'bins: not an option of portfolioStats'],
      ['0.95', 'options must be an object'],
    ]
    for (const [options, message] of cases) {
      let err: unknown
      await cache.portfolioStats(cfg, options as never).then(
        () => expect.fail(`resolved for ${JSON.stringify(options)}`),
        (e) => (err = e),
      )
      expect(isScenarioMatrixCacheError(err)).toBe(true)
      expect((err as { code: string }).code, JSON.stringify(options)).toBe('E_INVALID_ARGUMENT')
      expect((err as Error).message).toContain(message)
    }
    const bad = await cache.portfolioStats({ ...cfg, numScenarios: 0 }).catch((e) => e)
    expect(bad.code).toBe('E_CONFIG')
    // Nothing was generated for the refused calls.
    expect(await cache.get(canonicalKey(cfg))).toBeNull()
  })
})
