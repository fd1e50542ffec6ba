// npm run sizes: what one cached matrix costs in each store, measured (README "Many
// instances", sizing). For each shape it generates 3 matrices (different funds, so
// different keys) into a scratch PostgreSQL database and Redis prefix, then reads:
// the payload bytes (storeReport), Redis MEMORY USAGE of each key, and the growth of
// the table's total relation size (heap + TOAST + indexes) per row.
const pg = require('pg')
const { createClient } = require('redis')
const { ScenarioMatrixCache } = require('../lib/index.js')
const { sized } = require('./configs.js')

const PG_ADMIN = process.env.PG_ADMIN_URL || 'postgres://postgres@127.0.0.1:5432/postgres'
const REDIS = process.env.REDIS_URL || 'redis://127.0.0.1:6379'
const SHAPES = [
  [10_000, 5],
  [10_000, 50],
  [100_000, 5],
  [100_000, 50],
]
const PER_SHAPE = 3

async function sql(url, text, params = []) {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  try {
    return (await c.query(text, params)).rows
  } finally {
    await c.end()
  }
}

async function main() {
  const name = `smc_sizes_${process.pid}`
  const url = PG_ADMIN.replace(/\/[^/]*$/, `/${name}`)
  const prefix = `${name}:`
  await sql(PG_ADMIN, `CREATE DATABASE ${name}`)
  const redis = await createClient({ url: REDIS }).connect()
  const cache = await ScenarioMatrixCache.open({ databaseUrl: url, redisUrl: REDIS, redisKeyPrefix: prefix, memoryMaxBytes: 0 })
  const relation = async () =>
    Number((await sql(url, "SELECT pg_total_relation_size('scenario_matrices') AS n"))[0].n)
  const rows = []
  try {
    for (const [s, b] of SHAPES) {
      const before = await relation()
      const payloadBefore = (await cache.storeReport()).bytes
      let redisBytes = 0
      for (let i = 0; i < PER_SHAPE; i++) {
        const { key } = await cache.ensure(sized(s, b, `sizes-${s}x${b}-${i}`))
        await cache.flush()
        redisBytes += Number(await redis.sendCommand(['MEMORY', 'USAGE', `${prefix}${key}`, 'SAMPLES', '0']))
      }
      const payload = ((await cache.storeReport()).bytes - payloadBefore) / PER_SHAPE
      const table = ((await relation()) - before) / PER_SHAPE
      rows.push({ shape: `${s.toLocaleString('en')} x ${b}`, raw: s * b * 4, payload, postgres: table, redis: redisBytes / PER_SHAPE })
    }
  } finally {
    await cache.close()
    for await (const keys of redis.scanIterator({ MATCH: `${prefix}*` })) if (keys.length) await redis.del(keys)
    await redis.quit()
    await sql(PG_ADMIN, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  }
  const mib = (n) => `${(n / 1048576).toFixed(2)} MiB`
  console.log('| shape (scenarios x buckets) | raw float32 | stored payload | PostgreSQL per row | Redis per key |')
  console.log('|---|---|---|---|---|')
  for (const r of rows) console.log(`| ${r.shape} | ${mib(r.raw)} | ${mib(r.payload)} | ${mib(r.postgres)} | ${mib(r.redis)} |`)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
