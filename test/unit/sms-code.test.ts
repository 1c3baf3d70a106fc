import assert from 'node:assert/strict';
import { createSecretKey, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { generateSmsCode, normaliseSmsCode, smsCodeMac, smsCodeMatches } from '../../src/factors/sms-otp/sms-code.ts';

const key = createSecretKey(randomBytes(32));

describe('SMS codes', () => {
  it('are 6 digits from the CSPRNG, zero-padded, covering the whole range', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const c = generateSmsCode();
      assert.match(c, /^\d{6}$/);
      seen.add(c);
      for (const d of c) seen.add(`d${d}`);
    }
    assert.ok(seen.size > 1990, 'no repeats to speak of');
    for (let d = 0; d <= 9; d++) assert.ok(seen.has(`d${d}`));
  });

  it('verify only for what they were sent for: step-up, phone and user are in the MAC', () => {
    const a = { purpose: 'stepup' as const, stepupId: 'stp_A', factorId: 'fac_1', userId: 'usr_1' };
    const mac = smsCodeMac(key, a, '042917');
    assert.equal(smsCodeMatches(key, a, '042917', mac), true);
    assert.equal(smsCodeMatches(key, { ...a, stepupId: 'stp_B' }, '042917', mac), false);
    assert.equal(smsCodeMatches(key, { ...a, factorId: 'fac_2' }, '042917', mac), false);
    assert.equal(smsCodeMatches(key, { ...a, userId: 'usr_2' }, '042917', mac), false);
    assert.equal(smsCodeMatches(key, { purpose: 'enrolment', factorId: 'fac_1', userId: 'usr_1' }, '042917', mac), false);
    assert.equal(smsCodeMatches(createSecretKey(randomBytes(32)), a, '042917', mac), false);
    assert.equal(smsCodeMatches(key, a, '042918', mac), false);
    // Field boundaries cannot be shifted.
    assert.notEqual(smsCodeMac(key, { ...a, stepupId: 'stp_A|fac_1' , factorId: 'usr_1' }, '042917'), mac);
  });

  it('accept what users type (spaces, dashes, full-width digits) and nothing else', () => {
    assert.equal(normaliseSmsCode('042917'), '042917');
    assert.equal(normaliseSmsCode(' 042 917 '), '042917');
    assert.equal(normaliseSmsCode('042-917'), '042917');
    assert.equal(normaliseSmsCode('０４２９１７'), '042917');
    for (const bad of ['', '04291', '0429170', '04291a', '٠٤٢٩١٧x', 42917, null, undefined, {}, '1'.repeat(100)]) assert.equal(normaliseSmsCode(bad), undefined, String(bad));
    const b = { purpose: 'enrolment' as const, factorId: 'fac_1', userId: 'usr_1' };
    const mac = smsCodeMac(key, b, '042917');
    assert.equal(smsCodeMatches(key, b, '０４２ ９１７', mac), true);
    assert.equal(smsCodeMatches(key, b, 42917, mac), false);
    assert.equal(smsCodeMatches(key, b, '042917', 'short'), false);
    assert.equal(smsCodeMatches(key, b, '042917', undefined), false);
  });
});
