'use strict'
// optimizePortfolio against the `highs` npm package (HiGHS compiled to
// WebAssembly, the server's original plan) on the same model built from the
// same matrix rows (bench/optimizer-model.js): 50 buckets x 400 scenarios, a
// loss-probability cap and a CVaR cap (both binding), two group bounds. Both
// sides run the optimum and the tie-break, one thread, mip_rel_gap 1e-4,
// alternated in one process. Then our time at S = 400, 1,000, 2,000, 5,000.
// `node bench/optimizer.js [--quick] [--json]`.
const { mkdtempSync, rmSync } = require('node:fs')
const { tmpdir } = require('node:os')
const path = require('node:path')

const QUICK = process.argv.includes('--quick')
const ROUNDS = QUICK ? 1 : 3
const SIZES = [400, 1000, 2000, 5000]

function model(names, scenarios) {
  return {
    scenarios,
    maxLossProbability: 0.02,
    cvar: { confidence: 0.95, max: 0.1 },
    groups: [
      { name: 'early', buckets: names.slice(0, 10), min: 0.15 },
      { name: 'late', buckets: names.slice(40), max: 0.1 },
    ],
    mipRelGap: 1e-4,
    timeLimitMs: 60_000,
  }
}

async function run() {
  const { ScenarioMatrixCache } = require('../index.js')
  const { lpModel } = require('./optimizer-model')
  const configs = require('./configs')
  const highs = await require('highs')()
  const dir = mkdtempSync(path.join(tmpdir(), 'smc-bench-optimizer-'))
  const cache = await ScenarioMatrixCache.open({ databaseUrl: `sqlite://${path.join(dir, 'c.db')}`, redisUrl: '' })
  const cfg = configs.sized(5000, 50, 'bench-optimizer')
  const names = cfg.buckets.map((b) => b.name)
  const { matrix } = await cache.getMatrix(cfg) // generated once; every call below is a memory hit
  const options = { mip_rel_gap: 1e-4, threads: 1, random_seed: 0, time_limit: 60 }
  const o400 = model(names, 400)
  const ours = []
  const wasm = []
  let check
  for (let k = 0; k < ROUNDS; k++) {
    let t = process.hrtime.bigint()
    const r = await cache.optimizePortfolio(cfg, o400)
    ours.push(Number(process.hrtime.bigint() - t) / 1e6)
    t = process.hrtime.bigint()
    const first = highs.solve(lpModel(matrix, names, o400), options)
    const tie = highs.solve(lpModel(matrix, names, o400, first.ObjectiveValue - 0.001), options)
    wasm.push(Number(process.hrtime.bigint() - t) / 1e6)
    check = { status: r.status, wasmStatus: [first.Status, tie.Status], oursObjective: r.solver.objective, wasmObjective: first.ObjectiveValue, lossProbability: r.lossProbability, cvar: r.conditionalValueAtRisk }
  }
  const scaling = []
  for (const S of SIZES) {
    const t = process.hrtime.bigint()
    const r = await cache.optimizePortfolio(cfg, model(names, S))
    scaling.push({ scenarios: S, ms: Number(process.hrtime.bigint() - t) / 1e6, status: r.status, nodes: r.solver.nodes, objective: r.solver.objective })
  }
  await cache.close()
  rmSync(dir, { recursive: true, force: true })
  const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]
  return { ours, wasm, oursMedian: med(ours), wasmMedian: med(wasm), speedup: med(wasm) / med(ours), check, scaling }
}

function fmt(x) {
  return x < 100 ? x.toFixed(1) : x.toFixed(0)
}

/** Markdown rows, as bench/run.js prints them. */
function rows(r) {
  const out = [
    `| optimizePortfolio, 50 x 400 (loss cap, CVaR cap, 2 groups; optimum + tie-break) | ${fmt(r.oursMedian)} | ${fmt(r.wasmMedian)} | ${r.speedup.toFixed(1)}x | >= 5x | ${r.speedup >= 5 ? 'yes' : 'NO'} |`,
  ]
  for (const s of r.scaling) {
    const goal = s.scenarios === 2000 ? '<= 5000' : ''
    const met = s.scenarios === 2000 ? (s.ms <= 5000 ? 'yes' : 'NO') : ''
    out.push(`| optimizePortfolio, 50 x ${s.scenarios.toLocaleString('en-US')} (${s.status}, ${s.nodes} nodes) | ${fmt(s.ms)} | | | ${goal} | ${met} |`)
  }
  return out
}

const HEADER = ['| optimiser | ours (ms) | highs npm, WebAssembly (ms) | speed-up | goal | met |', '|---|---|---|---|---|---|']

module.exports = { rows, HEADER }

if (require.main === module) {
  run()
    .then((r) => {
      if (process.argv.includes('--json')) {
        process.stdout.write(JSON.stringify(r))
        return
      }
      console.log([...HEADER, ...rows(r)].join('\n'))
      console.log(`\nmedians of ${r.ours.length} alternated rounds (ours ${r.ours.map(fmt).join(', ')}; WebAssembly ${r.wasm.map(fmt).join(', ')}); same optimum: ${JSON.stringify(r.check)}`)
    })
    .catch((e) => {
      console.error(e)
      process.exit(1)
    })
}
