// Test plumbing: a private PostgreSQL database and Redis prefix per spec file.
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { createClient } from 'redis'

export const PG_ADMIN = 'postgres://postgres@127.0.0.1:5432/postgres'
export const REDIS_URL = 'redis://127.0.0.1:6379'

export function uniqueName(prefix: string): string {
  return `${prefix}_${process.pid}_${randomBytes(4).toString('hex')}`
}

export async function createDatabase(): Promise<{ name: string; url: string; drop: () => Promise<void> }> {
  const name = uniqueName('smc_vitest')
  const admin = new pg.Client({ connectionString: PG_ADMIN })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${name}`)
  await admin.end()
  return {
    name,
    url: `postgres://postgres@127.0.0.1:5432/${name}`,
    drop: async () => {
      const a = new pg.Client({ connectionString: PG_ADMIN })
      await a.connect()
      await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await a.end()
    },
  }
}

export async function query<T = Record<string, unknown>>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  try {
    return (await c.query(sql, params)).rows as T[]
  } finally {
    await c.end()
  }
}

export async function redisClient() {
  const c = createClient({ url: REDIS_URL })
  await c.connect()
  return c
}

export function config(fundId: string, numScenarios: number, extra: Record<string, unknown> = {}) {
  return {
    fundId,
    taxonomyVersion: 'v1.2',
    numScenarios,
    buckets: [
      { name: 'Seed', capitalAllocation: 40, moicCalibration: { median: 1, p90: 3 } },
      { name: 'Series A', capitalAllocation: 35, moicCalibration: { median: 1.5, p90: 3.5 } },
      { name: 'Series B', capitalAllocation: 25, moicCalibration: { median: 2, p90: 4 } },
    ],
    correlationWeights: { macro: 0.5, systematic: 0.25, idiosyncratic: 0.25 },
    recycling: { enabled: true, mode: 'same-bucket' as const, reinvestmentRate: 0.8, avgHoldingPeriod: 5, fundLifetime: 10 },
    ...extra,
  }
}

/** Deletes every Redis key under `prefix` (each spec cleans up its own). */
export async function dropRedisPrefix(prefix: string): Promise<void> {
  const c = await redisClient()
  const keys = await c.keys(`${prefix}*`)
  if (keys.length) await c.del(keys)
  await c.quit()
}
