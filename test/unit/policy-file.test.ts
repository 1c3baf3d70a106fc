import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { STANDARD_FACTOR_TYPES } from '../../src/policy/acr.ts';
import { DEMO_POLICIES } from '../../src/policy/demo-policies.ts';
import { diffPolicySets, formatPolicyDiff, policySetDiffIsEmpty } from '../../src/policy/diff-policy-sets.ts';
import { type PolicyFileResult, parsePolicyFile, serializePolicySet } from '../../src/policy/policy-file.ts';
import type { Policy } from '../../src/policy/policy-schema.ts';

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

const options = { factorTypes: STANDARD_FACTOR_TYPES };

function parsed(text: string): Policy[] {
  const r = parsePolicyFile(text, options);
  assert.ok(r.ok, JSON.stringify(r));
  return r.policies;
}

function errorsOf(r: PolicyFileResult): { code: string; pointer: string; line?: number }[] {
  assert.ok(!r.ok, 'expected errors');
  return r.errors.map(({ code, pointer, line }) => (line === undefined ? { code, pointer } : { code, pointer, line }));
}

/** A policy using every kind of value the serializer must keep exactly. */
const RICH: readonly Policy[] = deepFreeze([
  {
    id: 'rich',
    action: 'payment_code.issue',
    priority: 5,
    description: 'Tricky: "quotes", a colon: here, # not a comment, 支付码, and a trailing space ',
    when: {
      amount: { gt: '-0.5', lte: '1000', currency: 'CNY' },
      fields: {
        payee: { in: ['123', 'true', 'null', '~', 'yes', 'no', '0x1F', '1e3', ''] },
        offline: { eq: false },
        codes: { notIn: [0, -1, 2.5] },
        channel: { neq: 'web' },
      },
      groups: { anyOf: ['vip', 'staff'] },
      velocity: { windowSeconds: 86_400, maxCount: 10, maxAmount: '1000.00' },
    },
    require: { anyOf: [['webauthn'], ['hardware_otp', 'password']] },
    acr: 'urn:stepgate:aal2',
    tokenTtlSeconds: 300,
    maxAgeSeconds: 60,
  },
  { id: 'a-refund', action: 'refund', priority: 1, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1', tokenTtlSeconds: 120, maxAgeSeconds: 0 },
]);

describe('policy files (YAML)', () => {
  it('config/policies.demo.yaml is valid and equals DEMO_POLICIES', () => {
    assert.deepEqual(parsed(readFileSync('config/policies.demo.yaml', 'utf8')), DEMO_POLICIES);
  });

  it('the example from the issue parses, defaults applied', () => {
    const text = [
      'policies:',
      '  - id: small-payments',
      '    action: payment_code.issue',
      '    priority: 10',
      '    when: { amount: { lte: "1000.00", currency: CNY } }',
      '    require: { anyOf: [[webauthn], [hardware_otp], [totp], [sms_otp]] }',
      '    acr: urn:stepgate:aal2',
      '',
    ].join('\n');
    const [policy] = parsed(text);
    assert.equal(policy?.tokenTtlSeconds, 120);
    assert.equal(policy?.maxAgeSeconds, 0);
    assert.deepEqual(policy?.when, { amount: { lte: '1000.00', currency: 'CNY' } });
  });

  it('round trip: parse(serialize(x)) equals x, and serializing again gives the same bytes', () => {
    for (const set of [DEMO_POLICIES, RICH, []]) {
      const text = serializePolicySet(set);
      const back = parsed(text);
      const sorted = [...set].sort((a, b) => (a.action < b.action ? -1 : a.action > b.action ? 1 : a.priority - b.priority));
      assert.deepEqual(back, sorted);
      assert.equal(serializePolicySet(back), text);
    }
  });

  it('serializes sorted by action and priority, with canonical key order and flow lists', () => {
    const text = serializePolicySet([...DEMO_POLICIES].reverse());
    assert.equal(
      text.split('\n').slice(0, 16).join('\n'),
      [
        'policies:',
        '  - id: small-payments',
        '    action: payment_code.issue',
        '    priority: 10',
        '    description: "Payment codes up to 1,000.00 CNY: any possession factor."',
        '    when:',
        '      amount:',
        '        lte: "1000.00"',
        '        currency: CNY',
        '    require:',
        '      anyOf: [[webauthn], [hardware_otp], [totp], [sms_otp]]',
        '    acr: urn:stepgate:aal2',
        '    tokenTtlSeconds: 120',
        '    maxAgeSeconds: 0',
        '  - id: large-payments',
        '    action: payment_code.issue',
      ].join('\n'),
    );
  });

  const bad: [string, string, { code: string; pointer: string; line?: number }[]][] = [
    ['duplicate key', 'policies:\n  - id: a\n    id: b\n', [{ code: 'invalid_yaml', pointer: '', line: 3 }]],
    ['two documents', 'policies: []\n---\npolicies: []\n', [{ code: 'invalid_yaml', pointer: '', line: 2 }]],
    ['tab indentation', 'policies:\n  - id: a\n\tpriority: 1\n', [{ code: 'invalid_yaml', pointer: '', line: 3 }]],
    ['empty file', '', [{ code: 'invalid', pointer: '' }]],
    ['a list at the top', '- id: a\n', [{ code: 'invalid', pointer: '', line: 1 }]],
    [
      'misspelt top-level key',
      'polices: []\n',
      [
        { code: 'invalid', pointer: '/polices', line: 1 },
        { code: 'invalid', pointer: '/policies' },
      ],
    ],
    [
      'unquoted decimal bound, with its line',
      'policies:\n  - id: a\n    action: pay\n    priority: 1\n    when:\n      amount: { lte: 1000.00, currency: CNY }\n    require: { anyOf: [[totp]] }\n    acr: urn:stepgate:aal2\n',
      [{ code: 'invalid', pointer: '/policies/0/when/amount/lte', line: 6 }],
    ],
    [
      'missing field points at the policy',
      'policies:\n  - id: a\n    action: pay\n    priority: 1\n    acr: urn:stepgate:aal2\n',
      [{ code: 'invalid', pointer: '/policies/0/require', line: 2 }],
    ],
    [
      'semantic errors carry lines too',
      'policies:\n  - id: a\n    action: pay\n    priority: 1\n    require: { anyOf: [[totp], [retina]] }\n    acr: urn:stepgate:aal2\n  - id: b\n    action: pay\n    priority: 1\n    require: { anyOf: [[totp]] }\n    acr: urn:stepgate:aal2\n',
      [
        { code: 'unknown_factor_type', pointer: '/policies/0/require/anyOf/1/0', line: 5 },
        { code: 'ambiguous_priority', pointer: '/policies/1/priority', line: 9 },
      ],
    ],
  ];
  for (const [name, text, expected] of bad) {
    it(`rejects: ${name}`, () => assert.deepEqual(errorsOf(parsePolicyFile(text, options)), expected));
  }

  it('rejects a __proto__ field condition instead of dropping it', () => {
    const text = 'policies:\n  - id: a\n    action: x\n    priority: 1\n    when: { fields: { __proto__: { eq: z } } }\n    require: { anyOf: [[totp]] }\n    acr: urn:stepgate:aal2\n';
    assert.deepEqual(errorsOf(parsePolicyFile(text, options)), [{ code: 'invalid', pointer: '/policies/0/when/fields/__proto__', line: 5 }]);
  });

  it('rejects: YAML syntax error, with its line', () => {
    const errors = errorsOf(parsePolicyFile('policies:\n  - id: a\n   action: x\n  - id: b\n', options));
    assert.ok(errors.every((e) => e.code === 'invalid_yaml' && e.pointer === ''));
    assert.equal(errors[0]?.line, 3);
  });

  it('an alias bomb is an error, not a hang or a crash', () => {
    const lines = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 0; i < 9; i++) lines.push(`${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10).fill(`*${String.fromCharCode(97 + i)}`).join(', ')}]`);
    lines.push('policies: [*j]');
    const errors = errorsOf(parsePolicyFile(lines.join('\n'), options));
    assert.equal(errors[0]?.code, 'invalid_yaml');
  });
});

