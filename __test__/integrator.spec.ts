// What an engineer integrating the package meets first: option mistakes and
// wrong argument types reject with a coded error (never a synchronous throw,
// never an uncoded napi conversion error), and stats that add up.
import { execFileSync } from 'node:child_process'
import { getEventListeners } from 'node:events'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, posix } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import {
  canonicalKey,
  compressMatrix,
  decompressMatrix,
  generateScenarios,
  ScenarioMatrixCache,
  validateScenarioConfig,
} from '../lib/index.js'
import { config, REDIS_URL } from './helpers/services'
import { rejection } from './helpers/rejection'

let dir: string
const sqlite = (name: string) => `sqlite://${join(dir, name)}`

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'smc-integrator-'))
})
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe('open() options', () => {
  it('rejects a misspelt option, naming the one meant', async () => {
    const e = await rejection(() => ScenarioMatrixCache.open({ databaseUrl: sqlite('a.db'), redisPrefix: 'x:' } as never))
    expect(e.code).toBe('E_INVALID_ARGUMENT')
    expect(e.message).toContain('redisPrefix: not an option (did you mean redisKeyPrefix?)')
  })

  it('rejects wrong types and out-of-range values with a coded error naming the option and the range', async () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ redisTimeoutMs: '500' }, 'redisTimeoutMs: expected an integer from 1 to 600000, got "500" (string)'],
      [{ redisTtlSeconds: 0 }, 'redisTtlSeconds: expected an integer from 1 to 4294967295, got 0'],
      [{ memoryMaxBytes: -1 }, 'memoryMaxBytes: expected an integer from 0'],
      [{ runMigrations: 'yes' }, 'runMigrations: expected true or false'],
      [{ redisMinThroughputMbps: Number.NaN }, 'redisMinThroughputMbps: expected a finite number above 0, got NaN'],
      [{ redisClusterNodes: 'redis://a:1,redis://b:2' }, 'redisClusterNodes: expected an array of strings'],
      [{ redisClusterNodes: ['127.0.0.1:7000'] }, 'redisClusterNodes: each seed node is a redis:// or rediss:// URL'],
    ]
    for (const [options, message] of cases) {
      const e = await rejection(() => ScenarioMatrixCache.open({ databaseUrl: sqlite('b.db'), ...options } as never))
      expect(e.code, JSON.stringify(options)).toBe('E_INVALID_ARGUMENT')
      expect(e.message).toContain(message)
    }
    const e = await rejection(() => ScenarioMatrixCache.open('sqlite://x' as never))
    expect(e.message).toContain('options must be an object')
  })

  it('takes undefined members as absent and opens with correct options', async () => {
    const cache = await ScenarioMatrixCache.open({ databaseUrl: sqlite('c.db'), redisUrl: '', redisKeyPrefix: undefined, memoryMaxBytes: 1 << 20 })
    expect(cache.stats().memoryTier?.maxBytes).toBe(1 << 20)
    await cache.close()
  })
})

