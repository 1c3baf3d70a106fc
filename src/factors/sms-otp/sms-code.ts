import { createHmac, type KeyObject, randomInt, timingSafeEqual } from 'node:crypto';

/**
 * SMS one-time codes: 6 digits from the CSPRNG, stored only as an HMAC under a server key
 * (derived from the master key), bound to what the code was sent for. The binding is in the
 * MAC input, so a code — or a stored MAC copied between rows — proves nothing anywhere else:
 * a code sent for step-up A does not verify on step-up B, nor for another phone or user.
 */
export const SMS_CODE_DIGITS = 6;

export type SmsCodeBinding =
  | { purpose: 'stepup'; stepupId: string; factorId: string; userId: string }
  | { purpose: 'enrolment'; factorId: string; userId: string };

export function generateSmsCode(): string {
  return String(randomInt(0, 10 ** SMS_CODE_DIGITS)).padStart(SMS_CODE_DIGITS, '0');
}

function bindingString(b: SmsCodeBinding): string {
  // Ids never contain "|", so the fields cannot be shifted into one another.
  return b.purpose === 'stepup' ? `stepup|${b.stepupId}|${b.factorId}|${b.userId}` : `enrolment|${b.factorId}|${b.userId}`;
}

export function smsCodeMac(key: KeyObject, binding: SmsCodeBinding, code: string): string {
  return createHmac('sha256', key).update(`sms_otp.v1|${bindingString(binding)}|${code}`, 'utf8').digest('base64url');
}

/**
 * What the user typed, as 6 ASCII digits: full-width digits (typed with a Chinese IME) are
 * folded by NFKC, spaces and dashes dropped. Undefined for anything else.
 */
export function normaliseSmsCode(input: unknown): string | undefined {
  if (typeof input !== 'string' || input.length > 64) return undefined;
  const digits = input.normalize('NFKC').replace(/[\s-]/g, '');
  return new RegExp(`^[0-9]{${SMS_CODE_DIGITS}}$`).test(digits) ? digits : undefined;
}

/** Constant-time check of a presented code against a stored MAC. */
export function smsCodeMatches(key: KeyObject, binding: SmsCodeBinding, presented: unknown, storedMac: unknown): boolean {
  const code = normaliseSmsCode(presented);
  if (typeof storedMac !== 'string') return false;
  // A malformed input is still compared (against a code that cannot match), so the time taken does not say which it was.
  const expected = Buffer.from(storedMac, 'base64url');
  const actual = Buffer.from(smsCodeMac(key, binding, code ?? 'not-a-code'), 'base64url');
  return code !== undefined && expected.length === actual.length && timingSafeEqual(expected, actual);
}
