// The main job: the same config twice in this process, then once in a second
// process, printing each call's source and latency, then the stats.
// Embedded SQLite by default (no server needed); DATABASE_URL / REDIS_URL are used when set.
const { execFileSync } = require('node:child_process')
const { canonicalKey, ScenarioMatrixCache } = require('../index.js')

const config = {
  fundId: 'demo-fund',
  taxonomyVersion: 'v1.2',
  numScenarios: 100_000,
  buckets: [
    { name: 'Seed', capitalAllocation: 25, moicCalibration: { median: 1, p90: 3 } },
    { name: 'Series A', capitalAllocation: 25, moicCalibration: { median: 1.5, p90: 3.5 } },
    { name: 'Series B', capitalAllocation: 20, moicCalibration: { median: 2, p90: 4 } },
    { name: 'Growth', capitalAllocation: 20, moicCalibration: { median: 1.8, p90: 3 } },
    { name: 'Reserve', capitalAllocation: 10, moicCalibration: { median: 1.2, p90: 2 } },
  ],
  correlationWeights: { macro: 0.5, systematic: 0.25, idiosyncratic: 0.25 },
  recycling: { enabled: true, mode: 'same-bucket', reinvestmentRate: 0.8, avgHoldingPeriod: 5, fundLifetime: 10 },
}

async function call(cache, label) {
  const t = process.hrtime.bigint()
  const r = await cache.getOrGenerate(config)
  const ms = Number(process.hrtime.bigint() - t) / 1e6
  const ratio = r.compressed.compressedSize / r.compressed.uncompressedSize
  console.log(
    `${label.padEnd(22)} source=${r.metadata.source.padEnd(9)} ${ms.toFixed(2).padStart(8)} ms  ` +
      `${r.compressed.numScenarios} x ${r.compressed.numBuckets}, ${r.compressed.compressedSize} bytes (ratio ${ratio.toFixed(3)})`,
  )
  return r
}

async function main() {
  const second = process.argv[2] === '--second-process'
  const cache = await ScenarioMatrixCache.open()
  if (second) {
    await call(cache, 'second process')
  } else {
    console.log(`key ${canonicalKey(config)}`)
    console.log(`durable store: ${process.env.DATABASE_URL ? 'DATABASE_URL' : 'embedded SQLite (.scenario-matrix-cache/cache.db)'}; redis: ${process.env.REDIS_URL ? 'REDIS_URL' : 'off'}`)
    await call(cache, 'first call')
    await call(cache, 'second call')
    execFileSync(process.execPath, [__filename, '--second-process'], { stdio: 'inherit' })
    const s = cache.stats()
    console.log('stats:', JSON.stringify({ generations: s.generations, hitRate: s.hitRate, memory: s.memory, durable: s.durable, redis: s.redis }))
  }
  await cache.close()
}

main().catch((e) => {
  console.error(`${e.code ?? 'ERROR'}: ${e.message}`)
  process.exit(1)
})
