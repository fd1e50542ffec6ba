'use strict'
// Portfolio statistics in plain JavaScript, from the definitions of the issue
// (README "Portfolio analytics"), over a row-major Float32Array matrix. Two
// uses: the vitest spec checks the addon against it, and `npm run bench` times
// it (after getMatrix) as the way a consumer would do it without the addon.
// Written straightforwardly with typed arrays, not as a copy of the Rust code:
// CVaR here is the mean of the worst (1 - c) share of losses with the boundary
// scenario counted fractionally, not the minimisation over t.

/** NumPy's linear percentile of an ascending array. */
function percentile(sorted, q) {
  const h = (sorted.length - 1) * q
  const lo = Math.floor(h)
  const hi = Math.min(lo + 1, sorted.length - 1)
  return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo])
}

/**
 * @param {Float32Array} matrix row-major, `names.length` columns
 * @param {string[]} names bucket names, in the matrix's column order
 * @param {{ weights: Record<string, number>, confidence: number, winnerMultiple: number, histogramBins: number }} opts
 *   weights by bucket name (left out: 0), normalised here
 */
function portfolioStatsJs(matrix, names, opts) {
  const B = names.length
  const S = matrix.length / B
  const raw = names.map((n) => (Object.hasOwn(opts.weights, n) ? opts.weights[n] : 0))
  const total = raw.reduce((a, b) => a + b, 0)
  const w = raw.map((x) => x / total)
  const M = new Float64Array(S)
  for (let s = 0; s < S; s++) {
    let acc = 0
    for (let b = 0; b < B; b++) acc += w[b] * matrix[s * B + b]
    M[s] = acc
  }
  let sum = 0
  for (let s = 0; s < S; s++) sum += M[s]
  const mean = sum / S
  let sq = 0
  for (let s = 0; s < S; s++) sq += (M[s] - mean) * (M[s] - mean)
  const sorted = Float64Array.from(M).sort()
  const percentiles = {}
  for (const [k, q] of [['p1', 0.01], ['p5', 0.05], ['p10', 0.1], ['p25', 0.25], ['p50', 0.5], ['p75', 0.75], ['p90', 0.9], ['p95', 0.95], ['p99', 0.99]]) {
    percentiles[k] = percentile(sorted, q)
  }
  let losses = 0
  for (let s = 0; s < S; s++) if (M[s] < 1) losses++
  const L = new Float64Array(S)
  for (let s = 0; s < S; s++) L[s] = Math.max(0, 1 - M[s])
  L.sort()
  const c = opts.confidence
  const tail = (1 - c) * S
  const whole = Math.floor(tail)
  let worst = 0
  for (let i = 0; i < whole; i++) worst += L[S - 1 - i]
  const boundary = whole < S ? (tail - whole) * L[S - 1 - whole] : 0
  const buckets = names.map((name, b) => {
    const col = new Float32Array(S)
    let cs = 0
    let wins = 0
    for (let s = 0; s < S; s++) {
      const x = matrix[s * B + b]
      col[s] = x
      cs += x
      if (x >= opts.winnerMultiple) wins++
    }
    col.sort()
    return { name, mean: cs / S, p10: percentile(col, 0.1), p50: percentile(col, 0.5), p90: percentile(col, 0.9), winnerProbability: wins / S }
  })
  const bins = opts.histogramBins
  const lo = sorted[0]
  const hi = sorted[S - 1]
  const edges = []
  for (let i = 0; i < bins; i++) edges.push(lo + ((hi - lo) / bins) * i)
  edges.push(hi)
  const counts = new Array(bins).fill(0)
  const width = (hi - lo) / bins
  for (let s = 0; s < S; s++) {
    // The last bin whose lower edge is at or below the value: a first guess
    // by division, settled against the edges themselves.
    const x = M[s]
    let i = width > 0 ? Math.min(bins - 1, Math.floor((x - lo) / width)) : bins - 1
    while (i > 0 && x < edges[i]) i--
    while (i < bins - 1 && x >= edges[i + 1]) i++
    counts[i]++
  }
  return {
    numScenarios: S,
    weights: Object.fromEntries(names.map((n, b) => [n, w[b]])),
    mean,
    stdDev: Math.sqrt(sq / S),
    percentiles,
    lossProbability: losses / S,
    valueAtRisk: percentile(L, c),
    conditionalValueAtRisk: (worst + boundary) / tail,
    buckets,
    histogram: { edges, counts },
  }
}

module.exports = { portfolioStatsJs, percentile }
