// npm run bench: the cache against the plain-JS way (bench/baseline.js), side
// by side in one run, on the real PostgreSQL and Redis (PG_ADMIN_URL /
// REDIS_URL, default the local ones). Each side and size runs in a child
// process of its own, so peak RSS is that run's. Prints a table with ratios and
// writes bench/results.json (results-quick.json with --quick). `--cache-only`
// leaves out the portfolio and optimiser benches (results-cache.json).
const { execFileSync } = require('node:child_process')
const { readFileSync, writeFileSync } = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { withLoopDelay } = require('./loop-delay')

const { scratchDatabase } = require('./scratch-db')
const REDIS = process.env.REDIS_URL || 'redis://127.0.0.1:6379'
const QUICK = process.argv.includes('--quick')
// --cache-only: the cache paths alone, without the portfolio and optimiser benches.
const CACHE_ONLY = process.argv.includes('--cache-only')
const RESULTS = path.join(__dirname, QUICK ? 'results-quick.json' : CACHE_ONLY ? 'results-cache.json' : 'results.json')

// Iterations per path: [small, large].
const N = {
  cold: QUICK ? [5, 2] : [30, 6],
  memory: QUICK ? [200, 10] : [3000, 100],
  redis: QUICK ? [50, 5] : [500, 40],
  postgres: QUICK ? [50, 5] : [500, 30],
  baselineCold: QUICK ? [3, 1] : [10, 3],
}

const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]
}
const summary = (xs) => ({ n: xs.length, p50: quantile(xs, 0.5), p99: quantile(xs, 0.99) })

async function timeIt(n, fn) {
  const out = []
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint()
    await fn(i)
    out.push(Number(process.hrtime.bigint() - t) / 1e6)
  }
  return out
}

async function childOurs(size) {
  const { canonicalKey, ScenarioMatrixCache } = require('../index.js')
  const configs = require('./configs')
  const i = size === 'small' ? 0 : 1
  const db = await scratchDatabase()
  const prefix = `smc-bench-${process.pid}:`
  const base = { databaseUrl: db.url, redisUrl: REDIS, redisKeyPrefix: prefix }
  const cache = await ScenarioMatrixCache.open(base)
  const r = {}
  // Peak RSS so far (MB) after each phase: where the peak is reached.
  const peaks = {}
  const peak = (phase) => (peaks[phase] = Math.round(process.resourceUsage().maxRSS / 1024))
  peak('open')
  let loopDelay = 0
  r.cold = []
  for (let k = 0; k < N.cold[i]; k++) {
    const c = configs[size](`cold-${k}`)
    const t = process.hrtime.bigint()
    loopDelay = Math.max(loopDelay, await withLoopDelay(() => cache.getOrGenerate(c)))
    r.cold.push(Number(process.hrtime.bigint() - t) / 1e6)
    // Untimed: so the memory tier does not accumulate the cold-miss matrices.
    await cache.invalidate(canonicalKey(c))
  }
  peak('cold misses')
  const cfg = configs[size]('hot')
  await cache.getOrGenerate(cfg)
  r.memory = await timeIt(N.memory[i], () => cache.getOrGenerate(cfg))
  peak('memory hits')
  const viaRedis = await ScenarioMatrixCache.open({ ...base, memoryMaxBytes: 0 })
  r.redis = await timeIt(N.redis[i], () => viaRedis.getOrGenerate(cfg))
  peak('redis hits')
  // The floor under any Redis hit: the same GET read raw from a socket, no client library.
  const raw = await rawRedis(REDIS)
  r.redisRawGet = await timeIt(N.redis[i], () => raw.get(`${prefix}${canonicalKey(cfg)}`))
  raw.close()
  const viaPg = await ScenarioMatrixCache.open({ ...base, memoryMaxBytes: 0, redisUrl: '' })
  r.postgres = await timeIt(N.postgres[i], () => viaPg.getOrGenerate(cfg))
  peak('postgres hits')
  // Untimed, last (it changes the pacing): memory hits with RSS and PSS read
  // after each. A large hit is a private mapping of one sealed file; RSS
  // counts its pages once per live mapping, PSS divides them among them.
  const maxRssMb = process.resourceUsage().maxRSS / 1024
  let shared = null
  try {
    if (size === 'large') {
      shared = { rssMb: 0, pssMb: 0 }
      for (let k = 0; k < 30; k++) {
        await cache.getOrGenerate(cfg)
        const pss = /^Pss:\s+(\d+)/m.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))
        shared.rssMb = Math.max(shared.rssMb, process.memoryUsage.rss() / 2 ** 20)
        shared.pssMb = Math.max(shared.pssMb, pss ? Number(pss[1]) / 1024 : 0)
      }
    }
  } catch {
    shared = null // no smaps_rollup here (not Linux, or before 4.14)
  }
  const sources = [cache, viaRedis, viaPg].map((c) => c.stats())
  for (const c of [cache, viaRedis, viaPg]) await c.close()
  await db.drop()
  await dropPrefix(prefix)
  return {
    ...r,
    loopDelayMs: loopDelay,
    maxRssMb,
    peakRssAfterPhaseMb: peaks,
    memoryHitsSampledMb: shared,
    generations: sources[0].generations,
  }
}

