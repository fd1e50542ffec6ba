// optimizePortfolio: the same model solved by the `highs` npm package (HiGHS
// in WebAssembly, built from the same matrix rows by bench/optimizer-model.js)
// reaches the same optimum; the returned weights meet every constraint when
// re-evaluated here; bad options are refused by name. Real PostgreSQL and Redis.
import { createRequire } from 'node:module'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { isScenarioMatrixCacheError, ScenarioMatrixCache } from '../lib/index.js'
import { createDatabase, dropRedisPrefix, REDIS_URL, uniqueName } from './helpers/services'

const require = createRequire(import.meta.url)
const { lpModel, weightsOf } = require('../bench/optimizer-model.js')
const configs = require('../bench/configs.js')
const loadHighs = require('highs')

let db: Awaited<ReturnType<typeof createDatabase>>
let cache: ScenarioMatrixCache
let highs: { solve: (lp: string, o?: Record<string, unknown>) => { Status: string; ObjectiveValue: number; Columns: Record<string, { Primal: number }> } }
const prefix = `${uniqueName('smc_optimizer')}:`

beforeAll(async () => {
  db = await createDatabase()
  cache = await ScenarioMatrixCache.open({ databaseUrl: db.url, redisUrl: REDIS_URL, redisKeyPrefix: prefix })
  highs = await loadHighs()
})
afterAll(async () => {
  await cache?.close()
  await dropRedisPrefix(prefix)
  await db?.drop()
})

const cfg = configs.sized(1000, 10, 'optimizer-spec')
const names: string[] = cfg.buckets.map((b: { name: string }) => b.name)
const model = {
  scenarios: 200,
  maxWeight: 0.35,
  groups: [
    { name: 'early', buckets: names.slice(0, 4), max: 0.5 },
    { name: 'late', buckets: names.slice(6), min: 0.2 },
  ],
  maxLossProbability: 0.05,
  cvar: { confidence: 0.9, max: 0.05 },
}

