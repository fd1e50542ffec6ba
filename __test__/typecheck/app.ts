// A small server-side program typed against the package as a consumer sees it
// ('scenario-matrix-cache' resolved through its package.json). Never run: types.spec.ts
// compiles it with `tsc --strict --noEmit`, with the current TypeScript and with 5.x.
// Every `@ts-expect-error` line must be an error, so declarations that degrade to
// `any` fail too.
import {
  canonicalKey,
  decompressMatrix,
  isScenarioMatrixCacheError,
  MatrixCodec,
  MatrixLayout,
  MatrixSource,
  ScenarioMatrixCache,
  ScenarioMatrixCacheError,
  validateScenarioConfig,
  type ConfigIssue,
  type ErrorCode,
  type ScenarioConfig,
  type ScenarioResult,
} from 'scenario-matrix-cache'
import { expectedEnums } from './enums.js'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false
function assertTrue<T extends true>(): T | void {}

// The declared objects hold exactly what the runtime objects hold (types.spec.ts
// compares the runtime with expectedEnums) ...
assertTrue<Equal<typeof MatrixCodec, typeof expectedEnums.MatrixCodec>>()
assertTrue<Equal<typeof MatrixLayout, typeof expectedEnums.MatrixLayout>>()
assertTrue<Equal<typeof MatrixSource, typeof expectedEnums.MatrixSource>>()
// ... and exactly the values of the generated unions of the same names.
assertTrue<Equal<MatrixCodec, (typeof MatrixCodec)[keyof typeof MatrixCodec]>>()
assertTrue<Equal<MatrixLayout, (typeof MatrixLayout)[keyof typeof MatrixLayout]>>()
assertTrue<Equal<MatrixSource, (typeof MatrixSource)[keyof typeof MatrixSource]>>()
// @ts-expect-error: the objects are read-only
MatrixSource.Memory = 'redis'

type Reply = { status: number; body: Buffer | { code: ErrorCode; issues?: ConfigIssue[] } }

/** An HTTP handler: the body is validated, not cast. */
export async function handle(cache: ScenarioMatrixCache, body: unknown): Promise<Reply> {
  // @ts-expect-error: an unvalidated body is not a ScenarioConfig
  canonicalKey(body)
  try {
    validateScenarioConfig(body)
    const config: ScenarioConfig = body // narrowed by the assertion
    const result: ScenarioResult = await cache.getOrGenerate(config)
    const data: Buffer = result.compressed.data
    if (result.compressed.codec === MatrixCodec.Zstd && result.metadata.source !== MatrixSource.Generated) {
      const matrix: Float32Array = await decompressMatrix(result.compressed)
      console.log(body.fundId, matrix.length, data.toString('base64', 0, 8))
    }
    return { status: 200, body: data }
  } catch (e: unknown) {
    if (!isScenarioMatrixCacheError(e)) throw e
    const code: ErrorCode = e.code
    // @ts-expect-error: codes are the documented ones
    if (e.code === 'E_REDIS') return { status: 500, body: { code } }
    if (code === 'E_CONFIG') return { status: 400, body: { code, issues: e.issues } }
    return { status: 503, body: { code, issues: e.issues?.slice(0, 1) } }
  }
}

export function describeError(e: unknown): string {
  if (e instanceof ScenarioMatrixCacheError) return `${e.code}: ${e.message}`
  return String(e)
}

/** Operator work: warming, a /metrics body, a look inside one matrix. */
export async function operate(cache: ScenarioMatrixCache, configs: ScenarioConfig[]): Promise<string> {
  const warmed = await cache.warm(configs, {
    concurrency: 2,
    onProgress: (p) => console.log(`${p.done}/${p.total}`, p.source ?? p.error?.code),
  })
  const codes: ErrorCode[] = warmed.failed.map((f) => f.code)
  // @ts-expect-error: concurrency is a number
  await cache.warm(configs, { concurrency: '2' })
  const ensured: { key: string; source: MatrixSource; joined: boolean } = await cache.ensure(configs[0])
  const report = await cache.inspect(ensured.key, { plot: true })
  const p50: number | undefined = report?.buckets[0].p50
  const svg: string | undefined = report?.svg ?? undefined
  const store = await cache.storeReport()
  const gone = await cache.gc({ olderThanMs: 30 * 24 * 3600 * 1000, dryRun: true })
  return `${codes.join()} ${p50} ${svg?.length} ${store.rows} ${gone.keys.length}\n${cache.metrics()}`
}

export async function main(): Promise<void> {
  const cache = await ScenarioMatrixCache.open({ databaseUrl: 'sqlite://cache.db', redisUrl: '' })
  try {
    const reply = await handle(cache, JSON.parse('{}'))
    const fake = new ScenarioMatrixCacheError('E_CLOSED', 'closed')
    console.log(reply.status, describeError(fake), cache.stats().latency[MatrixSource.Sqlite].p50Ms)
    // @ts-expect-error: not an ErrorCode
    new ScenarioMatrixCacheError('E_NOPE', 'no such code')
  } finally {
    await cache.close()
  }
}
