// The plain-JS way the TypeScript server does it today, for side-by-side runs:
// the same model generated in JS on the event loop, node:zlib on the f32 bytes,
// a JSON + base64 value through the `redis` client, and `bytea` (plus the
// per-scenario `scenario_states` JSON it wrote) through the `pg` client.
const zlib = require('node:zlib')

// mulberry32: a small seeded PRNG, as a seeded TypeScript generator would use.
function rng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function generate(config, seed = 1) {
  const rand = rng(seed)
  const normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand())
  const { numScenarios, buckets, correlationWeights: w } = config
  const nb = buckets.length
  const params = buckets.map(({ moicCalibration: { median, p90 } }) => {
    const alpha = p90 === median ? 100 : Math.log(5) / Math.log(p90 / median)
    return { alpha, xMin: p90 === median ? median : median * Math.pow(0.5, 1 / alpha) }
  })
  const [sm, ss, si] = [Math.sqrt(w.macro), Math.sqrt(w.systematic), Math.sqrt(w.idiosyncratic)]
  const out = new Float32Array(numScenarios * nb)
  for (let s = 0; s < numScenarios; s++) {
    const m = normal()
    for (let b = 0; b < nb; b++) {
      const { alpha, xMin } = params[b]
      const base = xMin / Math.pow(1 - rand(), 1 / alpha)
      const z = sm * m + ss * normal() + si * normal()
      out[s * nb + b] = Math.max(0, base * Math.exp(0.5 * z))
    }
  }
  return out
}

const bytesOf = (f32) => Buffer.from(f32.buffer, f32.byteOffset, f32.byteLength)

function compress(f32, numScenarios, numBuckets) {
  const data = zlib.deflateSync(bytesOf(f32))
  return { data, numScenarios, numBuckets, version: 1, uncompressedSize: f32.byteLength, compressedSize: data.length }
}

const decompress = (data) => {
  const raw = zlib.inflateSync(data)
  return new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4)
}

const SCHEMA = `CREATE TABLE IF NOT EXISTS baseline_matrices (
  matrix_key text PRIMARY KEY, fund_id text, moic_matrix bytea, scenario_states jsonb,
  compression_codec text, bucket_count integer, status text)`

class BaselineStore {
  constructor(pgClient, redisClient, prefix) {
    this.pg = pgClient
    this.redis = redisClient
    this.prefix = prefix
  }
  async init() {
    await this.pg.query(SCHEMA)
  }
  async writeBoth(key, fundId, c) {
    const states = JSON.stringify({ scenarios: Array.from({ length: c.numScenarios }, (_, id) => ({ id, params: {} })) })
    await this.pg.query(
      `INSERT INTO baseline_matrices VALUES ($1, $2, $3, $4, 'zstd', $5, 'complete') ON CONFLICT (matrix_key) DO NOTHING`,
      [key, fundId, c.data, states, c.numBuckets],
    )
    const value = JSON.stringify({ ...c, data: c.data.toString('base64') })
    await this.redis.set(this.prefix + key, value, { EX: 86400 })
  }
  async redisHit(key) {
    const v = JSON.parse(await this.redis.get(this.prefix + key))
    return { ...v, data: Buffer.from(v.data, 'base64') }
  }
  async pgHit(key) {
    const { rows } = await this.pg.query(
      `SELECT moic_matrix, scenario_states, bucket_count FROM baseline_matrices WHERE matrix_key = $1 AND status = 'complete'`,
      [key],
    )
    const r = rows[0]
    const c = { data: r.moic_matrix, numScenarios: r.scenario_states.scenarios.length, numBuckets: r.bucket_count }
    // Today's PostgreSQL hit waits for the Redis re-write before returning.
    await this.redis.set(this.prefix + key, JSON.stringify({ ...c, data: c.data.toString('base64') }), { EX: 86400 })
    return c
  }
}

module.exports = { generate, compress, decompress, BaselineStore }
