// The operators' CLI (bin/scenario-matrix-cache.js), run as a child process against a
// private PostgreSQL database and Redis prefix (and a SQLite file where simpler): what
// it prints, the files it writes, its exit codes.
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { canonicalKey, ScenarioMatrixCache } from '../lib/index.js'
import { lines, runCli } from './helpers/cli'
import { config, createDatabase, dropRedisPrefix, query, redisClient, REDIS_URL, uniqueName } from './helpers/services'

let db: Awaited<ReturnType<typeof createDatabase>>
let prefix: string
let dir: string
/** The global options that point the CLI at this file's services. */
let stores: string[]

const cli = (...args: string[]) => runCli([...stores, ...args])
const file = (name: string) => join(dir, name)

/** Buckets out of key order, one name needing CSV quoting and XML escaping. */
const ODD = 'Growth & Late, "B+" <x>'
function oddConfig(fundId: string, numScenarios = 2_000) {
  const c = config(fundId, numScenarios)
  return {
    ...c,
    buckets: [
      { name: 'Series B', capitalAllocation: 25, moicCalibration: { median: 2, p90: 4 } },
      { name: 'Seed', capitalAllocation: 40, moicCalibration: { median: 1, p90: 3 } },
      { name: ODD, capitalAllocation: 35, moicCalibration: { median: 1.5, p90: 3.5 } },
    ],
  }
}
const NAMES = ['Series B', 'Seed', ODD]

function hasPython(module?: string): boolean {
  try {
    execFileSync('python3', ['-c', module ? `import ${module}` : 'pass'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/** The matrix as the library hands it out, for comparing the exports with. */
async function libraryMatrix(c: object) {
  const cache = await ScenarioMatrixCache.open({ databaseUrl: db.url, redisUrl: '', memoryMaxBytes: 0 })
  try {
    return await cache.getMatrix(c as never)
  } finally {
    await cache.close()
  }
}

/** RFC 4180 fields of one CSV line (quoted fields with "" escapes). */
function csvFields(line: string): string[] {
  const out: string[] = []
  let field = ''
  let quoted = false
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        field += '"'
        i++
      } else if (ch === '"') quoted = false
      else field += ch
    } else if (ch === '"') quoted = true
    else if (ch === ',') {
      out.push(field)
      field = ''
    } else field += ch
  }
  out.push(field)
  return out
}

/** Expects one `error E_CODE: ...` line on stderr, no stack trace, nothing on stdout. */
function expectOneErrorLine(run: { code: number | null; stdout: string; stderr: string }, code: string, exit = 1) {
  expect(run.code, run.stderr).toBe(exit)
  expect(run.stdout).toBe('')
  const err = lines(run.stderr).filter((l) => !l.startsWith('note: '))
  expect(err, run.stderr).toHaveLength(1)
  expect(err[0]).toMatch(new RegExp(`^error ${code}: `))
  expect(run.stderr).not.toMatch(/\n\s+at /)
  return err[0]
}

beforeAll(async () => {
  db = await createDatabase()
  prefix = `${uniqueName('smc_vitest_cli')}:`
  dir = mkdtempSync(join(tmpdir(), 'smc-cli-'))
  stores = ['--database-url', db.url, '--redis-url', REDIS_URL, '--redis-key-prefix', prefix]
})

afterAll(async () => {
  await db?.drop()
  await dropRedisPrefix(prefix)
  rmSync(dir, { recursive: true, force: true })
})

describe('key', () => {
  it('prints the canonical key, from a file or stdin, and as JSON', async () => {
    const c = oddConfig('cli-key')
    writeFileSync(file('key.json'), JSON.stringify(c))
    const run = await runCli(['key', file('key.json')])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout).toBe(`${canonicalKey(c as never)}\n`)
    expect(run.stderr).toBe('')

    const piped = await runCli(['key', '-', '--json'], { input: JSON.stringify(c) })
    expect(piped.code, piped.stderr).toBe(0)
    expect(JSON.parse(piped.stdout)).toStrictEqual({ key: canonicalKey(c as never) })
  })
})

