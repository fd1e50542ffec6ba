// The package entry (lib/) and its declarations, as a consumer sees them: the typed
// program in typecheck/ and the README's example compiled with the current TypeScript
// and with 5.x, the runtime
// objects against what is declared, the error guard, and CommonJS / ESM imports.
import { execFile } from 'node:child_process'
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import * as entry from '../lib/index.js'
import { config } from './helpers/services'
import { expectedEnums } from './typecheck/enums'

const run = promisify(execFile)
const root = join(__dirname, '..')
const requireHere = createRequire(__filename)
const packageDir = (name: string) => dirname(requireHere.resolve(`${name}/package.json`))

/** `tsc` of each TypeScript installed as a devDependency (`typescript5` is an npm alias). */
const compilers = ['typescript', 'typescript5'].map((name) => ({
  version: requireHere(`${name}/package.json`).version as string,
  tsc: join(packageDir(name), 'bin', 'tsc'),
}))

/** The ```ts block right after this marker in README.md: the example a newcomer copies. */
const README_MARKER = '<!-- example: type-checked by __test__/types.spec.ts -->'
function readmeExample(): string {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const at = readme.split(README_MARKER)
  if (at.length !== 2) throw new Error(`README.md must hold the marker ${README_MARKER} exactly once`)
  const block = /^\s*```ts\n([\s\S]*?)\n```/.exec(at[1])
  if (!block) throw new Error(`README.md: no \`\`\`ts block right after ${README_MARKER}`)
  return block[1]
}

/** The codes of `ErrorCode` in types/header.d.ts. */
const headerCodes = [...readFileSync(join(root, 'types', 'header.d.ts'), 'utf8').matchAll(/\| '(E_[A-Z_]+)'/g)].map((m) => m[1])

// A throwaway consumer project: typecheck/ plus node_modules/scenario-matrix-cache
// (this package) and @types/node, installed but not named in its tsconfig.
let project: string
beforeAll(() => {
  project = mkdtempSync(join(tmpdir(), 'smc-types-'))
  cpSync(join(__dirname, 'typecheck'), project, { recursive: true })
  mkdirSync(join(project, 'node_modules', '@types'), { recursive: true })
  symlinkSync(root, join(project, 'node_modules', 'scenario-matrix-cache'), 'dir')
  symlinkSync(packageDir('@types/node'), join(project, 'node_modules', '@types', 'node'), 'dir')
  // The README's example, in the copy only (typecheck/tsconfig.readme.json names them):
  // as a CommonJS .ts and as an ES module .mts, since a reader's project may be either.
  const example = readmeExample()
  writeFileSync(join(project, 'readme-example.ts'), example)
  writeFileSync(join(project, 'readme-example.mts'), example)
})
afterAll(() => rmSync(project, { recursive: true, force: true }))

describe.concurrent('the declarations compile in a --strict program', () => {
  it('with the current TypeScript and with 5.x', () => {
    expect(compilers.map((c) => c.version.split('.')[0])).toContain('5')
    expect(Number(compilers[0].version.split('.')[0])).toBeGreaterThanOrEqual(6) // no automatic @types
  })

  it.each(compilers)('TypeScript $version', async ({ tsc }) => {
    const out = await run(process.execPath, [tsc, '-p', project, '--strict', '--noEmit'], { cwd: project }).then(
      (r) => r.stdout + r.stderr,
      (e) => e.stdout + e.stderr || String(e),
    )
    expect(out).toBe('')
  })
})

describe.concurrent("the README's example compiles in a --strict program", () => {
  it('opens, gets or generates, gets the matrix, reads the stats and closes', () => {
    const example = readmeExample()
    for (const call of ['ScenarioMatrixCache.open(', '.getOrGenerate(', '.getMatrix(', '.stats()', '.close()']) {
      expect([call, example.includes(call)]).toEqual([call, true])
    }
  })

  it.each(compilers)('TypeScript $version', async ({ tsc }) => {
    const args = [tsc, '-p', join(project, 'tsconfig.readme.json'), '--strict', '--noEmit']
    const out = await run(process.execPath, args, { cwd: project }).then(
      (r) => r.stdout + r.stderr,
      (e) => e.stdout + e.stderr || String(e),
    )
    expect(out).toBe('')
  })
})

