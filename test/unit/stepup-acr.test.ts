import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type ProvenFactor, satisfiedAlternative } from '../../src/stepup/stepup-record.ts';

const p = (type: string, amr: string[]): ProvenFactor => ({ type, factorId: `f_${type}`, amr, at: 0 });

describe('step-up completion derives the acr from what was proven', () => {
  it('a device-bound WebAuthn credential with UV completes an aal3 requirement', () => {
    assert.deepEqual(satisfiedAlternative([['webauthn']], [p('webauthn', ['hwk', 'user'])], 'urn:stepgate:aal3'), ['webauthn']);
  });
  it('a synced passkey (no hwk) does not complete aal3, but does complete aal2', () => {
    assert.equal(satisfiedAlternative([['webauthn']], [p('webauthn', ['swk', 'user'])], 'urn:stepgate:aal3'), undefined);
    assert.deepEqual(satisfiedAlternative([['webauthn']], [p('webauthn', ['swk', 'user'])], 'urn:stepgate:aal2'), ['webauthn']);
  });
  it('a password alone reaches aal1 only', () => {
    assert.equal(satisfiedAlternative([['password']], [p('password', ['pwd'])], 'urn:stepgate:aal2'), undefined);
    assert.deepEqual(satisfiedAlternative([['password']], [p('password', ['pwd'])], 'urn:stepgate:aal1'), ['password']);
  });
  it('every factor of an alternative must be proven', () => {
    const anyOf = [['hardware_otp', 'password'], ['webauthn']];
    assert.equal(satisfiedAlternative(anyOf, [p('password', ['pwd'])], 'urn:stepgate:aal2'), undefined);
    assert.deepEqual(satisfiedAlternative(anyOf, [p('password', ['pwd']), p('hardware_otp', ['otp', 'hwk'])], 'urn:stepgate:aal2'), ['hardware_otp', 'password']);
  });
});