describe('errors', () => {
  it('a bad config: one line naming the file, the field and the code, exit 1', async () => {
    const c = oddConfig('cli-bad')
    c.buckets[0].moicCalibration.p90 = 1 // below the median
    writeFileSync(file('bad.json'), JSON.stringify(c))
    for (const command of ['key', 'get', 'inspect']) {
      const line = expectOneErrorLine(await cli(command, file('bad.json')), 'E_CONFIG')
      expect(line).toContain('bad.json')
      expect(line).toContain('buckets[0].moicCalibration.p90')
    }
  })

  it('a file that is not JSON, a missing file, a usage mistake', async () => {
    writeFileSync(file('notjson.json'), '{"fundId": ')
    expect(expectOneErrorLine(await cli('key', file('notjson.json')), 'E_INPUT')).toContain('not valid JSON')
    expect(expectOneErrorLine(await cli('get', file('nope.json')), 'E_INPUT')).toContain('no such file')
    expect(expectOneErrorLine(await cli('get', file('key.json'), '--jsn'), 'E_USAGE', 2)).toContain('did you mean --json?')
    expect(expectOneErrorLine(await cli('get', file('key.json'), '--out', file('m.txt')), 'E_USAGE', 2)).toContain('.npy, .csv or .f32')
    expect(expectOneErrorLine(await cli('gc', '--older-than', '30 days'), 'E_USAGE', 2)).toContain('30d')
    expectOneErrorLine(await cli('gc'), 'E_USAGE', 2)
    expectOneErrorLine(await cli('frobnicate'), 'E_USAGE', 2)
  })

  it('an unreachable database: a coded line without the password', async () => {
    const run = await runCli(['stats', '--database-url', 'postgres://postgres:s3cret-pw@127.0.0.1:1/nowhere', '--redis-url', ''])
    expect(expectOneErrorLine(run, 'E_DURABLE_UNAVAILABLE')).toContain('--database-url')
    expect(run.stderr).not.toContain('s3cret-pw')
  })

  it('--help on every command, each with an example', async () => {
    for (const command of ['key', 'get', 'warm', 'verify', 'stats', 'gc', 'inspect']) {
      const run = await runCli([command, '--help'])
      expect(run.code, command).toBe(0)
      expect(run.stdout).toContain(`Usage: scenario-matrix-cache ${command}`)
      expect(run.stdout).toMatch(/Example:\n {2}\$ .*scenario-matrix-cache /)
      expect(Math.max(...lines(run.stdout).map((l) => l.length)), command).toBeLessThanOrEqual(80)
    }
    const top = await runCli(['--help'])
    expect(top.code).toBe(0)
    expect(Math.max(...lines(top.stdout).map((l) => l.length))).toBeLessThanOrEqual(80)
  })
})

