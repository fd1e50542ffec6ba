'use strict'
// A PostgreSQL database of a bench's own (smc_bench_<pid>_<time>), created on
// the server PG_ADMIN_URL names (default the local one) and dropped by `drop()`.
const PG_ADMIN = process.env.PG_ADMIN_URL || 'postgres://postgres@127.0.0.1:5432/postgres'

async function scratchDatabase() {
  const pg = require('pg')
  const name = `smc_bench_${process.pid}_${Date.now()}`
  const admin = new pg.Client({ connectionString: PG_ADMIN })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${name}`)
  await admin.end()
  const url = new URL(PG_ADMIN)
  url.pathname = `/${name}`
  return {
    name,
    url: url.toString(),
    drop: async () => {
      const a = new pg.Client({ connectionString: PG_ADMIN })
      await a.connect()
      await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await a.end()
    },
  }
}

module.exports = { PG_ADMIN, scratchDatabase }