describe('optimizePortfolio', () => {
  it('reaches the optimum the highs npm package finds for the same model, within the MIP gap', async () => {
    const ours = await cache.optimizePortfolio(cfg, model)
    expect(ours.status).toBe('optimal')
    const { matrix } = await cache.getMatrix(cfg)
    const wasm = highs.solve(lpModel(matrix, names, model), { mip_rel_gap: 1e-4, threads: 1, random_seed: 0 })
    expect(wasm.Status).toBe('Optimal')
    const gap = 1e-4 * Math.abs(wasm.ObjectiveValue) + 1e-7
    expect(Math.abs((ours.solver.objective as number) - wasm.ObjectiveValue)).toBeLessThanOrEqual(gap)
    // The tie-break gives up at most 0.001 of the optimum.
    expect(ours.expectedMoic as number).toBeGreaterThanOrEqual(wasm.ObjectiveValue - 0.001 - gap)
    // And the tie-break model, solved there too from the same floor, is as even as ours.
    const floor = (ours.solver.objective as number) - 0.001
    const tie = highs.solve(lpModel(matrix, names, model, floor), { mip_rel_gap: 1e-4, threads: 1, random_seed: 0 })
    expect(tie.Status).toBe('Optimal')
    const spread = (w: number[]) => w.reduce((a, x) => a + Math.abs(x - 1 / w.length), 0)
    const oursSpread = spread(names.map((n) => ours.weights[n]))
    expect(Math.abs(oursSpread - spread(weightsOf(tie, names)))).toBeLessThanOrEqual(1e-4 * Math.max(1, oursSpread) + 1e-6)
    expect(ours.solver.name).toBe('HiGHS')
    expect(ours.solver.durationMs).toBeGreaterThan(0)
  })

  it('returns weights that meet every constraint, evaluated here, and a validation on the whole matrix', async () => {
    const options = {
      ...model,
      bounds: { [names[2]]: [0.05, 0.2] as [number, number] },
      minExpectedWinners: { count: 1, capital: 100, allInCost: { [names[8]]: 2, [names[9]]: 3 }, winnerMultiple: 4 },
    }
    const r = await cache.optimizePortfolio(cfg, options)
    expect(['optimal', 'relaxed']).toContain(r.status)
    const { matrix } = await cache.getMatrix(cfg)
    const w = names.map((n) => r.weights[n])
    const S = options.scenarios
    const B = names.length
    expect(Math.abs(w.reduce((a, x) => a + x, 0) - 1)).toBeLessThan(1e-9)
    w.forEach((x, b) => {
      const [lo, hi] = b === 2 ? [0.05, 0.2] : [0, 0.35]
      expect(x).toBeGreaterThanOrEqual(lo - 1e-9)
      expect(x).toBeLessThanOrEqual(hi + 1e-9)
    })
    const M = Array.from({ length: S }, (_, s) => w.reduce((a, x, b) => a + x * matrix[s * B + b], 0))
    const relaxed = Object.fromEntries(r.relaxations.map((x) => [x.constraint, x.to]))
    const lossCap = relaxed.maxLossProbability ?? options.maxLossProbability
    expect(M.filter((m) => m < 1 - 1e-6).length / S).toBeLessThanOrEqual(lossCap + 1e-12)
    // CVaR: the mean of the worst 10 % of losses (20 scenarios exactly).
    const L = M.map((m) => Math.max(0, 1 - m)).sort((a, b) => b - a)
    const cvar = L.slice(0, 20).reduce((a, x) => a + x, 0) / 20
    expect(cvar).toBeLessThanOrEqual((relaxed['cvar.max'] ?? options.cvar.max) + 1e-6)
    for (const g of options.groups) {
      const sum = g.buckets.reduce((a, n) => a + r.weights[n], 0)
      if (g.min !== undefined) expect(sum).toBeGreaterThanOrEqual((relaxed[`groups.${g.name}.min`] ?? g.min) - 1e-9)
      if (g.max !== undefined) expect(sum).toBeLessThanOrEqual((relaxed[`groups.${g.name}.max`] ?? g.max) + 1e-9)
    }
    const winners = [8, 9].reduce((a, b) => {
      let wins = 0
      for (let s = 0; s < S; s++) if (matrix[s * B + b] >= 4) wins++
      return a + (w[b] * 100 * (wins / S)) / (b === 8 ? 2 : 3)
    }, 0)
    expect(winners).toBeGreaterThanOrEqual((relaxed['minExpectedWinners.count'] ?? 1) - 1e-6)
    expect(r.expectedMoic).toBeCloseTo(M.reduce((a, m) => a + m, 0) / S, 10)
    // The validation is portfolioStats of these weights on all 1,000 scenarios.
    const stats = await cache.portfolioStats(cfg, { weights: r.weights, confidence: 0.9, winnerMultiple: 4 })
    expect(r.validation?.numScenarios).toBe(1000)
    expect(r.validation?.mean).toBeCloseTo(stats.mean, 12)
    expect(r.validation?.conditionalValueAtRisk).toBeCloseTo(stats.conditionalValueAtRisk, 12)
    // The same inputs, the same weights.
    const again = await cache.optimizePortfolio(cfg, options)
    expect(again.weights).toEqual(r.weights)
  })

  it('stops at timeLimitMs', async () => {
    const big = configs.sized(5000, 50, 'optimizer-spec-time')
    const started = Date.now()
    const r = await cache.optimizePortfolio(big, { scenarios: 5000, maxLossProbability: 0.05, cvar: { confidence: 0.95, max: 0.03 }, timeLimitMs: 200 })
    expect(r.status).toBe('time-limit')
    // The matrix is generated first (not counted by the limit); the solve itself stops.
    expect(r.solver.durationMs).toBeLessThan(2000)
    expect(Date.now() - started).toBeLessThan(30_000)
  })

  it('refuses bad options with E_INVALID_ARGUMENT naming the field', async () => {
    const cases: Array<[unknown, string]> = [
      [{ bounds: { Nope: [0, 1] } }, 'bounds.Nope: the config has no bucket named "Nope"'],
      [{ maxWeight: 0.05 }, 'bounds: the weights cannot sum to 1'],
      [{ groups: [{ name: 'g', buckets: ['Nope'] }] }, 'groups[0].buckets[0]'],
      [{ cvar: { confidence: 0, max: 0.1 } }, 'cvar.confidence: expected a number strictly between 0 and 1'],
      [{ scenarios: 1001 }, 'scenarios: expected an integer from 1 to 1000'],
      [{ minExpectedWinners: { count: 1, capital: 1, allInCost: { Nope: 1 } } }, 'minExpectedWinners.allInCost.Nope'],
      [{ timeLimit: 5 }, 'timeLimit: not an option here'],
    ]
    for (const [options, message] of cases) {
      const e = await cache.optimizePortfolio(cfg, options as never).then(
        () => expect.fail(`resolved for ${JSON.stringify(options)}`),
        (err) => err,
      )
      expect(isScenarioMatrixCacheError(e)).toBe(true)
      expect(e.code, JSON.stringify(options)).toBe('E_INVALID_ARGUMENT')
      expect(e.message).toContain(message)
    }
  })
})
