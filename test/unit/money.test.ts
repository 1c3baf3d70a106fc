import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { boundAmountProblem, canonicalAmount, comparedAmountProblem, ISO_4217_MINOR_UNITS, minorUnitsOf } from '../../src/verifier/index.ts';
import { contextRuleProblem } from '../../src/verifier/context-rules.ts';

describe('ISO 4217 minor units', () => {
  it('has the exponent of each currency of the list, none for the codes without a minor unit', () => {
    const cases: [string, number | null][] = [
      ['JPY', 0], ['KRW', 0], ['VND', 0], ['CLP', 0], ['ISK', 0], ['UYI', 0],
      ['CNY', 2], ['USD', 2], ['EUR', 2], ['GBP', 2], ['HKD', 2], ['XCG', 2], ['ZWG', 2], ['SLE', 2],
      ['BHD', 3], ['KWD', 3], ['JOD', 3], ['OMR', 3], ['TND', 3], ['IQD', 3], ['LYD', 3],
      ['CLF', 4], ['UYW', 4],
      ['XAU', null], ['XAG', null], ['XDR', null], ['XTS', null], ['XXX', null],
    ];
    for (const [code, units] of cases) assert.equal(minorUnitsOf(code), units, code);
    // Not codes (any more, or ever): withdrawn, invented, lower case, not a string.
    for (const code of ['ZZZ', 'HRK', 'SLL', 'ZWL', 'cny', 'CN', 'CNYY', '', 156, null, undefined]) assert.equal(minorUnitsOf(code), undefined, String(code));
    assert.equal(ISO_4217_MINOR_UNITS.size, 180);
    assert.ok([...ISO_4217_MINOR_UNITS.values()].every((u) => u === null || (Number.isInteger(u) && u >= 0 && u <= 4)));
  });
});

describe('a bound amount has one spelling: exactly its currency’s decimals', () => {
  it('accepts the canonical spelling in each exponent', () => {
    for (const [amount, currency] of [['10.10', 'CNY'], ['0.00', 'CNY'], ['-5.00', 'CNY'], ['100', 'JPY'], ['0', 'JPY'], ['1.500', 'BHD'], ['0.0001', 'CLF'], ['999999999999999.99', 'USD']] as const) {
      assert.equal(boundAmountProblem(amount, currency), undefined, `${amount} ${currency}`);
    }
  });

  it('refuses more decimals than the currency has: amount_precision_exceeded', () => {
    for (const [amount, currency] of [['10.001', 'CNY'], ['100.5', 'JPY'], ['1.0', 'JPY'], ['1.5000', 'KWD'], ['0.00001', 'CLF'], ['10.0000001', 'EUR'], ['-0.001', 'USD']] as const) {
      const p = boundAmountProblem(amount, currency);
      assert.equal(p?.code, 'amount_precision_exceeded', `${amount} ${currency}`);
      assert.equal(p?.field, 'amount');
    }
  });

  it('refuses fewer decimals, leading zeros and a negative zero: amount_not_canonical, naming the spelling to send', () => {
    const cases: [string, string, string][] = [
      ['10.1', 'CNY', '10.10'], ['10', 'CNY', '10.00'], ['0120.00', 'CNY', '120.00'], ['-0.00', 'CNY', '0.00'], ['007', 'JPY', '7'], ['-0', 'JPY', '0'], ['1.5', 'BHD', '1.500'], ['1', 'CLF', '1.0000'],
    ];
    for (const [amount, currency, canonical] of cases) {
      const p = boundAmountProblem(amount, currency);
      assert.equal(p?.code, 'amount_not_canonical', `${amount} ${currency}`);
      assert.equal(p?.field, 'amount');
      assert.ok(p?.reason.includes(JSON.stringify(canonical)), p?.reason);
      assert.equal(canonicalAmount(amount, currency), canonical);
    }
  });

  it('refuses an unknown currency and one without a minor unit: currency_unsupported on the currency', () => {
    for (const currency of ['ZZZ', 'XAU', 'XXX', 'XTS', undefined, 'cny', 5]) {
      const p = boundAmountProblem('1.00', currency);
      assert.equal(p?.code, 'currency_unsupported', String(currency));
      assert.equal(p?.field, 'currency');
    }
  });

  it('compared amounts (thresholds, redemptions) may have fewer decimals, never more', () => {
    assert.equal(comparedAmountProblem('1000', 'CNY'), undefined);
    assert.equal(comparedAmountProblem('99.5', 'CNY'), undefined);
    assert.equal(comparedAmountProblem('99.999', 'CNY')?.code, 'amount_precision_exceeded');
    assert.equal(comparedAmountProblem('10000.5', 'JPY')?.code, 'amount_precision_exceeded');
    assert.equal(comparedAmountProblem('1', 'XAU')?.code, 'currency_unsupported');
  });

  it('canonicalAmount never rounds and never guesses', () => {
    assert.equal(canonicalAmount('10.001', 'CNY'), undefined);
    assert.equal(canonicalAmount('1e3', 'CNY'), undefined);
    assert.equal(canonicalAmount('1.00', 'XAU'), undefined);
    assert.equal(canonicalAmount('1.00', 'ZZZ'), undefined);
    assert.equal(canonicalAmount('10.10', 'CNY'), '10.10');
  });
});

describe('the verifier’s binding rules on an approved context', () => {
  it('pass a canonical context and name the field of a broken one', () => {
    assert.equal(contextRuleProblem({ type: 'x', amount: '120.00', currency: 'CNY', payee: 'shop-42' }), undefined);
    assert.equal(contextRuleProblem({ type: 'x', deviceId: 'd' }), undefined);
    assert.deepEqual(contextRuleProblem({ amount: '10.001', currency: 'CNY' })?.field, 'amount');
    assert.deepEqual(contextRuleProblem({ amount: '10.1', currency: 'CNY' })?.field, 'amount');
    assert.deepEqual(contextRuleProblem({ amount: '100.5', currency: 'JPY' })?.field, 'amount');
    assert.deepEqual(contextRuleProblem({ amount: '1.00', currency: 'ZZZ' })?.field, 'currency');
    assert.deepEqual(contextRuleProblem({ amount: '1.00' })?.field, 'currency');
    assert.deepEqual(contextRuleProblem({ amount: 120, currency: 'CNY' })?.field, 'amount');
    assert.deepEqual(contextRuleProblem({ amount: '1e2', currency: 'JPY' })?.field, 'amount');
    assert.deepEqual(contextRuleProblem({ currency: 'XAU' })?.field, 'currency');
  });
});
