import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

/**
 * Browsers compile an input's `pattern` as `^(?:pattern)$` with the `v` flag and silently
 * ignore one that does not compile: the field then checks nothing. Every pattern in the
 * templates must compile, and the code fields must let full-width digits through (the server
 * reads them: src/otp/code-input.ts, normaliseSmsCode).
 */
const VIEWS = new URL('../../views/', import.meta.url).pathname;

function templates(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? templates(join(dir, e.name)) : e.name.endsWith('.eta') ? [join(dir, e.name)] : []));
}

// One input per line in the templates (an attribute may hold `<%= … %>`, so no [^>]* here).
const patterns = templates(VIEWS).flatMap((file) =>
  readFileSync(file, 'utf8')
    .split('\n')
    .flatMap((line) => {
      const pattern = /<input\b.*\bpattern="([^"]+)"/.exec(line)?.[1];
      return pattern === undefined ? [] : [{ file: file.slice(VIEWS.length), name: /\bname="([^"]+)"/.exec(line)?.[1] ?? '', pattern }];
    }),
);

describe('input patterns in the templates', () => {
  it('every one compiles as browsers compile it (v flag)', () => {
    assert.ok(patterns.length >= 5);
    for (const p of patterns) assert.doesNotThrow(() => new RegExp(`^(?:${p.pattern})$`, 'v'), `${p.file} ${p.name}: ${p.pattern}`);
  });

  it('code fields take full-width digits and a space, and refuse letters', () => {
    const codes = patterns.filter((p) => p.name === 'code' || p.name === 'next_code');
    assert.ok(codes.length >= 5);
    for (const p of codes) {
      const re = new RegExp(`^(?:${p.pattern})$`, 'v');
      assert.ok(re.test('１２３ ４５６'), `${p.file} ${p.name}`);
      assert.ok(re.test('123456'), `${p.file} ${p.name}`);
      assert.ok(!re.test('12a456'), `${p.file} ${p.name}`);
    }
  });
});
