import { createSecretKey, type KeyObject } from 'node:crypto';
import type { Sealer } from '../../crypto/sealer.ts';
import { normaliseOtpInput } from '../../otp/code-input.ts';
import { matchTokenCode, stepUpChallenge, type TokenWindow, wasRecentlyUsed } from '../../otp/token-codes.ts';
import type { Factor, FactorRecord, VerifyOutcome } from '../factor.ts';
import { type HardwareOtpParams, parseHardwareOtpParams, withBindingChallenge, withinValidity } from './token-params.ts';

export interface HardwareOtpInput {
  code: string;
}

/** What the flow writes after a success: the counter / step (guarded: only forward) and the learned drift. */
export interface HardwareOtpChange {
  counter: number;
  params?: Record<string, unknown>;
}

export interface HardwareOtpFactorOptions {
  sealer: Sealer;
  /** Normal verification window (config hardwareTokens.lookAhead / timeWindowSteps). */
  window: TokenWindow;
  /** config hardwareTokens.maxFailures / lockSeconds (0: locked until resync). */
  maxFailures: number;
  lockSeconds: number;
  /** Derives the challenge a challenge-response token is asked for a step-up (stepUpChallenge). */
  challengeKey: KeyObject;
}

export type HardwareOtpFactor = Factor<HardwareOtpInput, HardwareOtpChange>;

/** The key step-up challenges of challenge-response tokens are derived with (page, API and factor share it). */
export function tokenChallengeKey(sealer: Sealer): KeyObject {
  return sealer.deriveKey('hardware-otp-challenge');
}

/** Associated data of a hardware token's seed copy in its factor row. */
export function factorSeedAad(factorId: string): string {
  return `factors.secret_sealed:${factorId}`;
}

/** The seed of a factor row as a KeyObject; the plaintext buffer is wiped at once. */
export function unsealFactorSeed(sealer: Sealer, record: Pick<FactorRecord, 'id' | 'secretSealed'>): KeyObject | undefined {
  if (record.secretSealed === null) return undefined;
  const raw = sealer.unseal(record.secretSealed, factorSeedAad(record.id));
  try {
    return createSecretKey(raw);
  } finally {
    raw.fill(0);
  }
}

/**
 * The `hardware_otp` factor: key fobs and display cards (HOTP, TOTP, GM/T 0021 SM3), direct.
 *
 * Event tokens accept the expected counter up to `lookAhead` ahead and ask the flow to move
 * the counter past the accepted value; time tokens accept `steps` either side of now + the
 * learned drift, never a step at or below the last accepted one, and ask for that step and
 * the new drift. The flow's guarded update (`counter` only moves forward) makes a code
 * single-use, also under concurrency and across processes. Lost, revoked and unassigned
 * tokens have no factor row at all, so there is nothing left to verify.
 */
export function createHardwareOtpFactor(options: HardwareOtpFactorOptions): HardwareOtpFactor {
  return {
    type: 'hardware_otp',
    descriptor: {
      kind: 'direct',
      amr: ['otp', 'hwk'],
      possession: true,
      multiple: true,
      comparesInline: true,
      lockout: { maxFailures: options.maxFailures, lockSeconds: options.lockSeconds === 0 ? null : options.lockSeconds },
    },
    async verify(record: FactorRecord | undefined, input: HardwareOtpInput, ctx): Promise<VerifyOutcome<HardwareOtpChange>> {
      // Callers may pass unvalidated input (the step-up API's `input: unknown`).
      const code = normaliseOtpInput((input as { code?: unknown } | null | undefined)?.code);
      if (record === undefined) return { ok: false, reason: 'not_enrolled' };
      const params: HardwareOtpParams | undefined = parseHardwareOtpParams(record.params);
      if (record.status !== 'active' || params === undefined) return { ok: false, reason: 'invalid' };
      if (!withinValidity(params, ctx.now)) return { ok: false, reason: 'expired' };
      const key = unsealFactorSeed(options.sealer, record);
      if (key === undefined) return { ok: false, reason: 'invalid' };
      const state = { counter: record.counter, driftSteps: params.driftSteps };
      // A challenge-response token answers this step-up's challenge (shown on its page and in
      // the API), so its code is good for this transaction only; outside a step-up (a console
      // sign-in) it answers the binding challenge.
      const codeParams =
        params.challengeLength === null
          ? params
          : ctx.stepupId === undefined
            ? withBindingChallenge(params)
            : { ...params, challenge: stepUpChallenge(options.challengeKey, ctx.stepupId, params.challengeLength) };
      const match = matchTokenCode(key, codeParams, state, code, ctx.now, options.window);
      if (match === undefined) {
        return { ok: false, reason: wasRecentlyUsed(key, codeParams, state, code, ctx.now, options.window) ? 'replayed' : 'invalid' };
      }
      if (params.kind === 'hotp') return { ok: true, amr: ['otp', 'hwk'], change: { counter: match.next.counter } };
      return { ok: true, amr: ['otp', 'hwk'], change: { counter: match.next.counter, params: { ...record.params, driftSteps: match.next.driftSteps } } };
    },
  } satisfies HardwareOtpFactor;
}
