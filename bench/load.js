// npm run load: sustained concurrent traffic against PostgreSQL and Redis (not
// part of the test command). 200 callers loop over 50 keys (40 of 10,000 x 5,
// 10 of 50,000 x 20) for LOAD_SECONDS (default 60), with a memory tier and a
// Redis TTL small enough that memory, Redis and PostgreSQL all answer. Checks:
// no error; every answer byte-identical to the first one for its key; database
// connections within the pool (plus the invalidation listener's); none
// (database or Redis) left after close(); resident memory flat after warm-up. Prints throughput, latency and RSS.
// Redis is a redis-server of its own on a spare loopback port (so its client
// list counts this process only); PostgreSQL is the local server (its own
// database).
const { spawn } = require('node:child_process')
const net = require('node:net')
const { Client } = require('pg')
const { createClient } = require('redis')
const os = require('node:os')
const { ScenarioMatrixCache } = require('..')
const configs = require('./configs')

const PG_ADMIN = process.env.PG_ADMIN_URL || 'postgres://postgres@127.0.0.1:5432/postgres'
const SECONDS = Number(process.env.LOAD_SECONDS || 60)
// Optional: another redisTimeoutMs than the default, to compare.
const REDIS_TIMEOUT_MS = process.env.LOAD_REDIS_TIMEOUT_MS ? Number(process.env.LOAD_REDIS_TIMEOUT_MS) : undefined
// Optional: regenerateMinBytes (1048576 makes the 50,000 x 20 keys' database hits regenerated).
const REGENERATE_MIN_BYTES = process.env.LOAD_REGENERATE_MIN_BYTES ? Number(process.env.LOAD_REGENERATE_MIN_BYTES) : undefined
const CALLERS = 200
const POOL = 8

const keys = [
  ...Array.from({ length: 40 }, (_, i) => configs.sized(10_000, 5, `load-small-${i}`)),
  ...Array.from({ length: 10 }, (_, i) => configs.sized(50_000, 20, `load-large-${i}`)),
]

const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]
const rssMb = () => Math.round(process.memoryUsage().rss / 1048576)

async function ownRedis() {
  const port = await new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = s.address().port
      s.close(() => resolve(p))
    })
  })
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  })
  for (let i = 0; i < 200; i++) {
    const up = await new Promise((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => (c.end(), resolve(true))).on('error', () => resolve(false))
    })
    if (up) return { url: `redis://127.0.0.1:${port}`, stop: () => child.kill('SIGKILL') }
    await new Promise((r) => setTimeout(r, 25))
  }
  child.kill('SIGKILL')
  throw new Error('redis-server did not start')
}

