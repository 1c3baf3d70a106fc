// Project rules Biome cannot express: no Math.random anywhere in src/ (all randomness comes
// from node:crypto), and no console.* in src/ (logs go through pino with redaction).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

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
if (failures > 0) {
  process.stderr.write(`lint-src: ${failures} problem(s)\n`);
  process.exit(1);
}
