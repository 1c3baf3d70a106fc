import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { STANDARD_FACTOR_TYPES } from '../../src/policy/acr.ts';
import type { VelocityWindowFacts } from '../../src/policy/conditions.ts';
import { DEMO_POLICIES } from '../../src/policy/demo-policies.ts';
import { type AllowDecision, evaluatePolicies, type PolicyDecision, velocityWindowsFor } from '../../src/policy/evaluate-policies.ts';
import type { Policy, PolicyConditions, PolicyInput } from '../../src/policy/policy-schema.ts';
import { validatePolicySet } from '../../src/policy/validate-policy-set.ts';

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** A validated, frozen set: evaluation must never mutate its input. */
function policySet(inputs: PolicyInput[]): readonly Policy[] {
  const r = validatePolicySet(deepFreeze(inputs), { factorTypes: STANDARD_FACTOR_TYPES });
  assert.ok(r.ok, JSON.stringify(r));
  return deepFreeze(r.policies);
}

const ANY_POSSESSION = { anyOf: [['webauthn'], ['hardware_otp'], ['totp'], ['sms_otp']] };

function allowed(d: PolicyDecision): AllowDecision {
  assert.equal(d.decision, 'allow', JSON.stringify(d));
  return d as AllowDecision;
}

interface ConditionCase {
  name: string;
  when: PolicyConditions;
  context?: Record<string, unknown>;
  groups?: string[];
  velocity?: VelocityWindowFacts[];
  holds: boolean;
  because: string[];
}

const CNY = (amount: unknown): Record<string, unknown> => ({ amount, currency: 'CNY' });
const DAY = 86_400;

