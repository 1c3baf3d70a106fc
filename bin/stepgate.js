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
// node:sqlite still announces itself as experimental on Node 24; keep other warnings.
const emitWarning = process.emitWarning;
process.emitWarning = function (warning, ...rest) {
  const type = typeof rest[0] === 'string' ? rest[0] : rest[0]?.type;
  if (type === 'ExperimentalWarning' && String(warning).includes('SQLite')) return;
  return emitWarning.call(process, warning, ...rest);
};
const { main } = await import('../src/main.ts');
process.exitCode = await main(process.argv.slice(2));