describe('get --out', () => {
  const c = oddConfig('cli-get', 1_500)
  let expected: Awaited<ReturnType<typeof libraryMatrix>>

  beforeAll(async () => {
    writeFileSync(file('get.json'), JSON.stringify(c))
    const first = await cli('get', file('get.json'), '--out', file('m.npy'))
    expect(first.code, first.stderr).toBe(0)
    expect(first.stdout).toMatch(/^source +generated$/m)
    expect(first.stdout).toContain(canonicalKey(c as never))
    expect(first.stdout).toMatch(/^latency +[\d.]+ (ms|s)$/m)
    expect(first.stdout).toContain('1,500 scenarios x 3 buckets')
    for (const l of lines(first.stdout)) expect(l.length).toBeLessThanOrEqual(80)
    expected = await libraryMatrix(c)
    expect(expected.metadata.bucketNames).toStrictEqual(NAMES)
  })

  it('.npy: a NumPy 1.0 header for float32 (1500, 3), data aligned to 64 bytes, the values getMatrix gives', () => {
    const npy = readFileSync(file('m.npy'))
    expect(npy.subarray(0, 6).equals(Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]))).toBe(true) // \x93NUMPY
    expect([npy[6], npy[7]]).toStrictEqual([1, 0])
    const headerLen = npy.readUInt16LE(8)
    const dataStart = 10 + headerLen
    expect(dataStart % 64).toBe(0)
    const header = npy.subarray(10, dataStart).toString('latin1')
    expect(header.endsWith('\n')).toBe(true)
    expect(header.trimEnd()).toBe("{'descr': '<f4', 'fortran_order': False, 'shape': (1500, 3), }")
    expect(npy.length - dataStart).toBe(1_500 * 3 * 4)
    const data = new Float32Array(npy.buffer.slice(npy.byteOffset + dataStart, npy.byteOffset + npy.length))
    expect(data).toStrictEqual(expected.matrix)
  })

  it.runIf(hasPython('numpy'))('.npy: numpy.load reads float32 (1500, 3) with the same values', () => {
    const out = execFileSync('python3', [
      '-c',
      'import sys, numpy as np; a = np.load(sys.argv[1]); print(a.dtype, a.shape, a.flags["C_CONTIGUOUS"]); sys.stdout.write(a.astype("<f4").tobytes().hex())',
      file('m.npy'),
    ]).toString()
    const [first, hex] = out.split('\n')
    expect(first).toBe('float32 (1500, 3) True')
    expect(Buffer.from(hex, 'hex').equals(Buffer.from(expected.matrix.buffer, expected.matrix.byteOffset, expected.matrix.byteLength))).toBe(true)
  })

  it('.csv: a header row of bucket names in the config order, values that read back as the same float32', async () => {
    const run = await cli('get', file('get.json'), '--out', file('m.csv'))
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout).toMatch(/^source +redis$/m) // the CLI's memory tier is off
    const rows = lines(readFileSync(file('m.csv'), 'utf8'))
    expect(csvFields(rows[0])).toStrictEqual(NAMES)
    expect(rows).toHaveLength(1 + 1_500)
    for (let r = 0; r < 1_500; r++) {
      const cells = rows[r + 1].split(',')
      expect(cells).toHaveLength(3)
      for (let b = 0; b < 3; b++) {
        const v = Number(cells[b])
        if (Math.fround(v) !== expected.matrix[r * 3 + b]) throw new Error(`row ${r} column ${b}: ${cells[b]} != ${expected.matrix[r * 3 + b]}`)
      }
    }
  })

  it('.f32: raw little-endian float32, row-major; --json says where it went', async () => {
    const run = await cli('get', file('get.json'), '--out', file('m.f32'), '--json')
    expect(run.code, run.stderr).toBe(0)
    const out = JSON.parse(run.stdout)
    expect(out).toMatchObject({
      key: canonicalKey(c as never),
      numScenarios: 1_500,
      numBuckets: 3,
      bytes: 1_500 * 3 * 4,
      bucketNames: NAMES,
      out: { path: file('m.f32'), format: 'f32', bytes: 1_500 * 3 * 4 },
    })
    expect(['redis', 'postgres']).toContain(out.source)
    expect(typeof out.latencyMs).toBe('number')
    const raw = readFileSync(file('m.f32'))
    const values = Array.from({ length: 1_500 * 3 }, (_, i) => raw.readFloatLE(i * 4))
    expect(Float32Array.from(values)).toStrictEqual(expected.matrix)
  })
})