const conditionCases: ConditionCase[] = [
  // amount
  { name: 'amount equal to the bound (1000 vs 1000.00)', when: { amount: { lte: '1000.00', currency: 'CNY' } }, context: CNY('1000'), holds: true, because: ['currency CNY = CNY', 'amount 1000 CNY ≤ 1000.00'] },
  { name: 'amount above lte', when: { amount: { lte: '1000.00', currency: 'CNY' } }, context: CNY('1500.00'), holds: false, because: ['currency CNY = CNY', 'amount 1500.00 CNY > lte 1000.00'] },
  { name: 'amount equal to lt', when: { amount: { lt: '1000', currency: 'CNY' } }, context: CNY('1000.00'), holds: false, because: ['currency CNY = CNY', 'amount 1000.00 CNY ≥ lt 1000'] },
  { name: 'amount equal to gt', when: { amount: { gt: '100', lt: '200', currency: 'CNY' } }, context: CNY('100'), holds: false, because: ['currency CNY = CNY', 'amount 100 CNY ≤ gt 100', 'amount 100 CNY < 200'] },
  { name: 'amount just below gte', when: { amount: { gte: '100', currency: 'CNY' } }, context: CNY('99.99'), holds: false, because: ['currency CNY = CNY', 'amount 99.99 CNY < gte 100'] },
  { name: 'amount eq with other scale', when: { amount: { eq: '5', currency: 'CNY' } }, context: CNY('5.00'), holds: true, because: ['currency CNY = CNY', 'amount 5.00 CNY = 5'] },
  // Finer than the currency's minor unit: no amount of it, so no bound holds (fail closed).
  { name: 'amount finer than its currency', when: { amount: { gte: '100', currency: 'CNY' } }, context: CNY('100.001'), holds: false, because: ['currency CNY = CNY', 'amount: CNY amounts have 2 decimals (ISO 4217 minor units): "100.001" has 3'] },
  { name: 'yen with decimals', when: { amount: { lte: '10000', currency: 'JPY' } }, context: { amount: '100.5', currency: 'JPY' }, holds: false, because: ['currency JPY = JPY', 'amount: JPY amounts have no decimals (ISO 4217 minor units): "100.5" has 1'] },
  { name: 'amount not eq', when: { amount: { eq: '5', currency: 'CNY' } }, context: CNY('5.01'), holds: false, because: ['currency CNY = CNY', 'amount 5.01 CNY ≠ eq 5'] },
  { name: 'negative amount', when: { amount: { gte: '-10', currency: 'CNY' } }, context: CNY('-10.5'), holds: false, because: ['currency CNY = CNY', 'amount -10.5 CNY < gte -10'] },
  { name: 'another currency', when: { amount: { lte: '1000.00', currency: 'CNY' } }, context: { amount: '10.00', currency: 'USD' }, holds: false, because: ['currency USD ≠ CNY'] },
  { name: 'currency is case-sensitive', when: { amount: { lte: '1000.00', currency: 'CNY' } }, context: { amount: '10.00', currency: 'cny' }, holds: false, because: ['currency cny ≠ CNY'] },
  { name: 'no currency', when: { amount: { lte: '1000.00', currency: 'CNY' } }, context: { amount: '10.00' }, holds: false, because: ['amount: context has no currency'] },
  { name: 'no amount', when: { amount: { lte: '1000.00', currency: 'CNY' } }, context: { currency: 'CNY' }, holds: false, because: ['currency CNY = CNY', 'amount: context has no amount'] },
  { name: 'amount as a JSON number', when: { amount: { lte: '1000.00', currency: 'CNY' } }, context: CNY(10), holds: false, because: ['currency CNY = CNY', 'amount: context amount 10 is not a decimal string'] },
  { name: 'amount with exponent', when: { amount: { lte: '1000.00', currency: 'CNY' } }, context: CNY('1e3'), holds: false, because: ['currency CNY = CNY', 'amount: context amount "1e3" is not a decimal string'] },
  { name: 'amount with too many decimals', when: { amount: { lte: '1000.00', currency: 'CNY' } }, context: CNY('1.0000001'), holds: false, because: ['currency CNY = CNY', 'amount: context amount "1.0000001" is not a decimal string'] },
  { name: 'amount too large', when: { amount: { gte: '0', currency: 'CNY' } }, context: CNY('1234567890123456'), holds: false, because: ['currency CNY = CNY', 'amount: context amount "1234567890123456" is not a decimal string'] },
  // fields
  { name: 'field eq', when: { fields: { payee: { eq: 'acme' } } }, context: { payee: 'acme' }, holds: true, because: ['field payee = "acme"'] },
  { name: 'field not eq', when: { fields: { payee: { eq: 'acme' } } }, context: { payee: 'evil' }, holds: false, because: ['field payee "evil" ≠ "acme"'] },
  { name: 'field absent', when: { fields: { payee: { eq: 'acme' } } }, context: {}, holds: false, because: ['field payee is absent'] },
  { name: 'inherited field counts as absent', when: { fields: { toString: { neq: 'x' } } }, context: {}, holds: false, because: ['field toString is absent'] },
  { name: 'field not a scalar', when: { fields: { payee: { eq: 'acme' } } }, context: { payee: { name: 'acme' } }, holds: false, because: ['field payee is not a string, number or boolean'] },
  { name: 'field eq is strict ("true" is not true)', when: { fields: { offline: { eq: true } } }, context: { offline: 'true' }, holds: false, because: ['field offline "true" ≠ true'] },
  { name: 'field eq is strict ("1" is not 1)', when: { fields: { codes: { eq: 1 } } }, context: { codes: '1' }, holds: false, because: ['field codes "1" ≠ 1'] },
  { name: 'field in', when: { fields: { codes: { in: [1, 2] } } }, context: { codes: 1 }, holds: true, because: ['field codes 1 in [1, 2]'] },
  { name: 'field in is strict ("1" is not 1)', when: { fields: { codes: { in: [1, 2] } } }, context: { codes: '1' }, holds: false, because: ['field codes "1" not in [1, 2]'] },
  { name: 'field neq fails', when: { fields: { offline: { neq: true } } }, context: { offline: true }, holds: false, because: ['field offline = true (neq)'] },
  { name: 'field neq holds', when: { fields: { offline: { neq: true } } }, context: { offline: false }, holds: true, because: ['field offline false ≠ true'] },
  { name: 'field neq on an absent field', when: { fields: { offline: { neq: true } } }, context: {}, holds: false, because: ['field offline is absent'] },
  { name: 'field notIn fails', when: { fields: { country: { notIn: ['KP', 'IR'] } } }, context: { country: 'KP' }, holds: false, because: ['field country "KP" in ["KP", "IR"] (notIn)'] },
  { name: 'field notIn holds', when: { fields: { country: { notIn: ['KP', 'IR'] } } }, context: { country: 'CN' }, holds: true, because: ['field country "CN" not in ["KP", "IR"] (notIn)'] },
  // groups
  { name: 'group member', when: { groups: { anyOf: ['vip', 'staff'] } }, groups: ['staff'], holds: true, because: ['group: user in staff'] },
  { name: 'not a group member', when: { groups: { anyOf: ['vip'] } }, groups: ['staff'], holds: false, because: ['group: user not in any of [vip]'] },
  // velocity: count
  { name: 'velocity count below max', when: { velocity: { windowSeconds: DAY, maxCount: 10 } }, velocity: [{ windowSeconds: DAY, count: 9 }], holds: true, because: ['velocity: 9 step-ups in 86400 s < maxCount 10'] },
  { name: 'velocity count reached', when: { velocity: { windowSeconds: DAY, maxCount: 10 } }, velocity: [{ windowSeconds: DAY, count: 10 }], holds: false, because: ['velocity: 10 step-ups in 86400 s ≥ maxCount 10'] },
  { name: 'velocity: no data for the window', when: { velocity: { windowSeconds: DAY, maxCount: 10 } }, velocity: [{ windowSeconds: 3600, count: 0 }], holds: false, because: ['velocity: no data for the 86400 s window'] },
  { name: 'velocity: bad count', when: { velocity: { windowSeconds: DAY, maxCount: 10 } }, velocity: [{ windowSeconds: DAY, count: -1 }], holds: false, because: ['velocity: count for the 86400 s window is not a non-negative integer'] },
  { name: 'velocity: fractional count', when: { velocity: { windowSeconds: DAY, maxCount: 10 } }, velocity: [{ windowSeconds: DAY, count: 1.5 }], holds: false, because: ['velocity: count for the 86400 s window is not a non-negative integer'] },
  // velocity: amount
  { name: 'velocity amount exactly at max', when: { velocity: { windowSeconds: DAY, maxAmount: '1000.00', currency: 'CNY' } }, context: CNY('200.00'), velocity: [{ windowSeconds: DAY, count: 3, amountsByCurrency: { CNY: '800.00' } }], holds: true, because: ['velocity: 800.00 + 200.00 = 1000.00 CNY in 86400 s ≤ maxAmount 1000.00'] },
  { name: 'velocity amount would exceed', when: { velocity: { windowSeconds: DAY, maxAmount: '1000.00', currency: 'CNY' } }, context: CNY('200.00'), velocity: [{ windowSeconds: DAY, count: 3, amountsByCurrency: { CNY: '800.01' } }], holds: false, because: ['velocity: 800.01 + 200.00 = 1000.01 CNY in 86400 s > maxAmount 1000.00'] },
  { name: 'velocity ignores other currencies', when: { velocity: { windowSeconds: DAY, maxAmount: '1000.00', currency: 'CNY' } }, context: CNY('200.00'), velocity: [{ windowSeconds: DAY, count: 3, amountsByCurrency: { CNY: '0', USD: '99999.00' } }], holds: true, because: ['velocity: 0 + 200.00 = 200.00 CNY in 86400 s ≤ maxAmount 1000.00'] },
  { name: 'velocity: missing total is not zero', when: { velocity: { windowSeconds: DAY, maxAmount: '1000.00', currency: 'CNY' } }, context: CNY('200.00'), velocity: [{ windowSeconds: DAY, count: 3, amountsByCurrency: { USD: '5' } }], holds: false, because: ['velocity: no CNY total for the 86400 s window'] },
  { name: 'velocity: bad total', when: { velocity: { windowSeconds: DAY, maxAmount: '1000.00', currency: 'CNY' } }, context: CNY('200.00'), velocity: [{ windowSeconds: DAY, count: 3, amountsByCurrency: { CNY: '8e2' } }], holds: false, because: ['velocity: CNY total for the 86400 s window is not a decimal string'] },
  { name: 'velocity: payment in another currency', when: { velocity: { windowSeconds: DAY, maxAmount: '1000.00', currency: 'CNY' } }, context: { amount: '1.00', currency: 'USD' }, velocity: [{ windowSeconds: DAY, count: 0, amountsByCurrency: { CNY: '0' } }], holds: false, because: ['velocity: currency USD ≠ CNY'] },
  { name: 'velocity: no amount in the context', when: { velocity: { windowSeconds: DAY, maxAmount: '1000.00', currency: 'CNY' } }, context: { currency: 'CNY' }, velocity: [{ windowSeconds: DAY, count: 0, amountsByCurrency: { CNY: '0' } }], holds: false, because: ['velocity: context has no amount'] },
  // A negative amount ("-5000.00") is charged with its magnitude: it is no room left under the limit.
  { name: 'velocity: a negative amount is charged with its magnitude', when: { velocity: { windowSeconds: DAY, maxAmount: '1000.00', currency: 'CNY' } }, context: CNY('-5000.00'), velocity: [{ windowSeconds: DAY, count: 0, amountsByCurrency: { CNY: '0' } }], holds: false, because: ['velocity: 0 + 5000.00 = 5000.00 CNY in 86400 s > maxAmount 1000.00'] },
  { name: 'velocity: a negative total fails closed', when: { velocity: { windowSeconds: DAY, maxAmount: '1000.00', currency: 'CNY' } }, context: CNY('900.00'), velocity: [{ windowSeconds: DAY, count: 1, amountsByCurrency: { CNY: '-5000.00' } }], holds: false, because: ['velocity: CNY total for the 86400 s window is negative'] },
  { name: 'velocity: count and amount both checked', when: { velocity: { windowSeconds: DAY, maxCount: 10, maxAmount: '1000.00', currency: 'CNY' } }, context: CNY('100.00'), velocity: [{ windowSeconds: DAY, count: 10, amountsByCurrency: { CNY: '100.00' } }], holds: false, because: ['velocity: 10 step-ups in 86400 s ≥ maxCount 10', 'velocity: 100.00 + 100.00 = 200.00 CNY in 86400 s ≤ maxAmount 1000.00'] },
  // combinations
  { name: 'no conditions', when: {}, holds: true, because: ['no conditions'] },
  {
    name: 'every condition is reported, not only the first failure',
    when: { amount: { lte: '100', currency: 'CNY' }, fields: { channel: { eq: 'app' } }, groups: { anyOf: ['vip'] } },
    context: { ...CNY('500'), channel: 'app' },
    groups: ['vip'],
    holds: false,
    because: ['currency CNY = CNY', 'amount 500 CNY > lte 100', 'field channel = "app"', 'group: user in vip'],
  },
];

