// cache.metrics(): the Prometheus text exposition of stats(), parsed here line by line
// and compared with stats() after real calls against a private PostgreSQL database and
// Redis prefix.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { ScenarioMatrixCache } from '../lib/index.js'
import { config, createDatabase, dropRedisPrefix, REDIS_URL, uniqueName } from './helpers/services'

interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

/** The exposition format's lines: `# TYPE` per family, then `name{k="v",...} value`. */
function parse(text: string): { types: Map<string, string>; samples: Sample[] } {
  const types = new Map<string, string>()
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ')) continue
    const type = /^# TYPE (\S+) (counter|gauge|histogram)$/.exec(line)
    if (type) {
      types.set(type[1], type[2])
      continue
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m) throw new Error(`not an exposition line: ${JSON.stringify(line)}`)
    const labels: Record<string, string> = {}
    for (const pair of (m[2] ?? '').split(',').filter(Boolean)) {
      const kv = /^([a-zA-Z_][a-zA-Z0-9_]*)="([^"\\\n]*)"$/.exec(pair)
      if (!kv) throw new Error(`bad label ${pair} in ${line}`)
      labels[kv[1]] = kv[2]
    }
    const value = m[3] === '+Inf' ? Infinity : Number(m[3])
    expect(Number.isNaN(value), line).toBe(false)
    samples.push({ name: m[1], labels, value })
  }
  return { types, samples }
}

let db: Awaited<ReturnType<typeof createDatabase>>
let cache: ScenarioMatrixCache
const prefix = `${uniqueName('smc_metrics')}:`

beforeAll(async () => {
  db = await createDatabase()
  // A password in the URL (trust auth ignores it) must never reach the metrics.
  const url = db.url.replace('postgres@', 'postgres:hunter2secret@')
  cache = await ScenarioMatrixCache.open({ databaseUrl: url, redisUrl: REDIS_URL, redisKeyPrefix: prefix })
})

afterAll(async () => {
  await cache?.close()
  await db?.drop()
  await dropRedisPrefix(prefix)
})

describe('metrics', () => {
  it('exposes every counter of stats() under scenario_matrix_cache_, and the latency histogram by source', async () => {
    const cfg = config('metrics-fund', 2_000)
    await cache.getOrGenerate(cfg as never) // generated
    await cache.getOrGenerate(cfg as never) // memory
    await cache.getMatrix(cfg as never) // memory
    expect(await cache.get('0'.repeat(64))).toBeNull() // notFound
    await expect(cache.getOrGenerate({ ...cfg, numScenarios: -1 } as never)).rejects.toMatchObject({ code: 'E_CONFIG' })
    await cache.flush()

    const text = cache.metrics()
    const stats = cache.stats()
    const { types, samples } = parse(text)
    expect(text).not.toContain('hunter2secret')
    expect(text).not.toContain('postgres://')

    for (const s of samples) {
      expect(s.name.startsWith('scenario_matrix_cache_'), s.name).toBe(true)
      const family = s.name.replace(/_(bucket|sum|count)$/, '')
      const type = types.get(s.name) ?? types.get(family)
      expect(type, s.name).toBeDefined()
      if (type === 'counter') expect(s.name.endsWith('_total'), s.name).toBe(true)
    }
    const one = (name: string, labels: Record<string, string> = {}) => {
      const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
      expect(found, `${name} ${JSON.stringify(labels)}`).toHaveLength(1)
      return found[0].value
    }

    expect(one('scenario_matrix_cache_generations_total')).toBe(stats.generations)
    expect(stats.generations).toBe(1)
    expect(one('scenario_matrix_cache_calls_total')).toBe(stats.calls)
    expect(one('scenario_matrix_cache_hit_ratio')).toBeCloseTo(stats.hitRate, 12)
    for (const tier of ['memory', 'redis', 'durable'] as const) {
      expect(one('scenario_matrix_cache_hits_total', { tier })).toBe(stats[tier].hits)
      expect(one('scenario_matrix_cache_misses_total', { tier })).toBe(stats[tier].misses)
      expect(one('scenario_matrix_cache_errors_total', { tier })).toBe(stats[tier].errors)
      expect(one('scenario_matrix_cache_served_bytes_total', { tier })).toBe(stats[tier].bytes)
    }
    expect(one('scenario_matrix_cache_hits_total', { tier: 'memory' })).toBe(2)
    expect(one('scenario_matrix_cache_memory_bytes')).toBe(stats.memoryTier!.bytes)
    expect(one('scenario_matrix_cache_memory_entries')).toBe(stats.memoryTier!.entries)
    expect(one('scenario_matrix_cache_redis_breaker_open')).toBe(stats.redisBreaker!.open ? 1 : 0)
    expect(types.get('scenario_matrix_cache_request_duration_seconds')).toBe('histogram')

    // Per source: cumulative buckets ending in +Inf = _count = stats().latency[source].count.
    for (const [source, latency] of Object.entries(stats.latency)) {
      const buckets = samples
        .filter((s) => s.name === 'scenario_matrix_cache_request_duration_seconds_bucket' && s.labels.source === source)
        .map((s) => ({ le: s.labels.le === '+Inf' ? Infinity : Number(s.labels.le), n: s.value }))
      expect(buckets.length, source).toBeGreaterThan(10)
      for (let i = 1; i < buckets.length; i++) {
        expect(buckets[i].le).toBeGreaterThan(buckets[i - 1].le)
        expect(buckets[i].n).toBeGreaterThanOrEqual(buckets[i - 1].n)
      }
      expect(buckets.at(-1)).toEqual({ le: Infinity, n: latency.count })
      expect(one('scenario_matrix_cache_request_duration_seconds_count', { source })).toBe(latency.count)
      const sum = one('scenario_matrix_cache_request_duration_seconds_sum', { source })
      // Seconds: a refused config is counted with no duration, a generation with its own.
      expect(sum, source).toBeGreaterThanOrEqual(0)
      if (source === 'generated') expect(sum).toBeGreaterThan(0.0005)
    }
    expect(stats.latency.generated.count).toBe(1)
    expect(stats.latency.memory.count).toBe(2)
    expect(stats.latency.notFound.count).toBe(1)
    expect(stats.latency.failed.count).toBe(1)
  })
})
