import type { KeyObject } from 'node:crypto';
import { AppError } from '../../errors/app-error.ts';
import { approvalSummary, type DeliverSms, maskPhoneNumber, renderSmsText, smsLocaleOf } from '../../sms/index.ts';
import type { ChallengeContext, ChallengeLimits, ChallengeStart, Factor, FactorContext, FactorRecord, LiveChallenge, VerifyOutcome } from '../factor.ts';
import { generateSmsCode, SMS_CODE_DIGITS, smsCodeMac, smsCodeMatches } from './sms-code.ts';

/**
 * The SMS code factor (`sms_otp`): a challenge factor. Starting a challenge sends a fresh
 * 6-digit code to the enrolled phone, with a text saying what it approves; the challenge
 * state holds only the code's HMAC, bound to the step-up, the phone's factor id and the
 * user. The step-up flow (src/flows/stepup-challenge.ts, verify-stepup-factor.ts) owns the
 * rest: expiry, the attempt count charged before `verify` (a resend keeps it), the resend
 * cooldown and single-use consumption.
 *
 * Enrolled phones keep their number in `params.phone` (E.164) — public data, not a secret.
 */

export interface SmsOtpInput {
  code: string;
}

export interface SmsOtpDeps {
  /** HMAC key for codes, derived from the master key. */
  codeKey: KeyObject;
  limits: ChallengeLimits;
  /** The service name texts start with (config sms.brand). */
  brand: string;
  deliver: DeliverSms;
}

/** The public parameters of an enrolled phone (factors.params). */
export interface SmsOtpParams {
  phone: string;
  phoneMasked: string;
  country: string;
  callingCode: string;
}

export type SmsOtpFactor = Factor<SmsOtpInput, never>;

export function phoneOf(record: FactorRecord): string | undefined {
  const phone = record.params.phone;
  return typeof phone === 'string' && phone.startsWith('+') ? phone : undefined;
}

/** Which phone a (re)send goes to: the one named, the only one, or the one the previous code went to. */
function targetOf(records: readonly FactorRecord[], previous: Record<string, unknown> | undefined): FactorRecord {
  if (records.length === 1) return records[0] as FactorRecord;
  const before = records.find((r) => r.id === previous?.factorId);
  if (before !== undefined) return before;
  throw new AppError('factor_not_allowed', { invalidParams: [{ pointer: '/factorId', reason: 'several phones are enrolled: name one with factorId' }] });
}

export function createSmsOtpFactor(deps: SmsOtpDeps): SmsOtpFactor {
  return {
    type: 'sms_otp',
    descriptor: { kind: 'challenge', amr: ['sms'], possession: true, multiple: true, challenge: deps.limits },

    async startChallenge(records: readonly FactorRecord[], ctx: ChallengeContext): Promise<ChallengeStart> {
      const target = targetOf(records, ctx.previous);
      const phone = phoneOf(target);
      if (phone === undefined) throw new TypeError(`sms_otp factor ${target.id} has no phone number`);
      const locale = smsLocaleOf(ctx.locale);
      const code = generateSmsCode();
      const summary = approvalSummary(locale, ctx.purpose);
      const minutes = Math.max(1, Math.round(deps.limits.ttlSeconds / 60));
      await deps.deliver({
        userId: ctx.userId,
        to: phone,
        locale,
        purpose: 'stepup',
        text: renderSmsText({ brand: deps.brand, locale, purpose: 'stepup', code, summary, minutes }),
        variables: { code, summary, minutes: String(minutes) },
        validitySeconds: deps.limits.ttlSeconds,
        ref: { stepupId: ctx.purpose.stepupId, factorId: target.id },
      });
      const mac = smsCodeMac(deps.codeKey, { purpose: 'stepup', stepupId: ctx.purpose.stepupId, factorId: target.id, userId: ctx.userId }, code);
      return {
        publicData: { destination: maskPhoneNumber(phone), code_length: SMS_CODE_DIGITS },
        state: { v: 1, mac, stepupId: ctx.purpose.stepupId, factorId: target.id },
        factorId: target.id,
      };
    },

    resolveFactor(records: readonly FactorRecord[], _input: unknown, challenge: LiveChallenge | undefined): FactorRecord | undefined {
      return challenge === undefined ? undefined : records.find((r) => r.id === challenge.factorId);
    },

    async verify(record: FactorRecord | undefined, input: SmsOtpInput, ctx: FactorContext): Promise<VerifyOutcome<never>> {
      if (record === undefined || record.status !== 'active') return { ok: false, reason: 'not_enrolled' };
      const challenge = ctx.challenge;
      if (challenge === undefined || ctx.stepupId === undefined) return { ok: false, reason: 'invalid' };
      if (ctx.now.getTime() >= challenge.expiresAt.getTime()) return { ok: false, reason: 'expired' };
      // The flow keys challenges by step-up; the MAC binding makes that a property of the code itself.
      if (challenge.factorId !== record.id || challenge.state.stepupId !== ctx.stepupId) return { ok: false, reason: 'invalid' };
      const given = (input as { code?: unknown } | null | undefined)?.code;
      const binding = { purpose: 'stepup' as const, stepupId: ctx.stepupId, factorId: record.id, userId: record.userId };
      return smsCodeMatches(deps.codeKey, binding, given, challenge.state.mac) ? { ok: true, amr: ['sms'] } : { ok: false, reason: 'invalid' };
    },
  } satisfies SmsOtpFactor;
}
