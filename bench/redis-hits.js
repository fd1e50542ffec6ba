'use strict'
// Redis hits alone: `node bench/redis-hits.js [small|large] [N]` stores one
// matrix (10,000 x 5 or 100,000 x 50, bench/configs.js) through a first cache
// instance, then times N hits from a second one with the memory tier off, so
// every call is answered by Redis. Prints the p10 / p50 seen from JS and the
// cache's own p50 (`stats().latency.redis`, from the call's start in Rust to
// its answer). SQLite durable store in a scratch directory; a Redis prefix of
// its own, deleted at the end. For a before/after, run two builds in turn
// (NAPI_RS_NATIVE_LIBRARY_PATH picks the addon), e.g. with farm-bench.
const { mkdtempSync, rmSync } = require('node:fs')
const { tmpdir } = require('node:os')
const path = require('node:path')
const { canonicalKey, ScenarioMatrixCache } = require('../index.js')
const configs = require('./configs')

const REDIS = process.env.REDIS_URL || 'redis://127.0.0.1:6379'

async function main() {
  const size = process.argv[2] === 'large' ? 'large' : 'small'
  const n = Number(process.argv[3]) || (size === 'large' ? 60 : 3000)
  const dir = mkdtempSync(path.join(tmpdir(), 'smc-bench-redis-'))
  const prefix = `smc-bench-redis-${process.pid}:`
  const base = { databaseUrl: `sqlite://${path.join(dir, 'c.db')}`, redisUrl: REDIS, redisKeyPrefix: prefix }
  const writer = await ScenarioMatrixCache.open(base)
  const reader = await ScenarioMatrixCache.open({ ...base, memoryMaxBytes: 0 })
  const cfg = configs[size]('redis-hits')
  try {
    await writer.getOrGenerate(cfg)
    await writer.flush()
    for (let k = 0; k < Math.ceil(n / 10); k++) await reader.getOrGenerate(cfg) // warm-up
    const times = []
    for (let k = 0; k < n; k++) {
      const t = process.hrtime.bigint()
      const hit = await reader.getOrGenerate(cfg)
      times.push(Number(process.hrtime.bigint() - t) / 1e6)
      if (hit.metadata.source !== 'redis') throw new Error(`answered by ${hit.metadata.source}, not Redis`)
    }
    times.sort((a, b) => a - b)
    const at = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))]
    const inRust = reader.stats().latency.redis.p50Ms
    console.log(
      JSON.stringify({ size, hits: n, p10Ms: at(0.1), p50Ms: at(0.5), rustP50Ms: inRust, key: canonicalKey(cfg) }),
    )
  } finally {
    await writer.invalidate(canonicalKey(cfg)).catch(() => {})
    await writer.close()
    await reader.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
