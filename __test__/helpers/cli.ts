// Runs the real `bin/scenario-matrix-cache.js` in a child process, as an operator would.
import { spawn } from 'node:child_process'
import { join } from 'node:path'

export const BIN = join(__dirname, '..', '..', 'bin', 'scenario-matrix-cache.js')

export interface CliRun {
  code: number | null
  stdout: string
  stderr: string
}

/**
 * `node bin/scenario-matrix-cache.js ...args`. DATABASE_URL and REDIS_URL are removed from
 * the environment unless `env` sets them, so only the arguments choose the stores. Rejects
 * if the process does not exit within 60 s.
 */
export function runCli(
  args: string[],
  options: { env?: Record<string, string | undefined>; input?: string; cwd?: string } = {},
): Promise<CliRun> {
  const env: Record<string, string | undefined> = { ...process.env, DATABASE_URL: undefined, REDIS_URL: undefined, REDIS_CLUSTER_NODES: undefined, ...options.env }
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k]
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: env as NodeJS.ProcessEnv, cwd: options.cwd, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`scenario-matrix-cache ${args.join(' ')} did not exit within 60 s\n${stderr}`))
    }, 60_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
    child.stdin.end(options.input ?? '')
  })
}

/** The lines of a text, without the empty one after the last newline. */
export const lines = (text: string) => text.split('\n').filter((l, i, all) => !(l === '' && i === all.length - 1))
