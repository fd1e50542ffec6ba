// The two configs the benchmark measures (fixed, so runs are comparable).
function config(numScenarios, numBuckets, fundId) {
  const buckets = []
  for (let b = 0; b < numBuckets; b++) {
    const median = 0.8 + (b % 10) * 0.15
    buckets.push({
      name: `Bucket ${String(b).padStart(2, '0')}`,
      capitalAllocation: 100 / numBuckets,
      moicCalibration: { median, p90: median * (2 + (b % 5) * 0.4) },
    })
  }
  // Make the allocations sum to exactly 100 despite rounding.
  const rest = buckets.slice(1).reduce((s, b) => s + b.capitalAllocation, 0)
  buckets[0].capitalAllocation = 100 - rest
  return {
    fundId,
    taxonomyVersion: 'bench-v1',
    numScenarios,
    buckets,
    correlationWeights: { macro: 0.5, systematic: 0.25, idiosyncratic: 0.25 },
    recycling: { enabled: true, mode: 'same-bucket', reinvestmentRate: 0.8, avgHoldingPeriod: 5, fundLifetime: 10 },
  }
}

module.exports = {
  sized: (numScenarios, numBuckets, fundId) => config(numScenarios, numBuckets, fundId),
  small: (fundId = 'bench-fund') => config(10_000, 5, fundId),
  large: (fundId = 'bench-fund') => config(100_000, 50, fundId),
}
