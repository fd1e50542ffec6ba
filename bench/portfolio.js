'use strict'
// Portfolio statistics of 100,000 x 50 from the memory tier: the addon's
// portfolioStats against getMatrix plus the same arithmetic in JavaScript
// (bench/portfolio-baseline.js), alternated call by call in one process,
// with new weights on each call; and apart, the first call on an entry.
// `node bench/portfolio.js` prints a table; `--json` prints the summary for
// bench/run.js; `--quick` runs fewer rounds.
const { mkdtempSync, rmSync } = require('node:fs')
const { tmpdir } = require('node:os')
const path = require('node:path')

const QUICK = process.argv.includes('--quick')
const ROUNDS = QUICK ? 10 : 40
const FIRSTS = QUICK ? 3 : 6

const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]
}
const summary = (xs) => ({ n: xs.length, p50: quantile(xs, 0.5), p99: quantile(xs, 0.99) })

async function run() {
  const { ScenarioMatrixCache } = require('../index.js')
  const { portfolioStatsJs } = require('./portfolio-baseline')
  const configs = require('./configs')
  const dir = mkdtempSync(path.join(tmpdir(), 'smc-bench-portfolio-'))
  const cache = await ScenarioMatrixCache.open({ databaseUrl: `sqlite://${path.join(dir, 'c.db')}`, redisUrl: '' })
  const cfg = configs.large('bench-portfolio')
  const names = cfg.buckets.map((b) => b.name)
  // New weights on every call, so that nothing weight-dependent can be reused.
  const optionsFor = (k) => ({
    weights: Object.fromEntries(cfg.buckets.map((b, i) => [b.name, 1 + ((i + k) % 3)])),
    confidence: 0.95,
    winnerMultiple: 10,
    histogramBins: 50,
  })
  // The first call on an entry also computes its column statistics (kept
  // beside the entry); timed on fresh entries of their own.
  const first = []
  for (let k = 0; k < FIRSTS; k++) {
    const c = configs.large(`bench-portfolio-first-${k}`)
    await cache.getOrGenerate(c)
    const t = process.hrtime.bigint()
    const s = await cache.portfolioStats(c, optionsFor(k))
    first.push(Number(process.hrtime.bigint() - t) / 1e6)
    if (s.metadata.source !== 'memory') throw new Error('not a memory hit')
  }
  await cache.getOrGenerate(cfg) // generated once; every timed call is a memory hit
  const ours = []
  const js = []
  let check
  for (let k = 0; k < ROUNDS + 2; k++) {
    const options = optionsFor(k)
    let t = process.hrtime.bigint()
    const s = await cache.portfolioStats(cfg, options)
    const a = Number(process.hrtime.bigint() - t) / 1e6
    t = process.hrtime.bigint()
    const { matrix, metadata } = await cache.getMatrix(cfg)
    const j = portfolioStatsJs(matrix, names, options)
    const b = Number(process.hrtime.bigint() - t) / 1e6
    if (s.metadata.source !== 'memory' || metadata.source !== 'memory') throw new Error('not a memory hit')
    check = { meanOurs: s.mean, meanJs: j.mean, cvarOurs: s.conditionalValueAtRisk, cvarJs: j.conditionalValueAtRisk }
    // The first two rounds warm up (JIT, page faults); not counted.
    if (k >= 2) {
      ours.push(a)
      js.push(b)
    }
  }
  await cache.close()
  rmSync(dir, { recursive: true, force: true })
  const o = summary(ours)
  const b = summary(js)
  return { size: '100,000 x 50', ours: o, first: summary(first), baseline: b, speedup: b.p50 / o.p50, check }
}

function fmt(x) {
  return x < 1 ? x.toFixed(3) : x < 100 ? x.toFixed(2) : x.toFixed(0)
}

/** Markdown rows, as bench/run.js prints them. */
function rows(r) {
  return [
    `| portfolioStats (memory tier) | ${r.size} | ${fmt(r.ours.p50)} | ${fmt(r.ours.p99)} | ${fmt(r.baseline.p50)} | ${fmt(r.baseline.p99)} | ` +
      `${r.speedup.toFixed(1)}x | <= 20 and >= 10x | ${r.ours.p50 <= 20 && r.speedup >= 10 ? 'yes' : 'NO'} |`,
    ...(r.first
      ? [`| portfolioStats, first call on an entry (memory tier) | ${r.size} | ${fmt(r.first.p50)} | ${fmt(r.first.p99)} | | | | | |`]
      : []),
  ]
}

module.exports = { rows }

if (require.main === module) {
  run()
    .then((r) => {
      if (process.argv.includes('--json')) {
        process.stdout.write(JSON.stringify(r))
        return
      }
      console.log('| path | size | ours p50 (ms) | ours p99 (ms) | getMatrix + JS p50 (ms) | getMatrix + JS p99 (ms) | speed-up (p50) | target | met |')
      console.log('|---|---|---|---|---|---|---|---|---|')
      console.log(rows(r).join('\n'))
      console.log(`\nsame answer: mean ${r.check.meanOurs} / ${r.check.meanJs}, CVaR ${r.check.cvarOurs} / ${r.check.cvarJs}; ${r.ours.n} rounds each, alternated`)
    })
    .catch((e) => {
      console.error(e)
      process.exit(1)
    })
}
