import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config/load-config.ts';

function errorKey(overrides: Record<string, unknown>): string {
  try {
    loadConfig({ env: {}, overrides });
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err.key;
  }
  assert.fail('expected a ConfigError');
}

describe('configuration: totp and recoveryCodes', () => {
  it('defaults: SHA1, 6 digits, 30 s, ±1 step, 20-byte secrets, 10 recovery codes', () => {
    const c = loadConfig({ env: {} });
    assert.deepEqual(c.totp, {
      issuer: 'Stepgate',
      algorithm: 'SHA1',
      digits: 6,
      periodSeconds: 30,
      allowedAlgorithms: ['SHA1', 'SHA256', 'SHA512'],
      allowedDigits: [6, 8],
      allowedPeriods: [30, 60],
      windowSteps: 1,
      secretBytes: 20,
      confirmMaxAttempts: 5,
    });
    assert.equal(c.recoveryCodes.count, 10);
  });

  it('names the key at fault', () => {
    assert.equal(errorKey({ totp: { windowSteps: 3 } }), 'totp.windowSteps');
    assert.equal(errorKey({ totp: { secretBytes: 16 } }), 'totp.secretBytes');
    assert.equal(errorKey({ totp: { digits: 7 } }), 'totp.digits');
    assert.equal(errorKey({ totp: { periodSeconds: 45 } }), 'totp.periodSeconds');
    assert.equal(errorKey({ totp: { algorithm: 'MD5' } }), 'totp.algorithm');
    assert.equal(errorKey({ totp: { issuer: 'Acme:Pay' } }), 'totp.issuer');
    assert.equal(errorKey({ totp: { allowedAlgorithms: [] } }), 'totp.allowedAlgorithms');
    // A default outside the allowed values is a contradiction, not a preference.
    assert.equal(errorKey({ totp: { allowedAlgorithms: ['SHA256'] } }), 'totp.algorithm');
    assert.equal(errorKey({ totp: { allowedDigits: [8] } }), 'totp.digits');
    assert.equal(errorKey({ recoveryCodes: { count: 5 } }), 'recoveryCodes.count');
  });

  it('a narrower configuration is accepted', () => {
    const c = loadConfig({ env: {}, overrides: { totp: { algorithm: 'SHA256', allowedAlgorithms: ['SHA256', 'SHA512'], digits: 8, allowedDigits: [8], windowSteps: 0 } } });
    assert.deepEqual([c.totp.algorithm, c.totp.allowedAlgorithms, c.totp.digits, c.totp.windowSteps], ['SHA256', ['SHA256', 'SHA512'], 8, 0]);
  });
});
