import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { findDuplicateMember, jwsDuplicateMember } from '../../src/verifier/index.ts';

/**
 * The duplicate-member scan (src/verifier/strict-json.ts) against a reference built from the
 * structure itself: random documents whose objects are lists of (name, value) pairs — names
 * drawn from a small alphabet so they repeat, written with random escapes so equal names are
 * spelled differently — must be reported exactly where the reference finds the first repeat.
 */

const RUNS = Number(process.env.STEPGATE_FUZZ_RUNS ?? '2') * 100;
const SEED =
  process.env.STEPGATE_FUZZ_SEED !== undefined ? { seed: Number(process.env.STEPGATE_FUZZ_SEED) } : process.env.STEPGATE_FUZZ_RUNS === undefined ? { seed: 20261202 } : {};

type Doc = { kind: 'object'; members: [string, Doc][] } | { kind: 'array'; items: Doc[] } | { kind: 'leaf'; value: string | number | boolean | null };

function token(name: string): string {
  return name.replaceAll('~', '~0').replaceAll('/', '~1');
}

/** The pointer of the first repeated name in text order, by walking the structure. */
function referenceDuplicate(doc: Doc, path = ''): string | undefined {
  if (doc.kind === 'array') {
    for (const [i, item] of doc.items.entries()) {
      const found = referenceDuplicate(item, `${path}/${i}`);
      if (found !== undefined) return found;
    }
  } else if (doc.kind === 'object') {
    const seen = new Set<string>();
    for (const [name, value] of doc.members) {
      if (seen.has(name)) return `${path}/${token(name)}`;
      seen.add(name);
      const found = referenceDuplicate(value, `${path}/${token(name)}`);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

/** JSON text, each character of a string escaped as \uXXXX when its bit in `escapes` says so. */
function write(doc: Doc, escapes: number, ws: string): string {
  const str = (s: string) =>
    `"${[...s].map((ch, i) => ((escapes >> i % 30) & 1 ? `\\u${(ch.codePointAt(0) as number).toString(16).padStart(4, '0')}` : JSON.stringify(ch).slice(1, -1))).join('')}"`;
  if (doc.kind === 'leaf') return typeof doc.value === 'string' ? str(doc.value) : JSON.stringify(doc.value);
  if (doc.kind === 'array') return `[${ws}${doc.items.map((d) => write(d, escapes, ws)).join(`,${ws}`)}${ws}]`;
  return `{${ws}${doc.members.map(([n, v]) => `${str(n)}${ws}:${ws}${write(v, escapes, ws)}`).join(`,${ws}`)}${ws}}`;
}

// Names and strings full of what a scanner trips on: quotes, backslashes, braces, commas, pointer escapes.
const NAMES = ['a', 'amount', '"', '\\', '{', '}', '[', ',', ':', 'a/b', '~', '', 'ü', '中'];
const name = fc.constantFrom(...NAMES);
const { doc } = fc.letrec<{ doc: Doc }>((tie) => ({
  doc: fc.oneof(
    { depthSize: 'small' },
    fc.record({ kind: fc.constant('leaf' as const), value: fc.oneof(fc.constantFrom(...NAMES, '\\"}', '",'), fc.integer(), fc.boolean(), fc.constant(null)) }),
    fc.record({ kind: fc.constant('array' as const), items: fc.array(tie('doc'), { maxLength: 4 }) }),
    fc.record({ kind: fc.constant('object' as const), members: fc.array(fc.tuple(name, tie('doc')), { maxLength: 5 }) }),
  ),
}));

describe('findDuplicateMember', () => {
  it('names the first repeated member by JSON pointer, after unescaping, at any depth', () => {
    const cases: [string, string | undefined][] = [
      ['{"amount":"1.00","amount":"9999.00"}', '/amount'],
      ['{"amount":"1.00","\\u0061mount":"9999.00"}', '/amount'],
      ['{"context":{"amount":"1","payee":"x","amount":"2"}}', '/context/amount'],
      ['[{"a":1},{"a":1},{"b":[{"c":1,"c":1}]}]', '/2/b/0/c'],
      ['{"a/b":{"~":1,"~":2}}', '/a~1b/~0'],
      ['{"":1,"":2}', '/'],
      ['{"a":{"x":1},"b":{"x":1}}', undefined],
      ['{"a":"{\\"a\\":1,\\"a\\":2}"}', undefined],
      ['{"a\\\\":1,"a":2}', undefined],
      ['{"a\\\\":1,"a\\\\":2}', '/a\\'],
      ['{"a":[1,2,{"a":1}],"b":1}', undefined],
      ['{"a":1,"b":{"c":1},"a":2}', '/a'],
      [' { "k" : 1 , "k" : 2 } ', '/k'],
      ['{}', undefined],
      ['[]', undefined],
    ];
    for (const [text, expected] of cases) {
      assert.doesNotThrow(() => JSON.parse(text), text);
      assert.equal(findDuplicateMember(text), expected, text);
    }
  });

  it('agrees with the structure on random documents, however names are spelled and spaced', () => {
    fc.assert(
      fc.property(doc, fc.integer({ min: 0, max: 2 ** 30 - 1 }), fc.constantFrom('', ' ', '\n\t '), (d, escapes, ws) => {
        const text = write(d, escapes, ws);
        JSON.parse(text);
        assert.equal(findDuplicateMember(text), referenceDuplicate(d), text);
      }),
      { numRuns: RUNS, ...SEED },
    );
  });

  it('finds nothing in what JSON.stringify writes', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        assert.equal(findDuplicateMember(JSON.stringify(v)), undefined);
        assert.equal(findDuplicateMember(JSON.stringify(v, null, 2)), undefined);
      }),
      { numRuns: RUNS, ...SEED },
    );
  });

  it('ends, without throwing, on text that is not JSON', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom('{', '}', '[', ']', '"', '\\', ',', ':', 'a', ' ') }), (text) => {
        findDuplicateMember(text);
      }),
      { numRuns: RUNS, ...SEED },
    );
  });

  it('stays linear on long runs of backslashes, quotes and members', () => {
    const members = 20_000;
    const wide = `{${Array.from({ length: members }, (_, i) => `"k${i}":"${'\\\\'.repeat(8)}\\""`).join(',')},"k0":1}`;
    const deep = `${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}`;
    const started = process.hrtime.bigint();
    assert.equal(findDuplicateMember(wide), '/k0');
    assert.equal(findDuplicateMember(deep), undefined);
    // Generous (a shared, loaded machine): a quadratic scan of this takes seconds.
    assert.ok(Number(process.hrtime.bigint() - started) / 1e6 < 1000);
  });
});

describe('jwsDuplicateMember', () => {
  const b64 = (s: string) => Buffer.from(s).toString('base64url');
  it('looks at the protected header and the payload of a compact JWS, not at the signature', () => {
    assert.deepEqual(jwsDuplicateMember(`${b64('{"alg":"ES256","alg":"none"}')}.${b64('{}')}.sig`), { part: 'header', pointer: '/alg' });
    assert.deepEqual(jwsDuplicateMember(`${b64('{"alg":"ES256"}')}.${b64('{"sub":"a","iss":"b","sub":"c"}')}.sig`), { part: 'payload', pointer: '/sub' });
    assert.equal(jwsDuplicateMember(`${b64('{"alg":"ES256"}')}.${b64('{"sub":"a"}')}.${b64('{"x":1,"x":1}')}`), undefined);
    assert.equal(jwsDuplicateMember('no dots'), undefined);
    assert.equal(jwsDuplicateMember(`${Buffer.from([0xff, 0xfe]).toString('base64url')}.${b64('{}')}.s`), undefined);
  });
});
