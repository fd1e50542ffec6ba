// Writes tests/fixtures/canonical-keys-mode.jsonl: configs with recycling
// enabled, `mode` given or left out, and the keys the TypeScript algorithm
// computes for them in Node (see __test__/helpers/ts-key.mjs).
// Usage: node scripts/key-fixture-mode.mjs > tests/fixtures/canonical-keys-mode.jsonl
import { recyclingConfigs, typescriptKey } from '../__test__/helpers/ts-key.mjs'

for (const config of recyclingConfigs(12)) {
  process.stdout.write(JSON.stringify({ config, key: typescriptKey(config) }) + '\n')
}
