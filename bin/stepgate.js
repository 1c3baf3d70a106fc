#!/usr/bin/env node
// Entry point for `npx stepgate` and `npm start`. npx and npm put node_modules/.bin (the
// Node 24 from the `node` devDependency) first on PATH.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(
    `stepgate needs Node.js >= 24 (this is ${process.versions.node} at ${process.execPath}); run it through npx stepgate or npm start.\n`,
  );
  process.exit(1);
}
// The libuv pool runs argon2 (up to one hash per core in flight, password.maxConcurrentHashes)
// next to file, DNS and async crypto work: cores + the default 4, so a login flood never
// takes the threads everything else needs. Read when the pool first starts, so set it now.
if (process.env.UV_THREADPOOL_SIZE === undefined) {
  const { availableParallelism } = await import('node:os');
  process.env.UV_THREADPOOL_SIZE = String(Math.min(1024, availableParallelism() + 4));
}
// `serve` runs with the configured heap limits (config `runtime`, src/cli/runtime-limits.ts):
// V8 takes them only at start-up, so the process replaces itself once (execve: same pid)
// with the flags added, before the gateway is loaded or anything is opened.
if (process.argv[2] === 'serve') {
  const { restartWithRuntimeLimits } = await import('../src/cli/runtime-limits.ts');
  restartWithRuntimeLimits(process.argv.slice(3));
}
// node:sqlite still announces itself as experimental on Node 24; keep other warnings.
const emitWarning = process.emitWarning;
process.emitWarning = function (warning, ...rest) {
  const type = typeof rest[0] === 'string' ? rest[0] : rest[0]?.type;
  if (type === 'ExperimentalWarning' && String(warning).includes('SQLite')) return;
  return emitWarning.call(process, warning, ...rest);
};
const { main } = await import('../src/main.ts');
process.exitCode = await main(process.argv.slice(2));
