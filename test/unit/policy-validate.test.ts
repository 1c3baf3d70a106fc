import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { STANDARD_FACTOR_TYPES } from '../../src/policy/acr.ts';
import { DEMO_POLICIES } from '../../src/policy/demo-policies.ts';
import type { PolicyConditions, PolicyInput } from '../../src/policy/policy-schema.ts';
import { validatePolicySet } from '../../src/policy/validate-policy-set.ts';

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

const factorTypes = STANDARD_FACTOR_TYPES;
const ANY = { anyOf: [['webauthn'], ['hardware_otp'], ['totp'], ['sms_otp']] };

function p(id: string, priority: number, extra: Partial<PolicyInput> & Record<string, unknown> = {}): Record<string, unknown> {
  return { id, action: 'payment_code.issue', priority, require: ANY, acr: 'urn:stepgate:aal2', ...extra };
}

/** [code, pointer] of every error, in order; [] when the set is valid. */
function problems(input: unknown, options: Partial<Parameters<typeof validatePolicySet>[1]> = {}): [string, string][] {
  const r = validatePolicySet(deepFreeze(input), { factorTypes, ...options });
  return r.ok ? [] : r.errors.map((e) => [e.code, e.pointer]);
}

function shadowing(earlier: PolicyConditions | undefined, later: PolicyConditions | undefined): [string, string][] {
  return problems([p('earlier', 10, earlier === undefined ? {} : { when: earlier }), p('later', 20, later === undefined ? {} : { when: later })]);
}

const UNREACHABLE: [string, string][] = [['unreachable', '/policies/1']];
const cny = (bounds: Record<string, string>) => ({ amount: { ...bounds, currency: 'CNY' } });