/**
 * A plain RESP connection: `get(key)` sends GET and resolves once the whole
 * bulk reply has arrived (bytes are counted, not kept): the floor under any
 * Redis hit of that value, with no client library in the way.
 */
async function rawRedis(url) {
  const net = require('node:net')
  const { hostname, port } = new URL(url)
  const sock = net.connect(Number(port || 6379), hostname)
  await new Promise((resolve, reject) => sock.once('connect', resolve).once('error', reject))
  let pending = null
  sock.on('data', (d) => {
    const p = pending
    if (!p) return
    if (p.want < 0) {
      const eol = d.indexOf('\r\n')
      p.want = eol + 2 + Number(d.subarray(1, eol).toString()) + 2
    }
    p.got += d.length
    if (p.got >= p.want) {
      pending = null
      p.resolve(p.got)
    }
  })
  return {
    get: (key) =>
      new Promise((resolve) => {
        pending = { want: -1, got: 0, resolve }
        sock.write(`*2\r\n$3\r\nGET\r\n$${Buffer.byteLength(key)}\r\n${key}\r\n`)
      }),
    close: () => sock.destroy(),
  }
}

async function dropPrefix(prefix) {
  const { createClient } = require('redis')
  const redis = createClient({ url: REDIS })
  await redis.connect()
  const keys = await redis.keys(`${prefix}*`)
  if (keys.length) await redis.del(keys)
  await redis.quit()
}

async function childBaseline(size) {
  const pg = require('pg')
  const { createClient } = require('redis')
  const configs = require('./configs')
  const { generate, compress, BaselineStore } = require('./baseline')
  const i = size === 'small' ? 0 : 1
  const db = await scratchDatabase()
  const pgc = new pg.Client({ connectionString: db.url })
  await pgc.connect()
  const redis = createClient({ url: REDIS })
  await redis.connect()
  const prefix = `smc-bench-baseline-${process.pid}:`
  const store = new BaselineStore(pgc, redis, prefix)
  await store.init()
  const r = {}
  let loopDelay = 0
  const miss = async (cfg, key) => {
    const m = generate(cfg, 42)
    await store.writeBoth(key, cfg.fundId, compress(m, cfg.numScenarios, cfg.buckets.length))
  }
  r.cold = []
  for (let k = 0; k < N.baselineCold[i]; k++) {
    const t = process.hrtime.bigint()
    loopDelay = Math.max(loopDelay, await withLoopDelay(() => miss(configs[size](`cold-${k}`), `cold-${k}`)))
    r.cold.push(Number(process.hrtime.bigint() - t) / 1e6)
  }
  await miss(configs[size]('hot'), 'hot')
  r.redis = await timeIt(N.redis[i], () => store.redisHit('hot'))
  r.postgres = await timeIt(N.postgres[i], () => store.pgHit('hot'))
  await redis.quit()
  await dropPrefix(prefix)
  await pgc.end()
  await db.drop()
  return { ...r, loopDelayMs: loopDelay, maxRssMb: process.resourceUsage().maxRSS / 1024 }
}

const TARGETS = {
  memory: [0.03, 3],
  redis: [0.15, 10],
  postgres: [0.8, 30],
  cold: [3, 150],
}

function fmt(x) {
  return x === undefined ? '-' : x < 1 ? x.toFixed(3) : x < 100 ? x.toFixed(2) : x.toFixed(0)
}

