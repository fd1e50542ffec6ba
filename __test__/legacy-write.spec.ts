// The transition mode (`writeLegacyFormat`) seen from JavaScript. What it writes is
// read the way the TypeScript implementation reads it (node-redis GET, JSON.parse,
// base64, zlib.inflateSync, Float32Array; the PostgreSQL row inflated, its scenario
// count from `scenario_states`), and what that implementation writes is read by this
// package in both modes, never with a column under another bucket's name.
import { deflateSync, inflateSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { canonicalKey, ScenarioMatrixCache } from '../lib/index.js'
import { runCli } from './helpers/cli'
import { createDatabase, dropRedisPrefix, query, redisClient, REDIS_URL, uniqueName } from './helpers/services'

const BUCKETS = [
  { name: 'Zeta', capitalAllocation: 10, moicCalibration: { median: 10, p90: 20 } },
  { name: 'Alpha', capitalAllocation: 20, moicCalibration: { median: 1, p90: 2 } },
  { name: 'Série B', capitalAllocation: 15, moicCalibration: { median: 3, p90: 9 } },
  { name: 'angel', capitalAllocation: 25, moicCalibration: { median: 0.5, p90: 2 } },
  { name: 'Growth', capitalAllocation: 20, moicCalibration: { median: 2, p90: 2 } },
  { name: 'Buyout', capitalAllocation: 10, moicCalibration: { median: 1.5, p90: 4.5 } },
]

/** Six buckets, listed in an order that is not the key's. */
function six(fundId: string, numScenarios = 2_000) {
  return {
    fundId,
    taxonomyVersion: 'v1.2',
    numScenarios,
    buckets: BUCKETS,
    correlationWeights: { macro: 0.4, systematic: 0.3, idiosyncratic: 0.3 },
    recycling: { enabled: true, mode: 'same-bucket' as const, reinvestmentRate: 0.6, avgHoldingPeriod: 3, fundLifetime: 10 },
  }
}

function floats(raw: Buffer): Float32Array {
  return new Float32Array(new Uint8Array(raw).buffer) // a copy: `raw` may sit at an odd offset
}

function column(m: Float32Array, cols: number, j: number): number[] {
  const out: number[] = []
  for (let i = j; i < m.length; i += cols) out.push(m[i])
  return out
}

describe('writeLegacyFormat', () => {
  let db: Awaited<ReturnType<typeof createDatabase>>
  let prefix: string
  let redis: Awaited<ReturnType<typeof redisClient>>
  const caches: ScenarioMatrixCache[] = []
  /** Memory off, so every call reads the shared tiers. */
  const open = async (writeLegacyFormat: boolean, withRedis = true) => {
    const c = await ScenarioMatrixCache.open({
      databaseUrl: db.url,
      redisUrl: withRedis ? REDIS_URL : '',
      redisKeyPrefix: prefix,
      memoryMaxBytes: 0,
      writeLegacyFormat,
    })
    caches.push(c)
    return c
  }

  /** The row as the TypeScript implementation reads it. */
  async function typescriptRow(key: string) {
    const [row] = await query<any>(
      db.url,
      'SELECT moic_matrix, scenario_states, bucket_params, compression_codec, payload_format FROM scenario_matrices WHERE matrix_key = $1',
      [key],
    )
    return {
      codec: row.compression_codec as string,
      payloadFormat: row.payload_format as number | null,
      numScenarios: row.scenario_states.scenarios?.length as number | undefined,
      names: (row.bucket_params as { name: string }[]).map((b) => b.name),
      matrix: () => floats(inflateSync(row.moic_matrix)),
    }
  }

  /** The Redis value as the TypeScript implementation reads it. */
  async function typescriptValue(key: string) {
    const text = await redis.get(`${prefix}${key}`)
    const parsed = JSON.parse(text!)
    const data = Buffer.from(parsed.data, 'base64')
    return { parsed, compressed: data, matrix: floats(inflateSync(data)) }
  }

  /** Writes a row and a Redis value as the TypeScript implementation does. */
  async function writeTheTypeScriptWay(config: ReturnType<typeof six>, matrix: Float32Array) {
    const key = canonicalKey(config)
    const data = deflateSync(Buffer.from(matrix.buffer))
    const states = { scenarios: Array.from({ length: config.numScenarios }, (_, id) => ({ id, params: {} })) }
    await query(
      db.url,
      `INSERT INTO scenario_matrices (matrix_key, fund_id, taxonomy_version, matrix_type, moic_matrix, scenario_states, bucket_params, compression_codec, matrix_layout, bucket_count, s_opt, status)
       VALUES ($1, $2, $3, 'moic', $4, $5, $6, 'zstd', 'row-major', $7, $8, 'complete') ON CONFLICT (matrix_key) DO NOTHING`,
      [key, config.fundId, config.taxonomyVersion, data, JSON.stringify(states), JSON.stringify(config.buckets), config.buckets.length,
        JSON.stringify({ correlationWeights: config.correlationWeights, recycling: config.recycling })],
    )
    const value = { data: data.toString('base64'), numScenarios: config.numScenarios, numBuckets: config.buckets.length, version: 1, uncompressedSize: matrix.byteLength, compressedSize: data.length }
    await redis.set(`${prefix}${key}`, JSON.stringify(value))
    return key
  }

  beforeAll(async () => {
    db = await createDatabase()
    prefix = `${uniqueName('smc_legacy_write')}:`
    redis = await redisClient()
  })
  afterAll(async () => {
    for (const c of caches) await c.close()
    await redis?.quit()
    await db?.drop()
    await dropRedisPrefix(prefix)
  })

  it('writes what the TypeScript implementation reads, and reads it back in both modes', async () => {
    const config = six('transition-js')
    const key = canonicalKey(config)
    const on = await open(true)
    const made = await on.getMatrix(config)
    expect(made.metadata.source).toBe('generated')
    await on.flush()

    const row = await typescriptRow(key)
    expect(row).toMatchObject({ codec: 'zstd', payloadFormat: 1, numScenarios: 2_000 })
    const stored = row.matrix()
    expect(stored.length).toBe(2_000 * 6)
    // Its columns follow bucket_params (the key's order), each the caller's column of that name.
    expect(row.names).not.toEqual(config.buckets.map((b) => b.name))
    row.names.forEach((name, j) => {
      const mine = config.buckets.findIndex((b) => b.name === name)
      expect(column(stored, 6, j), name).toEqual(column(made.matrix, 6, mine))
    })

    const value = await typescriptValue(key)
    expect(value.parsed).toMatchObject({ numScenarios: 2_000, numBuckets: 6, version: 1, uncompressedSize: 2_000 * 6 * 4, compressedSize: value.compressed.length })
    expect(value.matrix).toEqual(stored)

    // Another instance in the mode: a Redis hit, then a PostgreSQL hit; nothing generated.
    for (const [withRedis, source] of [[true, 'redis'], [false, 'postgres']] as const) {
      const reader = await open(true, withRedis)
      const r = await reader.getMatrix(config)
      expect(r.metadata.source).toBe(source)
      expect(r.matrix).toEqual(made.matrix)
      expect(r.metadata.recyclingMultiples).toEqual(made.metadata.recyclingMultiples)
      expect(r.metadata.generatedAt).toBe(made.metadata.generatedAt)
      expect(reader.stats().generations).toBe(0)
    }

    // The mode off: the same matrix from Redis, then the row, each rewritten in our format.
    const off = await open(false)
    const fromRedis = await off.getMatrix(config)
    expect(fromRedis.metadata.source).toBe('redis')
    expect(fromRedis.matrix).toEqual(made.matrix)
    await off.flush()
    expect((await redis.get(`${prefix}${key}`))?.startsWith('SMCR')).toBe(true) // our binary record
    const offDurable = await open(false, false)
    const fromRow = await offDurable.getMatrix(config)
    expect(fromRow.metadata.source).toBe('postgres')
    expect(fromRow.matrix).toEqual(made.matrix)
    await offDurable.flush()
    expect((await typescriptRow(key)).payloadFormat).toBe(2)
    expect(off.stats().generations + offDurable.stats().generations).toBe(0)
  })

  it('verify --repair rewrites what the mode wrote, once it is off', async () => {
    const config = six('transition-cli', 500)
    const key = canonicalKey(config)
    await (await open(true, false)).getOrGenerate(config)
    expect((await typescriptRow(key)).payloadFormat).toBe(1)
    const run = (...args: string[]) => runCli(['--database-url', db.url, '--redis-url', '', ...args])
    const found = JSON.parse((await run('verify', '--json')).stdout)
    expect(found.problems.filter((p: { status: string }) => p.status === 'legacy').map((p: { key: string }) => p.key)).toStrictEqual([key])
    const repair = await run('verify', '--repair', '--json')
    expect(repair.code, repair.stderr).toBe(0)
    expect(JSON.parse(repair.stdout).repaired).toStrictEqual({ rewritten: 1, regenerated: 0 })
    expect((await typescriptRow(key)).payloadFormat).toBe(2)
    expect(JSON.parse((await run('verify', '--json')).stdout)).toMatchObject({ legacy: 0 })
  })

  it('reads what the TypeScript implementation wrote, never with a column under another name', async () => {
    for (const writeLegacyFormat of [true, false]) {
      // Each column a constant of its own, in the caller's order: a column served
      // under another bucket's name, or served at all, would show.
      const config = six(`typescript-written-${writeLegacyFormat}`, 300)
      const theirs = new Float32Array(300 * 6).map((_, i) => 1000 + (i % 6))
      const key = await writeTheTypeScriptWay(config, theirs)
      const cache = await open(writeLegacyFormat)
      const r = await cache.getMatrix(config)
      expect(r.metadata.source).toBe('generated') // its column order is unknowable
      expect(r.matrix.some((v) => v >= 1000)).toBe(false)
      expect(cache.stats().legacyUnattributable).toBeGreaterThan(0)
      await cache.flush()
      const row = await typescriptRow(key)
      if (writeLegacyFormat) {
        // Replaced by a row and a value the TypeScript instances still read.
        expect(row.payloadFormat).toBe(1)
        expect(row.numScenarios).toBe(300)
        const stored = row.matrix()
        row.names.forEach((name, j) => {
          const mine = config.buckets.findIndex((b) => b.name === name)
          expect(column(stored, 6, j), name).toEqual(column(r.matrix, 6, mine))
        })
        expect((await typescriptValue(key)).matrix).toEqual(stored)
      } else {
        expect(row.payloadFormat).toBe(2)
      }
    }

    // One bucket has no order to get wrong: served as written, in both modes.
    const single = { ...six('typescript-single', 4), buckets: [{ name: 'Growth', capitalAllocation: 100, moicCalibration: { median: 2, p90: 3 } }] }
    let key = ''
    for (const writeLegacyFormat of [true, false]) {
      key = await writeTheTypeScriptWay(single as any, new Float32Array([1, 2, 3, 4]))
      const r = await (await open(writeLegacyFormat)).getMatrix(single)
      expect(r.metadata.source).toBe('postgres')
      expect(Array.from(r.matrix)).toEqual([1, 2, 3, 4])
    }
    expect((await typescriptRow(key)).payloadFormat).toBeNull()
  })

  it('is refused with SQLite', async () => {
    await expect(ScenarioMatrixCache.open({ databaseUrl: 'sqlite://./never-created.db', redisUrl: '', writeLegacyFormat: true })).rejects.toMatchObject({
      code: 'E_INVALID_ARGUMENT',
      message: expect.stringContaining('writeLegacyFormat'),
    })
  })
})
