import type { KeyObject } from 'node:crypto';
import { findOtp, hotp, normaliseOtpInput, timeStep } from '../../otp/index.ts';
import type { TotpParams } from './totp-params.ts';

export type TotpCheck = { ok: true; step: number } | { ok: false; reason: 'invalid' | 'replayed' };

/** What people type: the code, perhaps with a space or hyphen in the middle as apps show it, perhaps in full-width digits. */
export function normaliseTotpCode(code: unknown): string {
  return normaliseOtpInput(code);
}

/**
 * Checks a code against the steps `current - windowSteps … current + windowSteps` (server
 * time only). A step at or below `lastStep` — already accepted, or the enrolment's
 * confirmation — is never accepted again. Every step of the window is computed and
 * compared in constant time whatever matches, so the timing says nothing about where (or
 * whether) the code matched; `replayed` is for the audit trail, the user hears one answer.
 */
export function checkTotpCode(key: KeyObject, params: TotpParams, input: unknown, now: Date, windowSteps: number, lastStep: number): TotpCheck {
  const code = normaliseTotpCode(input);
  if (code.length !== params.digits || !/^[0-9]+$/.test(code)) return { ok: false, reason: 'invalid' };
  const current = timeStep(now, params.period);
  const generate = (step: number) => hotp(key, step, params.digits, params.algorithm);
  let accepted: number | undefined;
  let replayed = false;
  for (let step = current - windowSteps; step <= current + windowSteps; step += 1) {
    const match = findOtp(code, step, step, generate) !== undefined;
    if (match && step > lastStep && accepted === undefined) accepted = step;
    if (match && step <= lastStep) replayed = true;
  }
  if (accepted !== undefined) return { ok: true, step: accepted };
  return { ok: false, reason: replayed ? 'replayed' : 'invalid' };
}
