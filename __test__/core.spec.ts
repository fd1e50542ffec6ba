import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'

import {
  canonicalKey,
  compressMatrix,
  decompressMatrix,
  generateScenarios,
  validateScenarioConfig,
  type ScenarioConfig,
} from '../lib/index.js'
import { config } from './helpers/services'

const fixtures = join(__dirname, '..', 'tests', 'fixtures')

describe('canonicalKey', () => {
  const pairs = readFileSync(join(fixtures, 'canonical-keys-v1.2.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { config: ScenarioConfig; key: string })

  it('matches every TypeScript key in the fixture', () => {
    expect(pairs).toHaveLength(60)
    for (const { config, key } of pairs) expect(canonicalKey(config)).toBe(key)
  })

  it('includes the seed when given, so seeds never share a matrix', () => {
    const c = config('seeded', 100)
    const plain = canonicalKey(c)
    expect(canonicalKey({ ...c, seed: 'a' })).not.toBe(plain)
    expect(canonicalKey({ ...c, seed: 'a' })).not.toBe(canonicalKey({ ...c, seed: 'b' }))
    expect(canonicalKey({ ...c, seed: undefined })).toBe(plain)
  })
})

describe('validation errors', () => {
  it('throws E_CONFIG listing every problem with its path', () => {
    const bad = config('f', 100) as any
    bad.buckets[2].moicCalibration.p90 = 11 // 11 / 2 >= 5: alpha <= 1
    bad.buckets[0].nmae = 'typo'
    bad.numScenarios = 0
    try {
      validateScenarioConfig(bad)
      expect.unreachable()
    } catch (e: any) {
      expect(e).toBeInstanceOf(Error)
      expect(e.code).toBe('E_CONFIG')
      const paths = e.issues.map((i: any) => i.path)
      expect(paths).toEqual(expect.arrayContaining(['buckets[2].moicCalibration.p90', 'buckets[0].nmae', 'numScenarios']))
      expect(e.message).toContain('buckets[2].moicCalibration.p90')
    }
  })

  it('rejects hostile input without crashing', () => {
    const deep: any = {}
    let cur = deep
    for (let i = 0; i < 10_000; i++) cur = cur.next = {}
    const cyclic: any = config('c', 10)
    cyclic.recycling.self = cyclic
    for (const v of [null, 42, 'x', [], deep, cyclic, { ...config('f', 10), buckets: new Array(100_000).fill(1) }]) {
      expect(() => canonicalKey(v as any)).toThrow(expect.objectContaining({ code: 'E_CONFIG' }))
    }
  })

  it('rejects async calls with a coded error', async () => {
    await expect(generateScenarios({ fundId: 'x' } as any)).rejects.toMatchObject({ code: 'E_CONFIG' })
  })
})

describe('generateScenarios', () => {
  it('returns the compressed matrix and metadata keyed by the canonical key', async () => {
    const c = config('gen', 10_000)
    const r = await generateScenarios(c)
    expect(r.metadata.configHash).toBe(canonicalKey(c))
    expect(r.metadata.source).toBe('generated')
    expect(r.metadata.numScenarios).toBe(10_000)
    expect(r.metadata.recyclingMultiples).toHaveLength(3)
    expect(new Date(r.metadata.generatedAt).toISOString()).toBe(r.metadata.generatedAt)
    expect(r.compressed).toMatchObject({ numScenarios: 10_000, numBuckets: 3, codec: 'zstd', layout: 'row-major', version: 2 })
    expect(r.compressed.compressedSize).toBe(r.compressed.data.length)
    expect(r.compressed.uncompressedSize).toBe(10_000 * 3 * 4)
    const m = await decompressMatrix(r.compressed)
    expect(m).toBeInstanceOf(Float32Array)
    expect(m.length).toBe(30_000)
    expect(m.every((x) => Number.isFinite(x) && x >= 0)).toBe(true)
    // Deterministic: the same config gives the same bytes.
    const again = await generateScenarios(c)
    expect(Buffer.compare(again.compressed.data, r.compressed.data)).toBe(0)
  })
})

describe('codec', () => {
  it('round-trips any floats bit for bit', async () => {
    const m = new Float32Array(7 * 3)
    for (let i = 0; i < m.length; i++) m[i] = Math.random() * 10
    m[0] = -0
    m[1] = Number.POSITIVE_INFINITY
    const c = await compressMatrix(m, 7, 3)
    const back = await decompressMatrix(c)
    expect(Buffer.from(back.buffer, back.byteOffset, back.byteLength)).toEqual(Buffer.from(m.buffer))
  })

  it('reads the TypeScript implementation payloads', async () => {
    const rows = JSON.parse(readFileSync(join(fixtures, 'legacy-rows.json'), 'utf8'))
    for (const row of rows) {
      const data = Buffer.from(row.payloadBase64, 'base64')
      const m = await decompressMatrix({ data, numScenarios: row.numScenarios, numBuckets: row.numBuckets, version: 1 })
      expect(Buffer.from(m.buffer, m.byteOffset, m.byteLength).toString('base64')).toBe(row.float32LeBase64)
    }
  })

  it('rejects corrupt payloads with E_CORRUPT', async () => {
    const c = await compressMatrix(new Float32Array(100 * 5).fill(1.5), 100, 5)
    const flipped = Buffer.from(c.data)
    flipped[flipped.length - 3] ^= 0x40
    await expect(decompressMatrix({ ...c, data: flipped })).rejects.toMatchObject({ code: 'E_CORRUPT' })
    await expect(decompressMatrix({ ...c, data: c.data.subarray(0, 20) })).rejects.toMatchObject({ code: 'E_CORRUPT' })
    await expect(decompressMatrix({ ...c, data: Buffer.from('garbage') })).rejects.toMatchObject({ code: 'E_CORRUPT' })
  })

  it('compresses the values the array held at call time, whatever the caller does next', async () => {
    const rows = 100_000
    const cols = 50
    const original = new Float32Array(rows * cols)
    for (let i = 0; i < original.length; i++) original[i] = 1 + (i % 997) / 997
    const want = Buffer.from(original.buffer)
    for (let attempt = 0; attempt < 8; attempt++) {
      const m = original.slice()
      const pending = compressMatrix(m, rows, cols)
      m.fill(2)
      const back = await decompressMatrix(await pending)
      const got = Buffer.from(back.buffer, back.byteOffset, back.byteLength)
      expect(Buffer.compare(got, want), `attempt ${attempt}: the compressed matrix is not the original`).toBe(0)
    }
  })

  it('rejects a matrix whose length does not match its dimensions', async () => {
    await expect(compressMatrix(new Float32Array(10), 3, 3)).rejects.toMatchObject({ code: 'E_INVALID_ARGUMENT' })
  })
})
