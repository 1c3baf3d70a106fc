import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { STANDARD_FACTOR_TYPES } from '../../src/policy/acr.ts';
import { evaluatePolicies } from '../../src/policy/evaluate-policies.ts';
import { parsePolicyFile, serializePolicySet } from '../../src/policy/policy-file.ts';
import { validatePolicySet } from '../../src/policy/validate-policy-set.ts';
import { factorMeetsPolicy } from '../../src/flows/factor-constraints.ts';

const factorTypes = STANDARD_FACTOR_TYPES;

const yaml = `policies:
  - id: strong-app
    action: transfer.large
    priority: 10
    require:
      anyOf: [[totp], [webauthn]]
    acr: urn:stepgate:aal2
    totp: { algorithms: [SHA256, SHA512], digits: [8] }
`;

describe('policy field totp (which authenticator-app parameters a policy accepts)', () => {
  it('parses from YAML, round-trips through serialize', () => {
    const r = parsePolicyFile(yaml, { factorTypes });
    assert.ok(r.ok, JSON.stringify(r));
    if (!r.ok) return;
    assert.deepEqual(r.policies[0]!.totp, { algorithms: ['SHA256', 'SHA512'], digits: [8] });
    const text = serializePolicySet(r.policies);
    assert.match(text, /totp:\n\s+algorithms: \[SHA256, SHA512\]\n\s+digits: \[8\]\n$/);
    const again = parsePolicyFile(text, { factorTypes });
    assert.ok(again.ok);
    if (again.ok) assert.deepEqual(again.policies, r.policies);
    assert.equal(serializePolicySet(again.ok ? again.policies : []), text);
  });

  it('rejects values no authenticator app uses, and unknown keys, with a pointer', () => {
    const base = { id: 'p', action: 'a.b', priority: 1, require: { anyOf: [['totp']] }, acr: 'urn:stepgate:aal2' };
    const cases: [Record<string, unknown>, string][] = [
      [{ algorithms: ['MD5'] }, '/policies/0/totp/algorithms/0'],
      [{ digits: [7] }, '/policies/0/totp/digits/0'],
      [{ periodSeconds: [45] }, '/policies/0/totp/periodSeconds/0'],
      [{ algorithms: [] }, '/policies/0/totp/algorithms'],
      [{ window: 3 }, '/policies/0/totp/window'],
    ];
    for (const [totp, pointer] of cases) {
      const r = validatePolicySet([{ ...base, totp }], { factorTypes });
      assert.equal(r.ok, false, JSON.stringify(totp));
      if (!r.ok) assert.ok(r.errors.some((e) => e.pointer === pointer), `${pointer} in ${JSON.stringify(r.errors)}`);
    }
  });

  it('evaluation: an enrolled app that does not qualify makes its alternative unsatisfiable', () => {
    const r = parsePolicyFile(yaml, { factorTypes });
    if (!r.ok) throw new Error('fixture');
    const sha1 = { type: 'totp', params: { algorithm: 'SHA1', digits: 6, period: 30 } };
    const sha256 = { type: 'totp', params: { algorithm: 'SHA256', digits: 8, period: 30 } };
    const decide = (app: typeof sha1) =>
      evaluatePolicies(r.policies, {
        action: 'transfer.large',
        context: {},
        user: { enrolledFactorTypes: ['totp'], factorQualifies: (policy, type) => type !== 'totp' || factorMeetsPolicy(policy, app) },
      });
    const weak = decide(sha1);
    assert.ok(weak.decision === 'allow' && weak.enrollmentRequired && weak.satisfiable.length === 0);
    const strong = decide(sha256);
    assert.ok(strong.decision === 'allow' && !strong.enrollmentRequired);
    if (strong.decision === 'allow') assert.deepEqual(strong.satisfiable, [['totp']]);
    // Without the predicate (a hypothetical user in the dry-run), enrolled means usable.
    const hypothetical = evaluatePolicies(r.policies, { action: 'transfer.large', context: {}, user: { enrolledFactorTypes: ['totp'] } });
    assert.ok(hypothetical.decision === 'allow' && !hypothetical.enrollmentRequired);
  });

  it('factorMeetsPolicy: other types and unconstrained policies always qualify; unreadable parameters never do', () => {
    const r = parsePolicyFile(yaml, { factorTypes });
    if (!r.ok) throw new Error('fixture');
    const policy = r.policies[0]!;
    assert.equal(factorMeetsPolicy(policy, { type: 'webauthn', params: {} }), true);
    assert.equal(factorMeetsPolicy({ ...policy, totp: undefined }, { type: 'totp', params: { algorithm: 'SHA1', digits: 6, period: 30 } }), true);
    assert.equal(factorMeetsPolicy(policy, { type: 'totp', params: { algorithm: 'SHA512', digits: 8, period: 60 } }), true);
    assert.equal(factorMeetsPolicy(policy, { type: 'totp', params: {} }), false);
  });
});
