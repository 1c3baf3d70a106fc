/**
 * What a vendor file says about one token, validated and normalised — the common output of
 * the PSKC and CSV readers. Pure data; the seed is the only secret and is sealed by the
 * import flow before anything is stored.
 */

import type { TokenAlgorithm, TokenKind } from '../otp/token-codes.ts';

export type { TokenAlgorithm, TokenKind };

export const TOKEN_ALGORITHMS: readonly TokenAlgorithm[] = ['SHA1', 'SHA256', 'SHA512', 'SM3'];

export interface TokenSpec {
  /** Position of the token in the file, as in TokenProblem.index. */
  index: number;
  /** Normalised serial number: the key tokens are found and bound by. */
  serial: string;
  manufacturer: string;
  model: string;
  kind: TokenKind;
  algorithm: TokenAlgorithm;
  digits: number;
  /** HOTP: the next counter value the token will use (0 for a new token). */
  counter: number;
  /** TOTP: the time step Tc. 0 for event tokens. */
  periodSeconds: number;
  /** TOTP: the token clock's known offset in time steps (negative: the token is slow). */
  driftSteps: number;
  /** GM/T 0021 challenge-response tokens: the length of the challenge typed on the keypad; null otherwise. */
  challengeLength: number | null;
  /** Key validity (PSKC StartDate / ExpiryDate); null when the file sets none. */
  validFrom: Date | null;
  validUntil: Date | null;
  seed: Buffer;
}

/** Stable reasons a single token of a file is refused. */
export type TokenProblemCode =
  | 'missing_serial'
  | 'invalid_serial'
  | 'duplicate_serial'
  | 'unsupported_algorithm'
  | 'invalid_parameter'
  | 'missing_secret'
  | 'weak_secret'
  | 'expired'
  | 'unsupported_policy'
  | 'several_keys';

export interface TokenProblem {
  /** Position of the token in the file (0-based KeyPackage, or CSV data row). */
  index: number;
  /** The serial as written in the file, when there is one. */
  serial: string | null;
  code: TokenProblemCode;
  reason: string;
}

/** Digits GM/T 0021 and RFC 4226 tokens display (the 6–8). */
export const MIN_DIGITS = 6;
export const MAX_DIGITS = 8;
/** RFC 4226 §4 R6: at least 128 bits; GM/T 0021 also asks for ≥ 128-bit seeds. */
export const MIN_SEED_BYTES = 16;
export const MAX_SEED_BYTES = 128;
/** GM/T 0021 limits Tc to 60 s; TOTP tokens use 30 or 60. Anything longer is a typo. */
export const MAX_PERIOD_SECONDS = 300;
export const MAX_DRIFT_STEPS = 10_000;
/** SM3 event tokens carry C in 4 bytes. */
export const MAX_SM3_COUNTER = 0xffff_ffff;
/** GM/T 0021 asks for a challenge of at least 4 characters; keypads take up to 10 digits. */
export const MIN_CHALLENGE_LENGTH = 4;
export const MAX_CHALLENGE_LENGTH = 10;

/**
 * Serials are typed by people from the back of a token: trimmed, inner spaces removed,
 * upper-cased. Letters, digits, `-`, `_` and `.` only (it is part of URLs), at most 64 characters.
 */
export function normaliseSerial(raw: string): string | undefined {
  const s = raw.trim().replace(/\s+/g, '').toUpperCase();
  return /^[A-Z0-9][A-Z0-9._-]{0,63}$/.test(s) ? s : undefined;
}

/**
 * Whether a serial field holds what is far more likely a seed: 128 bits or more written as
 * hex or base32, or base64-like mixed case. A file whose columns (CSV) or elements are
 * mixed up would otherwise import the seed as the serial — the one field that is shown,
 * searched, put in URLs, logs and the audit log. Real serials are short (10–16
 * characters) and do not look like this; a file that has one is refused, not guessed at.
 */