describe('policy set validation', () => {
  it('accepts the demo set and applies the defaults', () => {
    const r = validatePolicySet(DEMO_POLICIES, { factorTypes });
    assert.ok(r.ok, JSON.stringify(r));
    assert.deepEqual(r.policies, DEMO_POLICIES);
    const d = validatePolicySet(deepFreeze([p('a', 1)]), { factorTypes });
    assert.ok(d.ok);
    assert.equal(d.policies[0]?.tokenTtlSeconds, 120);
    assert.equal(d.policies[0]?.maxAgeSeconds, 0);
  });

  it('accepts an empty set (everything is then denied)', () => {
    assert.deepEqual(problems([]), []);
  });

  it('misuse without the registered factor types is a TypeError', () => {
    assert.throws(() => validatePolicySet([], {} as never), TypeError);
    assert.throws(() => validatePolicySet([], { factorTypes: [1] } as never), TypeError);
  });

  const schemaCases: [string, unknown, [string, string][]][] = [
    ['not a list', { policies: [] }, [['invalid', '/policies']]],
    ['not an object', [42], [['invalid', '/policies/0']]],
    ['unknown field', [p('a', 1, { bogus: 1 })], [['invalid', '/policies/0/bogus']]],
    ['unknown condition', [p('a', 1, { when: { amout: {} } as never })], [['invalid', '/policies/0/when/amout']]],
    ['bad id', [p('Small_Payments', 1)], [['invalid', '/policies/0/id']]],
    ['id too long', [p('a'.repeat(65), 1)], [['invalid', '/policies/0/id']]],
    ['bad action', [p('a', 1, { action: 'Payment-Code..issue' })], [['invalid', '/policies/0/action']]],
    ['fractional priority', [p('a', 1.5)], [['invalid', '/policies/0/priority']]],
    ['priority as a string', [p('a', '1' as never)], [['invalid', '/policies/0/priority']]],
    ['unknown acr', [p('a', 1, { acr: 'urn:stepgate:aal4' as never })], [['invalid', '/policies/0/acr']]],
    ['tokenTtlSeconds > 300', [p('a', 1, { tokenTtlSeconds: 301 })], [['invalid', '/policies/0/tokenTtlSeconds']]],
    ['tokenTtlSeconds 0', [p('a', 1, { tokenTtlSeconds: 0 })], [['invalid', '/policies/0/tokenTtlSeconds']]],
    ['maxAgeSeconds < 0', [p('a', 1, { maxAgeSeconds: -1 })], [['invalid', '/policies/0/maxAgeSeconds']]],
    ['empty anyOf', [p('a', 1, { require: { anyOf: [] } })], [['invalid', '/policies/0/require/anyOf']]],
    ['empty factor set', [p('a', 1, { require: { anyOf: [['totp'], []] } })], [['invalid', '/policies/0/require/anyOf/1']]],
    ['factor type not snake_case', [p('a', 1, { require: { anyOf: [['WebAuthn']] } })], [['invalid', '/policies/0/require/anyOf/0/0']]],
    ['amount bound as a number', [p('a', 1, { when: { amount: { lte: 1000 as never, currency: 'CNY' } } })], [['invalid', '/policies/0/when/amount/lte']]],
    ['amount bound with exponent', [p('a', 1, { when: cny({ lte: '1e3' }) })], [['invalid', '/policies/0/when/amount/lte']]],
    ['amount bound with 7 decimals', [p('a', 1, { when: cny({ gt: '0.0000001' }) })], [['invalid', '/policies/0/when/amount/gt']]],
    ['amount without currency', [p('a', 1, { when: { amount: { lte: '1' } as never } })], [['invalid', '/policies/0/when/amount/currency']]],
    ['lower-case currency', [p('a', 1, { when: { amount: { lte: '1', currency: 'cny' } } })], [['invalid', '/policies/0/when/amount/currency']]],
    ['field condition without operator', [p('a', 1, { when: { fields: { payee: {} } } })], [['invalid', '/policies/0/when/fields/payee']]],
    ['field name', [p('a', 1, { when: { fields: { 'pay-ee': { eq: 1 } } } })], [['invalid', '/policies/0/when/fields/pay-ee']]],
    // As an object key __proto__ would silently drop the condition and widen the policy.
    ['field named __proto__', JSON.parse('[{"id":"a","action":"x","priority":1,"when":{"fields":{"__proto__":{"eq":"z"}}},"require":{"anyOf":[["totp"]]},"acr":"urn:stepgate:aal2"}]'), [['invalid', '/policies/0/when/fields/__proto__']]],
    ['field value an object', [p('a', 1, { when: { fields: { payee: { eq: { x: 1 } as never } } } })], [['invalid', '/policies/0/when/fields/payee/eq']]],
    ['empty in-list', [p('a', 1, { when: { fields: { payee: { in: [] } } } })], [['invalid', '/policies/0/when/fields/payee/in']]],
    ['empty group list', [p('a', 1, { when: { groups: { anyOf: [] } } })], [['invalid', '/policies/0/when/groups/anyOf']]],
    ['velocity window 0', [p('a', 1, { when: { velocity: { windowSeconds: 0, maxCount: 1 } } })], [['invalid', '/policies/0/when/velocity/windowSeconds']]],
    ['velocity maxCount 0', [p('a', 1, { when: { velocity: { windowSeconds: 60, maxCount: 0 } } })], [['invalid', '/policies/0/when/velocity/maxCount']]],
  ];
  for (const [name, input, expected] of schemaCases) {
    it(`schema: ${name}`, () => assert.deepEqual(problems(input), expected));
  }

  const semanticCases: [string, unknown, [string, string][]][] = [
    ['duplicate id', [p('a', 1), p('a', 2, { action: 'other' })], [['duplicate_id', '/policies/1/id']]],
    ['same action, same priority', [p('a', 5, { when: cny({ lte: '1' }) }), p('b', 5, { when: { groups: { anyOf: ['vip'] } } })], [['ambiguous_priority', '/policies/1/priority']]],
    ['same priority on different actions is fine', [p('a', 5), p('b', 5, { action: 'other' })], []],
    ['unknown factor type', [p('a', 1, { require: { anyOf: [['webauthn'], ['retina_scan']] } })], [['unknown_factor_type', '/policies/0/require/anyOf/1/0']]],
    ['duplicate factor in a set', [p('a', 1, { require: { anyOf: [['totp', 'totp']] } })], [['duplicate_factor', '/policies/0/require/anyOf/0/1']]],
    ['duplicate alternative', [p('a', 1, { require: { anyOf: [['totp', 'password'], ['webauthn'], ['password', 'totp']] } })], [['duplicate_alternative', '/policies/0/require/anyOf/2']]],
    ['aal3 with an alternative without webauthn', [p('a', 1, { acr: 'urn:stepgate:aal3', require: { anyOf: [['webauthn'], ['hardware_otp', 'password']] } })], [['acr_unreachable', '/policies/0/require/anyOf/1']]],
    ['aal2 with password only', [p('a', 1, { require: { anyOf: [['totp'], ['password']] } })], [['acr_unreachable', '/policies/0/require/anyOf/1']]],
    ['aal2 with a recovery code only', [p('a', 1, { require: { anyOf: [['recovery_code']] } })], [['acr_unreachable', '/policies/0/require/anyOf/0']]],
    ['aal2 with two knowledge factors', [p('a', 1, { require: { anyOf: [['password', 'recovery_code']] } })], []],
    ['aal1 with password only', [p('a', 1, { acr: 'urn:stepgate:aal1', require: { anyOf: [['password']] } })], []],
    ['aal3 with webauthn', [p('a', 1, { acr: 'urn:stepgate:aal3', require: { anyOf: [['webauthn'], ['webauthn', 'password']] } })], []],
    ['empty amount range: gt 100 and lt 50', [p('a', 1, { when: cny({ gt: '100', lt: '50' }) })], [['empty_amount_range', '/policies/0/when/amount']]],
    ['empty amount range: gt 100 and lte 100', [p('a', 1, { when: cny({ gt: '100', lte: '100.00' }) })], [['empty_amount_range', '/policies/0/when/amount']]],
    ['empty amount range: eq 5 and gt 5', [p('a', 1, { when: cny({ eq: '5', gt: '5' }) })], [['empty_amount_range', '/policies/0/when/amount']]],
    ['one-point range gte 100 and lte 100', [p('a', 1, { when: cny({ gte: '100', lte: '100.00' }) })], []],
    ['negative ranges', [p('a', 1, { when: cny({ gte: '-100', lt: '-99.5' }) })], []],
    ['empty field condition: eq outside in', [p('a', 1, { when: { fields: { payee: { eq: 'a', in: ['b'] } } } })], [['empty_field_condition', '/policies/0/when/fields/payee']]],
    ['empty field condition: in minus notIn', [p('a', 1, { when: { fields: { payee: { in: ['a'], notIn: ['a'] } } } })], [['empty_field_condition', '/policies/0/when/fields/payee']]],
    ['velocity without a limit', [p('a', 1, { when: { velocity: { windowSeconds: 60 } } })], [['velocity_without_limit', '/policies/0/when/velocity']]],
    ['velocity maxAmount without currency', [p('a', 1, { when: { velocity: { windowSeconds: 60, maxAmount: '10' } } })], [['velocity_currency', '/policies/0/when/velocity/maxAmount']]],
    ['velocity maxAmount inherits the amount currency', [p('a', 1, { when: { ...cny({ lte: '10' }), velocity: { windowSeconds: 60, maxAmount: '10' } } })], []],
    ['velocity currency differs from the amount currency', [p('a', 1, { when: { ...cny({ lte: '10' }), velocity: { windowSeconds: 60, maxAmount: '10', currency: 'USD' } } })], [['velocity_currency', '/policies/0/when/velocity/currency']]],
    ['velocity currency without maxAmount', [p('a', 1, { when: { velocity: { windowSeconds: 60, maxCount: 3, currency: 'USD' } } })], [['velocity_currency', '/policies/0/when/velocity/currency']]],
  ];
  for (const [name, input, expected] of semanticCases) {
    it(name, () => assert.deepEqual(problems(input), expected));
  }

  it('checks factor types against the registered set it is given', () => {
    const input = [p('a', 1, { acr: 'urn:stepgate:aal1', require: { anyOf: [['face_token']] } })];
    assert.deepEqual(problems(input), [['unknown_factor_type', '/policies/0/require/anyOf/0/0']]);
    assert.deepEqual(problems(input, { factorTypes: [...factorTypes, 'face_token'] }), []);
    assert.deepEqual(problems(input, { factorTypes: ['password'] }), [['unknown_factor_type', '/policies/0/require/anyOf/0/0']]);
    const aal2 = [p('a', 1, { require: { anyOf: [['face_token']] } })];
    assert.deepEqual(problems(aal2, { factorTypes: ['face_token'] }), [['acr_unreachable', '/policies/0/require/anyOf/0']]);
    assert.deepEqual(problems(aal2, { factorTypes: ['face_token'], possessionFactorTypes: ['face_token'] }), []);
  });

  it('reports every problem of every policy at once, in document order, with the policy id', () => {
    const r = validatePolicySet(
      deepFreeze([p('a', 1, { tokenTtlSeconds: 900 }), p('b', 2, { require: { anyOf: [['totp', 'totp'], ['nope']] } }), p('a', 3, { when: cny({ gt: '9', lt: '1' }) })]),
      { factorTypes },
    );
    assert.ok(!r.ok);
    assert.deepEqual(
      r.errors.map((e) => [e.policyId, e.code, e.pointer]),
      [
        ['a', 'invalid', '/policies/0/tokenTtlSeconds'],
        ['b', 'duplicate_factor', '/policies/1/require/anyOf/0/1'],
        ['b', 'unknown_factor_type', '/policies/1/require/anyOf/1/0'],
        ['a', 'empty_amount_range', '/policies/2/when/amount'],
        ['a', 'duplicate_id', '/policies/2/id'],
        // b has no conditions, so a (priority 3) never decides either.
        ['a', 'unreachable', '/policies/2'],
      ],
    );
    for (const e of r.errors) assert.ok(e.reason.length > 0);
  });

  it('the pointer prefix follows the caller’s document', () => {
    assert.deepEqual(problems([p('a', 1, { tokenTtlSeconds: 900 })], { pointerPrefix: '' }), [['invalid', '/0/tokenTtlSeconds']]);
  });
});

