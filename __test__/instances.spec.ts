// Three server processes sharing one PostgreSQL database and Redis, each with its own
// memory tier: an invalidation in one reaches the memory tiers of the others within
// 100 ms (PostgreSQL LISTEN/NOTIFY; README "Many instances").
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { canonicalKey } from '../lib/index.js'
import { config, createDatabase, query, REDIS_URL, uniqueName } from './helpers/services'

/** One process of helpers/peer.cjs and a way to ask it things. */
class Peer {
  private next = 0
  private waiting = new Map<number, (reply: { result?: unknown; error?: { code: string; message: string } }) => void>()
  readonly ready: Promise<void>

  constructor(private child: ChildProcessWithoutNullStreams) {
    let started: () => void
    this.ready = new Promise((resolve) => (started = resolve))
    createInterface({ input: child.stdout }).on('line', (line) => {
      const msg = JSON.parse(line)
      if (msg.ready) return started()
      this.waiting.get(msg.id)?.(msg)
      this.waiting.delete(msg.id)
    })
  }

  static start(options: object): Peer {
    const child = spawn(process.execPath, [join(__dirname, 'helpers', 'peer.cjs')], {
      env: { ...process.env, SMC_OPTIONS: JSON.stringify(options) },
    })
    child.stderr.pipe(process.stderr)
    return new Peer(child)
  }

  async ask(op: string, args: object = {}): Promise<unknown> {
    const id = this.next++
    const reply = await new Promise<{ result?: unknown; error?: { code: string; message: string } }>((resolve) => {
      this.waiting.set(id, resolve)
      this.child.stdin.write(JSON.stringify({ id, op, ...args }) + '\n')
    })
    if (reply.error) throw Object.assign(new Error(reply.error.message), { code: reply.error.code })
    return reply.result
  }
}

let db: Awaited<ReturnType<typeof createDatabase>>
let peers: Peer[] = []

beforeAll(async () => {
  db = await createDatabase()
  const options = { databaseUrl: db.url, redisUrl: REDIS_URL, redisKeyPrefix: `${uniqueName('smc_peers')}:` }
  peers = [Peer.start(options), Peer.start(options), Peer.start(options)]
  await Promise.all(peers.map((p) => p.ready))
}, 30_000)

afterAll(async () => {
  await Promise.all(peers.map((p) => p.ask('close').catch(() => undefined)))
  await db?.drop()
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('three processes sharing PostgreSQL and Redis', () => {
  for (const byFund of [false, true]) {
    it(`${byFund ? 'invalidateFund' : 'invalidate'} in one process: 100 ms later neither other process returns the key from get(key)`, async () => {
      const fundId = byFund ? 'peers-fund' : 'peers-key'
      const cfg = config(fundId, 2_000)
      const key = canonicalKey(cfg as never)
      await peers[0].ask('getOrGenerate', { config: cfg })
      for (const p of peers) {
        await p.ask('getOrGenerate', { config: cfg })
        expect(await p.ask('get', { key })).toBe('memory')
      }
      expect(await peers[0].ask(byFund ? 'invalidateFund' : 'invalidate', byFund ? { fundId } : { key })).toBe(byFund ? 1 : true)
      await sleep(100)
      for (const p of peers.slice(1)) expect(await p.ask('get', { key })).toBeNull()

      const audit = await query<{ scope: string; removed: number; origin: string }>(
        db.url,
        'SELECT scope, removed, origin FROM scenario_matrix_invalidations WHERE fund_id = $1 OR matrix_key = $2',
        [fundId, key],
      )
      expect(audit).toEqual([expect.objectContaining({ scope: byFund ? 'fund' : 'key', removed: 1 })])
      expect(audit[0].origin).toMatch(/:\d+#\d+$/)
    })
  }
})
