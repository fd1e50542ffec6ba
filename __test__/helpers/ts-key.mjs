// The TypeScript server's cache key (v1.2) exactly as it computes it at run
// time, for differential tests. The key object is built member by member, so
// a member whose value is `undefined` (a recycling `mode` the caller left
// out) is dropped by JSON.stringify. Buckets sort with localeCompare (en-US).
import { createHash } from 'node:crypto'

const r = (v) => Math.round(v * 100000) / 100000

export function typescriptKey(config) {
  const buckets = [...config.buckets].sort((a, b) => a.name.localeCompare(b.name, 'en-US'))
  const rec = config.recycling
  const normalized = {
    fundId: config.fundId,
    taxonomyVersion: config.taxonomyVersion,
    numScenarios: config.numScenarios,
    buckets: buckets.map((b) => ({
      name: b.name,
      capitalAllocation: r(b.capitalAllocation),
      moicCalibration: { median: r(b.moicCalibration.median), p90: r(b.moicCalibration.p90) },
    })),
    correlationWeights: {
      macro: r(config.correlationWeights.macro),
      systematic: r(config.correlationWeights.systematic),
      idiosyncratic: r(config.correlationWeights.idiosyncratic),
    },
    recycling: rec.enabled
      ? {
          enabled: true,
          mode: rec.mode,
          reinvestmentRate: r(rec.reinvestmentRate),
          avgHoldingPeriod: r(rec.avgHoldingPeriod),
          fundLifetime: r(rec.fundLifetime),
        }
      : { enabled: false, mode: 'same-bucket' },
  }
  return createHash('sha256').update(JSON.stringify(normalized)).digest('hex')
}

/// Random valid configs with recycling enabled, `mode` given or left out.
export function recyclingConfigs(count, seed = 7) {
  let s = seed
  const rnd = () => {
    s = (s * 1103515245 + 12345) % 2147483648
    return s / 2147483648
  }
  const names = ['Seed', 'Series A', 'series b', 'Growth', 'Pré-Seed', 'Angel', 'Écosystème', 'zeta', 'Buyout']
  const out = []
  for (let i = 0; i < count; i++) {
    const n = 1 + Math.floor(rnd() * 4)
    const picked = [...names].sort(() => rnd() - 0.5).slice(0, n)
    const weights = picked.map(() => 1 + Math.floor(rnd() * 50))
    const total = weights.reduce((a, b) => a + b, 0)
    const allocations = weights.map((w) => (w * 100) / total)
    const buckets = picked.map((name, k) => {
      const median = +(0.5 + rnd() * 2).toFixed(6)
      return {
        name,
        capitalAllocation: allocations[k],
        moicCalibration: { median, p90: +(median * (1 + rnd() * 3.5)).toFixed(7) },
      }
    })
    const recycling = {
      enabled: true,
      reinvestmentRate: +rnd().toFixed(4),
      avgHoldingPeriod: 2 + Math.floor(rnd() * 6),
      fundLifetime: 8 + Math.floor(rnd() * 8),
    }
    if (i % 3 === 2) recycling.mode = 'same-bucket'
    out.push({
      fundId: `fund-${i}`,
      taxonomyVersion: 'v1.2',
      numScenarios: 1000 * (1 + i),
      buckets,
      correlationWeights: { macro: 0.5, systematic: 0.25, idiosyncratic: 0.25 },
      recycling,
    })
  }
  return out
}
