// An ES module consumer: named imports from the CommonJS entry.
import { isScenarioMatrixCacheError, MatrixSource, ScenarioMatrixCache } from 'scenario-matrix-cache'

export async function memoryHits(cache: ScenarioMatrixCache): Promise<number> {
  try {
    return cache.stats().latency[MatrixSource.Memory].count
  } catch (e: unknown) {
    if (isScenarioMatrixCacheError(e) && e.code === 'E_CLOSED') return 0
    throw e
  }
}