describe('inspect', () => {
  const c = oddConfig('cli-inspect', 3_000)

  it('--plot writes a valid SVG naming every bucket; the table lists every bucket', async () => {
    writeFileSync(file('inspect.json'), JSON.stringify(c))
    const run = await cli('inspect', file('inspect.json'), '--plot', file('plot.svg'))
    expect(run.code, run.stderr).toBe(0)
    for (const name of ['Series B', 'Seed']) expect(run.stdout).toMatch(new RegExp(`^${name} +[\\d.]+ +[\\d.]+`, 'm'))
    expect(run.stdout).toContain('Growth & Late')
    expect(run.stdout).toContain('correlation of log-MOIC')
    expect(run.stdout).toContain(`wrote ${file('plot.svg')}`)
    // 80 columns, but for the path given (which the temporary folder makes long)
    for (const l of lines(run.stdout.replaceAll(dir, ''))) expect(l.length, l).toBeLessThanOrEqual(80)

    const svg = readFileSync(file('plot.svg'), 'utf8')
    expect(svg).toMatch(/^(<\?xml[^>]*>\s*)?<svg[\s>]/)
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true)
    if (hasPython()) {
      // Parsed as XML: well-formed, an <svg> root, and every bucket name in its text.
      const text = execFileSync('python3', [
        '-c',
        "import sys, xml.etree.ElementTree as E; r = E.parse(sys.argv[1]).getroot(); print(r.tag); print('\\n'.join(''.join(t.itertext()) for t in r.iter() if t.tag.split('}')[-1] == 'text'))",
        file('plot.svg'),
      ]).toString()
      expect(lines(text)[0]).toMatch(/^(\{http:\/\/www\.w3\.org\/2000\/svg\})?svg$/)
      for (const name of NAMES) expect(text).toContain(name)
    } else {
      const unescaped = svg.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&#39;|&apos;/g, "'").replace(/&amp;/g, '&')
      for (const name of NAMES) expect(unescaped).toContain(name)
    }
  })

  it('--json by key: statistics per bucket and the correlation matrix; an unknown key is E_NOT_FOUND', async () => {
    const key = canonicalKey(c as never)
    const run = await cli('inspect', key, '--json')
    expect(run.code, run.stderr).toBe(0)
    const out = JSON.parse(run.stdout)
    expect(out.key).toBe(key)
    expect(out.numScenarios).toBe(3_000)
    expect(out.buckets).toHaveLength(3)
    for (const b of out.buckets) {
      expect(b.p10).toBeLessThanOrEqual(b.p50)
      expect(b.p50).toBeLessThanOrEqual(b.p90)
      expect(b.p90).toBeLessThanOrEqual(b.p99)
    }
    expect(out.correlation.logMoic).toHaveLength(3)
    for (let i = 0; i < 3; i++) expect(out.correlation.logMoic[i][i]).toBeCloseTo(1, 5)
    expect(out.svg).toBeUndefined()

    const missing = await cli('inspect', 'f'.repeat(64))
    expect(expectOneErrorLine(missing, 'E_NOT_FOUND')).toContain('f'.repeat(64))
  })
})

describe('warm', () => {
  const a = config('cli-warm-a', 1_000)
  const b = config('cli-warm-b', 1_000)
  const invalid = { ...config('cli-warm-c', 1_000), numScenarios: 0 }

  it('a JSONL with a bad line and a bad config: both reported by line number, the rest warmed, exit 1', async () => {
    writeFileSync(file('warm.jsonl'), [JSON.stringify(a), '{"fundId": "cut short', JSON.stringify(invalid), '', JSON.stringify(b)].join('\n'))
    const run = await cli('warm', file('warm.jsonl'))
    expect(run.code, run.stderr).toBe(1)
    expect(run.stdout).toMatch(/^warmed 2 of 4 configs in .*: 2 generated, 0 already cached, 2 failed$/m)
    expect(run.stdout).toMatch(/^ {2}line 2: E_INPUT: not valid JSON/m)
    expect(run.stdout).toMatch(/^ {2}line 3: E_CONFIG: .*numScenarios/m)
    // Not a terminal: plain progress lines on stderr, the last one complete.
    expect(lines(run.stderr).at(-1)).toBe('warm: 4/4 (100%) 2 new, 0 cached, 2 failed')
    const rows = await query<{ fund_id: string }>(db.url, "SELECT fund_id FROM scenario_matrices WHERE fund_id LIKE 'cli-warm-%' ORDER BY fund_id")
    expect(rows.map((r) => r.fund_id)).toStrictEqual(['cli-warm-a', 'cli-warm-b'])
  })

  it('again, as JSON: all hits, failures by line', async () => {
    const run = await cli('warm', file('warm.jsonl'), '--json', '--concurrency', '1')
    expect(run.code).toBe(1)
    const out = JSON.parse(run.stdout)
    expect(out).toMatchObject({ total: 4, generated: 0, hits: 2 })
    expect(out.failed.map((f: { line: number; code: string }) => [f.line, f.code])).toStrictEqual([
      [2, 'E_INPUT'],
      [3, 'E_CONFIG'],
    ])
  })

  it('a folder of .json files: a bad one named by its file name', async () => {
    const folder = file('configs')
    mkdirSync(folder)
    writeFileSync(join(folder, 'a.json'), JSON.stringify(a))
    writeFileSync(join(folder, 'broken.json'), '[')
    writeFileSync(join(folder, 'notes.txt'), 'not a config')
    const run = await cli('warm', folder, '--json')
    expect(run.code).toBe(1)
    const out = JSON.parse(run.stdout)
    expect(out).toMatchObject({ total: 2, generated: 0, hits: 1, failed: [{ file: 'broken.json', code: 'E_INPUT' }] })
  })
})

