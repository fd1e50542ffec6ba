'use strict'
// The optimiser's model (README "Portfolio analytics") as CPLEX LP text for
// the `highs` npm package (HiGHS compiled to WebAssembly): the way the fund
// server planned to solve it. Built here from the same matrix rows the addon
// reads, for the agreement test (__test__/optimizer.spec.ts) and the bench
// (bench/optimizer.js). Not a port of the Rust code: the rows are written
// out from the model's definition.

/** `+ 1.5 w0 - 2 w1 ...`, skipping zero coefficients. */
function terms(pairs) {
  let out = ''
  for (const [c, name] of pairs) {
    if (c === 0) continue
    out += ` ${c < 0 ? '-' : '+'} ${Math.abs(c)} ${name}`
  }
  return out
}

/**
 * @param {Float32Array} matrix row-major, names.length columns (all rows; the first S are used)
 * @param {string[]} names bucket names in column order
 * @param {object} o the optimizePortfolio options (scenarios, minWeight, maxWeight, bounds,
 *   groups, maxLossProbability, cvar, minExpectedWinners)
 * @param {number} [tieFloor] when given, the tie-break model: minimise sum |w_b - 1/B|
 *   subject to expected MOIC >= tieFloor
 * @returns {string} LP text
 */
function lpModel(matrix, names, o, tieFloor) {
  const B = names.length
  const S = o.scenarios ?? 400
  const w = names.map((_, b) => `w${b}`)
  const mean = names.map((_, b) => {
    let sum = 0
    for (let s = 0; s < S; s++) sum += matrix[s * B + b]
    return sum / S
  })
  const lines = []
  const tie = tieFloor !== undefined
  if (tie) {
    lines.push('Minimize', ` obj:${terms(names.map((_, b) => [1, `d${b}`]))}`)
  } else {
    lines.push('Maximize', ` obj:${terms(mean.map((m, b) => [m, w[b]]))}`)
  }
  lines.push('Subject To', ` total:${terms(w.map((x) => [1, x]))} = 1`)
  const loss = o.maxLossProbability !== undefined
  const cvar = o.cvar !== undefined
  const binaries = []
  if (loss || cvar) {
    for (let s = 0; s < S; s++) {
      // y_s + M_s >= 1
      const row = [[1, `y${s}`]]
      for (let b = 0; b < B; b++) row.push([matrix[s * B + b], w[b]])
      lines.push(` l${s}:${terms(row)} >= 1`)
    }
  }
  if (loss) {
    for (let s = 0; s < S; s++) {
      lines.push(` yz${s}: + 1 y${s} - 1 z${s} <= 0`)
      binaries.push(`z${s}`)
    }
    lines.push(` losscap:${terms(binaries.map((z) => [1, z]))} <= ${o.maxLossProbability * S}`)
  }
  if (cvar) {
    for (let s = 0; s < S; s++) lines.push(` u${s}: + 1 u${s} - 1 y${s} + 1 t >= 0`)
    const k = 1 / ((1 - o.cvar.confidence) * S)
    const row = [[1, 't']]
    for (let s = 0; s < S; s++) row.push([k, `u${s}`])
    lines.push(` cvarcap:${terms(row)} <= ${o.cvar.max}`)
  }
  ;(o.groups ?? []).forEach((g, i) => {
    const row = g.buckets.map((n) => [1, w[names.indexOf(n)]])
    if (g.min !== undefined) lines.push(` gmin${i}:${terms(row)} >= ${g.min}`)
    if (g.max !== undefined) lines.push(` gmax${i}:${terms(row)} <= ${g.max}`)
  })
  if (o.minExpectedWinners) {
    const { count, capital, allInCost, winnerMultiple = 10 } = o.minExpectedWinners
    const row = names.map((n, b) => {
      if (!(n in allInCost)) return [0, w[b]]
      let wins = 0
      for (let s = 0; s < S; s++) if (matrix[s * B + b] >= winnerMultiple) wins++
      return [(capital / allInCost[n]) * (wins / S), w[b]]
    })
    lines.push(` winners:${terms(row)} >= ${count}`)
  }
  if (tie) {
    lines.push(` floor:${terms(mean.map((m, b) => [m, w[b]]))} >= ${tieFloor}`)
    for (let b = 0; b < B; b++) {
      lines.push(` dp${b}: + 1 d${b} - 1 w${b} >= ${-1 / B}`, ` dm${b}: + 1 d${b} + 1 w${b} >= ${1 / B}`)
    }
  }
  lines.push('Bounds')
  names.forEach((n, b) => {
    const [lo, hi] = o.bounds?.[n] ?? [o.minWeight ?? 0, o.maxWeight ?? 1]
    lines.push(` ${lo} <= w${b} <= ${hi}`)
  })
  if (cvar) lines.push(' t free')
  if (binaries.length) lines.push('Binary', ` ${binaries.join(' ')}`)
  lines.push('End')
  return lines.join('\n')
}

/** The weights a solution of `lpModel` gives, in column order. */
function weightsOf(solution, names) {
  return names.map((_, b) => solution.Columns[`w${b}`]?.Primal ?? 0)
}

module.exports = { lpModel, weightsOf }
