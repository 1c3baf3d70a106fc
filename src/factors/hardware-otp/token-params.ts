import type { TokenAlgorithm, TokenCodeParams, TokenKind } from '../../otp/token-codes.ts';

/**
 * The public parameters a `hardware_otp` factor row carries (factors.params), copied from
 * the inventory when the token is assigned. `driftSteps` is the only one that changes.
 */
export interface HardwareOtpParams extends TokenCodeParams {
  tokenId: string;
  serial: string;
  driftSteps: number;
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
  const { tokenId, serial, kind, algorithm, digits, periodSeconds, driftSteps, validFrom, validUntil } = params;
  if (typeof tokenId !== 'string' || typeof serial !== 'string') return undefined;
  if (!KINDS.includes(kind as TokenKind) || !ALGORITHMS.includes(algorithm as TokenAlgorithm)) return undefined;
  if (!isInt(digits) || digits < 6 || digits > 8 || !isInt(periodSeconds) || !isInt(driftSteps)) return undefined;
  if (kind === 'totp' && periodSeconds <= 0) return undefined;
  if (!isInstant(validFrom ?? null) || !isInstant(validUntil ?? null)) return undefined;
  return {
    tokenId,
    serial,
    kind: kind as TokenKind,
    algorithm: algorithm as TokenAlgorithm,
    digits,
    periodSeconds,
    driftSteps,
    validFrom: (validFrom as number | null | undefined) ?? null,
    validUntil: (validUntil as number | null | undefined) ?? null,
  };
}

/** Whether the key may be used at `now` (inside its validity dates). */
export function withinValidity(p: Pick<HardwareOtpParams, 'validFrom' | 'validUntil'>, now: Date): boolean {
  const t = now.getTime();
  return (p.validFrom === null || t >= p.validFrom) && (p.validUntil === null || t < p.validUntil);
}