describe('verify, stats and gc', () => {
  const c = config('cli-verify', 2_000)
  const old = config('cli-old', 1_000)
  let key: string
  let oldKey: string

  beforeAll(async () => {
    key = canonicalKey(c as never)
    oldKey = canonicalKey(old as never)
    writeFileSync(file('verify.jsonl'), `${JSON.stringify(c)}\n${JSON.stringify(old)}\n`)
    const run = await cli('warm', file('verify.jsonl'))
    expect(run.code, run.stderr).toBe(0)
  })

  it('verify finds a row damaged in PostgreSQL and exits 1; --repair regenerates it; then it is clean', async () => {
    const clean = await cli('verify', '--json')
    expect(clean.code, clean.stderr).toBe(0)
    expect(JSON.parse(clean.stdout)).toMatchObject({ damaged: 0, unreadable: 0, remaining: 0 })

    await query(db.url, 'UPDATE scenario_matrices SET moic_matrix = set_byte(moic_matrix, 200, get_byte(moic_matrix, 200) # 1) WHERE matrix_key = $1', [key])
    const found = await cli('verify')
    expect(found.code, found.stderr).toBe(1)
    expect(found.stdout).toMatch(/^ {2}damaged +1$/m)
    expect(found.stdout).toMatch(new RegExp(`^damaged +${key}$`, 'm'))
    expect(found.stdout).toContain('1 damaged or unreadable row; to repair what can be:\n  scenario-matrix-cache verify --repair\n')
    for (const l of lines(found.stdout)) expect(l.length, l).toBeLessThanOrEqual(80)

    const asJson = await cli('verify', '--json')
    expect(asJson.code).toBe(1)
    const report = JSON.parse(asJson.stdout)
    expect(report).toMatchObject({ store: 'postgres', damaged: 1, remaining: 1 })
    expect(report.problems).toMatchObject([{ key, status: 'damaged' }])

    const repair = await cli('verify', '--repair', '--json')
    expect(repair.code, repair.stdout + repair.stderr).toBe(0)
    expect(JSON.parse(repair.stdout).problems).toMatchObject([{ key, status: 'damaged', repaired: 'regenerated' }])
    const after = await cli('verify', '--json')
    expect(after.code).toBe(0)
    expect(JSON.parse(after.stdout)).toMatchObject({ damaged: 0, remaining: 0 })
  })

  it('stats: rows by fund, Redis keys, as text and JSON', async () => {
    const [{ n }] = await query<{ n: string }>(db.url, 'SELECT count(*) AS n FROM scenario_matrices')
    const run = await cli('stats', '--json')
    expect(run.code, run.stderr).toBe(0)
    const report = JSON.parse(run.stdout)
    expect(report.store).toBe('postgres')
    expect(report.rows).toBe(Number(n))
    expect(report.byFund.map((f: { fundId: string }) => f.fundId)).toContain('cli-verify')
    expect(typeof report.redisKeys).toBe('number')
    const text = await cli('stats')
    expect(text.code).toBe(0)
    expect(text.stdout).toMatch(/^store +postgres$/m)
    expect(text.stdout).toMatch(/^cli-verify +v1\.2 +1 /m)
    for (const l of lines(text.stdout)) expect(l.length, l).toBeLessThanOrEqual(80)
  })

  it('gc --dry-run lists the old row and deletes nothing; gc then deletes it and its Redis key', async () => {
    await query(db.url, "UPDATE scenario_matrices SET created_at = now() - interval '40 days', updated_at = now() - interval '40 days' WHERE matrix_key = $1", [oldKey])
    const count = async () => Number((await query<{ n: string }>(db.url, 'SELECT count(*) AS n FROM scenario_matrices'))[0].n)
    const before = await count()

    const dry = await cli('gc', '--older-than', '30d', '--dry-run')
    expect(dry.code, dry.stderr).toBe(0)
    expect(dry.stdout).toContain('dry run, nothing deleted: 1 row older than 30d would go')
    expect(dry.stdout).toMatch(new RegExp(`^ {2}${oldKey}$`, 'm'))
    const dryJson = JSON.parse((await cli('gc', '--older-than', '30d', '--dry-run', '--json')).stdout)
    expect(dryJson).toMatchObject({ keys: [oldKey], rows: 1, dryRun: true })
    expect(await count()).toBe(before)

    const redis = await redisClient()
    try {
      expect(await redis.exists(`${prefix}${oldKey}`)).toBe(1)
      const real = await cli('gc', '--older-than', '30d', '--json')
      expect(real.code, real.stderr).toBe(0)
      expect(JSON.parse(real.stdout)).toMatchObject({ keys: [oldKey], rows: 1, redisKeys: 1, dryRun: false })
      expect(await count()).toBe(before - 1)
      expect(await redis.exists(`${prefix}${oldKey}`)).toBe(0)
      expect(await redis.exists(`${prefix}${key}`)).toBe(1)
    } finally {
      await redis.quit()
    }
  })
})

