// Runs every test file with node:test. Files run in parallel (each has its own database);
// pass file paths or globs to run a subset: npm test -- test/unit/seal.test.ts
// --test-force-exit: a test file whose tests are done exits even if a stray handle (a child
// process that outlived a failed test) is still open, so one failure cannot hang CI.
import { spawnSync } from 'node:child_process';

const args = process.argv.slice(2);
// The chaos suite (test/chaos/, `npm run test:chaos`) is not part of the normal run.
const files = args.length > 0 ? args : ['test/{unit,integration,browser}/**/*.test.ts'];
const concurrency = process.env.STEPGATE_TEST_CONCURRENCY ?? '4';
const result = spawnSync(
  process.execPath,
  ['--disable-warning=ExperimentalWarning', '--test', '--test-force-exit', `--test-concurrency=${concurrency}`, '--test-timeout=120000', ...files],
  { stdio: 'inherit' },
);
process.exit(result.status ?? 1);
