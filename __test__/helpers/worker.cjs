// A separate server process: opens the cache from SMC_OPTIONS, runs SMC_CALLS
// concurrent getOrGenerate calls for SMC_CONFIG (or, with SMC_CONFIGS, call i for
// config i modulo their number), prints what it saw, closes and
// exits on its own (a hang here means something keeps Node alive after close(),
// or, with SMC_SKIP_CLOSE=1, after the last call of a cache never closed).
const { ScenarioMatrixCache } = require('../../lib/index.js')

async function main() {
  const options = JSON.parse(process.env.SMC_OPTIONS || '{}')
  const configs = process.env.SMC_CONFIGS ? JSON.parse(process.env.SMC_CONFIGS) : [JSON.parse(process.env.SMC_CONFIG)]
  const calls = Number(process.env.SMC_CALLS || 1)
  const cache = await ScenarioMatrixCache.open(options)
  const results = await Promise.all(
    Array.from({ length: calls }, (_, i) => cache.getOrGenerate(configs[i % configs.length])),
  )
  const stats = cache.stats()
  if (process.env.SMC_SKIP_CLOSE !== '1') await cache.close()
  process.stdout.write(
    JSON.stringify({
      sources: results.map((r) => r.metadata.source),
      keys: [...new Set(results.map((r) => r.metadata.configHash))],
      generations: stats.generations,
    }),
  )
}

main().catch((e) => {
  process.stderr.write(`${e.code}: ${e.message}\n`)
  process.exit(1)
})