describe('unreachable policies', () => {
  const cases: [string, PolicyConditions | undefined, PolicyConditions | undefined, [string, string][]][] = [
    ['a catch-all shadows everything after it', undefined, cny({ lte: '10' }), UNREACHABLE],
    ['an empty when is a catch-all', {}, { groups: { anyOf: ['vip'] } }, UNREACHABLE],
    ['two catch-alls', undefined, undefined, UNREACHABLE],
    ['identical conditions', { fields: { channel: { eq: 'app' } }, ...cny({ lte: '10' }) }, { fields: { channel: { eq: 'app' } }, ...cny({ lte: '10' }) }, UNREACHABLE],
    ['earlier amount range contains the later one', cny({ lte: '1000' }), cny({ lte: '500.00' }), UNREACHABLE],
    ['… with the same other conditions', { ...cny({ gt: '0', lte: '1000' }), groups: { anyOf: ['vip'] } }, { ...cny({ gt: '10', lt: '1000.00' }), groups: { anyOf: ['vip'] } }, UNREACHABLE],
    ['lt 1000 does not contain lte 1000', cny({ lt: '1000' }), cny({ lte: '1000' }), []],
    ['lte 1000 contains lt 1000', cny({ lte: '1000' }), cny({ lt: '1000' }), UNREACHABLE],
    ['earlier range narrower', cny({ lte: '500' }), cny({ lte: '1000' }), []],
    ['disjoint ranges (the demo shape)', cny({ lte: '1000' }), cny({ gt: '1000' }), []],
    ['another currency', cny({ lte: '1000' }), { amount: { lte: '10', currency: 'USD' } }, []],
    ['later without an amount condition', cny({ lte: '1000' }), { groups: { anyOf: ['vip'] } }, []],
    ['earlier has an extra condition', { ...cny({ lte: '1000' }), groups: { anyOf: ['vip'] } }, cny({ lte: '10' }), []],
    ['later has an extra condition', cny({ lte: '1000' }), { ...cny({ lte: '10' }), groups: { anyOf: ['vip'] } }, UNREACHABLE],
    ['a conditional policy before a catch-all (fine)', cny({ lte: '1000' }), undefined, []],
    ['field in-list contains eq', { fields: { payee: { in: ['a', 'b'] } } }, { fields: { payee: { eq: 'a' } } }, UNREACHABLE],
    ['field eq does not contain in-list', { fields: { payee: { eq: 'a' } } }, { fields: { payee: { in: ['a', 'b'] } } }, []],
    ['field neq contains another eq', { fields: { payee: { neq: 'x' } } }, { fields: { payee: { eq: 'y' } } }, UNREACHABLE],
    ['field neq does not contain the same eq', { fields: { payee: { neq: 'x' } } }, { fields: { payee: { eq: 'x' } } }, []],
    ['field notIn contains a longer notIn', { fields: { c: { notIn: ['KP'] } } }, { fields: { c: { notIn: ['KP', 'IR'] } } }, UNREACHABLE],
    ['field 1 is not "1"', { fields: { n: { eq: 1 } } }, { fields: { n: { eq: '1' } } }, []],
    ['group list contains a shorter list', { groups: { anyOf: ['vip', 'staff'] } }, { groups: { anyOf: ['vip'] } }, UNREACHABLE],
    ['group list does not contain a longer list', { groups: { anyOf: ['vip'] } }, { groups: { anyOf: ['vip', 'staff'] } }, []],
    ['velocity with a higher limit contains a lower one', { velocity: { windowSeconds: 60, maxCount: 10 } }, { velocity: { windowSeconds: 60, maxCount: 5 } }, UNREACHABLE],
    ['velocity in another window', { velocity: { windowSeconds: 60, maxCount: 10 } }, { velocity: { windowSeconds: 3600, maxCount: 5 } }, []],
    [
      'velocity amount',
      { velocity: { windowSeconds: 60, maxAmount: '100', currency: 'CNY' } },
      { velocity: { windowSeconds: 60, maxAmount: '50', currency: 'CNY' } },
      UNREACHABLE,
    ],
    [
      'velocity amount in another currency',
      { velocity: { windowSeconds: 60, maxAmount: '100', currency: 'CNY' } },
      { velocity: { windowSeconds: 60, maxAmount: '50', currency: 'USD' } },
      [],
    ],
  ];
  for (const [name, earlier, later, expected] of cases) {
    it(name, () => assert.deepEqual(shadowing(earlier, later), expected));
  }

  it('names the shadowing policy and only looks at the same action', () => {
    const r = validatePolicySet(deepFreeze([p('first', 10), p('second', 20, { when: cny({ lte: '1' }) }), p('elsewhere', 30, { action: 'other', when: cny({ lte: '1' }) })]), {
      factorTypes,
    });
    assert.ok(!r.ok);
    assert.deepEqual(r.errors, [
      { policyId: 'second', pointer: '/policies/1', code: 'unreachable', reason: 'unreachable: first (priority 10) has no conditions and is evaluated first' },
    ]);
  });

  it('the order in the list does not matter, the priority does', () => {
    assert.deepEqual(problems([p('later', 20, { when: cny({ lte: '1' }) }), p('earlier', 10)]), [['unreachable', '/policies/0']]);
  });
});