describe('arguments of the wrong type reject with E_INVALID_ARGUMENT', () => {
  let cache: ScenarioMatrixCache
  beforeAll(async () => {
    cache = await ScenarioMatrixCache.open({ databaseUrl: sqlite('args.db'), redisUrl: '' })
  })
  afterAll(() => cache.close())

  it('on the cache', async () => {
    for (const call of [
      () => cache.invalidate(123 as never),
      () => cache.get({ key: 'x' } as never),
      () => cache.invalidateFund(undefined as never),
      () => cache.invalidateFund('fund', 7 as never),
    ]) {
      const e = await rejection(call)
      expect(e.code).toBe('E_INVALID_ARGUMENT')
      expect(e.message).toMatch(/must be a string, got/)
    }
  })

  it('on the codec functions', async () => {
    const e1 = await rejection(() => compressMatrix([1, 2] as never, 1, 2))
    expect(e1.code).toBe('E_INVALID_ARGUMENT')
    expect(e1.message).toContain('matrix (a Float32Array)')
    const e2 = await rejection(() => compressMatrix(new Float32Array(2), '1' as never, 2))
    expect(e2.code).toBe('E_INVALID_ARGUMENT')
    expect(e2.message).toContain('numScenarios must be an integer')
    const e3 = await rejection(() => decompressMatrix({ data: 'abc', numScenarios: 1, numBuckets: 1 } as never))
    expect(e3.code).toBe('E_INVALID_ARGUMENT')
    expect(e3.message).toContain('compressed matrix')
    // The right types still work.
    const m = new Float32Array([1, 2, 3, 4])
    const c = await compressMatrix(m, 2, 2)
    expect(Array.from(await decompressMatrix(c))).toEqual([1, 2, 3, 4])
  })

  it('an argument whose getter throws still rejects with a coded error', async () => {
    const hostile = {
      get fundId(): string {
        throw new Error('a getter that throws')
      },
    }
    for (const call of [
      () => cache.getOrGenerate(hostile as never),
      () => cache.getMatrix(hostile as never),
      () => generateScenarios(hostile as never),
      () => ScenarioMatrixCache.open({ get databaseUrl(): string { throw new Error('x') } } as never),
    ]) {
      const e = await rejection(call)
      expect(e.code).toBe('E_INVALID_ARGUMENT')
      expect(e.message).toContain('could not read')
    }
    expect(() => canonicalKey(hostile as never)).toThrow(expect.objectContaining({ code: 'E_INVALID_ARGUMENT' }))
  })

  it('reports NaN and Infinity in a config as given, not as null', () => {
    const bad = config('nan', 100)
    bad.buckets[0].moicCalibration.median = Number.NaN
    bad.buckets[1].moicCalibration.p90 = Number.POSITIVE_INFINITY
    try {
      validateScenarioConfig(bad)
      throw new Error('accepted')
    } catch (e) {
      const issues = (e as { issues: Array<{ given: string }> }).issues
      const given = issues.map((i) => i.given)
      expect(given).toContain('NaN')
      expect(given).toContain('Infinity')
      expect(given).not.toContain('null')
    }
  })
})

describe('stats', () => {
  it('count every call once by outcome, and hitRate is the share a tier answered', async () => {
    const cache = await ScenarioMatrixCache.open({ databaseUrl: sqlite('stats.db'), redisUrl: '' })
    // Large enough that the generation is still running when the other three calls join it.
    const c = config('stats-outcomes', 50_000)
    const all = await Promise.all([1, 2, 3, 4].map(() => cache.getOrGenerate(c)))
    expect(all.map((r) => r.metadata.source)).toEqual(['generated', 'generated', 'generated', 'generated'])
    await cache.getOrGenerate(c) // memory
    for (let i = 0; i < 3; i++) expect(await cache.get('0'.repeat(64))).toBeNull() // notFound
    await rejection(() => cache.getOrGenerate({ ...c, numScenarios: -1 })) // failed (bad config)
    await rejection(() => cache.get('not a key')) // failed
    const s = cache.stats()
    expect(s.generations).toBe(1)
    expect(s.latency.generated.count).toBe(1)
    expect(s.latency.joined.count).toBe(3)
    expect(s.latency.memory.count).toBe(1)
    expect(s.latency.notFound.count).toBe(3)
    expect(s.latency.failed.count).toBe(2)
    expect(s.calls).toBe(10)
    const counted = Object.values(s.latency).reduce((n, l) => n + l.count, 0)
    expect(counted).toBe(s.calls)
    expect(s.hitRate).toBeCloseTo(1 / 10)
    // As the caller waits: every answered call, by the source its result names.
    expect(s.latencyToCaller.generated.count).toBe(4)
    expect(s.latencyToCaller.memory.count).toBe(1)
    expect(s.latencyToCaller.memory.p50Ms).toBeGreaterThan(0)
    // The memory tier's occupancy is read after its pending maintenance.
    expect(s.memoryTier?.entries).toBe(1)
    expect(s.memoryTier?.bytes).toBeGreaterThan(0)
    await cache.close()
  })
})