export function looksLikeSeed(raw: string): boolean {
  const s = raw.trim().replace(/[\s-]/g, '');
  if (/^[0-9a-fA-F]{32,}$/.test(s)) return true;
  if (/^[A-Za-z2-7]{26,}$/.test(s) && /[2-7]/.test(s) && /[A-Za-z]/.test(s)) return true;
  return /^[A-Za-z0-9+/]{22,}={0,2}$/.test(s) && /[a-z]/.test(s) && /[A-Z]/.test(s) && /[0-9]/.test(s);
}

/**
 * A file's serial as a problem report may repeat it: only a valid serial that does not look
 * like a seed. Anything else (a misplaced seed, a broken field) is never echoed: the report
 * names where it is instead.
 */
export function reportableSerial(raw: string | null | undefined): string | null {
  if (raw === null || raw === undefined) return null;
  return normaliseSerial(raw) !== undefined && !looksLikeSeed(raw) ? raw.trim() : null;
}

/** Checks the parameters every reader shares; returns the first problem or undefined. */
export function checkTokenParameters(spec: Omit<TokenSpec, 'seed' | 'serial' | 'index'> & { seedLength: number }, now: Date): { code: TokenProblemCode; reason: string } | undefined {
  if (!Number.isInteger(spec.digits) || spec.digits < MIN_DIGITS || spec.digits > MAX_DIGITS) {
    return { code: 'invalid_parameter', reason: `digits must be ${MIN_DIGITS}..${MAX_DIGITS}, not ${spec.digits}` };
  }
  if (spec.seedLength < MIN_SEED_BYTES) return { code: 'weak_secret', reason: `the seed has ${spec.seedLength * 8} bits; at least ${MIN_SEED_BYTES * 8} are required` };
  if (spec.seedLength > MAX_SEED_BYTES) return { code: 'invalid_parameter', reason: `the seed is longer than ${MAX_SEED_BYTES} bytes` };
  if (spec.kind === 'hotp') {
    const max = spec.algorithm === 'SM3' ? MAX_SM3_COUNTER : Number.MAX_SAFE_INTEGER;
    if (!Number.isSafeInteger(spec.counter) || spec.counter < 0 || spec.counter > max) return { code: 'invalid_parameter', reason: `counter must be an integer 0..${max}` };
  } else {
    if (!Number.isInteger(spec.periodSeconds) || spec.periodSeconds < 1 || spec.periodSeconds > MAX_PERIOD_SECONDS) {
      return { code: 'invalid_parameter', reason: `time step must be 1..${MAX_PERIOD_SECONDS} seconds` };
    }
    if (!Number.isInteger(spec.driftSteps) || Math.abs(spec.driftSteps) > MAX_DRIFT_STEPS) return { code: 'invalid_parameter', reason: `time drift must be an integer within ±${MAX_DRIFT_STEPS} steps` };
  }
  if (spec.challengeLength !== null) {
    if (spec.algorithm !== 'SM3') return { code: 'unsupported_algorithm', reason: 'challenge-response is supported for GM/T 0021 SM3 tokens only (OCRA is not)' };
    if (!Number.isInteger(spec.challengeLength) || spec.challengeLength < MIN_CHALLENGE_LENGTH || spec.challengeLength > MAX_CHALLENGE_LENGTH) {
      return { code: 'invalid_parameter', reason: `challenge length must be ${MIN_CHALLENGE_LENGTH}..${MAX_CHALLENGE_LENGTH} digits` };
    }
  }
  if (spec.validFrom !== null && spec.validUntil !== null && spec.validUntil <= spec.validFrom) {
    return { code: 'invalid_parameter', reason: 'the key expires before it becomes valid' };
  }
  if (spec.validUntil !== null && spec.validUntil <= now) return { code: 'expired', reason: `the key expired at ${spec.validUntil.toISOString()}` };
  return undefined;
}
