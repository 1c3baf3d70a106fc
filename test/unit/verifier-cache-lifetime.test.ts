import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCacheControl, responseLifetimeSeconds } from '../../src/verifier/cache-lifetime.ts';

describe('parseCacheControl', () => {
  it('reads directives case-insensitively, with token and quoted arguments', () => {
    assert.deepEqual(parseCacheControl('public, MAX-AGE=60'), [
      { name: 'public', value: undefined },
      { name: 'max-age', value: '60' },
    ]);
    assert.deepEqual(parseCacheControl('max-age="60"'), [{ name: 'max-age', value: '60' }]);
    // A comma inside a quoted argument does not split; a quoted-pair is unescaped.
    assert.deepEqual(parseCacheControl('private="set-cookie, x-a", no-cache="a\\"b",max-age=5'), [
      { name: 'private', value: 'set-cookie, x-a' },
      { name: 'no-cache', value: 'a"b' },
      { name: 'max-age', value: '5' },
    ]);
    // Empty list elements and surrounding whitespace are allowed (several field lines arrive joined with ", ").
    assert.deepEqual(parseCacheControl(' ,\tmax-age=5 , , public ,'), [
      { name: 'max-age', value: '5' },
      { name: 'public', value: undefined },
    ]);
    assert.deepEqual(parseCacheControl(''), []);
  });

  for (const field of ['max-age=60;', 'max-age = 60', 'max-age=6 0', 'max-age="60', 'max-age="6\\', '=60', 'max age=60', 'max-age=,', 'max-age=', 'max-age=60 public', 'no-store;max-age=0', 'max-age=(60)']) {
    it(`refuses a field value that is not the grammar: ${JSON.stringify(field)}`, () => {
      assert.equal(parseCacheControl(field), undefined);
    });
  }
});

describe('responseLifetimeSeconds', () => {
  const cases: [string | null, string | null, number | undefined][] = [
    // max-age, in its forms
    ['max-age=60', null, 60],
    ['public, max-age=60', null, 60],
    ['Max-Age=60, must-revalidate', null, 60],
    ['max-age="60"', null, 60],
    ['max-age=60, max-age=60', null, 60],
    ['max-age=0', null, 0],
    ['max-age=0000120', null, 120],
    // Too large to represent: 2^31 (RFC 9111 §1.2.2), the caller clamps it anyway.
    ['max-age=99999999999999999999999', null, 2 ** 31],
    // no-store / no-cache win over any max-age
    ['no-store', null, 0],
    ['no-cache', null, 0],
    ['NO-STORE', null, 0],
    ['max-age=600, no-cache', null, 0],
    ['no-cache="set-cookie", max-age=600', null, 0],
    ['no-store, max-age=abc', null, 0],
    // disagreeing max-age: stale (RFC 9111 §4.2.1)
    ['max-age=60, max-age=600', null, 0],
    ['max-age=600', null, 600],
    // a private cache: s-maxage is for shared caches only
    ['s-maxage=5, max-age=60', null, 60],
    // Age is subtracted, never below 0
    ['max-age=60', '20', 40],
    ['max-age=60', ' 20 ', 40],
    ['max-age=60', '60', 0],
    ['max-age=60', '3600', 0],
    ['max-age=60', '99999999999999999999999', 0],
    // a malformed Age is ignored: it could only have shortened the lifetime
    ['max-age=60', 'abc', 60],
    ['max-age=60', '-5', 60],
    ['max-age=60', '1.5', 60],
    ['max-age=60', '10, 20', 60],
    ['max-age=60', '', 60],
    // nothing usable: the caller's configured lifetime
    [null, null, undefined],
    [null, '20', undefined],
    ['', null, undefined],
    ['public', null, undefined],
    ['s-maxage=60', null, undefined],
    ['max-age', null, undefined],
    ['max-age=abc', null, undefined],
    ['max-age="abc"', null, undefined],
    ['max-age=-1', null, undefined],
    ['max-age=1.5', null, undefined],
    ['max-age=+60', null, undefined],
    ['max-age=60, max-age=x', null, undefined],
    ['max-age=60;', null, undefined],
    ['max-age="60', null, undefined],
    ['max-age=60 public', null, undefined],
  ];
  for (const [cacheControl, age, expected] of cases) {
    it(`Cache-Control ${JSON.stringify(cacheControl)}, Age ${JSON.stringify(age)} → ${String(expected)}`, () => {
      assert.equal(responseLifetimeSeconds(cacheControl, age), expected);
    });
  }
});
