// Project rules Biome cannot express: no Math.random anywhere in src/ (all randomness comes
// from node:crypto), and no console.* in src/ (logs go through pino with redaction).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const banned = [
  { re: /\bMath\.random\s*\(/, why: 'Math.random is not a CSPRNG: use node:crypto' },
  { re: /\bconsole\.[a-z]+\s*\(/, why: 'console.* bypasses the redacting logger: use the pino logger' },
];
let failures = 0;
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (/\.(ts|js)$/.test(name)) {
      const lines = readFileSync(p, 'utf8').split('\n');
      lines.forEach((line, i) => {
        for (const { re, why } of banned) {
          if (re.test(line) && !line.trimStart().startsWith('//') && !line.trimStart().startsWith('*')) {
            process.stderr.write(`${p}:${i + 1}: ${why}\n`);
            failures += 1;
          }
        }
      });
    }
  }
}
walk('src');

// The relying-party side must not reach into the gateway (DESIGN.md §3): src/verifier/ imports
// only itself and libraries; src/payment-code/ only itself, src/verifier/ and libraries. They
// talk to the gateway over HTTP, exactly as a third party would.
const boundaries = [
  { dir: 'src/verifier', allowed: ['src/verifier'] },
  { dir: 'src/payment-code', allowed: ['src/payment-code', 'src/verifier'] },
];
const IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+|\bexport\s+\*\s+from\s*)['"]([^'"]+)['"]/g;
function checkBoundary(dir, allowed) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) {
      checkBoundary(p, allowed);
      continue;
    }
    if (!/\.(ts|js)$/.test(name)) continue;
    readFileSync(p, 'utf8').split('\n').forEach((line, i) => {
      if (line.trimStart().startsWith('//') || line.trimStart().startsWith('*')) return;
      for (const m of line.matchAll(IMPORT)) {
        const spec = m[1];
        if (spec.startsWith('/') || spec.startsWith('file:')) {
          process.stderr.write(`${p}:${i + 1}: absolute import ${spec} (only relative imports within ${allowed.join(', ')} and packages)\n`);
          failures += 1;
          continue;
        }
        if (!spec.startsWith('.')) continue; // a package (node:…, jose, express…)
        const target = relative(process.cwd(), resolve(dirname(p), spec));
        if (!allowed.some((a) => target === a || target.startsWith(`${a}/`))) {
          process.stderr.write(`${p}:${i + 1}: imports ${target}: ${dir.split('/').slice(0, 2).join('/')}/ may import only ${allowed.join(' and ')} (and packages), never the gateway's internals\n`);
          failures += 1;
        }
      }
    });
  }
}
for (const { dir, allowed } of boundaries) checkBoundary(dir, allowed);

if (failures > 0) {
  process.stderr.write(`lint-src: ${failures} problem(s)\n`);
  process.exit(1);
}
