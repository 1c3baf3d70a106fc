import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { firstContextDifference, jsonEqual, type JsonObject } from '../../src/verifier/index.ts';

// The definition the fast path must agree with: the first key of the sorted union (without
// `type` on the approved side) that is missing on either side or differs.
function reference(expected: JsonObject, approved: Record<string, unknown>): string | undefined {
  const keys = [...new Set([...Object.keys(expected), ...Object.keys(approved).filter((k) => k !== 'type')])].sort();
  return keys.find((k) => !Object.hasOwn(expected, k) || !Object.hasOwn(approved, k) || !jsonEqual(expected[k], approved[k]));
}

describe('firstContextDifference', () => {
  const expected: JsonObject = { amount: '88.00', currency: 'CNY', payee: 'shop-1', deviceId: 'dev-1' };

  it('equal contexts (any key order, type ignored) have no difference', () => {
    assert.equal(firstContextDifference(expected, { type: 'payment_code.issue', deviceId: 'dev-1', payee: 'shop-1', currency: 'CNY', amount: '88.00' }), undefined);
    assert.equal(firstContextDifference({}, { type: 'x' }), undefined);
    assert.equal(firstContextDifference({}, {}), undefined);
  });

  it('names the first differing field in sorted order: changed, missing, extra', () => {
    assert.equal(firstContextDifference(expected, { type: 't', amount: '88.0', currency: 'CNY', payee: 'shop-2', deviceId: 'dev-1' }), 'amount');
    assert.equal(firstContextDifference(expected, { type: 't', amount: '88.00', currency: 'CNY', deviceId: 'dev-1' }), 'payee');
    // An extra approved field that sorts before every expected one is still the one named.
    assert.equal(firstContextDifference(expected, { type: 't', aaa: 1, amount: '88.00', currency: 'CNY', payee: 'shop-1', deviceId: 'dev-1' }), 'aaa');
    assert.equal(firstContextDifference(expected, { type: 't', amount: '88.00', currency: 'CNY', payee: 'shop-1', deviceId: 'dev-1', zzz: null }), 'zzz');
    // Same number of keys, one swapped for another: the count alone must not pass it.
    assert.equal(firstContextDifference(expected, { type: 't', amount: '88.00', currency: 'CNY', payee: 'shop-1', device: 'dev-1' }), 'device');
    // `type` on the expected side is not skipped (assertExpectedContext forbids it there anyway).
    assert.equal(firstContextDifference({ type: 'a' } as JsonObject, { type: 'a' }), undefined);
    assert.equal(firstContextDifference({ type: 'a' } as JsonObject, {}), 'type');
  });

  it('agrees with the sorted-union definition on random contexts', () => {
    const keys = ['a', 'amount', 'b', 'currency', 'type', 'z', '__proto__'];
    const values: unknown[] = ['1', 1, '1.0', null, true, false, [1, 2], [2, 1], { x: 1 }, { x: '1' }];
    let seed = 42;
    const next = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const randomObject = (allowType: boolean) => {
      const o: Record<string, unknown> = {};
      for (const k of keys) if ((allowType || k !== 'type') && next(3) > 0) Object.defineProperty(o, k, { value: values[next(values.length)], enumerable: true, writable: true, configurable: true });
      return o;
    };
    for (let i = 0; i < 5000; i += 1) {
      const e = randomObject(false) as JsonObject;
      // Half the time start from an equal copy and perturb at most one field.
      const a: Record<string, unknown> = next(2) === 0 ? randomObject(true) : { ...structuredClone(e), type: 't' };
      if (next(4) === 0) a[keys[next(keys.length)] as string] = values[next(values.length)];
      assert.equal(firstContextDifference(e, a), reference(e, a), JSON.stringify({ e, a }));
    }
  });
});