describe('deadlines and cancellation', () => {
  let cache: ScenarioMatrixCache
  beforeAll(async () => {
    cache = await ScenarioMatrixCache.open({ databaseUrl: sqlite('deadlines.db'), redisUrl: '' })
  })
  afterAll(() => cache.close())

  it('timeoutMs rejects with E_TIMEOUT, and the generation goes on and is stored', async () => {
    const c = config('deadline-timeout', 100_000)
    const started = performance.now()
    const e = await rejection(() => cache.getOrGenerate(c, { timeoutMs: 1 }))
    expect(e.code).toBe('E_TIMEOUT')
    expect(performance.now() - started).toBeLessThan(200)
    const again = await cache.getOrGenerate(c)
    expect(['generated', 'memory']).toContain(again.metadata.source)
    expect(cache.stats().generations).toBe(1)
  })

  it('an aborted signal rejects at once with E_ABORTED, its reason as the cause', async () => {
    const c = config('deadline-abort', 100_000)
    const controller = new AbortController()
    const call = rejection(() => cache.getMatrix(c, { signal: controller.signal }))
    const reason = new Error('client went away')
    const abortedAt = performance.now()
    controller.abort(reason)
    const e = await call
    expect(e.code).toBe('E_ABORTED')
    expect((e as Error & { cause?: unknown }).cause).toBe(reason)
    expect(performance.now() - abortedAt).toBeLessThan(50)
    // Already aborted: rejected before any work.
    const late = await rejection(() => cache.get('0'.repeat(64), { signal: controller.signal }))
    expect(late.code).toBe('E_ABORTED')
  })

  it('leaves no listener on the signal once a call settles', async () => {
    const controller = new AbortController()
    const c = config('deadline-listener', 1_000)
    await cache.getOrGenerate(c, { signal: controller.signal, timeoutMs: 60_000 })
    await cache.getOrGenerate(c, { signal: controller.signal })
    expect(await cache.get('0'.repeat(64), { signal: controller.signal })).toBeNull()
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0)
  })

  it('rejects call options it does not know or cannot use', async () => {
    const c = config('deadline-options', 100)
    for (const [options, message] of [
      [{ timeoutMs: 0 }, 'timeoutMs: expected a number above 0'],
      [{ timeoutMs: '5' }, 'timeoutMs: expected a number above 0'],
      [{ signal: {} }, 'signal: expected an AbortSignal'],
      [{ deadline: 5 }, 'deadline: not a call option'],
    ] as const) {
      const e = await rejection(() => cache.getOrGenerate(c, options as never))
      expect(e.code).toBe('E_INVALID_ARGUMENT')
      expect(e.message).toContain(message)
    }
  })
})

describe('ping', () => {
  it('reports each store, and Redis down as not ok without failing', async () => {
    const up = await ScenarioMatrixCache.open({ databaseUrl: sqlite('ping.db'), redisUrl: REDIS_URL, redisKeyPrefix: 'smc-ping:' })
    const h = await up.ping()
    expect(h.durable.ok).toBe(true)
    expect(h.durable.latencyMs).toBeGreaterThan(0)
    expect(h.redis?.ok).toBe(true)
    await up.close()

    // Nothing listens on port 1.
    const down = await ScenarioMatrixCache.open({ databaseUrl: sqlite('ping.db'), redisUrl: 'redis://:s3cret@127.0.0.1:1' })
    const d = await down.ping()
    expect(d.durable.ok).toBe(true)
    expect(d.redis?.ok).toBe(false)
    expect(d.redis?.error).toBeTruthy()
    await down.close()

    const none = await ScenarioMatrixCache.open({ databaseUrl: sqlite('ping.db'), redisUrl: '' })
    expect((await none.ping()).redis).toBeUndefined()
    await none.close()
    await expect(none.ping()).rejects.toMatchObject({ code: 'E_CLOSED' })
  })
})

