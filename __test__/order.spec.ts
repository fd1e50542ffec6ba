// One key, one matrix, seen from JavaScript: a bucket's column and recycling
// multiple are the same whatever the caller's bucket order and whichever tier
// answers; the key matches the TypeScript app's when `mode` is left out.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { canonicalKey, decompressMatrix, generateScenarios, ScenarioMatrixCache, validateScenarioConfig } from '../lib/index.js'
import { createDatabase, dropRedisPrefix, REDIS_URL, redisClient, uniqueName } from './helpers/services'
import { recyclingConfigs, typescriptKey } from './helpers/ts-key.mjs'

const BUCKETS = [
  { name: 'Zeta', capitalAllocation: 10, moicCalibration: { median: 10, p90: 20 } },
  { name: 'Alpha', capitalAllocation: 20, moicCalibration: { median: 1, p90: 2 } },
  { name: 'Série B', capitalAllocation: 15, moicCalibration: { median: 3, p90: 9 } },
  { name: 'angel', capitalAllocation: 25, moicCalibration: { median: 0.5, p90: 2 } },
  { name: 'Growth', capitalAllocation: 20, moicCalibration: { median: 2, p90: 2 } },
  { name: 'Buyout', capitalAllocation: 10, moicCalibration: { median: 1.5, p90: 4.5 } },
]
const ORDERS = [
  [0, 1, 2, 3, 4, 5],
  [5, 4, 3, 2, 1, 0],
  [1, 5, 4, 0, 2, 3],
]

function six(order: number[], fundId: string, numScenarios = 3_000) {
  return {
    fundId,
    taxonomyVersion: 'v1.2',
    numScenarios,
    buckets: order.map((i) => BUCKETS[i]),
    correlationWeights: { macro: 0.4, systematic: 0.3, idiosyncratic: 0.3 },
    recycling: { enabled: true, reinvestmentRate: 0.6, avgHoldingPeriod: 3, fundLifetime: 10 },
  }
}

type ByName = Record<string, { column: number[]; multiple: number }>

function byName(config: { buckets: { name: string }[] }, matrix: Float32Array, metadata: any): ByName {
  const nb = config.buckets.length
  expect(metadata.bucketNames).toEqual(config.buckets.map((b) => b.name))
  const out: ByName = {}
  config.buckets.forEach((b, j) => {
    const column: number[] = []
    for (let r = j; r < matrix.length; r += nb) column.push(matrix[r])
    out[b.name] = { column, multiple: metadata.recyclingMultiples[j] }
  })
  return out
}

describe('bucket order', () => {
  let db: Awaited<ReturnType<typeof createDatabase>>
  let prefix: string
  const caches: ScenarioMatrixCache[] = []
  const open = async (opts: Record<string, unknown> = {}) => {
    const c = await ScenarioMatrixCache.open({ databaseUrl: db.url, redisUrl: REDIS_URL, redisKeyPrefix: prefix, ...opts })
    caches.push(c)
    return c
  }

  beforeAll(async () => {
    db = await createDatabase()
    prefix = `${uniqueName('smc_order')}:`
  })
  afterAll(async () => {
    for (const c of caches) await c.close()
    await db?.drop()
    await dropRedisPrefix(prefix)
  })

  it('generateScenarios gives each bucket its column in the caller\'s order', async () => {
    const results = await Promise.all(ORDERS.map((o) => generateScenarios(six(o, 'gen-order'))))
    const views = await Promise.all(
      results.map(async (r, i) => byName(six(ORDERS[i], 'gen-order'), await decompressMatrix(r.compressed), r.metadata)),
    )
    for (const v of views.slice(1)) expect(v).toEqual(views[0])
    // The issue's example: Zeta (median 10) keeps its large values wherever listed.
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
    expect(mean(views[0].Zeta.column)).toBeGreaterThan(8)
    expect(mean(views[0].Alpha.column)).toBeLessThan(3)
  })

  it('getOrGenerate and getMatrix agree by bucket from every tier', async () => {
    const fund = 'tier-order'
    const reference = byName(
      six(ORDERS[0], fund),
      await decompressMatrix((await generateScenarios(six(ORDERS[0], fund))).compressed),
      (await generateScenarios(six(ORDERS[0], fund))).metadata,
    )
    const check = async (cache: ScenarioMatrixCache, order: number[], source: string) => {
      const c = six(order, fund)
      const m = await cache.getMatrix(c)
      expect(m.metadata.source).toBe(source)
      expect(byName(c, m.matrix, m.metadata)).toEqual(reference)
      const r = await cache.getOrGenerate(c)
      expect(byName(c, await decompressMatrix(r.compressed), r.metadata)).toEqual(reference)
    }
    const a = await open()
    await check(a, ORDERS[2], 'generated')
    await a.flush()
    for (const o of ORDERS) await check(a, o, 'memory')
    const b = await open({ memoryMaxBytes: 0 })
    for (const o of ORDERS) await check(b, o, 'redis')
    const c = await open({ memoryMaxBytes: 0, redisUrl: '' })
    for (const o of ORDERS) await check(c, o, 'postgres')
    // A lookup by key answers in the key's order, and names it.
    const byKey = await c.get(canonicalKey(six(ORDERS[1], fund)))
    expect(byKey?.metadata.bucketNames).toEqual(['Alpha', 'angel', 'Buyout', 'Growth', 'Série B', 'Zeta'])
  })

  it('configs that share a key get the same bytes', async () => {
    const base = six(ORDERS[0], 'rounding')
    const noisy = structuredClone(base)
    noisy.recycling.avgHoldingPeriod = 3.000001
    noisy.buckets[1] = { ...noisy.buckets[1], moicCalibration: { median: 1.000004, p90: 2 } }
    expect(canonicalKey(noisy)).toBe(canonicalKey(base))
    const [x, y] = await Promise.all([generateScenarios(base), generateScenarios(noisy)])
    expect(Buffer.compare(x.compressed.data, y.compressed.data)).toBe(0)
    expect(y.metadata.recyclingMultiples).toEqual(x.metadata.recyclingMultiples)
  })
})

