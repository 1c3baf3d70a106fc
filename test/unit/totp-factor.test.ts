import assert from 'node:assert/strict';
import { createSecretKey, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { masterKeyFromBytes, SealError, Sealer } from '../../src/crypto/sealer.ts';
import type { FactorRecord } from '../../src/factors/factor.ts';
import {
  checkTotpCode,
  createTotpFactor,
  newTotpSecret,
  otpauthUri,
  parseTotpParams,
  qrImages,
  sealTotpSecret,
  type TotpParams,
  totpParamsAllowed,
} from '../../src/factors/totp/index.ts';
import { base32Decode, hotp, type OtpAlgorithm, timeStep } from '../../src/otp/index.ts';
import { needTool } from '../helpers/env.ts';
import { oathtoolTotp } from '../helpers/totp.ts';

/** The digits as a Chinese IME types them by default (U+FF10–U+FF19). */
const fullWidth = (s: string) => s.replace(/[0-9]/g, (d) => String.fromCharCode(0xff10 + Number(d)));

const sealer = new Sealer(masterKeyFromBytes(randomBytes(32)));

function record(params: TotpParams, secret: Buffer, counter = 0, over: Partial<FactorRecord> = {}): FactorRecord {
  const id = `fac_${randomBytes(8).toString('hex')}`;
  return { id, userId: 'usr_1', type: 'totp', label: 'app', status: 'active', secretHash: null, secretSealed: sealTotpSecret(sealer, id, secret), params: { ...params }, counter, ...over };
}

const at = (unix: number) => new Date(unix * 1000);

describe('TOTP factor: oathtool codes at step boundaries (fake clock)', () => {
  const factor = createTotpFactor({ sealer, windowSteps: 1 });
  for (const algorithm of ['SHA1', 'SHA256', 'SHA512'] as const) {
    for (const digits of [6, 8] as const) {
      for (const period of [30, 60] as const) {
        it(`${algorithm}, ${digits} digits, ${period} s`, async (t) => {
          if (needTool(t, 'oathtool', 'oathtool')) return;
          const params = { algorithm, digits, period };
          const secret = newTotpSecret(params, 20);
          const boundary = Math.ceil(1_800_000_000 / period) * period;
          // The last second of a step and the first of the next: each code belongs to its own step.
          for (const unix of [boundary - 1, boundary, boundary + period - 1]) {
            const code = oathtoolTotp(secret, params, unix);
            const step = timeStep(at(unix), period);
            const ok = await factor.verify(record(params, secret), { code }, { now: at(unix) });
            assert.deepEqual(ok, { ok: true, amr: ['otp'], change: { counter: step } }, `t=${unix}`);
            // ±1 step of drift is accepted, 2 steps are not.
            assert.equal((await factor.verify(record(params, secret), { code }, { now: at(unix + period) })).ok, true);
            assert.equal((await factor.verify(record(params, secret), { code }, { now: at(unix - period) })).ok, true);
            assert.equal((await factor.verify(record(params, secret), { code }, { now: at(unix + 2 * period) })).ok, false);
            assert.equal((await factor.verify(record(params, secret), { code }, { now: at(unix - 2 * period) })).ok, false);
          }
          // The code of the step just before the boundary, one second after it: drift window, step recorded is the old one.
          const before = oathtoolTotp(secret, params, boundary - 1);
          const r = await factor.verify(record(params, secret), { code: before }, { now: at(boundary) });
          assert.deepEqual(r, { ok: true, amr: ['otp'], change: { counter: timeStep(at(boundary - 1), period) } });
        });
      }
    }
  }

  it('a code is accepted once: at or below the last accepted step it is a replay', async (t) => {
    if (needTool(t, 'oathtool', 'oathtool')) return;
    const params: TotpParams = { algorithm: 'SHA1', digits: 6, period: 30 };
    const secret = randomBytes(20);
    const unix = 1_800_000_015;
    const code = oathtoolTotp(secret, params, unix);
    const step = timeStep(at(unix), 30);
    const first = await factor.verify(record(params, secret, step - 1), { code }, { now: at(unix) });
    assert.equal(first.ok, true);
    assert.deepEqual(await factor.verify(record(params, secret, step), { code }, { now: at(unix) }), { ok: false, reason: 'replayed' });
    // An earlier step's code after a later one was accepted: refused as well.
    const earlier = oathtoolTotp(secret, params, unix - 30);
    assert.deepEqual(await factor.verify(record(params, secret, step), { code: earlier }, { now: at(unix) }), { ok: false, reason: 'replayed' });
    // The next step's code (clock ahead) still works after the current one.
    const next = oathtoolTotp(secret, params, unix + 30);
    assert.deepEqual(await factor.verify(record(params, secret, step), { code: next }, { now: at(unix) }), { ok: true, amr: ['otp'], change: { counter: step + 1 } });
  });

  it('window 0 and 2', async (t) => {
    if (needTool(t, 'oathtool', 'oathtool')) return;
    const params: TotpParams = { algorithm: 'SHA256', digits: 8, period: 30 };
    const secret = randomBytes(32);
    const unix = 1_800_000_040;
    const code = oathtoolTotp(secret, params, unix);
    const strict = createTotpFactor({ sealer, windowSteps: 0 });
    const wide = createTotpFactor({ sealer, windowSteps: 2 });
    assert.equal((await strict.verify(record(params, secret), { code }, { now: at(unix) })).ok, true);
    assert.equal((await strict.verify(record(params, secret), { code }, { now: at(unix + 30) })).ok, false);
    assert.equal((await wide.verify(record(params, secret), { code }, { now: at(unix + 60) })).ok, true);
    assert.equal((await wide.verify(record(params, secret), { code }, { now: at(unix - 60) })).ok, true);
    assert.equal((await wide.verify(record(params, secret), { code }, { now: at(unix + 90) })).ok, false);
    assert.throws(() => createTotpFactor({ sealer, windowSteps: 3 }), TypeError);
  });
});

describe('TOTP factor: RFC 6238 appendix B through the factor', () => {
  const seeds: Record<OtpAlgorithm, string> = {
    SHA1: '12345678901234567890',
    SHA256: '12345678901234567890123456789012',
    SHA512: '1234567890123456789012345678901234567890123456789012345678901234',
  };
  const table: [number, string, OtpAlgorithm][] = [
    [59, '94287082', 'SHA1'], [59, '46119246', 'SHA256'], [59, '90693936', 'SHA512'],
    [1111111109, '07081804', 'SHA1'], [1234567890, '91819424', 'SHA256'], [2000000000, '38618901', 'SHA512'],
    [20000000000, '65353130', 'SHA1'], [20000000000, '77737706', 'SHA256'], [20000000000, '47863826', 'SHA512'],
  ];
  const factor = createTotpFactor({ sealer, windowSteps: 1 });
  for (const [unix, code, algorithm] of table) {
    it(`T=${unix} ${algorithm} → ${code}`, async () => {
      const r = await factor.verify(record({ algorithm, digits: 8, period: 30 }, Buffer.from(seeds[algorithm], 'ascii')), { code }, { now: at(unix) });
      assert.deepEqual(r, { ok: true, amr: ['otp'], change: { counter: Math.floor(unix / 30) } });
    });
  }
});

describe('TOTP factor: bad input and broken records', () => {
  const factor = createTotpFactor({ sealer, windowSteps: 1 });
  const params: TotpParams = { algorithm: 'SHA1', digits: 6, period: 30 };
  const secret = randomBytes(20);

  it('checkTotpCode skips steps at or below lastStep and says replayed only for the audit trail', () => {
    const key = createSecretKey(secret);
    const now = at(1_800_000_000);
    const step = timeStep(now, 30);
    const code = hotp(key, step, 6, 'SHA1');
    assert.deepEqual(checkTotpCode(key, params, code, now, 1, step - 1), { ok: true, step });
    assert.deepEqual(checkTotpCode(key, params, code, now, 1, step), { ok: false, reason: 'replayed' });
    assert.deepEqual(checkTotpCode(key, params, code, now, 1, step + 5), { ok: false, reason: 'replayed' });
  });

  it('wrong, malformed or missing codes are invalid; spaces as apps show them, and full-width digits (a Chinese IME), are fine', async () => {
    const now = at(1_800_000_000);
    const good = hotp(createSecretKey(secret), timeStep(now, 30), 6, 'SHA1');
    // Certainly wrong: the right code with its first digit changed.
    const wrong = `${(Number(good[0]) + 1) % 10}${good.slice(1)}`;
    for (const input of [{ code: wrong }, { code: good.slice(0, 5) }, { code: `${good}0` }, { code: 'abcdef' }, { code: '' }, {}, null, { code: 123456 }, { code: fullWidth(wrong) }, { code: `${good}${' '.repeat(64)}` }]) {
      const r = await factor.verify(record(params, secret), input as never, { now });
      assert.equal(r.ok, false, JSON.stringify(input));
    }
    assert.equal((await factor.verify(record(params, secret), { code: `${good.slice(0, 3)} ${good.slice(3)}` }, { now })).ok, true);
    assert.equal((await factor.verify(record(params, secret), { code: fullWidth(`${good.slice(0, 3)}　${good.slice(3)}`) }, { now })).ok, true);
  });

  it('pending, disabled or missing records are not enrolled', async () => {
    const now = at(1_800_000_000);
    assert.deepEqual(await factor.verify(undefined, { code: '123456' }, { now }), { ok: false, reason: 'not_enrolled' });
    assert.deepEqual(await factor.verify(record(params, secret, 0, { status: 'pending' }), { code: '123456' }, { now }), { ok: false, reason: 'not_enrolled' });
    assert.deepEqual(await factor.verify(record(params, secret, 0, { status: 'disabled' }), { code: '123456' }, { now }), { ok: false, reason: 'not_enrolled' });
  });

  it('a sealed seed copied into another row does not unseal; a short seed is refused', async () => {
    const a = record(params, secret);
    const copied = { ...a, id: 'fac_other' };
    await assert.rejects(factor.verify(copied, { code: '123456' }, { now: at(1_800_000_000) }), SealError);
    assert.throws(() => sealTotpSecret(sealer, 'fac_x', randomBytes(16)), TypeError);
    const short = { ...a, id: 'fac_short', secretSealed: sealer.seal(randomBytes(10), 'factors.secret_sealed:fac_short') };
    await assert.rejects(factor.verify(short, { code: '123456' }, { now: at(1_800_000_000) }), TypeError);
  });

  it('stored parameters are read strictly', () => {
    assert.deepEqual(parseTotpParams({ algorithm: 'SHA256', digits: 8, period: 60 }), { algorithm: 'SHA256', digits: 8, period: 60 });
    for (const p of [{}, { algorithm: 'MD5', digits: 6, period: 30 }, { algorithm: 'SHA1', digits: 7, period: 30 }, { algorithm: 'SHA1', digits: 6, period: 45 }, { algorithm: 'sha1', digits: 6, period: 30 }, { algorithm: 'SHA1', digits: '6', period: 30 }]) {
      assert.equal(parseTotpParams(p), undefined, JSON.stringify(p));
    }
  });

  it('parameter constraints (config allowed values, policy field totp)', () => {
    const p: TotpParams = { algorithm: 'SHA1', digits: 6, period: 30 };
    assert.equal(totpParamsAllowed(p, undefined), true);
    assert.equal(totpParamsAllowed(p, {}), true);
    assert.equal(totpParamsAllowed(p, { algorithms: ['SHA256', 'SHA512'] }), false);
    assert.equal(totpParamsAllowed(p, { digits: [8] }), false);
    assert.equal(totpParamsAllowed(p, { periodSeconds: [30] }), true);
    assert.equal(totpParamsAllowed({ algorithm: 'SHA512', digits: 8, period: 60 }, { algorithms: ['SHA512'], digits: [8], periodSeconds: [60] }), true);
  });
});

describe('TOTP enrolment material', () => {
  it('secrets come from the CSPRNG with at least 20 bytes (32/64 for SHA256/SHA512)', () => {
    assert.equal(newTotpSecret({ algorithm: 'SHA1' }, 20).length, 20);
    assert.equal(newTotpSecret({ algorithm: 'SHA1' }, 32).length, 32);
    assert.equal(newTotpSecret({ algorithm: 'SHA256' }, 20).length, 32);
    assert.equal(newTotpSecret({ algorithm: 'SHA512' }, 20).length, 64);
    assert.notDeepEqual(newTotpSecret({ algorithm: 'SHA1' }, 20), newTotpSecret({ algorithm: 'SHA1' }, 20));
  });

  it('the otpauth URI carries issuer, account, unpadded base32 secret and every parameter', () => {
    const secret = Buffer.from('12345678901234567890', 'ascii');
    const uri = otpauthUri({ issuer: 'Stepgate Pay', accountName: 'alice@example.com', secret, params: { algorithm: 'SHA256', digits: 8, period: 60 } });
    assert.equal(uri, 'otpauth://totp/Stepgate%20Pay:alice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Stepgate%20Pay&algorithm=SHA256&digits=8&period=60');
    const u = new URL(uri);
    assert.deepEqual(base32Decode(u.searchParams.get('secret') ?? ''), secret);
    assert.throws(() => otpauthUri({ issuer: 'a:b', accountName: 'x', secret, params: { algorithm: 'SHA1', digits: 6, period: 30 } }), TypeError);
  });

  it('the QR PNG decodes (zbarimg) to the URI; the SVG has a white background', async (t) => {
    if (needTool(t, 'zbarimg', 'zbar-tools')) return;
    const uri = otpauthUri({ issuer: 'Stepgate', accountName: '张三 bob', secret: randomBytes(20), params: { algorithm: 'SHA1', digits: 6, period: 30 } });
    const { png, svg } = await qrImages(uri);
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const r = spawnSync('zbarimg', ['--quiet', '--raw', '-Sqrcode.enable', '-'], { input: png, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), uri);
    assert.match(svg, /^<svg [^>]*viewBox="0 0 (\d+) \1"/);
    // Opaque white background over the whole image, dark modules start after a 4-module quiet zone.
    const size = Number(/viewBox="0 0 (\d+)/.exec(svg)?.[1]);
    assert.ok(svg.includes(`<path fill="#ffffff" d="M0 0h${size}v${size}H0z"/>`));
    assert.match(svg, /<path stroke="#000000" d="M4 4\.5h/);
  });
});