describe('policy set diff', () => {
  const [small, large, seed] = DEMO_POLICIES as [Policy, Policy, Policy];

  it('no change', () => {
    const diff = diffPolicySets(DEMO_POLICIES, deepFreeze(structuredClone([...DEMO_POLICIES])));
    assert.ok(policySetDiffIsEmpty(diff));
    assert.deepEqual(diff.unchanged, ['small-payments', 'large-payments', 'offline-seed']);
    assert.equal(formatPolicyDiff(diff), 'no changes\n');
  });

  it('added, removed and changed ids with per-field changes', () => {
    const changedSmall: Policy = { ...small, when: { amount: { lte: '500.00', currency: 'CNY' } }, description: undefined, tokenTtlSeconds: 60 };
    delete changedSmall.description;
    const added: Policy = { id: 'vip', action: 'payment_code.issue', priority: 5, when: { groups: { anyOf: ['vip'] } }, require: { anyOf: [['totp']] }, acr: 'urn:stepgate:aal2', tokenTtlSeconds: 120, maxAgeSeconds: 0 };
    const diff = diffPolicySets(DEMO_POLICIES, deepFreeze([changedSmall, large, added]));
    assert.deepEqual(
      diff.added.map((e) => e.id),
      ['vip'],
    );
    assert.deepEqual(
      diff.removed.map((e) => e.id),
      [seed.id],
    );
    assert.deepEqual(diff.unchanged, ['large-payments']);
    assert.deepEqual(diff.changed, [
      {
        id: 'small-payments',
        action: 'payment_code.issue',
        changes: [
          { path: 'description', before: 'Payment codes up to 1,000.00 CNY: any possession factor.' },
          { path: 'when.amount.lte', before: '1000.00', after: '500.00' },
          { path: 'tokenTtlSeconds', before: 120, after: 60 },
        ],
      },
    ]);
    assert.equal(
      formatPolicyDiff(diff),
      [
        '+ vip (payment_code.issue)',
        '    action: "payment_code.issue"',
        '    priority: 5',
        '    when.groups.anyOf: ["vip"]',
        '    require.anyOf: [["totp"]]',
        '    acr: "urn:stepgate:aal2"',
        '    tokenTtlSeconds: 120',
        '    maxAgeSeconds: 0',
        '~ small-payments (payment_code.issue)',
        '    description: "Payment codes up to 1,000.00 CNY: any possession factor." → (absent)',
        '    when.amount.lte: "1000.00" → "500.00"',
        '    tokenTtlSeconds: 120 → 60',
        '- offline-seed (payment_code.offline_seed)',
        '1 added, 1 changed, 1 removed, 1 unchanged',
        '',
      ].join('\n'),
    );
  });

  it('lists compare whole, conditions appear and disappear field by field', () => {
    const diff = diffPolicySets(
      [large],
      [{ ...large, require: { anyOf: [['webauthn']] }, when: { velocity: { windowSeconds: 60, maxCount: 3 } } }],
    );
    assert.deepEqual(diff.changed[0]?.changes, [
      { path: 'when.velocity.windowSeconds', after: 60 },
      { path: 'when.velocity.maxCount', after: 3 },
      { path: 'require.anyOf', before: [['webauthn'], ['hardware_otp', 'password']], after: [['webauthn']] },
    ]);
  });
});
