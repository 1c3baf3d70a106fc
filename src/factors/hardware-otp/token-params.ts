import { bindingChallenge, type TokenAlgorithm, type TokenCodeParams, type TokenKind } from '../../otp/token-codes.ts';

/**
 * The public parameters a `hardware_otp` factor row carries (factors.params), copied from
 * the inventory when the token is assigned. `driftSteps` is the only one that changes.
 */
export interface HardwareOtpParams extends TokenCodeParams {
  tokenId: string;
  serial: string;
  driftSteps: number;
  /** GM/T 0021 challenge-response tokens: the challenge length; null for the others. */
  challengeLength: number | null;
  /** Key validity, epoch ms (PSKC StartDate / ExpiryDate). */
  validFrom: number | null;
  validUntil: number | null;
}

const KINDS: readonly TokenKind[] = ['hotp', 'totp'];
const ALGORITHMS: readonly TokenAlgorithm[] = ['SHA1', 'SHA256', 'SHA512', 'SM3'];

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);
const isInstant = (v: unknown): v is number | null => v === null || isInt(v);

/** Stored params → typed, or undefined when the row is not a well-formed hardware token. */
export function parseHardwareOtpParams(params: Record<string, unknown>): HardwareOtpParams | undefined {
  const { tokenId, serial, kind, algorithm, digits, periodSeconds, driftSteps, validFrom, validUntil, challengeLength } = params;
  if (typeof tokenId !== 'string' || typeof serial !== 'string') return undefined;
  if (!KINDS.includes(kind as TokenKind) || !ALGORITHMS.includes(algorithm as TokenAlgorithm)) return undefined;
  if (!isInt(digits) || digits < 6 || digits > 8 || !isInt(periodSeconds) || !isInt(driftSteps)) return undefined;
  if (kind === 'totp' && periodSeconds <= 0) return undefined;
  if (!isInstant(validFrom ?? null) || !isInstant(validUntil ?? null)) return undefined;
  const qLength = challengeLength ?? null;
  if (qLength !== null && (!isInt(qLength) || qLength < 4 || qLength > 10 || algorithm !== 'SM3')) return undefined;
  return {
    tokenId,
    serial,
    kind: kind as TokenKind,
    algorithm: algorithm as TokenAlgorithm,
    digits,
    periodSeconds,
    driftSteps,
    challengeLength: qLength as number | null,
    validFrom: (validFrom as number | null | undefined) ?? null,
    validUntil: (validUntil as number | null | undefined) ?? null,
  };
}

/** Whether the key may be used at `now` (inside its validity dates). */
export function withinValidity(p: Pick<HardwareOtpParams, 'validFrom' | 'validUntil'>, now: Date): boolean {
  const t = now.getTime();
  return (p.validFrom === null || t >= p.validFrom) && (p.validUntil === null || t < p.validUntil);
}

/** The code parameters for checking a code outside a step-up (resync, a console sign-in): the binding challenge. */
export function withBindingChallenge(p: HardwareOtpParams): HardwareOtpParams & { challenge?: string } {
  return p.challengeLength === null ? p : { ...p, challenge: bindingChallenge(p.challengeLength) };
}
