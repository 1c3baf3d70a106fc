import assert from 'node:assert/strict';
import { createHash, createSecretKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { findOtp, sm3Generator, sm3Id, sm3Otp, sm3TimeFactor } from '../../src/otp/index.ts';

interface Vector {
  key: string;
  t: number;
  c: number;
  q: string;
  otp: string;
}
const fixture = JSON.parse(readFileSync(new URL('../fixtures/gmt0021-sm3.json', import.meta.url), 'utf8')) as { digits: number; vectors: Vector[] };
const key = (hex: string) => createSecretKey(Buffer.from(hex, 'hex'));

describe('GM/T 0021 SM3 OTP: the standard’s sample values', () => {
  assert.equal(fixture.vectors.length, 10);
  for (const v of fixture.vectors) {
    it(`K=${v.key.slice(0, 8)}… T=${v.t} C=${v.c} Q=${v.q} → ${v.otp}`, () => {
      // Tc = 1 s in the samples, so T is the Unix time itself.
      const t = sm3TimeFactor(new Date(v.t * 1000), 1);
      assert.equal(t, v.t);
      assert.equal(sm3Otp(key(v.key), { time: t, counter: v.c, challenge: v.q }, fixture.digits), v.otp);
      const gen = sm3Generator(key(v.key), fixture.digits, (n) => ({ time: n, counter: v.c, challenge: v.q }));
      assert.equal(gen(v.t), v.otp);
      assert.equal(findOtp(v.otp, v.t - 3, v.t + 3, gen), v.t);
    });
  }
  it('a one-bit change of key, T, C or Q changes the code', () => {
    const v = fixture.vectors[0] as Vector;
    const base = { time: v.t, counter: v.c, challenge: v.q };
    const flipped = Buffer.from(v.key, 'hex');
    flipped[0] = (flipped[0] as number) ^ 1;
    assert.notEqual(sm3Otp(createSecretKey(flipped), base), v.otp);
    assert.notEqual(sm3Otp(key(v.key), { ...base, time: v.t + 1 }), v.otp);
    assert.notEqual(sm3Otp(key(v.key), { ...base, counter: v.c + 1 }), v.otp);
    assert.notEqual(sm3Otp(key(v.key), { ...base, challenge: '5679' }), v.otp);
  });
});

describe('GM/T 0021 SM3 OTP: ID layout, modes and truncation', () => {
  it('ID is T(8 BE) ‖ C(4 BE) ‖ Q(ASCII), padded with zeros to 16 bytes only when shorter', () => {
    assert.equal(sm3Id({ time: 0x0102030405060708n, counter: 0x0a0b0c0d, challenge: '5678' }).toString('hex'), '01020304050607080a0b0c0d35363738');
    assert.equal(sm3Id({ time: 1, counter: 2, challenge: '123456' }).length, 18);
    // Time-based mode: T alone, padded.
    assert.equal(sm3Id({ time: 1 }).toString('hex'), `0000000000000001${'00'.repeat(8)}`);
    // Event-based mode: C alone, padded.
    assert.equal(sm3Id({ counter: 7 }).toString('hex'), `00000007${'00'.repeat(12)}`);
    // Challenge mode with time.
    assert.equal(sm3Id({ time: 2, challenge: '12345678' }).toString('hex'), `0000000000000002${Buffer.from('12345678').toString('hex')}`);
  });
  it('the code is SM3(K ‖ ID) truncated by summing the words — recomputed by hand for each mode', () => {
    const k = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    for (const factors of [{ time: 27_000_000 }, { counter: 41 }, { time: 27_000_000, challenge: '90210' }]) {
      const s = createHash('sm3').update(Buffer.concat([k, sm3Id(factors)])).digest();
      let od = 0n;
      for (let i = 0; i < 32; i += 4) od += BigInt(s.readUInt32BE(i));
      for (const digits of [6, 7, 8]) {
        const expected = ((od % 2n ** 32n) % 10n ** BigInt(digits)).toString().padStart(digits, '0');
        assert.equal(sm3Otp(createSecretKey(k), factors, digits), expected, JSON.stringify(factors));
      }
    }
  });
  it('time factor: T = floor((t − T0) / Tc)', () => {
    assert.equal(sm3TimeFactor(new Date(59_999), 60), 0);
    assert.equal(sm3TimeFactor(new Date(60_000), 60), 1);
    assert.equal(sm3TimeFactor(new Date(1_700_000_000_000), 60), Math.floor(1_700_000_000 / 60));
    assert.equal(sm3TimeFactor(new Date(120_000), 60, 60), 1);
  });
  it('the seed exported for hashing (SM3 OTP is no HMAC) is wiped at once', () => {
    const k = key('1234567890abcdef1234567890abcdef');
    const exported: Buffer[] = [];
    const proto = Object.getPrototypeOf(k) as { export: (...a: unknown[]) => Buffer };
    const original = proto.export;
    proto.export = function (this: unknown, ...a: unknown[]) {
      const b = original.apply(this, a);
      exported.push(b);
      return b;
    };
    try {
      const code = sm3Otp(k, { time: 1 });
      const gen = sm3Generator(k, 6, (n) => ({ counter: n }));
      assert.equal(gen(3), sm3Otp(k, { counter: 3 }));
      assert.match(code, /^\d{6}$/);
    } finally {
      proto.export = original;
    }
    assert.equal(exported.length, 3);
    for (const b of exported) assert.ok(b.every((x) => x === 0), 'wiped');
  });
  it('refuses misuse with TypeError', () => {
    const k = key('1234567890abcdef1234567890abcdef');
    assert.throws(() => sm3Otp(k, {}), TypeError);
    assert.throws(() => sm3Otp(k, { counter: 2 ** 32 }), TypeError);
    assert.throws(() => sm3Otp(k, { counter: -1 }), TypeError);
    assert.throws(() => sm3Otp(k, { time: -1 }), TypeError);
    assert.throws(() => sm3Otp(k, { challenge: '' }), TypeError);
    assert.throws(() => sm3Otp(k, { challenge: '密码' }), TypeError);
    assert.throws(() => sm3Otp(k, { time: 1 }, 5), TypeError);
    assert.throws(() => sm3Otp(k, { time: 1 }, 9), TypeError);
    assert.throws(() => sm3TimeFactor(new Date(0), 0), TypeError);
  });
});