describe('policy conditions', () => {
  for (const c of conditionCases) {
    it(c.name, () => {
      const policies = policySet([{ id: 'p', action: 'a.b', priority: 1, when: c.when, require: ANY_POSSESSION, acr: 'urn:stepgate:aal2' }]);
      const d = evaluatePolicies(policies, deepFreeze({ action: 'a.b', context: c.context ?? {}, user: { groups: c.groups ?? [], enrolledFactorTypes: ['totp'] }, velocity: c.velocity ?? [] }));
      assert.deepEqual(d.reasons, [{ policyId: 'p', priority: 1, matched: c.holds, conditionsHold: c.holds, because: c.because }]);
      assert.equal(d.decision, c.holds ? 'allow' : 'deny');
    });
  }

  it('a malformed context value never throws', () => {
    const policies = policySet([
      { id: 'p', action: 'a.b', priority: 1, when: { amount: { lte: '1', currency: 'CNY' }, fields: { x: { eq: 1 } }, velocity: { windowSeconds: 60, maxAmount: '5', currency: 'CNY' } }, require: ANY_POSSESSION, acr: 'urn:stepgate:aal2' },
    ]);
    const cyclic: Record<string, unknown> = {};
    cyclic['self'] = cyclic;
    for (const context of [{ amount: cyclic, currency: cyclic, x: cyclic }, { amount: Symbol('s'), currency: 10n, x: Number.NaN }, Object.create(null)]) {
      const d = evaluatePolicies(policies, { action: 'a.b', context, user: {}, velocity: [{ windowSeconds: 60, count: Number.NaN, amountsByCurrency: { CNY: 'x' } }] });
      assert.equal(d.decision, 'deny');
    }
  });
});

