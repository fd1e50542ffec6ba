import { afterEach, beforeEach, describe, expect, it } from 'vitest'

import { canonicalKey, ScenarioMatrixCache } from '../lib/index.js'
import { config, createDatabase, dropRedisPrefix, query, redisClient, REDIS_URL, uniqueName } from './helpers/services'

/** A database, Redis prefix and cache of one test's own, and their removal. */
async function isolatedServices() {
  const db = await createDatabase()
  const prefix = `${uniqueName('smc_vitest')}:`
  let cache: ScenarioMatrixCache | undefined
  let redis: Awaited<ReturnType<typeof redisClient>> | undefined
  const teardown = async () => {
    try {
      await cache?.close()
      await redis?.quit()
    } finally {
      await db.drop()
      await dropRedisPrefix(prefix)
    }
  }
  try {
    cache = await ScenarioMatrixCache.open({ databaseUrl: db.url, redisUrl: REDIS_URL, redisKeyPrefix: prefix })
    redis = await redisClient()
  } catch (e) {
    await teardown()
    throw e
  }
  return { db, prefix, cache, redis, teardown }
}

// Every test gets its own services, so each passes alone and in any order.
let db: Awaited<ReturnType<typeof createDatabase>>
let prefix: string
let cache: ScenarioMatrixCache
let redis: Awaited<ReturnType<typeof redisClient>>
let teardown: (() => Promise<void>) | undefined

const open = () => ScenarioMatrixCache.open({ databaseUrl: db.url, redisUrl: REDIS_URL, redisKeyPrefix: prefix })

beforeEach(async () => {
  ;({ db, prefix, cache, redis, teardown } = await isolatedServices())
})

afterEach(async () => {
  await teardown?.()
  teardown = undefined
})

