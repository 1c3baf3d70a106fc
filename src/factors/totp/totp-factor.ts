import { createSecretKey, type KeyObject } from 'node:crypto';
import type { Sealer } from '../../crypto/sealer.ts';
import type { Factor, FactorRecord, VerifyOutcome } from '../factor.ts';
import { checkTotpCode } from './check-totp-code.ts';
import { parseTotpParams } from './totp-params.ts';

export interface TotpInput {
  code: string;
}

/** The last accepted time step; the flow writes it only if it is above the stored one. */
export interface TotpChange {
  counter: number;
}

export interface TotpFactorDeps {
  sealer: Sealer;
  /** Steps accepted either side of the current one (config `totp.windowSteps`, 0–2). */
  windowSteps: number;
}

export type TotpFactor = Factor<TotpInput, TotpChange> & { readonly windowSteps: number };

/** Shortest secret we accept (RFC 4226 §4 R6: 128 bits required, 160 recommended). */
export const MIN_TOTP_SECRET_BYTES = 20;

/** The associated data of `factors.secret_sealed` (src/store/sealed-columns.ts): the seed is bound to its row. */
export function totpSecretAad(factorId: string): string {
  return `factors.secret_sealed:${factorId}`;
}

export function sealTotpSecret(sealer: Sealer, factorId: string, secret: Buffer): string {
  if (secret.length < MIN_TOTP_SECRET_BYTES) throw new TypeError(`a TOTP secret needs at least ${MIN_TOTP_SECRET_BYTES} bytes`);
  return sealer.seal(secret, totpSecretAad(factorId));
}

/** Unseals the seed into a KeyObject; the plain bytes are wiped at once. */
export function openTotpSecret(sealer: Sealer, record: Pick<FactorRecord, 'id' | 'secretSealed'>): KeyObject {
  if (record.secretSealed === null) throw new TypeError(`factor ${record.id} has no sealed secret`);
  const bytes = sealer.unseal(record.secretSealed, totpSecretAad(record.id));
  try {
    if (bytes.length < MIN_TOTP_SECRET_BYTES) throw new TypeError(`factor ${record.id}: TOTP secret shorter than ${MIN_TOTP_SECRET_BYTES} bytes`);
    return createSecretKey(bytes);
  } finally {
    bytes.fill(0);
  }
}

/**
 * Authenticator-app TOTP (RFC 6238): a direct possession factor proving `otp`. A code is
 * accepted once: the outcome carries the matched step and the flow stores it with
 * `… WHERE counter < :step`, so of two concurrent submissions of one code exactly one wins,
 * and no code at or before the last accepted step (or the enrolment's confirmation code)
 * works again. Time is the gateway clock's; nothing the client says about time is read.
 */
export function createTotpFactor(deps: TotpFactorDeps): TotpFactor {
  const { sealer, windowSteps } = deps;
  if (!Number.isInteger(windowSteps) || windowSteps < 0 || windowSteps > 2) throw new TypeError('totp windowSteps must be 0, 1 or 2');
  return {
    type: 'totp',
    descriptor: { kind: 'direct', amr: ['otp'], possession: true, multiple: false, comparesInline: true },
    windowSteps,
    async verify(record: FactorRecord | undefined, input: TotpInput, ctx): Promise<VerifyOutcome<TotpChange>> {
      if (record === undefined || record.status !== 'active' || record.secretSealed === null) return { ok: false, reason: 'not_enrolled' };
      const params = parseTotpParams(record.params);
      if (params === undefined) throw new TypeError(`factor ${record.id}: unreadable TOTP parameters`);
      const key = openTotpSecret(sealer, record);
      // Callers may pass unvalidated input (the step-up API's `input: unknown`).
      const code = (input as { code?: unknown } | null | undefined)?.code;
      const result = checkTotpCode(key, params, code, ctx.now, windowSteps, record.counter);
      if (!result.ok) return { ok: false, reason: result.reason };
      return { ok: true, amr: ['otp'], change: { counter: result.step } };
    },
  } satisfies TotpFactor;
}
