import assert from 'node:assert/strict';
import { createSecretKey, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { base32Decode, base32Encode, findOtp, hotp, timeStep, totp, type OtpAlgorithm } from '../../src/otp/index.ts';
import { needTool } from '../helpers/env.ts';

const key = (ascii: string) => createSecretKey(Buffer.from(ascii, 'ascii'));

describe('HOTP (RFC 4226 appendix D)', () => {
  const secret = key('12345678901234567890');
  const expected = ['755224', '287082', '359152', '969429', '338314', '254676', '287922', '162583', '399871', '520489'];
  for (const [counter, code] of expected.entries()) {
    it(`counter ${counter} → ${code}`, () => assert.equal(hotp(secret, counter), code));
  }
  it('refuses nonsense arguments as misuse', () => {
    assert.throws(() => hotp(secret, -1), TypeError);
    assert.throws(() => hotp(secret, 0, 5), TypeError);
    assert.throws(() => hotp(secret, 0, 11), TypeError);
  });
});

describe('TOTP (RFC 6238 appendix B)', () => {
  // The RFC's seeds are the ASCII digits repeated to the hash's block-ish length.
  const seeds: Record<OtpAlgorithm, string> = {
    SHA1: '12345678901234567890',
    SHA256: '12345678901234567890123456789012',
    SHA512: '1234567890123456789012345678901234567890123456789012345678901234',
  };
  const table: [number, string, OtpAlgorithm][] = [
    [59, '94287082', 'SHA1'], [59, '46119246', 'SHA256'], [59, '90693936', 'SHA512'],
    [1111111109, '07081804', 'SHA1'], [1111111109, '68084774', 'SHA256'], [1111111109, '25091201', 'SHA512'],
    [1111111111, '14050471', 'SHA1'], [1111111111, '67062674', 'SHA256'], [1111111111, '99943326', 'SHA512'],
    [1234567890, '89005924', 'SHA1'], [1234567890, '91819424', 'SHA256'], [1234567890, '93441116', 'SHA512'],
    [2000000000, '69279037', 'SHA1'], [2000000000, '90698825', 'SHA256'], [2000000000, '38618901', 'SHA512'],
    [20000000000, '65353130', 'SHA1'], [20000000000, '77737706', 'SHA256'], [20000000000, '47863826', 'SHA512'],
  ];
  for (const [t, code, alg] of table) {
    it(`T=${t} ${alg} → ${code}`, () => assert.equal(totp(key(seeds[alg]), new Date(t * 1000), 30, 8, alg), code));
  }
  it('time steps: boundaries belong to the later step; T0 is honoured', () => {
    assert.equal(timeStep(new Date(29_999), 30), 0);
    assert.equal(timeStep(new Date(30_000), 30), 1);
    assert.equal(timeStep(new Date(20000000000 * 1000), 30), 666666666);
    assert.equal(timeStep(new Date(90_000), 30, 30), 2);
    assert.equal(timeStep(new Date(119_999), 60), 1);
  });
});

describe('OTP codes agree with oathtool', () => {
  for (const alg of ['SHA1', 'SHA256', 'SHA512'] as const) {
    for (const digits of [6, 8]) {
      it(`TOTP ${alg} ${digits} digits, period 30 and 60, at step boundaries`, (t) => {
        if (needTool(t, 'oathtool', 'oathtool')) return;
        const seed = randomBytes(20);
        for (const period of [30, 60]) {
          for (const unix of [1_700_000_000 - 1, 1_700_000_010, Math.ceil(1_700_000_000 / period) * period, Math.ceil(1_700_000_000 / period) * period - 1]) {
            const r = spawnSync('oathtool', ['--totp=' + alg.toLowerCase(), `--digits=${digits}`, `--time-step-size=${period}s`, `--now=@${unix}`, seed.toString('hex')], { encoding: 'utf8' });
            assert.equal(r.status, 0, r.stderr);
            assert.equal(totp(createSecretKey(seed), new Date(unix * 1000), period, digits, alg), r.stdout.trim(), `t=${unix} period=${period}`);
          }
        }
      });
    }
  }
  it('HOTP at several counters', (t) => {
    if (needTool(t, 'oathtool', 'oathtool')) return;
    const seed = randomBytes(20);
    for (const counter of [0, 1, 7, 1000, 2 ** 32 + 5]) {
      const r = spawnSync('oathtool', ['--hotp', `--counter=${counter}`, seed.toString('hex')], { encoding: 'utf8' });
      assert.equal(hotp(createSecretKey(seed), counter), r.stdout.trim(), `counter ${counter}`);
    }
  });
});

describe('findOtp', () => {
  const secret = key('12345678901234567890');
  const gen = (c: number) => hotp(secret, c);
  it('finds the lowest matching counter in the window, or nothing', () => {
    assert.equal(findOtp(hotp(secret, 7), 0, 10, gen), 7);
    assert.equal(findOtp(hotp(secret, 7), 8, 18, gen), undefined);
    assert.equal(findOtp('000000', 0, 10, gen), undefined);
    assert.equal(findOtp('75522', 0, 10, gen), undefined, 'a short code never matches');
    assert.equal(findOtp(hotp(secret, 0), -2, 1, gen), 0, 'negative counters are skipped');
  });
});

describe('base32', () => {
  it('round-trips and reads what people type', () => {
    for (let n = 0; n < 40; n += 1) {
      const bytes = randomBytes(n);
      assert.deepEqual(base32Decode(base32Encode(bytes)), bytes);
      assert.deepEqual(base32Decode(base32Encode(bytes, true)), bytes);
    }
    assert.equal(base32Encode(Buffer.from('foobar')), 'MZXW6YTBOI');
    assert.equal(base32Encode(Buffer.from('foobar'), true), 'MZXW6YTBOI======');
    assert.deepEqual(base32Decode('mzxw 6ytb-oi'), Buffer.from('foobar'));
    assert.equal(base32Decode('MZXW1'), undefined);
  });
});
