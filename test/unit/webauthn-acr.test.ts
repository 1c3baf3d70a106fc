import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assuranceOf } from '../../src/factors/webauthn/credential.ts';
import { achievedAcr, type ProvenFactor, reachedAcr, satisfiedAlternative } from '../../src/stepup/stepup-record.ts';

const p = (type: string, amr: string[], acr?: string): ProvenFactor => ({ type, factorId: `f_${type}`, amr, at: 0, ...(acr === undefined ? {} : { acr }) });

describe('webauthn assurance and the acr a proof reaches', () => {
  it('UV on a device-bound credential: hwk+user, aal3; on a synced passkey: swk+user, aal2', () => {
    assert.deepEqual(assuranceOf({ backupEligible: false }), { amr: ['hwk', 'user'], acr: 'urn:stepgate:aal3' });
    assert.deepEqual(assuranceOf({ backupEligible: true }), { amr: ['swk', 'user'], acr: 'urn:stepgate:aal2' });
  });

  it('a factor\'s own acr raises what its set reaches; nothing else does', () => {
    assert.equal(reachedAcr(['webauthn'], [p('webauthn', ['hwk', 'user'], 'urn:stepgate:aal3')]), 'urn:stepgate:aal3');
    assert.equal(reachedAcr(['webauthn'], [p('webauthn', ['swk', 'user'], 'urn:stepgate:aal2')]), 'urn:stepgate:aal2');
    assert.equal(reachedAcr(['password'], [p('password', ['pwd'])]), 'urn:stepgate:aal1');
    // An acr reported by a factor outside the set does not count for it.
    assert.equal(reachedAcr(['password'], [p('password', ['pwd']), p('webauthn', ['hwk', 'user'], 'urn:stepgate:aal3')]), 'urn:stepgate:aal1');
    // A made-up value is ignored.
    assert.equal(reachedAcr(['totp'], [p('totp', ['otp'], 'urn:other:gold')]), 'urn:stepgate:aal2');
  });

  it('facts come from each proof itself: another factor\'s hwk does not make a synced passkey device-bound', () => {
    const proven = [p('webauthn', ['swk', 'user'], 'urn:stepgate:aal2'), p('hardware_otp', ['otp', 'hwk'])];
    assert.equal(reachedAcr(['webauthn', 'hardware_otp'], proven), 'urn:stepgate:aal2');
    assert.equal(satisfiedAlternative([['webauthn', 'hardware_otp']], proven, 'urn:stepgate:aal3'), undefined);
    // The same without the reported acr (proofs stored before factors reported one): the same answer.
    const legacy = [p('webauthn', ['user']), p('hardware_otp', ['otp', 'hwk'])];
    assert.equal(reachedAcr(['webauthn', 'hardware_otp'], legacy), 'urn:stepgate:aal2');
  });

  it('the token carries the acr reached, never less than the policy\'s', () => {
    const anyOf = [['webauthn']];
    assert.equal(achievedAcr({ anyOf, proven: [p('webauthn', ['hwk', 'user'], 'urn:stepgate:aal3')], acr: 'urn:stepgate:aal2' }), 'urn:stepgate:aal3');
    assert.equal(achievedAcr({ anyOf, proven: [p('webauthn', ['swk', 'user'], 'urn:stepgate:aal2')], acr: 'urn:stepgate:aal2' }), 'urn:stepgate:aal2');
    assert.equal(achievedAcr({ anyOf: [['password']], proven: [p('password', ['pwd'])], acr: 'urn:stepgate:aal1' }), 'urn:stepgate:aal1');
    // Not (yet) satisfied: the policy's value, as before.
    assert.equal(achievedAcr({ anyOf: [['webauthn', 'password']], proven: [p('webauthn', ['hwk', 'user'], 'urn:stepgate:aal3')], acr: 'urn:stepgate:aal2' }), 'urn:stepgate:aal2');
  });
});