describe('the runtime agrees with the declarations', () => {
  it('MatrixCodec, MatrixLayout and MatrixSource hold what app.ts checks they declare', () => {
    expect(entry.MatrixCodec).toStrictEqual(expectedEnums.MatrixCodec)
    expect(entry.MatrixLayout).toStrictEqual(expectedEnums.MatrixLayout)
    expect(entry.MatrixSource).toStrictEqual(expectedEnums.MatrixSource)
  })

  it('the entry re-exports everything the generated loader exports', () => {
    const binding = requireHere('../index.js')
    const lib = requireHere('../lib/index.js')
    expect(Object.keys(binding).length).toBeGreaterThan(5)
    for (const name of Object.keys(binding)) expect([name, lib[name]]).toEqual([name, binding[name]])
  })

  it('the guard knows exactly the codes of ErrorCode', () => {
    const libCodes = readFileSync(join(root, 'lib', 'index.js'), 'utf8').match(/'E_[A-Z_]+'/g)!.map((s) => s.slice(1, -1))
    expect(headerCodes).toContain('E_CONFIG')
    expect(libCodes.sort()).toEqual([...headerCodes].sort())
  })
})

describe('ScenarioMatrixCacheError', () => {
  const { isScenarioMatrixCacheError: isError, ScenarioMatrixCacheError } = entry

  it('recognises any Error with a documented code, and nothing else', () => {
    for (const code of headerCodes) {
      const e = Object.assign(new Error('m'), { code })
      expect([code, isError(e), e instanceof ScenarioMatrixCacheError]).toEqual([code, true, true])
    }
    const others = [Object.assign(new Error('m'), { code: 'ENOENT' }), new Error('m'), { code: 'E_CONFIG', message: 'm' }, 'E_CONFIG', null, undefined]
    for (const v of others) expect([v, isError(v), v instanceof ScenarioMatrixCacheError]).toEqual([v, false, false])
    const made = new ScenarioMatrixCacheError('E_CONFIG', 'bad', [{ path: 'numScenarios', expected: 'x', given: 'y' }])
    expect(made).toBeInstanceOf(Error)
    expect(made).toMatchObject({ code: 'E_CONFIG', message: 'bad', issues: [{ path: 'numScenarios' }] })
  })

  it('is what the addon throws and rejects with', async () => {
    const thrown = (() => {
      try {
        entry.validateScenarioConfig({ ...config('types', 10), numScenarios: 0 })
      } catch (e) {
        return e
      }
    })()
    expect(thrown).toBeInstanceOf(ScenarioMatrixCacheError)
    expect(thrown).toMatchObject({ code: 'E_CONFIG', issues: [{ path: 'numScenarios' }] })
    const rejected = await entry.generateScenarios({} as any).catch((e: unknown) => e)
    expect(isError(rejected) && rejected.code).toBe('E_CONFIG')
    const cache = await entry.ScenarioMatrixCache.open({ databaseUrl: join(project, 'cache.db'), redisUrl: '' })
    await cache.close()
    const closed = await cache.getOrGenerate(config('types', 10)).catch((e: unknown) => e)
    expect(closed instanceof ScenarioMatrixCacheError && closed.code).toBe('E_CLOSED')
  })
})

describe('the package entry loads', () => {
  const node = (args: string[]) => run(process.execPath, args, { cwd: project }).then((r) => JSON.parse(r.stdout))
  const script = `
    let e; try { validateScenarioConfig(null) } catch (err) { e = err }
    console.log(JSON.stringify({ open: typeof ScenarioMatrixCache.open, guard: isScenarioMatrixCacheError(e), instance: e instanceof ScenarioMatrixCacheError, source: MatrixSource.Memory }))`
  const expected = { open: 'function', guard: true, instance: true, source: 'memory' }

  it("with require('scenario-matrix-cache')", async () => {
    const names = 'ScenarioMatrixCache, ScenarioMatrixCacheError, isScenarioMatrixCacheError, validateScenarioConfig, MatrixSource'
    expect(await node(['-e', `const { ${names} } = require('scenario-matrix-cache');${script}`])).toEqual(expected)
  })

  it("with ESM named imports from 'scenario-matrix-cache'", async () => {
    const names = 'ScenarioMatrixCache, ScenarioMatrixCacheError, isScenarioMatrixCacheError, validateScenarioConfig, MatrixSource'
    expect(await node(['--input-type=module', '-e', `import { ${names} } from 'scenario-matrix-cache';${script}`])).toEqual(expected)
  })
})