describe('verify with legacy (TypeScript-era) rows', () => {
  it('reports them without failing; --repair rewrites or regenerates those whose config is known', async () => {
    const legacyDb = await createDatabase()
    try {
      const run = (...args: string[]) => runCli(['--database-url', legacyDb.url, '--redis-url', '', ...args])
      expect((await run('stats')).code).toBe(0) // creates the table
      const fixture = JSON.parse(readFileSync(join(__dirname, '..', 'tests', 'fixtures', 'legacy-rows.json'), 'utf8'))
      for (const [i, row] of fixture.entries()) {
        const cfg = row.config
        const states = { scenarios: Array.from({ length: row.numScenarios }, (_, j) => ({ id: j })) }
        // As tests/admin.rs: the first row records no recycling settings, so its config is unknown.
        const sOpt = i === 0 ? { correlationWeights: cfg.correlationWeights } : { correlationWeights: cfg.correlationWeights, recycling: cfg.recycling }
        await query(
          legacyDb.url,
          `INSERT INTO scenario_matrices (matrix_key, fund_id, taxonomy_version, matrix_type, moic_matrix, scenario_states, bucket_params, compression_codec, matrix_layout, bucket_count, s_opt, status)
           VALUES ($1, $2, $3, 'moic', $4, $5, $6, 'zstd', 'row-major', $7, $8, 'complete')`,
          [row.matrixKey, cfg.fundId, cfg.taxonomyVersion, Buffer.from(row.payloadBase64, 'base64'), JSON.stringify(states), JSON.stringify(cfg.buckets), row.numBuckets, JSON.stringify(sOpt)],
        )
      }
      expect(JSON.parse((await run('stats', '--json')).stdout)).toMatchObject({ rows: 3, legacyRows: 3 })

      const found = await run('verify', '--json')
      expect(found.code, found.stderr).toBe(0) // legacy rows are readable
      const report = JSON.parse(found.stdout)
      expect(report).toMatchObject({ rows: 3, ok: 0, legacy: 3, remaining: 0 })
      expect(report.problems.map((p: { key: string }) => p.key).sort()).toStrictEqual(fixture.map((r: { matrixKey: string }) => r.matrixKey).sort())

      const text = await run('verify')
      expect(text.stdout).toMatch(/^ {2}legacy +3$/m)
      expect(text.stdout).toContain('to rewrite them in the current format:\n  scenario-matrix-cache verify --repair\n')
      for (const l of lines(text.stdout)) expect(l.length, l).toBeLessThanOrEqual(80)

      const repair = await run('verify', '--repair', '--json')
      expect(repair.code, repair.stderr).toBe(0)
      const repaired = JSON.parse(repair.stdout)
      expect(repaired.repaired).toStrictEqual({ rewritten: 1, regenerated: 1 })
      const left = repaired.problems.find((p: { key: string }) => p.key === fixture[0].matrixKey)
      expect(left.repaired).toBeUndefined()
      expect(left.detail).toContain('left as it is')
      expect(JSON.parse((await run('verify', '--json')).stdout)).toMatchObject({ ok: 2, legacy: 1 })
    } finally {
      await legacyDb.drop()
    }
  })
})

