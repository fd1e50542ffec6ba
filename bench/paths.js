'use strict'
// The JS-visible paths of one process, timed call by call: generateScenarios,
// decompressMatrix, and memory hits through getOrGenerate and getMatrix, with
// cold misses with the longest event-loop delay during them, and the page
// faults each call takes (process.resourceUsage). Set beside
// `cargo bench --bench generator` and `--bench codec` in one sitting, it shows
// what the path from Rust to JS adds to the core.
//
// `node bench/paths.js [--quick] [--json]`; `SMC_ADDON=/other/checkout/index.js`
// times another build of the addon with the same script (before/after).
const { mkdtempSync, rmSync } = require('node:fs')
const { tmpdir } = require('node:os')
const path = require('node:path')

const QUICK = process.argv.includes('--quick')
const ROUNDS = QUICK ? 10 : 30
const addon = require(process.env.SMC_ADDON || path.join(__dirname, '..', 'index.js'))
const configs = require('./configs')
const { withLoopDelay } = require('./loop-delay')

const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]
}

/** p50 / p99 of `fn`'s time over ROUNDS calls (after two warm-up calls), and its median page faults. */
async function time(fn) {
  const ms = []
  const faults = []
  for (let k = 0; k < ROUNDS + 2; k++) {
    const f0 = process.resourceUsage().minorPageFault
    const t = process.hrtime.bigint()
    await fn(k)
    const dt = Number(process.hrtime.bigint() - t) / 1e6
    const df = process.resourceUsage().minorPageFault - f0
    if (k >= 2) {
      ms.push(dt)
      faults.push(df)
    }
  }
  return { p50: quantile(ms, 0.5), p99: quantile(ms, 0.99), faults: quantile(faults, 0.5) }
}

async function run() {
  const dir = mkdtempSync(path.join(tmpdir(), 'smc-bench-paths-'))
  const cache = await addon.ScenarioMatrixCache.open({ databaseUrl: `sqlite://${path.join(dir, 'c.db')}`, redisUrl: '' })
  const out = {}
  for (const [size, cfg] of [
    ['10,000 x 5', configs.small('bench-paths')],
    ['100,000 x 50', configs.large('bench-paths')],
  ]) {
    const generated = await addon.generateScenarios(cfg)
    const input = { ...generated.compressed }
    await cache.getOrGenerate(cfg)
    out[size] = {
      generateScenarios: await time(() => addon.generateScenarios(cfg)),
      decompressMatrix: await time(() => addon.decompressMatrix(input)),
      'memory hit (getOrGenerate)': await time(async () => {
        const r = await cache.getOrGenerate(cfg)
        if (r.metadata.source !== 'memory') throw new Error('not a memory hit')
      }),
      'memory hit (getMatrix)': await time(() => cache.getMatrix(cfg)),
    }
    // Cold misses (generate, encode, store in SQLite), each on a new key,
    // with the longest event-loop delay seen during any of them.
    let delay = 0
    const run = process.pid
    const miss = await time(async (k) => {
      const c = { ...cfg, fundId: `bench-paths-miss-${run}-${k}` }
      delay = Math.max(delay, await withLoopDelay(() => cache.getOrGenerate(c)))
    })
    out[size]['cold miss (getOrGenerate)'] = miss
    out[size]['longest event-loop delay during the misses'] = { p50: delay, p99: delay, faults: '' }
  }
  await cache.close()
  rmSync(dir, { recursive: true, force: true })
  return out
}

run()
  .then((out) => {
    if (process.argv.includes('--json')) {
      process.stdout.write(JSON.stringify(out))
      return
    }
    console.log('| path | size | p50 (ms) | p99 (ms) | page faults (median) |')
    console.log('|---|---|---|---|---|')
    for (const [size, paths] of Object.entries(out)) {
      for (const [name, r] of Object.entries(paths)) {
        console.log(`| ${name} | ${size} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.faults} |`)
      }
    }
  })
  .catch((e) => {
    console.error(e)
    process.exit(1)
  })
