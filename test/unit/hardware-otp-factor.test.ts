import assert from 'node:assert/strict';
import { createHash, createSecretKey, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { masterKeyFromBytes, Sealer } from '../../src/crypto/sealer.ts';
import type { FactorRecord } from '../../src/factors/factor.ts';
import { createHardwareOtpFactor, tokenChallengeKey, factorSeedAad, type HardwareOtpParams } from '../../src/factors/hardware-otp/index.ts';
import { matchConsecutiveCodes } from '../../src/otp/index.ts';
import { needOathtool, oathHotp, oathTotp } from '../helpers/hardware-tokens.ts';

const sealer = new Sealer(masterKeyFromBytes(randomBytes(32)));
const factor = createHardwareOtpFactor({ sealer, window: { lookAhead: 10, steps: 1 }, maxFailures: 10, lockSeconds: 0, challengeKey: tokenChallengeKey(sealer) });
const NOW = new Date(Date.UTC(2026, 2, 1, 8, 0, 10));

function record(seed: Buffer, params: Partial<HardwareOtpParams>, counter = 0, extra: Partial<FactorRecord> = {}): FactorRecord {
  const id = `fac_${randomBytes(6).toString('hex')}`;
  const full: HardwareOtpParams = { tokenId: 'hwt_1', serial: 'S1', kind: 'hotp', algorithm: 'SHA1', digits: 6, periodSeconds: 0, driftSteps: 0, challengeLength: null, validFrom: null, validUntil: null, ...params };
  return { id, userId: 'usr_1', type: 'hardware_otp', label: 'Token S1', status: 'active', secretHash: null, secretSealed: sealer.seal(seed, factorSeedAad(id)), params: { ...full }, counter, ...extra };
}

/** The drift a successful verification asks to store. */
function drift(outcome: { change?: { params?: Record<string, unknown> } }): unknown {
  return outcome.change?.params?.driftSteps;
}

async function verify(r: FactorRecord | undefined, code: unknown, at = NOW) {
  return factor.verify(r, { code } as { code: string }, { now: at });
}

/** GM/T 0021 computed by hand here (not through src/otp), for SM3 tokens. */
function sm3Code(seed: Buffer, id: Buffer, digits = 6): string {
  const padded = id.length >= 16 ? id : Buffer.concat([id, Buffer.alloc(16 - id.length)]);
  const s = createHash('sm3').update(Buffer.concat([seed, padded])).digest();
  let od = 0n;
  for (let i = 0; i < 32; i += 4) od += BigInt(s.readUInt32BE(i));
  return ((od % 2n ** 32n) % 10n ** BigInt(digits)).toString().padStart(digits, '0');
}

describe('hardware_otp factor: event tokens (HOTP)', () => {
  it('look-ahead accepts counter+7, then refuses counter+7 again and anything at or below it', async (t) => {
    if (needOathtool(t)) return;
    const seed = randomBytes(20);
    const hex = seed.toString('hex');
    const r = record(seed, {}, 100);
    const ok = await verify(r, oathHotp(hex, 107));
    assert.deepEqual(ok, { ok: true, amr: ['otp', 'hwk'], change: { counter: 108 } });
    const after = { ...r, counter: 108 };
    for (const c of [107, 106, 100, 99]) {
      const res = await verify(after, oathHotp(hex, c));
      assert.equal(res.ok, false, `counter ${c}`);
    }
    assert.deepEqual(await verify(after, oathHotp(hex, 107)), { ok: false, reason: 'replayed' });
    // The window is [counter, counter + lookAhead].
    assert.deepEqual((await verify(after, oathHotp(hex, 118))).ok, true);
    assert.deepEqual((await verify(after, oathHotp(hex, 119))).ok, false);
  });
  it('6, 7 and 8 digits; malformed input is simply invalid', async (t) => {
    if (needOathtool(t)) return;
    const seed = randomBytes(20);
    for (const digits of [6, 7, 8]) {
      const r = record(seed, { digits });
      assert.equal((await verify(r, oathHotp(seed.toString('hex'), 3, digits))).ok, true, `${digits} digits`);
    }
    const r = record(seed, {});
    for (const bad of [undefined, null, 123456, '', '12345', '1234567', 'abcdef', '12345x']) {
      assert.deepEqual(await verify(r, bad), { ok: false, reason: 'invalid' }, String(bad));
    }
    // Full-width digits (what a Chinese IME types) and a space between groups read as the code.
    const code = oathHotp(seed.toString('hex'), 3);
    const typed = `${code.slice(0, 3)} ${code.slice(3)}`.replace(/[0-9]/g, (d) => String.fromCharCode(0xff10 + Number(d)));
    assert.deepEqual(await verify(r, typed), { ok: true, amr: ['otp', 'hwk'], change: { counter: 4 } });
  });
  it('no record: not_enrolled; a disabled or broken record: invalid', async () => {
    const seed = randomBytes(20);
    assert.deepEqual(await verify(undefined, '123456'), { ok: false, reason: 'not_enrolled' });
    assert.deepEqual(await verify(record(seed, {}, 0, { status: 'disabled' }), '123456'), { ok: false, reason: 'invalid' });
    assert.deepEqual(await verify({ ...record(seed, {}), params: { kind: 'nonsense' } }, '123456'), { ok: false, reason: 'invalid' });
  });
  it('a seed sealed for another row does not unseal (the associated data binds it)', async () => {
    const seed = randomBytes(20);
    const a = record(seed, {});
    const b = record(seed, {});
    await assert.rejects(verify({ ...a, secretSealed: b.secretSealed }, '123456'));
  });
});

describe('hardware_otp factor: time tokens (TOTP) with drift', () => {
  for (const algorithm of ['SHA1', 'SHA256', 'SHA512'] as const) {
    for (const digits of [6, 8]) {
      it(`${algorithm} ${digits} digits: ±1 step accepted, the step is recorded, replay refused`, async (t) => {
        if (needOathtool(t)) return;
        const seed = randomBytes(algorithm === 'SHA1' ? 20 : algorithm === 'SHA256' ? 32 : 64);
        const hex = seed.toString('hex');
        const unix = NOW.getTime() / 1000;
        const step = Math.floor(unix / 30);
        const r = record(seed, { kind: 'totp', algorithm, digits, periodSeconds: 30 });
        const code = oathTotp(hex, unix, { algorithm, digits });
        const ok = await verify(r, code);
        assert.equal(ok.ok, true);
        assert.equal(ok.change?.counter, step);
        assert.equal(drift(ok), 0);
        assert.deepEqual(await verify({ ...r, counter: step }, code), { ok: false, reason: 'replayed' });
        assert.equal((await verify(r, oathTotp(hex, unix - 30, { algorithm, digits }))).ok, true);
        assert.equal((await verify(r, oathTotp(hex, unix + 30, { algorithm, digits }))).ok, true);
        assert.equal((await verify(r, oathTotp(hex, unix + 60, { algorithm, digits }))).ok, false);
        assert.equal((await verify(r, oathTotp(hex, unix - 60, { algorithm, digits }))).ok, false);
        // A step after the last accepted one is fine; one before it is not.
        assert.equal((await verify({ ...r, counter: step }, oathTotp(hex, unix + 30, { algorithm, digits }))).ok, true);
        assert.equal((await verify({ ...r, counter: step }, oathTotp(hex, unix - 30, { algorithm, digits }))).ok, false);
      });
    }
  }
  it('drift is learned and then used: a token drifting ahead keeps working', async (t) => {
    if (needOathtool(t)) return;
    const seed = randomBytes(20);
    const hex = seed.toString('hex');
    let r = record(seed, { kind: 'totp', periodSeconds: 30 });
    const unix = NOW.getTime() / 1000;
    // The token runs one step fast: accepted at +1, drift 1 learned.
    const first = await verify(r, oathTotp(hex, unix + 30));
    assert.equal(first.ok, true);
    assert.equal(drift(first), 1);
    r = { ...r, counter: first.change?.counter ?? 0, params: first.change?.params ?? {} };
    // A day later it runs two steps fast: +2 is outside ±1 of "now", but inside ±1 of now + drift.
    const later = new Date(NOW.getTime() + 86_400_000);
    const code = oathTotp(hex, later.getTime() / 1000 + 60);
    assert.equal((await verify(record(seed, { kind: 'totp', periodSeconds: 30 }), code, later)).ok, false, 'without the learned drift');
    const second = await verify(r, code, later);
    assert.equal(second.ok, true);
    assert.equal(drift(second), 2);
  });
  it('key validity dates are honoured', async (t) => {
    if (needOathtool(t)) return;
    const seed = randomBytes(20);
    const code = oathHotp(seed.toString('hex'), 0);
    assert.deepEqual(await verify(record(seed, { validFrom: NOW.getTime() + 1000 }), code), { ok: false, reason: 'expired' });
    assert.deepEqual(await verify(record(seed, { validUntil: NOW.getTime() }), code), { ok: false, reason: 'expired' });
    assert.equal((await verify(record(seed, { validFrom: NOW.getTime() - 1000, validUntil: NOW.getTime() + 1000 }), code)).ok, true);
  });
});

describe('hardware_otp factor: GM/T 0021 SM3 tokens', () => {
  it('time mode (T only, Tc = 60 s) with drift, event mode (C only) with look-ahead', async () => {
    const seed = randomBytes(16);
    const t = Math.floor(NOW.getTime() / 60_000);
    const tBytes = Buffer.alloc(8);
    tBytes.writeBigUInt64BE(BigInt(t + 1));
    const timeToken = record(seed, { kind: 'totp', algorithm: 'SM3', periodSeconds: 60 });
    const ok = await verify(timeToken, sm3Code(seed, tBytes));
    assert.equal(ok.ok, true);
    assert.equal(ok.change?.counter, t + 1);
    assert.equal(drift(ok), 1);
    assert.deepEqual(await verify({ ...timeToken, counter: t + 1 }, sm3Code(seed, tBytes)), { ok: false, reason: 'replayed' });

    const cBytes = Buffer.alloc(4);
    cBytes.writeUInt32BE(57);
    const eventToken = record(seed, { kind: 'hotp', algorithm: 'SM3', digits: 8 }, 50);
    assert.deepEqual(await verify(eventToken, sm3Code(seed, cBytes, 8)), { ok: true, amr: ['otp', 'hwk'], change: { counter: 58 } });
    assert.equal((await verify({ ...eventToken, counter: 58 }, sm3Code(seed, cBytes, 8))).ok, false);
  });
});

describe('resync: two consecutive codes in the wide window', () => {
  it('event token: finds n, n+1 far ahead; refuses non-consecutive or reversed codes', (t) => {
    if (needOathtool(t)) return;
    const seed = randomBytes(20);
    const hex = seed.toString('hex');
    const key = createSecretKey(seed);
    const p = { kind: 'hotp' as const, algorithm: 'SHA1' as const, digits: 6, periodSeconds: 0 };
    const w = { lookAhead: 100, steps: 30 };
    const m = matchConsecutiveCodes(key, p, { counter: 10, driftSteps: 0 }, oathHotp(hex, 85), oathHotp(hex, 86), NOW, w);
    assert.deepEqual(m, { position: 86, next: { counter: 87, driftSteps: 0 } });
    assert.equal(matchConsecutiveCodes(key, p, { counter: 10, driftSteps: 0 }, oathHotp(hex, 85), oathHotp(hex, 87), NOW, w), undefined);
    assert.equal(matchConsecutiveCodes(key, p, { counter: 10, driftSteps: 0 }, oathHotp(hex, 86), oathHotp(hex, 85), NOW, w), undefined);
    assert.equal(matchConsecutiveCodes(key, p, { counter: 10, driftSteps: 0 }, oathHotp(hex, 120), oathHotp(hex, 121), NOW, w), undefined);
    assert.equal(matchConsecutiveCodes(key, p, { counter: 90, driftSteps: 0 }, oathHotp(hex, 85), oathHotp(hex, 86), NOW, w), undefined, 'never backwards');
  });
  it('time token: re-learns a large drift', (t) => {
    if (needOathtool(t)) return;
    const seed = randomBytes(20);
    const hex = seed.toString('hex');
    const unix = NOW.getTime() / 1000;
    const p = { kind: 'totp' as const, algorithm: 'SHA1' as const, digits: 6, periodSeconds: 30 };
    const m = matchConsecutiveCodes(createSecretKey(seed), p, { counter: 0, driftSteps: 0 }, oathTotp(hex, unix - 20 * 30), oathTotp(hex, unix - 19 * 30), NOW, { lookAhead: 100, steps: 30 });
    assert.equal(m?.next.driftSteps, -19);
    assert.equal(m?.position, Math.floor(unix / 30) - 19);
  });
});
