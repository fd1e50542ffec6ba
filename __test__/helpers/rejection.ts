// The rejection of a promise-returning call, for tests of coded errors.
import { expect } from 'vitest'

import { isScenarioMatrixCacheError } from '../../lib/index.js'

/** Calls `f` and returns its rejection, a coded error of this package; fails if `f` throws synchronously or resolves. */
export async function rejection(f: () => Promise<unknown>): Promise<Error & { code?: string }> {
  let promise: Promise<unknown>
  try {
    promise = f()
  } catch (e) {
    throw new Error(`threw synchronously instead of rejecting: ${e}`)
  }
  try {
    await promise
  } catch (e) {
    expect(isScenarioMatrixCacheError(e)).toBe(true)
    return e as Error & { code?: string }
  }
  throw new Error('resolved')
}
