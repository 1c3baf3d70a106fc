import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { FactorRecord } from '../../src/factors/factor.ts';
import { createRecoveryCodeFactor, generateRecoveryCodes, normaliseRecoveryCode, remainingCodes, useRecoveryCode } from '../../src/factors/recovery-code/index.ts';

function record(stored: string, counter = 1, over: Partial<FactorRecord> = {}): FactorRecord {
  return { id: 'fac_rc', userId: 'usr_1', type: 'recovery_code', label: 'Recovery codes', status: 'active', secretHash: stored, secretSealed: null, params: { remaining: remainingCodes(stored) }, counter, ...over };
}

describe('recovery code sets', () => {
  it('10 distinct codes of 16 characters (80 bits), grouped for reading; only hashes are stored', () => {
    const { codes, stored } = generateRecoveryCodes(10);
    assert.equal(codes.length, 10);
    assert.equal(new Set(codes).size, 10);
    for (const c of codes) {
      assert.match(c, /^[0-9a-hjkmnp-tv-z]{4}(-[0-9a-hjkmnp-tv-z]{4}){3}$/);
      const plain = c.replaceAll('-', '');
      assert.ok(!stored.includes(plain) && !stored.includes(c));
    }
    assert.match(stored, /^rc1\.[A-Za-z0-9_-]{43}(\.[A-Za-z0-9_-]{43}){10}$/);
    assert.equal(remainingCodes(stored), 10);
  });

  it('two sets never share a salt, so equal codes would hash differently', () => {
    const a = generateRecoveryCodes(10).stored.split('.')[1];
    const b = generateRecoveryCodes(10).stored.split('.')[1];
    assert.notEqual(a, b);
  });

  it('the characters are spread evenly over the alphabet (no modulo bias)', () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 200; i += 1) for (const c of generateRecoveryCodes(10).codes.join('').replaceAll('-', '')) counts.set(c, (counts.get(c) ?? 0) + 1);
    assert.equal(counts.size, 32);
    // 32,000 draws: each symbol is expected 1000 times; ±25 % is > 8 standard deviations.
    for (const [c, n] of counts) assert.ok(n > 750 && n < 1250, `${c}: ${n}`);
  });

  it('each code works once; the rest keep working', () => {
    const { codes, stored } = generateRecoveryCodes(10);
    let set = stored;
    for (const [i, code] of codes.entries()) {
      const used = useRecoveryCode(set, code);
      assert.equal(used.ok, true, code);
      if (!used.ok) return;
      assert.equal(used.remaining, 9 - i);
      assert.equal(useRecoveryCode(used.stored, code).ok, false, 'used twice');
      set = used.stored;
    }
    assert.equal(remainingCodes(set), 0);
  });

  it('typing is lenient: case, spaces, hyphens, i/l for 1 and o for 0', () => {
    const code = '0123-4567-89ab-cdef';
    assert.equal(normaliseRecoveryCode(' O123 4567 89AB CDEF '), '0123456789abcdef');
    assert.equal(normaliseRecoveryCode('o1l34567-89ab-cdef'.replace('l', 'i')), '01134567' + '89abcdef');
    assert.equal(normaliseRecoveryCode(code.toUpperCase()), '0123456789abcdef');
    // Full-width letters and digits, as a Chinese IME in full-width mode types them.
    const wide = code.toUpperCase().replace(/[0-9A-Z-]/g, (ch) => String.fromCharCode(ch.charCodeAt(0) + 0xfee0));
    assert.equal(normaliseRecoveryCode(wide), '0123456789abcdef');
    for (const bad of ['0123-4567-89ab-cde', '0123-4567-89ab-cdefg', '0123-4567-89ab-cdeu', '', 42, null, 'x'.repeat(65)]) assert.equal(normaliseRecoveryCode(bad), undefined, String(bad));
  });

  it('a code of another set, a wrong code and rubbish fail', () => {
    const a = generateRecoveryCodes(10);
    const b = generateRecoveryCodes(10);
    for (const input of [b.codes[0], 'zzzz-zzzz-zzzz-zzzz', '', undefined, 123]) assert.equal(useRecoveryCode(a.stored, input).ok, false);
    assert.throws(() => useRecoveryCode('not a set', a.codes[0]), TypeError);
  });
});

describe('recovery code factor', () => {
  const factor = createRecoveryCodeFactor();
  const now = new Date(Date.UTC(2026, 0, 1));

  it('proves otp, is not a possession factor, and asks for the used slot to be emptied under the next version', async () => {
    assert.deepEqual(factor.descriptor, { kind: 'direct', amr: ['otp'], possession: false, multiple: false });
    const { codes, stored } = generateRecoveryCodes(10);
    const r = await factor.verify(record(stored, 7), { code: codes[3]! }, { now });
    assert.equal(r.ok, true);
    if (!r.ok || r.change === undefined) return;
    assert.equal(r.change.counter, 8);
    assert.deepEqual(r.change.params, { remaining: 9 });
    assert.equal(useRecoveryCode(r.change.secretHash, codes[3]).ok, false);
    assert.equal(useRecoveryCode(r.change.secretHash, codes[4]).ok, true);
  });

  it('fails for wrong codes and for missing, pending or disabled sets', async () => {
    const { codes, stored } = generateRecoveryCodes(10);
    assert.deepEqual(await factor.verify(record(stored), { code: 'zzzz-zzzz-zzzz-zzzz' }, { now }), { ok: false, reason: 'invalid' });
    assert.deepEqual(await factor.verify(record(stored), {} as never, { now }), { ok: false, reason: 'invalid' });
    assert.deepEqual(await factor.verify(undefined, { code: codes[0]! }, { now }), { ok: false, reason: 'not_enrolled' });
    assert.deepEqual(await factor.verify(record(stored, 1, { status: 'pending' }), { code: codes[0]! }, { now }), { ok: false, reason: 'not_enrolled' });
    assert.deepEqual(await factor.verify(record(stored, 1, { status: 'disabled' }), { code: codes[0]! }, { now }), { ok: false, reason: 'not_enrolled' });
  });
});
