// The chaos suite: scale-out, crash safety and dependency failures on real processes
// (test/chaos/), then the fuzz tests with many more runs than the normal suite gives them.
// Files run one at a time (each starts its own processes; together they would only measure
// the machine). Every line a test prints as `chaos figure: {...}` is collected into
// test-output/chaos-figures.json (docs/scaling.md quotes them).
//   npm run test:chaos                 everything
//   npm run test:chaos -- test/chaos/crash.test.ts
// Environment: STEPGATE_TEST_DATABASE_URL (required), STEPGATE_CHAOS_DUPLICATES (1000),
// STEPGATE_CHAOS_LOAD_SECONDS (20), STEPGATE_FUZZ_RUNS for the fuzz files (15 here).
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';

const args = process.argv.slice(2);
const chaos = args.length > 0 ? args : ['test/chaos/*.test.ts'];
const fuzz = args.length > 0 ? [] : ['test/unit/fuzz-parsers.test.ts', 'test/integration/fuzz-api.test.ts'];
const figures = [];

function run(files, env) {
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      // No --test-force-exit (see run-tests.js: it can drop results still in the pipe).
      ['--disable-warning=ExperimentalWarning', '--test', '--test-concurrency=1', '--test-timeout=300000', ...files],
      { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } },
    );
    let pending = '';
    child.stdout.on('data', (chunk) => {
      process.stdout.write(chunk);
      pending += chunk.toString('utf8');
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        const m = /chaos figure: (\{.*\})\s*$/.exec(line);
        if (m) figures.push(JSON.parse(m[1]));
      }
    });
    // A file that never exits (a handle a test left open) must fail the run, not hang it.
    const limit = setTimeout(() => {
      console.error('chaos suite: a test file did not exit within 20 minutes; killing it');
      child.kill('SIGKILL');
    }, 20 * 60_000);
    child.on('exit', (code) => {
      clearTimeout(limit);
      resolve(code ?? 1);
    });
  });
}

const started = Date.now();
let status = await run(chaos, {});
if (fuzz.length > 0) status = (await run(fuzz, { STEPGATE_FUZZ_RUNS: process.env.STEPGATE_FUZZ_RUNS ?? '15' })) || status;
mkdirSync('test-output', { recursive: true });
writeFileSync('test-output/chaos-figures.json', `${JSON.stringify({ seconds: Math.round((Date.now() - started) / 1000), figures }, null, 2)}\n`);
console.log(`\nchaos suite: ${figures.length} figures in test-output/chaos-figures.json, ${Math.round((Date.now() - started) / 1000)} s, exit ${status}`);
process.exit(status);
