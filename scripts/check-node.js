// Fails loudly when npm scripts run on a Node older than 24 (the machines ship Node 20;
// the `node` devDependency puts Node 24 first on PATH for every npm script).
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(
    `\n*** Stepgate needs Node.js >= 24, but this is Node ${process.versions.node} (${process.execPath}).\n` +
      '*** Run it through npm (npm start, npm test, npx stepgate ...) after `npm ci`: the node\n' +
      '*** devDependency provides Node 24 to npm scripts.\n\n',
  );
  process.exit(1);
}