describe('ScenarioMatrixCache', () => {
  it('generates on a miss, stores both tiers, then serves memory, Redis and PostgreSQL with the same metadata', async () => {
    const c = config('vitest-tiers', 5_000)
    const key = canonicalKey(c)
    const miss = await cache.getOrGenerate(c)
    expect(miss.metadata.source).toBe('generated')
    expect(miss.metadata.configHash).toBe(key)

    const [row] = await query<{ status: string; compression_codec: string }>(
      db.url,
      'SELECT status, compression_codec FROM scenario_matrices WHERE matrix_key = $1',
      [key],
    )
    expect(row).toEqual({ status: 'complete', compression_codec: 'zstd' })
    expect(key).toMatch(/^[0-9a-f]{64}$/)
    await cache.flush() // Redis is written in the background once PostgreSQL has the row
    const ttl = await redis.ttl(`${prefix}${key}`)
    expect(ttl).toBeGreaterThan(86_000)

    const mem = await cache.getOrGenerate(c)
    expect(mem.metadata.source).toBe('memory')
    const { source: _a, ...missMeta } = miss.metadata
    const { source: _b, ...memMeta } = mem.metadata
    expect(memMeta).toEqual(missMeta)

    const other = await open()
    const fromRedis = await other.getOrGenerate(c)
    expect(fromRedis.metadata.source).toBe('redis')
    expect(other.stats().durable).toEqual({ hits: 0, misses: 0, errors: 0, bytes: 0 })
    await redis.del(`${prefix}${key}`)
    const third = await open()
    const fromPg = await third.getOrGenerate(c)
    expect(fromPg.metadata.source).toBe('postgres')
    expect(Buffer.compare(fromPg.compressed.data, miss.compressed.data)).toBe(0)
    const { source: _c, ...pgMeta } = fromPg.metadata
    expect(pgMeta).toEqual(missMeta)
    await third.close() // waits for the background Redis rewrite
    expect(await redis.exists(`${prefix}${key}`)).toBe(1)
    await other.close()
  })

  it('hands each caller its own buffers', async () => {
    const c = config('vitest-ownership', 1_000)
    const a = await cache.getOrGenerate(c)
    const copy = Buffer.from(a.compressed.data)
    a.compressed.data.fill(0)
    const b = await cache.getOrGenerate(c)
    expect(b.metadata.source).toBe('memory')
    expect(Buffer.compare(b.compressed.data, copy)).toBe(0)

    const m1 = await cache.getMatrix(c)
    m1.matrix.fill(-1)
    const m2 = await cache.getMatrix(c)
    expect(m2.matrix.length).toBe(3_000)
    expect(m2.matrix.every((x) => x >= 0)).toBe(true)
  })

  it('hands each caller of a large memory hit a buffer of its own (a mapping of the sealed payload)', async () => {
    // Names in the key's order, so the stored payload is the caller's (the mapped case).
    const buckets = ['B0', 'B1', 'B2', 'B3', 'B4', 'B5'].map((name, i) => ({
      name,
      capitalAllocation: i === 0 ? 15 : 17,
      moicCalibration: { median: 1 + i / 4, p90: 3 + i },
    }))
    const c = config('vitest-sealed', 100_000, { buckets })
    const miss = await cache.getOrGenerate(c)
    expect(miss.compressed.data.length).toBeGreaterThan(1 << 20)
    const original = Buffer.from(miss.compressed.data)
    // The first hit seals the payload; it and the later ones are mappings of it.
    for (let round = 0; round < 3; round++) {
      const hit = await cache.getOrGenerate(c)
      expect(hit.metadata.source).toBe('memory')
      expect(Buffer.compare(hit.compressed.data, original)).toBe(0)
      hit.compressed.data.fill(round + 1)
    }
    const m = await cache.getMatrix(c)
    expect(m.metadata.source).toBe('memory')
    expect(m.matrix.length).toBe(600_000)
    expect(Buffer.compare((await cache.get(canonicalKey(c)))!.compressed.data, original)).toBe(0)
  })

  it('getMatrix returns the floats; get never generates; invalidate clears every tier', async () => {
    const c = config('vitest-matrix', 2_000)
    const key = canonicalKey(c)
    expect(await cache.get(key)).toBeNull()
    const r = await cache.getMatrix(c)
    expect(r).toMatchObject({ numScenarios: 2_000, numBuckets: 3 })
    expect(r.matrix).toBeInstanceOf(Float32Array)
    expect(r.metadata.source).toBe('generated')
    expect((await cache.get(key))?.metadata.source).toBe('memory')
    expect(await cache.invalidate(key)).toBe(true)
    expect(await cache.get(key)).toBeNull()
    expect(await cache.invalidateFund('vitest-matrix')).toBe(0)
    await expect(cache.get('nope')).rejects.toMatchObject({ code: 'E_INVALID_ARGUMENT' })
  })

  it('reports stats', async () => {
    const c = config('vitest-stats', 1_000)
    expect((await cache.getOrGenerate(c)).metadata.source).toBe('generated')
    expect((await cache.getOrGenerate(c)).metadata.source).toBe('memory')
    expect((await cache.get(canonicalKey(c)))?.metadata.source).toBe('memory')
    const s = cache.stats()
    expect(s.generations).toBe(1)
    expect(s.calls).toBe(3)
    expect(s.memory.hits).toBe(2)
    expect(s.hitRate).toBeCloseTo(2 / 3)
    expect(s.latency.memory.count).toBe(2)
    expect(s.latency.memory.p99Ms).toBeGreaterThan(0)
    expect(s.memoryTier?.maxBytes).toBe(128 * 1024 * 1024)
  })

  it('rejects bad input and calls after close with coded errors', async () => {
    await expect(cache.getOrGenerate({ ...config('x', 10), numScenarios: 1e9 })).rejects.toMatchObject({ code: 'E_CONFIG' })
    await expect(ScenarioMatrixCache.open({ databaseUrl: 'mysql://nope' })).rejects.toMatchObject({
      code: 'E_INVALID_ARGUMENT',
    })
    await expect(
      ScenarioMatrixCache.open({ databaseUrl: 'postgres://u:hunter2@127.0.0.1:1/x', databaseTimeoutMs: 500 }),
    ).rejects.toSatisfy((e: any) => e.code === 'E_DURABLE_UNAVAILABLE' && !e.message.includes('hunter2'))
    const c = await open()
    await c.close()
    await expect(c.getOrGenerate(config('closed', 10))).rejects.toMatchObject({ code: 'E_CLOSED' })
    await expect(c.get(canonicalKey(config('closed', 10)))).rejects.toMatchObject({ code: 'E_CLOSED' })
  })

  it('keeps serving when Redis is down', async () => {
    const c = await ScenarioMatrixCache.open({ databaseUrl: db.url, redisUrl: 'redis://127.0.0.1:1', redisBreakerCooldownMs: 60_000 })
    const cfg = config('vitest-redis-down', 500)
    expect((await c.getOrGenerate(cfg)).metadata.source).toBe('generated')
    expect((await c.getOrGenerate(cfg)).metadata.source).toBe('memory')
    // Unreachable at open: the circuit breaker opened, and calls skip Redis.
    const breaker = c.stats().redisBreaker
    expect(breaker?.open).toBe(true)
    expect(breaker?.openings).toBe(1)
    expect(breaker?.skipped).toBeGreaterThanOrEqual(2)
    await c.close()
  })
})