describe('onEvent', () => {
  it('hears the breaker open and slow calls, and survives a throwing listener', async () => {
    const events: Array<{ kind: string; tier?: string; key?: string; ms?: number; message?: string }> = []
    const warnings: string[] = []
    const onWarning = (w: Error) => warnings.push(w.message)
    process.on('warning', onWarning)
    const cache = await ScenarioMatrixCache.open({
      databaseUrl: sqlite('events.db'),
      // Nothing listens on port 1: the breaker opens at open().
      redisUrl: 'redis://:s3cret@127.0.0.1:1',
      slowCallMs: 1,
      onEvent: (e) => {
        events.push(e)
        if (e.kind === 'slowCall') throw new Error('a listener bug')
      },
    })
    const c = config('events', 20_000)
    await cache.getOrGenerate(c)
    // Events arrive on the JS thread shortly after.
    for (let i = 0; i < 50 && !events.some((e) => e.kind === 'slowCall'); i++) await new Promise((r) => setTimeout(r, 10))
    await new Promise((r) => setImmediate(r))
    process.off('warning', onWarning)
    const opened = events.find((e) => e.kind === 'breakerOpened')
    expect(opened?.tier).toBe('redis')
    expect(opened?.message).toBeTruthy()
    const slow = events.find((e) => e.kind === 'slowCall')
    expect(slow?.key).toBe(canonicalKey(c))
    expect(slow?.message).toBe('generated')
    expect(slow?.ms).toBeGreaterThanOrEqual(1)
    expect(warnings.some((w) => w.includes('a listener bug'))).toBe(true)
    await cache.close()
  })

  it('must be a function', async () => {
    const e = await rejection(() => ScenarioMatrixCache.open({ databaseUrl: sqlite('events.db'), onEvent: 'log' } as never))
    expect(e.message).toContain('onEvent: expected a function')
  })
})

describe('package', () => {
  it('publishes every file its entry loads', () => {
    const root = join(__dirname, '..')
    const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' })
    const files: string[] = JSON.parse(out)[0].files.map((f: { path: string }) => f.path)
    for (const f of ['lib/index.js', 'lib/index.d.ts', 'index.js', 'index.d.ts']) expect(files).toContain(f)
    expect(files.some((f) => f.endsWith('.node'))).toBe(true)
    const entry = files.filter((f) => f.startsWith('lib/') && f.endsWith('.js'))
    let required = 0
    for (const js of entry) {
      const source = readFileSync(join(root, js), 'utf8')
      for (const m of source.matchAll(/require\('(\.{1,2}\/[^']+)'\)/g)) {
        expect(files, `${js} requires ${m[1]}`).toContain(posix.join(posix.dirname(js), m[1]))
        required++
      }
    }
    expect(required).toBeGreaterThanOrEqual(2)
  })
})

describe('URLs and the messages about them', () => {
  it('names a missing PostgreSQL database and says how to create it', async () => {
    const name = `smc_missing_${process.pid}_${Date.now()}`
    const e = await rejection(() => ScenarioMatrixCache.open({ databaseUrl: `postgres://postgres:s3cret@127.0.0.1:5432/${name}`, redisUrl: '' }))
    expect(e.code).toBe('E_DURABLE_UNAVAILABLE')
    expect(e.message).toContain(`database "${name}" does not exist on 127.0.0.1:5432`)
    expect(e.message).toContain(`createdb -h 127.0.0.1 -p 5432 -U postgres '${name}'`)
    expect(e.message).not.toContain('s3cret')
  })

  it('refuses what it would misread, and never echoes a password', async () => {
    for (const [databaseUrl, message] of [
      ['postgres:/u:s3cret@127.0.0.1:5432/db', 'not a supported URL'],
      [':memory:', 'in-memory SQLite is not supported'],
      ['sqlite::memory:', 'in-memory SQLite is not supported'],
      [`sqlite://${join(dir, 'ro.db')}?mode=ro`, 'SQLite URL parameters are not supported (mode=ro)'],
      ['postgres://app:s3/cr?t@127.0.0.1:5432/db', 'invalid PostgreSQL URL'],
    ]) {
      const e = await rejection(() => ScenarioMatrixCache.open({ databaseUrl, redisUrl: '' }))
      expect(e.code, databaseUrl).toBe('E_INVALID_ARGUMENT')
      expect(e.message).toContain(message)
      expect(e.message).not.toMatch(/s3cret|s3\/cr\?t/)
    }
  })
})
