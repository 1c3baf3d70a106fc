import type { Config } from '../../config/schema.ts';
import { argon2SlotsFor, PasswordHasher } from './hasher.ts';
import { createPasswordFactor, type PasswordFactor } from './password-factor.ts';
import { loadBlocklist, PasswordPolicy } from './policy.ts';

export { PasswordHasher, argon2Slots, argon2SlotsFor, overloadedError } from './hasher.ts';
export { createPasswordFactor, type PasswordFactor, type PasswordInput, type PasswordChange } from './password-factor.ts';
export { normalisePassword, PasswordPolicy, loadBlocklist, type PolicyViolation } from './policy.ts';

export interface PasswordServices {
  hasher: PasswordHasher;
  policy: PasswordPolicy;
  factor: PasswordFactor;
}

const byConfig = new WeakMap<object, PasswordServices>();

/**
 * The hasher, policy and factor module for a configuration, built once per configuration
 * object (so the factor registry and the login flow share one dummy hash). Throws
 * TypeError for an unreadable `password.extraBlocklistFile`: call it at start-up.
 */
export function passwordServicesFor(config: Pick<Config, 'password' | 'audit'>): PasswordServices {
  let s = byConfig.get(config);
  if (s === undefined) {
    const hasher = new PasswordHasher(config.password.argon2, argon2SlotsFor(config.password.maxConcurrentHashes));
    const policy = new PasswordPolicy({
      minLength: config.password.minLength,
      maxLength: config.password.maxLength,
      blocklist: loadBlocklist(config.password.extraBlocklistFile),
      serviceName: config.audit.serviceName,
    });
    s = { hasher, policy, factor: createPasswordFactor(hasher) };
    byConfig.set(config, s);
  }
  return s;
}