describe('policy evaluation', () => {
  const tiers = policySet([
    { id: 'catch-all', action: 'pay', priority: 30, require: { anyOf: [['webauthn']] }, acr: 'urn:stepgate:aal2' },
    { id: 'tiny', action: 'pay', priority: 10, when: { amount: { lte: '100', currency: 'CNY' } }, require: ANY_POSSESSION, acr: 'urn:stepgate:aal2', tokenTtlSeconds: 60 },
    { id: 'medium', action: 'pay', priority: 20, when: { amount: { lte: '1000', currency: 'CNY' } }, require: { anyOf: [['webauthn'], ['totp', 'password']] }, acr: 'urn:stepgate:aal2', maxAgeSeconds: 30 },
    { id: 'other-action', action: 'refund', priority: 10, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' },
  ]);
  const user = { enrolledFactorTypes: ['password', 'totp', 'webauthn'] };

  it('the lowest priority number whose conditions hold decides, whatever the input order', () => {
    const cases: [string, string][] = [
      ['50', 'tiny'],
      ['100.00', 'tiny'],
      ['100.01', 'medium'],
      ['1000', 'medium'],
      ['5000', 'catch-all'],
    ];
    for (const [amount, expected] of cases) {
      for (const order of [tiers, [...tiers].reverse()]) {
        const d = allowed(evaluatePolicies(order, { action: 'pay', context: CNY(amount), user }));
        assert.equal(d.policyId, expected, amount);
      }
    }
  });

  it('reasons cover every policy of the action in order, mark the shadowed ones, and leave other actions out', () => {
    const d = allowed(evaluatePolicies(tiers, { action: 'pay', context: CNY('50'), user }));
    assert.deepEqual(
      d.reasons.map((r) => [r.policyId, r.matched, r.conditionsHold]),
      [
        ['tiny', true, true],
        ['medium', false, true],
        ['catch-all', false, true],
      ],
    );
    assert.deepEqual(d.reasons[1]?.because, ['shadowed: tiny (priority 10) decided first', 'currency CNY = CNY', 'amount 50 CNY ≤ 1000']);
    assert.deepEqual(d.reasons[2]?.because, ['shadowed: tiny (priority 10) decided first', 'no conditions']);
  });

  it('returns the requirement of the deciding policy', () => {
    const d = allowed(evaluatePolicies(tiers, { action: 'pay', context: CNY('500'), user: { enrolledFactorTypes: ['totp', 'password'] }, version: 7 }));
    assert.deepEqual(
      { ...d, reasons: undefined },
      {
        decision: 'allow',
        policyId: 'medium',
        version: 7,
        action: 'pay',
        require: { anyOf: [['webauthn'], ['totp', 'password']] },
        acr: 'urn:stepgate:aal2',
        tokenTtlSeconds: 120,
        maxAgeSeconds: 30,
        satisfiable: [['totp', 'password']],
        enrollmentRequired: false,
        reasons: undefined,
      },
    );
    assert.equal(allowed(evaluatePolicies(tiers, { action: 'pay', context: CNY('5'), user })).tokenTtlSeconds, 60);
    assert.equal('version' in allowed(evaluatePolicies(tiers, { action: 'pay', context: CNY('5'), user })), false);
  });

  it('the decision does not share arrays with the (frozen) policies', () => {
    const d = allowed(evaluatePolicies(tiers, { action: 'pay', context: CNY('500'), user }));
    d.require.anyOf[0]?.push('password');
    d.satisfiable[0]?.push('password');
    const again = allowed(evaluatePolicies(tiers, { action: 'pay', context: CNY('500'), user }));
    assert.deepEqual(again.require.anyOf, [['webauthn'], ['totp', 'password']]);
  });

  it('denies by default: no policy for the action', () => {
    assert.deepEqual(evaluatePolicies(tiers, { action: 'payment_code.issue', context: CNY('1'), user }), {
      decision: 'deny',
      reason: 'no_matching_policy',
      reasons: [],
    });
    assert.equal(evaluatePolicies([], { action: 'pay', context: {}, user }).decision, 'deny');
  });

  it('denies by default: policies exist but none matches', () => {
    const conditional = tiers.filter((p) => p.id !== 'catch-all');
    const d = evaluatePolicies(conditional, { action: 'pay', context: CNY('5000'), user, version: 3 });
    assert.equal(d.decision, 'deny');
    assert.equal(d.decision === 'deny' && d.reason, 'no_matching_policy');
    assert.equal(d.version, 3);
    assert.deepEqual(
      d.reasons.map((r) => [r.policyId, r.matched, r.because.at(-1)]),
      [
        ['tiny', false, 'amount 5000 CNY > lte 100'],
        ['medium', false, 'amount 5000 CNY > lte 1000'],
      ],
    );
  });

  it('enrollment required when no alternative of the deciding policy is enrolled', () => {
    const d = allowed(evaluatePolicies(DEMO_POLICIES, { action: 'payment_code.issue', context: CNY('1500.00'), user: { enrolledFactorTypes: ['password', 'totp'] } }));
    assert.equal(d.policyId, 'large-payments');
    assert.deepEqual(d.satisfiable, []);
    assert.equal(d.enrollmentRequired, true);
    // An alternative needs every factor of its set.
    const partial = allowed(evaluatePolicies(DEMO_POLICIES, { action: 'payment_code.issue', context: CNY('1500.00'), user: { enrolledFactorTypes: ['hardware_otp'] } }));
    assert.equal(partial.enrollmentRequired, true);
    const ok = allowed(evaluatePolicies(DEMO_POLICIES, { action: 'payment_code.issue', context: CNY('1500.00'), user: { enrolledFactorTypes: ['hardware_otp', 'password'] } }));
    assert.deepEqual(ok.satisfiable, [['hardware_otp', 'password']]);
    assert.equal(ok.enrollmentRequired, false);
    const none = allowed(evaluatePolicies(DEMO_POLICIES, { action: 'payment_code.issue', context: CNY('1.00'), user: {} }));
    assert.equal(none.enrollmentRequired, true);
  });

  it('satisfiable keeps the policy order of the alternatives', () => {
    const d = allowed(evaluatePolicies(DEMO_POLICIES, { action: 'payment_code.issue', context: CNY('10.00'), user: { enrolledFactorTypes: ['sms_otp', 'totp', 'webauthn'] } }));
    assert.equal(d.policyId, 'small-payments');
    assert.deepEqual(d.satisfiable, [['webauthn'], ['totp'], ['sms_otp']]);
  });

  it('an aal3 policy is not satisfiable with only a synced WebAuthn credential', () => {
    const input = { action: 'payment_code.offline_seed', context: {}, user: { enrolledFactorTypes: ['webauthn'] } };
    assert.equal(allowed(evaluatePolicies(DEMO_POLICIES, input)).enrollmentRequired, false);
    const synced = allowed(evaluatePolicies(DEMO_POLICIES, { ...input, user: { ...input.user, acrFacts: { webauthnUserVerified: true, webauthnDeviceBound: false } } }));
    assert.equal(synced.acr, 'urn:stepgate:aal3');
    assert.equal(synced.enrollmentRequired, true);
  });

  it('the demo set: small amounts, large amounts, another currency, no amount', () => {
    const cases: [Record<string, unknown>, string][] = [
      [CNY('1000.00'), 'small-payments'],
      [CNY('1000.01'), 'large-payments'],
      [{ amount: '10.00', currency: 'USD' }, 'large-payments'],
      [{}, 'large-payments'],
      [CNY('1,000'), 'large-payments'],
    ];
    for (const [context, expected] of cases) {
      assert.equal(allowed(evaluatePolicies(DEMO_POLICIES, { action: 'payment_code.issue', context, user: {} })).policyId, expected, JSON.stringify(context));
    }
  });
});

describe('velocity: "up to 10 codes or 1,000 CNY a day with any factor, beyond that fingerprint only"', () => {
  const policies = policySet([
    {
      id: 'daily-allowance',
      action: 'payment_code.issue',
      priority: 10,
      when: { amount: { lte: '1000.00', currency: 'CNY' }, velocity: { windowSeconds: DAY, maxCount: 10, maxAmount: '1000.00' } },
      require: ANY_POSSESSION,
      acr: 'urn:stepgate:aal2',
    },
    { id: 'beyond', action: 'payment_code.issue', priority: 20, require: { anyOf: [['webauthn']] }, acr: 'urn:stepgate:aal2' },
    { id: 'hourly', action: 'other.action', priority: 10, when: { velocity: { windowSeconds: 3600, maxAmount: '5', currency: 'USD' } }, require: ANY_POSSESSION, acr: 'urn:stepgate:aal2' },
  ]);
  const cases: [string, string, number, string, string][] = [
    ['first of the day', '200.00', 0, '0', 'daily-allowance'],
    ['9 done, 900 spent, 100 more', '100.00', 9, '900.00', 'daily-allowance'],
    ['10 done', '1.00', 10, '100.00', 'beyond'],
    ['amount would exceed', '200.00', 3, '900.00', 'beyond'],
    ['one payment above the allowance', '1000.01', 0, '0', 'beyond'],
  ];
  for (const [name, amount, count, total, expected] of cases) {
    it(name, () => {
      const d = allowed(
        evaluatePolicies(policies, { action: 'payment_code.issue', context: CNY(amount), user: {}, velocity: [{ windowSeconds: DAY, count, amountsByCurrency: { CNY: total } }] }),
      );
      assert.equal(d.policyId, expected);
    });
  }

  it('without the velocity figures the lenient policy does not apply', () => {
    assert.equal(allowed(evaluatePolicies(policies, { action: 'payment_code.issue', context: CNY('1.00'), user: {} })).policyId, 'beyond');
  });

  it('velocityWindowsFor names the windows and currencies to query, per action', () => {
    assert.deepEqual(velocityWindowsFor(policies, 'payment_code.issue'), [{ windowSeconds: DAY, currencies: ['CNY'] }]);
    assert.deepEqual(velocityWindowsFor(policies, 'other.action'), [{ windowSeconds: 3600, currencies: ['USD'] }]);
    assert.deepEqual(velocityWindowsFor(policies, 'nothing'), []);
    const mixed = policySet([
      { id: 'a', action: 'x', priority: 1, when: { velocity: { windowSeconds: DAY, maxCount: 3 } }, require: ANY_POSSESSION, acr: 'urn:stepgate:aal2' },
      { id: 'b', action: 'x', priority: 2, when: { velocity: { windowSeconds: 60, maxAmount: '9', currency: 'USD' } }, require: ANY_POSSESSION, acr: 'urn:stepgate:aal2' },
      { id: 'c', action: 'x', priority: 3, when: { velocity: { windowSeconds: DAY, maxAmount: '9', currency: 'EUR' } }, require: ANY_POSSESSION, acr: 'urn:stepgate:aal2' },
      { id: 'd', action: 'x', priority: 4, when: { velocity: { windowSeconds: DAY, maxAmount: '9', currency: 'CNY' }, fields: { k: { eq: 1 } } }, require: ANY_POSSESSION, acr: 'urn:stepgate:aal2' },
    ]);
    assert.deepEqual(velocityWindowsFor(mixed, 'x'), [
      { windowSeconds: 60, currencies: ['USD'] },
      { windowSeconds: DAY, currencies: ['CNY', 'EUR'] },
    ]);
  });
});
