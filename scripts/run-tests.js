// Runs every test file with node:test. Files run in parallel (each has its own database);
// pass file paths or globs to run a subset: npm test -- test/unit/seal.test.ts
// No --test-force-exit: it ends a file's process while the results it has written to the
// runner are still in the pipe, so a run silently counted fewer tests than it ran (1,638 to
// 1,699 on the same code) and could lose a failure the same way. A stray handle is a bug in
// the test that left it; the whole run is bounded instead (STEPGATE_TEST_RUN_MINUTES, 30), so
// such a bug fails CI loudly rather than hanging it.
import { spawnSync } from 'node:child_process';

const args = process.argv.slice(2);
// The chaos suite (test/chaos/, `npm run test:chaos`) is not part of the normal run.
const files = args.length > 0 ? args : ['test/{unit,integration,browser}/**/*.test.ts'];
const concurrency = process.env.STEPGATE_TEST_CONCURRENCY ?? '4';
const minutes = Number(process.env.STEPGATE_TEST_RUN_MINUTES ?? '30');
const result = spawnSync(
  process.execPath,
  ['--disable-warning=ExperimentalWarning', '--test', `--test-concurrency=${concurrency}`, '--test-timeout=120000', ...files],
  { stdio: 'inherit', timeout: minutes * 60_000, killSignal: 'SIGKILL' },
);
if (result.error !== undefined) {
  console.error(`test run stopped after ${minutes} min (${result.error.message}): a test file did not exit — look for a server, child process or timer a test left open`);
  process.exit(1);
}
process.exit(result.status ?? 1);
