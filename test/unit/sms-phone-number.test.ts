import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { maskPhoneNumber, parseMobileNumber } from '../../src/sms/phone-number.ts';

describe('mobile numbers (libphonenumber-js/max)', () => {
  it('accepts E.164 with separators, and national numbers of the default region', () => {
    for (const input of ['+8613800138000', '+86 138 0013 8000', '+86-138-0013-8000', ' +86 (138) 0013.8000 ', '13800138000', '138 0013 8000']) {
      assert.deepEqual(parseMobileNumber(input, 'CN'), { e164: '+8613800138000', region: 'CN', callingCode: '86' }, input);
    }
    assert.deepEqual(parseMobileNumber('+85291234567', 'CN'), { e164: '+85291234567', region: 'HK', callingCode: '852' });
    // US plans do not separate mobile from fixed: FIXED_LINE_OR_MOBILE is accepted.
    assert.deepEqual(parseMobileNumber('+1 202 555 0123', ''), { e164: '+12025550123', region: 'US', callingCode: '1' });
  });

  it('refuses numbers that cannot take an SMS: landlines, premium rate', () => {
    assert.equal(parseMobileNumber('+86 10 1234 5678', 'CN'), 'not_mobile');
    assert.equal(parseMobileNumber('+44 20 7946 0000', 'CN'), 'not_mobile');
    assert.equal(parseMobileNumber('+1 900 555 0100', 'CN'), 'not_mobile');
  });

  it('refuses anything that is not exactly one valid number', () => {
    for (const input of ['', '+', 'abc', '+86138001380001', '+861380013800', 'call +8613800138000', '+8613800138000 ext 12', '+8613800138000;x', `+86${'1'.repeat(40)}`, '０１３８００１３８０００', '+0 123 456']) {
      assert.equal(parseMobileNumber(input, 'CN'), 'format', input);
    }
    // Without a default region a leading + is required.
    assert.equal(parseMobileNumber('13800138000', ''), 'format');
  });

  it('masks at least half of the national number', () => {
    assert.equal(maskPhoneNumber('+8613800138000'), '+86 138****8000');
    assert.equal(maskPhoneNumber('+85291234567'), '+852 ****4567');
    assert.equal(maskPhoneNumber('+12025550123'), '+1 ******0123');
  });
});
