import type { KeyObject } from 'node:crypto';
import type { Config } from '../config/schema.ts';
import type { ChallengeLimits } from '../factors/factor.ts';
import { createSmsOtpFactor, type SmsOtpFactor } from '../factors/sms-otp/index.ts';
import type { Gateway } from '../gateway.ts';
import { deliverSms, smsSenderOf } from './deliver-sms.ts';

/** The `sms_otp` factor wired to this gateway's key, limits and delivery. */

const keys = new WeakMap<Gateway, KeyObject>();

/** The HMAC key of SMS codes: derived from the master key (a rotation voids the codes of the last few minutes). */
export function smsCodeKey(gw: Gateway): KeyObject {
  let key = keys.get(gw);
  if (key === undefined) {
    key = gw.sealer.deriveKey('sms-otp-code');
    keys.set(gw, key);
  }
  return key;
}

export function smsChallengeLimits(config: Pick<Config, 'sms'>): ChallengeLimits {
  const { sms } = config;
  return { ttlSeconds: sms.codeTtlSeconds, maxAttempts: sms.maxAttempts, resendCooldownSeconds: sms.resendCooldownSeconds, maxSends: sms.maxSends };
}

/**
 * The factor module, or undefined when SMS is off (production without a provider): then
 * the type is not registered, step-ups never offer it and phones cannot be enrolled.
 */
export function smsOtpFactorFor(gw: Gateway): SmsOtpFactor | undefined {
  if (smsSenderOf(gw) === undefined) return undefined;
  return createSmsOtpFactor({ codeKey: smsCodeKey(gw), limits: smsChallengeLimits(gw.config), brand: gw.config.sms.brand, deliver: (d) => deliverSms(gw, d) });
}
