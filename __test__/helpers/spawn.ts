import { execFile } from 'node:child_process'
import { join } from 'node:path'

export interface WorkerReport {
  sources: string[]
  keys: string[]
  generations: number
}

/** Runs helpers/worker.cjs in a new Node process; rejects if it fails or does not exit within 60 s. */
export function runWorker(env: Record<string, string>, cwd?: string): Promise<WorkerReport> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [join(__dirname, 'worker.cjs')],
      { env: { ...process.env, ...env }, cwd, timeout: 60_000 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout))),
    )
  })
}
