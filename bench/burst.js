// npm run burst: a burst of different new keys from several processes sharing one
// PostgreSQL database (README "Many instances"). BURST_KEYS new 100,000 x 50 configs
// (default 50) are split over BURST_PROCESSES processes (default 4), each asking for
// all of its share at once (getOrGenerate). Meanwhile a further process asks, every
// 50 ms, for one matrix already stored (memory tier off, so a durable hit) to show
// whether hits queue behind the generations. Reports the time until every process is
// done, generations and rows (each key once), errors, the most connections the
// database saw at once (pg_stat_activity, sampled every 20 ms), and the hits' latency.
const { fork } = require('node:child_process')
const pg = require('pg')

const PG_ADMIN = process.env.PG_ADMIN_URL || 'postgres://postgres@127.0.0.1:5432/postgres'
const KEYS = Number(process.env.BURST_KEYS || 50)
const PROCESSES = Number(process.env.BURST_PROCESSES || 4)
const SCENARIOS = Number(process.env.BURST_SCENARIOS || 100_000)
const BUCKETS = Number(process.env.BURST_BUCKETS || 50)

const children = new Set()

/** Runs this file as `role` in a child process: its process and its report. */
function child(role, env) {
  const proc = fork(__filename, [role], { env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const done = new Promise((resolve, reject) => {
    let report = null
    proc.on('message', (m) => (report = m))
    proc.on('exit', (code) => (code === 0 && report ? resolve(report) : reject(new Error(`${role} exited ${code}`))))
  })
  children.add(proc)
  proc.on('exit', () => children.delete(proc))
  return { proc, done }
}

async function main() {
  const name = `smc_burst_${process.pid}`
  const adminUrl = new URL(PG_ADMIN)
  adminUrl.pathname = `/${name}`
  const url = adminUrl.toString()
  const admin = new pg.Client({ connectionString: PG_ADMIN })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${name}`)
  let sampler
  // Ctrl-C: the finally below still stops the children and drops the database.
  const interrupted = new Promise((_, reject) => process.once('SIGINT', () => reject(new Error('interrupted'))))
  try {
    const base = { SMC_URL: url }
    // One stored matrix for the hits, and the table created before the burst.
    await child('hitter', { ...base, HIT_SETUP: '1' }).done
    let most = 0
    let sampling = false
    sampler = setInterval(async () => {
      if (sampling) return
      sampling = true
      try {
        const r = await admin.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [name])
        most = Math.max(most, r.rows[0].n)
      } catch {
      } finally {
        sampling = false
      }
    }, 20)
    const hits = child('hitter', base)
    await new Promise((r) => setTimeout(r, 200))
    const t0 = Date.now()
    const workers = await Promise.race([
      Promise.all(Array.from({ length: PROCESSES }, (_, w) => child('worker', { ...base, WORKER: String(w) }).done)),
      interrupted,
    ])
    const wall = Date.now() - t0
    clearInterval(sampler)
    hits.proc.send('stop')
    const done = await hits.done
    const c = new pg.Client({ connectionString: url })
    await c.connect()
    const rows = (await c.query('SELECT count(*)::int AS n FROM scenario_matrices')).rows[0].n
    await c.end()
    const sum = (f) => workers.reduce((a, w) => a + f(w), 0)
    const lat = done.latencies.sort((a, b) => a - b)
    const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]
    const result = {
      keys: KEYS,
      processes: PROCESSES,
      shape: `${SCENARIOS}x${BUCKETS}`,
      wallMs: wall,
      generations: sum((w) => w.generations),
      rows: rows - 1,
      errors: sum((w) => w.errors.length),
      firstErrors: workers.flatMap((w) => w.errors).slice(0, 3),
      mostConnections: most,
      hitsDuringBurst: lat.length,
      hitP50Ms: q(0.5),
      hitMaxMs: lat[lat.length - 1],
      hitErrors: done.errors,
    }
    console.log(JSON.stringify(result, null, 2))
  } finally {
    clearInterval(sampler)
    for (const p of children) p.kill()
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await admin.end()
  }
}

/** Sends the parent this child's report, then lets the child exit (an open IPC channel would keep it alive). */
function report(value) {
  process.send(value, () => process.disconnect())
}

async function worker() {
  const { ScenarioMatrixCache } = require('../lib/index.js')
  const { sized } = require('./configs.js')
  const w = Number(process.env.WORKER)
  const cache = await ScenarioMatrixCache.open({ databaseUrl: process.env.SMC_URL, redisUrl: '' })
  const mine = []
  for (let i = w; i < KEYS; i += PROCESSES) mine.push(sized(SCENARIOS, BUCKETS, `burst-${i}`))
  const errors = []
  await Promise.all(mine.map((c) => cache.ensure(c).catch((e) => errors.push(`${e.code}: ${e.message}`))))
  const generations = cache.stats().generations
  await cache.close()
  report({ generations, errors })
}

async function hitter() {
  const { ScenarioMatrixCache } = require('../lib/index.js')
  const { sized } = require('./configs.js')
  const cache = await ScenarioMatrixCache.open({ databaseUrl: process.env.SMC_URL, redisUrl: '', memoryMaxBytes: 0 })
  const stored = sized(10_000, 5, 'burst-hit')
  await cache.ensure(stored)
  if (process.env.HIT_SETUP === '1') {
    await cache.close()
    report({})
    return
  }
  const latencies = []
  let errors = 0
  let stop = false
  process.on('message', () => (stop = true))
  // Ends on its own after 120 s at most.
  const until = Date.now() + 120_000
  while (!stop && Date.now() < until) {
    const t = performance.now()
    try {
      await cache.getOrGenerate(stored)
      latencies.push(performance.now() - t)
    } catch {
      errors++
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  await cache.close()
  report({ latencies, errors })
}

const role = process.argv[2]
const run = role === 'worker' ? worker : role === 'hitter' ? hitter : main
run().catch((e) => {
  console.error(e)
  process.exit(1)
})