async function main() {
  const own = await ownRedis()
  const REDIS = own.url
  const name = `smc_load_${process.pid}`
  const admin = new Client({ connectionString: PG_ADMIN })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${name}`)
  const dbUrl = PG_ADMIN.replace(/\/[^/]*$/, `/${name}`)
  const prefix = `smc-load-${process.pid}:`
  const redis = createClient({ url: REDIS })
  await redis.connect()
  const redisClients = async () => (await redis.sendCommand(['CLIENT', 'LIST'])).trim().split('\n').length
  const redisBefore = await redisClients()

  const cache = await ScenarioMatrixCache.open({
    databaseUrl: dbUrl,
    redisUrl: REDIS,
    redisKeyPrefix: prefix,
    redisTtlSeconds: 5,
    memoryMaxBytes: 8 * 1024 * 1024,
    databaseMaxConnections: POOL,
    ...(REDIS_TIMEOUT_MS ? { redisTimeoutMs: REDIS_TIMEOUT_MS } : {}),
    ...(REGENERATE_MIN_BYTES !== undefined ? { regenerateMinBytes: REGENERATE_MIN_BYTES } : {}),
  })
  const first = new Map()
  const latencies = []
  const steady = [] // latencies of calls started after the warm-up
  let calls = 0
  let errors = 0
  let mismatches = 0
  let maxDbConnections = 0
  const errorSamples = []
  const sources = {}

  const start = performance.now()
  const warmUntil = start + Math.min(15, SECONDS / 4) * 1000
  const end = start + SECONDS * 1000
  let rssAfterWarmup = 0
  let rssPeak = rssMb()
  let rssLast = 0
  let peakParts = {}
  let peakAtS = 0

  // Its own connection, so its queries never overlap the admin's.
  const watch = new Client({ connectionString: PG_ADMIN })
  await watch.connect()
  let watching = false
  const watcher = setInterval(async () => {
    const mu = process.memoryUsage()
    if (mu.rss / 1048576 > rssPeak) {
      rssPeak = Math.round(mu.rss / 1048576)
      peakAtS = +((performance.now() - start) / 1000).toFixed(1)
      peakParts = { heapMb: Math.round(mu.heapUsed / 1048576), arrayBuffersMb: Math.round(mu.arrayBuffers / 1048576) }
    }
    if (!rssAfterWarmup && performance.now() > warmUntil) rssAfterWarmup = rssMb()
    if (watching) return
    watching = true
    const r = await watch.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [name])
    // The watcher's own connection is to another database.
    maxDbConnections = Math.max(maxDbConnections, r.rows[0].n)
    watching = false
  }, 250)

  async function caller(c) {
    let i = c
    while (performance.now() < end) {
      const k = i++ % keys.length
      const t = performance.now()
      try {
        const res = await cache.getOrGenerate(keys[k])
        const took = performance.now() - t
        latencies.push(took)
        if (t > warmUntil) steady.push(took)
        sources[res.metadata.source] = (sources[res.metadata.source] || 0) + 1
        const data = res.compressed.data
        const seen = first.get(k)
        if (!seen) first.set(k, Buffer.from(data))
        else if (!seen.equals(data)) mismatches++
      } catch (e) {
        errors++
        if (errorSamples.length < 5) errorSamples.push(`${e.code}: ${e.message}`)
      }
      calls++
    }
  }
  await Promise.all(Array.from({ length: CALLERS }, (_, c) => caller(c)))
  const elapsed = (performance.now() - start) / 1000
  clearInterval(watcher)
  while (watching) await new Promise((r) => setTimeout(r, 10))
  await watch.end()
  rssLast = rssMb()
  const stats = cache.stats()
  await cache.close()

  // Nothing left open: give the server a moment to see the sockets close.
  await new Promise((r) => setTimeout(r, 1000))
  const dbLeft = (await admin.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [name])).rows[0].n
  const redisLeft = (await redisClients()) - redisBefore // this script's own client is in both

  latencies.sort((a, b) => a - b)
  steady.sort((a, b) => a - b)
  const growth = rssAfterWarmup ? (rssLast - rssAfterWarmup) / rssAfterWarmup : 0
  const report = {
    machine: `${os.cpus().length} cores, Node ${process.version}`,
    seconds: Math.round(elapsed),
    callers: CALLERS,
    redisTimeoutMs: REDIS_TIMEOUT_MS ?? 'default (100)',
    regenerateMinBytes: REGENERATE_MIN_BYTES ?? 'default (0)',
    calls,
    callsPerSecond: Math.round(calls / elapsed),
    p50Ms: +quantile(latencies, 0.5).toFixed(2),
    p99Ms: +quantile(latencies, 0.99).toFixed(2),
    maxMs: +latencies[latencies.length - 1].toFixed(1),
    afterWarmup: {
      calls: steady.length,
      p50Ms: +quantile(steady, 0.5).toFixed(2),
      p99Ms: +quantile(steady, 0.99).toFixed(2),
      maxMs: +steady[steady.length - 1].toFixed(1),
    },
    sources,
    generations: stats.generations,
    regeneratedHits: stats.regeneratedHits,
    redisBreaker: stats.redisBreaker,
    redisErrors: stats.redis.errors,
    errors,
    mismatches,
    maxDbConnections,
    pool: POOL,
    dbConnectionsAfterClose: dbLeft,
    redisConnectionsAfterClose: redisLeft,
    rssAfterWarmupMb: rssAfterWarmup,
    rssEndMb: rssLast,
    rssPeakMb: rssPeak,
    atPeak: { ...peakParts, seconds: peakAtS },
    rssGrowthAfterWarmup: +(growth * 100).toFixed(1) + '%',
  }
  console.log(JSON.stringify(report, null, 2))
  if (errorSamples.length) console.log('errors:', errorSamples)

  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  await admin.end()
  const left = await redis.keys(`${prefix}*`)
  if (left.length) await redis.del(left)
  await redis.quit()
  own.stop()

  const failures = []
  if (errors) failures.push(`${errors} errors`)
  if (mismatches) failures.push(`${mismatches} answers differ from the first for their key`)
  // The pool, plus the connection an instance with a memory tier keeps
  // listening for invalidations on (README "Connections per instance").
  if (maxDbConnections > POOL + 1) failures.push(`${maxDbConnections} database connections, pool ${POOL} + 1 listening`)
  if (dbLeft) failures.push(`${dbLeft} database connections left after close()`)
  if (redisLeft > 0) failures.push(`${redisLeft} Redis connections left after close()`)
  if (growth > 0.1) failures.push(`RSS grew ${(growth * 100).toFixed(1)}% after warm-up`)
  if (failures.length) {
    console.error('FAILED:', failures.join('; '))
    process.exit(1)
  }
  console.log('OK')
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