function main() {
  const results = { machine: machine(), quick: QUICK, runs: {} }
  for (const size of ['small', 'large']) {
    for (const side of ['ours', 'baseline']) {
      process.stderr.write(`running ${side} ${size}...\n`)
      const out = execFileSync(process.execPath, [__filename, '--child', side, size, ...(QUICK ? ['--quick'] : [])], {
        encoding: 'utf8',
        maxBuffer: 64 << 20,
      })
      results.runs[`${side}-${size}`] = JSON.parse(out)
    }
  }
  const rows = []
  for (const size of ['small', 'large']) {
    const ours = results.runs[`ours-${size}`]
    const base = results.runs[`baseline-${size}`]
    for (const p of ['memory', 'redis', 'postgres', 'cold']) {
      const o = summary(ours[p])
      const b = base[p] ? summary(base[p]) : undefined
      rows.push({
        size: size === 'small' ? '10,000 x 5' : '100,000 x 50',
        path: p === 'cold' ? 'cold miss' : `${p} hit`,
        ours: o,
        baseline: b,
        speedup: b ? b.p50 / o.p50 : undefined,
        target: TARGETS[p][size === 'small' ? 0 : 1],
      })
    }
  }
  results.table = rows
  results.largeRun = {
    loopDelayMs: { ours: results.runs['ours-large'].loopDelayMs, baseline: results.runs['baseline-large'].loopDelayMs },
    maxRssMb: { ours: results.runs['ours-large'].maxRssMb, baseline: results.runs['baseline-large'].maxRssMb },
  }
  writeFileSync(RESULTS, JSON.stringify(results, null, 2) + '\n')

  const lines = [
    '| path | size | ours p50 (ms) | ours p99 (ms) | plain JS p50 (ms) | plain JS p99 (ms) | speed-up (p50) | target p50 (ms) | met |',
    '|---|---|---|---|---|---|---|---|---|',
  ]
  for (const r of rows) {
    lines.push(
      `| ${r.path} | ${r.size} | ${fmt(r.ours.p50)} | ${fmt(r.ours.p99)} | ${fmt(r.baseline?.p50)} | ${fmt(r.baseline?.p99)} | ` +
        `${r.speedup ? r.speedup.toFixed(1) + 'x' : '(none)'} | <= ${r.target} | ${r.ours.p50 <= r.target ? 'yes' : 'NO'} |`,
    )
  }
  for (const size of ['small', 'large']) {
    const raw = results.runs[`ours-${size}`].redisRawGet
    if (raw) {
      const f = summary(raw)
      lines.push(
        `| (floor) raw socket GET of the same value | ${size === 'small' ? '10,000 x 5' : '100,000 x 50'} | ${fmt(f.p50)} | ${fmt(f.p99)} | | | | | |`,
      )
    }
  }
  const L = results.largeRun
  lines.push(
    `| longest event-loop delay during the 100,000 x 50 misses | | ${fmt(L.loopDelayMs.ours)} | | ${fmt(L.loopDelayMs.baseline)} | | | < 5 | ${L.loopDelayMs.ours < 5 ? 'yes' : 'NO'} |`,
    `| peak RSS of the 100,000 x 50 run (MB) | | ${fmt(L.maxRssMb.ours)} | | ${fmt(L.maxRssMb.baseline)} | | | <= 150 | ${L.maxRssMb.ours <= 150 ? 'yes' : 'NO'} |`,
  )
  console.log(lines.join('\n'))
  const phases = results.runs['ours-large'].peakRssAfterPhaseMb
  console.log(`\npeak RSS so far after each phase of the 100,000 x 50 run (MB): ${JSON.stringify(phases)}`)
  const sampled = results.runs['ours-large'].memoryHitsSampledMb
  if (sampled) {
    console.log(
      `30 more memory hits, RSS and PSS read after each (MB): RSS up to ${fmt(sampled.rssMb)}, PSS up to ${fmt(sampled.pssMb)} (RSS counts a sealed file's pages once per live mapping)`,
    )
  }
  console.log(`\n${results.machine.cpus} x ${results.machine.cpu}, ${results.machine.memGb} GB, Node ${results.machine.node}, ${results.machine.date}`)
  if (!CACHE_ONLY) benchPortfolio(results)
}

/** Portfolio analytics (bench/portfolio.js), in a process of its own; appended to the results. */
function benchPortfolio(results) {
  process.stderr.write('running portfolio...\n')
  const out = execFileSync(process.execPath, [path.join(__dirname, 'portfolio.js'), '--json', ...(QUICK ? ['--quick'] : [])], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  })
  results.portfolio = JSON.parse(out)
  writeFileSync(RESULTS, JSON.stringify(results, null, 2) + '\n')
  const { rows } = require('./portfolio')
  console.log('\n| portfolio | size | ours p50 (ms) | ours p99 (ms) | getMatrix + JS p50 (ms) | getMatrix + JS p99 (ms) | speed-up (p50) | target | met |')
  console.log('|---|---|---|---|---|---|---|---|---|')
  console.log(rows(results.portfolio).join('\n'))
  benchOptimizer(results)
}

/** The optimiser against the highs npm package (bench/optimizer.js), in a process of its own. */
function benchOptimizer(results) {
  process.stderr.write('running optimizer...\n')
  const out = execFileSync(process.execPath, [path.join(__dirname, 'optimizer.js'), '--json', ...(QUICK ? ['--quick'] : [])], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  })
  results.optimizer = JSON.parse(out)
  writeFileSync(RESULTS, JSON.stringify(results, null, 2) + '\n')
  const { rows, HEADER } = require('./optimizer')
  console.log(['', ...HEADER, ...rows(results.optimizer)].join('\n'))
}

function machine() {
  return {
    cpu: os.cpus()[0]?.model,
    cpus: os.cpus().length,
    memGb: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    date: new Date().toISOString(),
  }
}

if (process.argv[2] === '--child') {
  const [side, size] = process.argv.slice(3, 5)
  ;(side === 'ours' ? childOurs(size) : childBaseline(size))
    .then((r) => process.stdout.write(JSON.stringify(r)))
    .catch((e) => {
      console.error(e)
      process.exit(1)
    })
} else {
  main()
}
