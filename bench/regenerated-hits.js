'use strict'
// Database hits read whole against regenerated (`regenerateMinBytes`), side by
// side in one process: `node bench/regenerated-hits.js [large|small] [N]
// [--sqlite]` stores one matrix (100,000 x 50 or 10,000 x 5, bench/configs.js)
// in a scratch PostgreSQL database (or an SQLite file), then times N rounds of
// getOrGenerate and getMatrix through two instances with the memory tier and
// Redis off, one reading rows whole (regenerateMinBytes 0) and one
// regenerating (regenerateMinBytes 1), alternated call by call. Prints p50
// and p90 of each (ms) and the regenerating instance's counters, as JSON.
const { mkdtempSync, rmSync } = require('node:fs')
const { tmpdir } = require('node:os')
const path = require('node:path')
const { ScenarioMatrixCache } = require('../index.js')
const configs = require('./configs')

const { scratchDatabase } = require('./scratch-db')

async function store(useSqlite) {
  if (useSqlite) {
    const dir = mkdtempSync(path.join(tmpdir(), 'smc-bench-regen-'))
    return { url: `sqlite://${path.join(dir, 'c.db')}`, drop: async () => rmSync(dir, { recursive: true, force: true }) }
  }
  return scratchDatabase()
}

async function main() {
  const size = process.argv[2] === 'small' ? 'small' : 'large'
  const n = Number(process.argv[3]) || (size === 'large' ? 30 : 300)
  const db = await store(process.argv.includes('--sqlite'))
  const base = { databaseUrl: db.url, redisUrl: '', memoryMaxBytes: 0 }
  const writer = await ScenarioMatrixCache.open(base)
  const whole = await ScenarioMatrixCache.open({ ...base, regenerateMinBytes: 0 })
  const regen = await ScenarioMatrixCache.open({ ...base, regenerateMinBytes: 1 })
  const cfg = configs[size]('regenerated-hits')
  const out = {}
  try {
    await writer.getOrGenerate(cfg)
    const times = { whole: { getOrGenerate: [], getMatrix: [] }, regenerated: { getOrGenerate: [], getMatrix: [] } }
    for (let k = 0; k < n + 2; k++) {
      for (const [name, cache] of [['whole', whole], ['regenerated', regen]]) {
        for (const call of ['getOrGenerate', 'getMatrix']) {
          const t = process.hrtime.bigint()
          await cache[call](cfg)
          if (k >= 2) times[name][call].push(Number(process.hrtime.bigint() - t) / 1e6)
        }
      }
    }
    const at = (xs, q) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]
    for (const [name, calls] of Object.entries(times)) {
      for (const [call, xs] of Object.entries(calls)) out[`${name} ${call}`] = { p50Ms: at(xs, 0.5), p90Ms: at(xs, 0.9) }
    }
    const s = regen.stats()
    out.counters = { regeneratedHits: s.regeneratedHits, regenerationsUnproven: s.regenerationsUnproven }
    out.size = size
    out.store = process.argv.includes('--sqlite') ? 'sqlite' : 'postgres'
    console.log(JSON.stringify(out))
  } finally {
    for (const c of [writer, whole, regen]) await c.close()
    await db.drop()
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
