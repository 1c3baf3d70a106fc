import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { acrAtLeast, acrForFactorSet, BEST_CASE_ACR_FACTS } from '../../src/policy/acr.ts';
import { addDecimals, compareDecimals, formatDecimal, parseDecimal, sumDecimalStrings } from '../../src/policy/decimal.ts';

function dec(text: string) {
  const d = parseDecimal(text);
  assert.ok(d !== null, `${text} should parse`);
  return d;
}

describe('decimal amounts (no floating point)', () => {
  const comparisons: [string, string, -1 | 0 | 1][] = [
    ['1000', '1000.00', 0],
    ['1000.000000', '1000', 0],
    ['1000.01', '1000', 1],
    ['999.999999', '1000', -1],
    ['0.000001', '0', 1],
    ['-0', '0', 0],
    ['-0.00', '0.0', 0],
    ['-1', '0', -1],
    ['-0.5', '-0.25', -1],
    ['-10.5', '-10', -1],
    ['000100', '100', 0],
    ['999999999999999.999999', '999999999999999.999998', 1],
    ['-999999999999999.999999', '999999999999999.999999', -1],
    // Floating point would call these equal (the step between doubles near 1e14 is ~0.016).
    ['100000000000000.000001', '100000000000000', 1],
    ['0.3', '0.1', 1],
  ];
  for (const [a, b, expected] of comparisons) {
    it(`${a} vs ${b} → ${expected}`, () => {
      assert.equal(compareDecimals(dec(a), dec(b)), expected);
      assert.equal(compareDecimals(dec(b), dec(a)), -expected || 0);
    });
  }

  const rejected: unknown[] = [
    '1e3',
    '1E3',
    '1e-3',
    '1.',
    '.5',
    '+5',
    ' 5',
    '5 ',
    '5\n',
    '1,000.00',
    '1_000',
    '1000.0000001',
    '1234567890123456',
    '',
    '-',
    '--1',
    '1.2.3',
    'NaN',
    'Infinity',
    '0x10',
    '١٢٣',
    '１２３',
    1000,
    1000.5,
    10n,
    null,
    undefined,
    {},
    ['1'],
  ];
  for (const value of rejected) {
    it(`rejects ${typeof value === 'bigint' ? `${value}n` : JSON.stringify(value) ?? String(value)}`, () => {
      assert.equal(parseDecimal(value), null);
    });
  }

  it('accepts the largest amount: 15 integer digits, 6 decimals', () => {
    assert.equal(dec('999999999999999.999999').units, 999999999999999999999n);
    assert.equal(dec('-999999999999999.999999').units, -999999999999999999999n);
  });

  it('adds exactly and prints with the operands’ decimals', () => {
    const cases: [string, string, string][] = [
      ['0.1', '0.2', '0.3'],
      ['900.00', '200.00', '1100.00'],
      ['0', '200.00', '200.00'],
      ['5', '5', '10'],
      ['-0.5', '0.25', '-0.25'],
      ['0.000001', '999999999999999.999999', '1000000000000000.000000'],
    ];
    for (const [a, b, sum] of cases) assert.equal(formatDecimal(addDecimals(dec(a), dec(b))), sum, `${a} + ${b}`);
  });

  it('sums decimal strings, including totals beyond one amount’s range', () => {
    assert.equal(sumDecimalStrings([]), '0');
    assert.equal(sumDecimalStrings(['0.1', '0.2', '0.3']), '0.6');
    assert.equal(sumDecimalStrings(['999999999999999', '999999999999999', '999999999999999']), '2999999999999997');
    assert.equal(sumDecimalStrings(['1.00', '1e3']), null);
    assert.equal(parseDecimal('2999999999999997', { total: true })?.units, 2999999999999997000000n);
    assert.equal(parseDecimal('2999999999999997'), null);
  });

  it('sums magnitudes for velocity totals: a negative amount never lowers the total', () => {
    assert.equal(sumDecimalStrings(['-5000.00', '900.00']), '-4100.00');
    assert.equal(sumDecimalStrings(['-5000.00', '900.00'], { magnitudes: true }), '5900.00');
    assert.equal(sumDecimalStrings(['-0', '-0.000001'], { magnitudes: true }), '0.000001');
    assert.equal(sumDecimalStrings(['-1e3'], { magnitudes: true }), null);
  });
});

describe('acr', () => {
  const cases: [string[], Parameters<typeof acrForFactorSet>[1], string | null][] = [
    [[], undefined, null],
    [['password'], undefined, 'urn:stepgate:aal1'],
    [['recovery_code'], undefined, 'urn:stepgate:aal1'],
    [['password', 'password'], undefined, 'urn:stepgate:aal1'],
    [['totp'], undefined, 'urn:stepgate:aal2'],
    [['sms_otp'], undefined, 'urn:stepgate:aal2'],
    [['hardware_otp'], undefined, 'urn:stepgate:aal2'],
    [['password', 'recovery_code'], undefined, 'urn:stepgate:aal2'],
    [['hardware_otp', 'password'], BEST_CASE_ACR_FACTS, 'urn:stepgate:aal2'],
    [['webauthn'], undefined, 'urn:stepgate:aal2'],
    [['webauthn'], { webauthnUserVerified: true }, 'urn:stepgate:aal2'],
    [['webauthn'], { webauthnDeviceBound: true }, 'urn:stepgate:aal2'],
    [['webauthn'], { webauthnUserVerified: true, webauthnDeviceBound: true }, 'urn:stepgate:aal3'],
    [['webauthn', 'password'], { webauthnUserVerified: true, webauthnDeviceBound: true }, 'urn:stepgate:aal3'],
    [['totp'], { webauthnUserVerified: true, webauthnDeviceBound: true }, 'urn:stepgate:aal2'],
    [['face_token'], undefined, 'urn:stepgate:aal1'],
    [['face_token'], { possessionFactorTypes: ['face_token'] }, 'urn:stepgate:aal2'],
    [['totp'], { possessionFactorTypes: ['face_token'] }, 'urn:stepgate:aal1'],
  ];
  for (const [types, facts, expected] of cases) {
    it(`[${types.join(', ')}] ${JSON.stringify(facts ?? {})} → ${expected}`, () => {
      assert.equal(acrForFactorSet(Object.freeze(types), facts), expected);
    });
  }

  const order: [string, string, boolean][] = [
    ['urn:stepgate:aal1', 'urn:stepgate:aal1', true],
    ['urn:stepgate:aal2', 'urn:stepgate:aal1', true],
    ['urn:stepgate:aal3', 'urn:stepgate:aal2', true],
    ['urn:stepgate:aal1', 'urn:stepgate:aal2', false],
    ['urn:stepgate:aal2', 'urn:stepgate:aal3', false],
    ['urn:stepgate:aal4', 'urn:stepgate:aal1', false],
    ['urn:stepgate:aal3', 'aal1', false],
    ['', '', false],
  ];
  for (const [a, b, expected] of order) {
    it(`acrAtLeast(${a || '""'}, ${b || '""'}) → ${expected}`, () => assert.equal(acrAtLeast(a, b), expected));
  }
});
