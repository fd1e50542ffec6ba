'use strict'
// Where the event loop's longest waits during large cold misses come from:
// `node bench/loop-gaps.js [N]` runs N cold misses of 100,000 x 50 (default
// 12) on PostgreSQL and Redis, as `npm run bench` does, with a 1 ms timer
// ticking. For each tick later than 2 ms it records how long the JS thread ran
// and how long it sat runnable without a core (/proc/<pid>/task/<pid>/schedstat),
// and whether a V8 collection overlapped it. Prints the eight longest gaps
// and a summary line (JSON). Linux only (schedstat). To see which threads
// held the cores meanwhile, run it under `perf sched record` and give the
// output of `perf sched timehist` to bench/loop-gaps-attribution.py.
const { readFileSync } = require('node:fs')
const { PerformanceObserver, performance } = require('node:perf_hooks')
const { canonicalKey, ScenarioMatrixCache } = require('../index.js')
const configs = require('./configs')
const { scratchDatabase } = require('./scratch-db')

const REDIS = process.env.REDIS_URL || 'redis://127.0.0.1:6379'

// [ns on a core, ns runnable waiting for one] of this process's main (JS) thread.
const schedstat = () => readFileSync(`/proc/${process.pid}/task/${process.pid}/schedstat`, 'utf8').split(' ').map(Number)

async function main() {
  const n = Number(process.argv[2]) || 12
  const collections = []
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) collections.push({ start: e.startTime, ms: e.duration, kind: e.detail?.kind })
  })
  observer.observe({ entryTypes: ['gc'] })
  const db = await scratchDatabase()
  const cache = await ScenarioMatrixCache.open({ databaseUrl: db.url, redisUrl: REDIS, redisKeyPrefix: `smc-bench-gaps-${process.pid}:` })
  const gaps = []
  try {
    const warmUp = configs.small('gaps-warm-up')
    await cache.getOrGenerate(warmUp)
    await cache.invalidate(canonicalKey(warmUp)) // nothing of this run stays in Redis
    for (let k = 0; k < n; k++) {
      const c = configs.large(`gaps-${k}`)
      let last = performance.now()
      let lastStat = schedstat()
      const timer = setInterval(() => {
        const now = performance.now()
        const stat = schedstat()
        if (now - last - 1 > 2) {
          gaps.push({ start: last, end: now, ms: now - last - 1, ranMs: (stat[0] - lastStat[0]) / 1e6, waitedMs: (stat[1] - lastStat[1]) / 1e6 })
        }
        last = now
        lastStat = stat
      }, 1)
      await cache.getOrGenerate(c)
      clearInterval(timer)
      await cache.invalidate(canonicalKey(c))
    }
    await new Promise((r) => setTimeout(r, 50)) // the last collections' entries
  } finally {
    observer.disconnect()
    await cache.close()
    await db.drop()
  }
  const overlapping = (g) => collections.filter((x) => x.start < g.end && x.start + x.ms > g.start)
  for (const g of [...gaps].sort((a, b) => b.ms - a.ms).slice(0, 8)) {
    const gc = overlapping(g).map((x) => `V8 collection (kind ${x.kind}) of ${x.ms.toFixed(2)} ms`)
    console.log(`gap ${g.ms.toFixed(2)} ms: JS thread ran ${g.ranMs.toFixed(2)} ms, waited for a core ${g.waitedMs.toFixed(2)} ms; ${gc.join(', ') || 'no collection'}`)
  }
  const withoutGc = gaps.filter((g) => overlapping(g).length === 0)
  const max = (xs) => Math.max(0, ...xs.map((g) => g.ms))
  console.log(
    JSON.stringify({
      misses: n,
      longestGapMs: max(gaps),
      longestGapWithoutCollectionMs: max(withoutGc),
      gapsOver5Ms: gaps.filter((g) => g.ms > 5).length,
      waitedShareOfGapsOver3Ms: gaps.filter((g) => g.ms > 3).reduce((s, g) => s + g.waitedMs, 0) / Math.max(1e-9, gaps.filter((g) => g.ms > 3).reduce((s, g) => s + g.ms, 0)),
      longestCollectionMs: Math.max(0, ...collections.map((x) => x.ms)),
    }),
  )
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