describe('key compatibility', () => {
  it('matches the TypeScript key with and without a recycling mode', () => {
    const configs = recyclingConfigs(40, 11)
    expect(configs.some((c: any) => c.recycling.mode === undefined)).toBe(true)
    for (const c of configs) expect(canonicalKey(c)).toBe(typescriptKey(c))
  })
})

describe('strings both stores accept', () => {
  it('refuses U+0000 in fundId and bucket names', () => {
    const c = six(ORDERS[0], 'nul\u0000fund') as any
    c.buckets = c.buckets.map((b: any, i: number) => (i === 0 ? { ...b, name: 'Ze\u0000ta' } : b))
    try {
      validateScenarioConfig(c)
      expect.unreachable()
    } catch (e: any) {
      expect(e.code).toBe('E_CONFIG')
      expect(e.issues.map((i: any) => i.path)).toEqual(expect.arrayContaining(['fundId', 'buckets[0].name']))
    }
  })
})

describe('legacy metadata', () => {
  it('reports what a legacy copy never recorded as null', async () => {
    const db = await createDatabase()
    const prefix = `${uniqueName('smc_legacy_js')}:`
    const redis = await redisClient()
    const cache = await ScenarioMatrixCache.open({ databaseUrl: db.url, redisUrl: REDIS_URL, redisKeyPrefix: prefix })
    try {
      const c = {
        fundId: 'legacy-js',
        taxonomyVersion: 'v1.2',
        numScenarios: 4,
        buckets: [{ name: 'Growth', capitalAllocation: 100, moicCalibration: { median: 2, p90: 3 } }],
        correlationWeights: { macro: 0.5, systematic: 0.25, idiosyncratic: 0.25 },
        recycling: { enabled: false },
      }
      const { deflateSync } = await import('node:zlib')
      const raw = Buffer.from(new Float32Array([1, 2, 3, 4]).buffer)
      const data = deflateSync(raw)
      const key = canonicalKey(c)
      await redis.set(
        `${prefix}${key}`,
        JSON.stringify({ data: data.toString('base64'), numScenarios: 4, numBuckets: 1, version: 1, uncompressedSize: 16, compressedSize: data.length }),
      )
      const r = await cache.getMatrix(c)
      expect(r.metadata.source).toBe('redis')
      expect(Array.from(r.matrix)).toEqual([1, 2, 3, 4])
      expect(r.metadata.generatedAt).toBeNull()
      expect(r.metadata.durationMs).toBeNull()
      expect(r.metadata.recyclingMultiples).toEqual([1])
    } finally {
      await cache.close()
      await redis.quit()
      await db.drop()
      await dropRedisPrefix(prefix)
    }
  })
})
