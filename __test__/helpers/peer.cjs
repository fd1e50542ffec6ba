// A server process that takes orders: opens the cache from SMC_OPTIONS, then reads
// one JSON request per line on stdin ({id, op, ...}) and answers each with one JSON
// line on stdout ({id, result} or {id, error: {code, message}}). `close` closes the
// cache and exits. Lets a test drive several processes in step.
const readline = require('node:readline')
const { ScenarioMatrixCache } = require('../../lib/index.js')

async function main() {
  const cache = await ScenarioMatrixCache.open(JSON.parse(process.env.SMC_OPTIONS || '{}'))
  const ops = {
    getOrGenerate: async (r) => (await cache.getOrGenerate(r.config)).metadata.source,
    get: async (r) => (await cache.get(r.key))?.metadata.source ?? null,
    invalidate: (r) => cache.invalidate(r.key),
    invalidateFund: (r) => cache.invalidateFund(r.fundId),
    close: async () => {
      await cache.close()
      setImmediate(() => process.exit(0))
      return true
    },
  }
  process.stdout.write(JSON.stringify({ ready: true }) + '\n')
  for await (const line of readline.createInterface({ input: process.stdin })) {
    const r = JSON.parse(line)
    try {
      const result = await ops[r.op](r)
      process.stdout.write(JSON.stringify({ id: r.id, result }) + '\n')
    } catch (e) {
      process.stdout.write(JSON.stringify({ id: r.id, error: { code: e.code, message: e.message } }) + '\n')
    }
  }
}

main().catch((e) => {
  process.stderr.write(`${e.code}: ${e.message}\n`)
  process.exit(1)
})