describe('with SQLite', () => {
  it('get and stats on an embedded SQLite file, no Redis', async () => {
    const sqlite = ['--database-url', `sqlite://${file('cli.db')}`, '--redis-url', '']
    writeFileSync(file('sqlite.json'), JSON.stringify(config('cli-sqlite', 500)))
    const got = await runCli([...sqlite, 'get', file('sqlite.json'), '--json'])
    expect(got.code, got.stderr).toBe(0)
    expect(JSON.parse(got.stdout)).toMatchObject({ source: 'generated', numScenarios: 500, numBuckets: 3 })
    const stats = await runCli([...sqlite, 'stats', '--json'])
    expect(stats.code, stats.stderr).toBe(0)
    expect(JSON.parse(stats.stdout)).toMatchObject({ store: 'sqlite', rows: 1, redisKeys: null, byFund: [{ fundId: 'cli-sqlite', rows: 1 }] })
    expect(JSON.parse(stats.stdout).redisError).toBeNull()
    expect((await runCli([...sqlite, 'stats'])).stdout).toMatch(/^redis keys +no Redis \(none given\)$/m)

    // A Redis that does not answer: the counts of the store, and why the Redis count is unknown.
    const noRedis = ['--database-url', `sqlite://${file('cli.db')}`, '--redis-url', 'redis://:s3cret-pw@127.0.0.1:1']
    const down = await runCli([...noRedis, 'stats'])
    expect(down.code, down.stderr).toBe(0)
    expect(down.stdout).toMatch(/^redis keys +unknown \(.+/m)
    expect(down.stdout + down.stderr).not.toContain('s3cret-pw')
  })
})

describe('package', () => {
  const root = join(__dirname, '..')

  it('publishes the bin, and `npx scenario-matrix-cache` works in a project that installed the package', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
    expect(pkg.bin).toStrictEqual({ 'scenario-matrix-cache': 'bin/scenario-matrix-cache.js' })
    expect(Object.keys(pkg.dependencies)).toEqual(expect.arrayContaining(['commander', 'cli-progress']))
    const packed = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' })
    const files: string[] = JSON.parse(packed)[0].files.map((f: { path: string }) => f.path)
    expect(files).toContain('bin/scenario-matrix-cache.js')
    expect(files).toContain('lib/cli/main.js')

    // What npm lays out on install: the package, and a .bin link to its bin (run by its shebang).
    const project = mkdtempSync(join(tmpdir(), 'smc-npx-'))
    try {
      writeFileSync(join(project, 'package.json'), '{"name": "consumer", "private": true}')
      mkdirSync(join(project, 'node_modules', '.bin'), { recursive: true })
      symlinkSync(root, join(project, 'node_modules', 'scenario-matrix-cache'), 'dir')
      symlinkSync('../scenario-matrix-cache/bin/scenario-matrix-cache.js', join(project, 'node_modules', '.bin', 'scenario-matrix-cache'))
      const env = { ...process.env, npm_config_offline: 'true', npm_config_update_notifier: 'false' }
      const help = execFileSync('npx', ['--no-install', 'scenario-matrix-cache', '--help'], { cwd: project, env, encoding: 'utf8' })
      expect(help).toContain('Usage: scenario-matrix-cache [options] [command]')
      writeFileSync(join(project, 'c.json'), JSON.stringify(config('cli-npx', 10)))
      const key = execFileSync('npx', ['--no-install', 'scenario-matrix-cache', 'key', 'c.json'], { cwd: project, env, encoding: 'utf8' })
      expect(key).toBe(`${canonicalKey(config('cli-npx', 10) as never)}\n`)
    } finally {
      rmSync(project, { recursive: true, force: true })
    }
  })
})
