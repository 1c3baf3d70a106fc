import { createHmac, type KeyObject } from 'node:crypto';

/**
 * HOTP (RFC 4226) and TOTP (RFC 6238): pure functions, no I/O, no clock. Keys are
 * KeyObjects (createSecretKey): on Node 24 an HMAC keyed with a raw Buffer is several times
 * slower, and a KeyObject keeps the seed out of ordinary heap strings.
 */

export type OtpAlgorithm = 'SHA1' | 'SHA256' | 'SHA512';

export const OTP_ALGORITHMS: readonly OtpAlgorithm[] = ['SHA1', 'SHA256', 'SHA512'];

const NODE_NAME: Record<OtpAlgorithm, string> = { SHA1: 'sha1', SHA256: 'sha256', SHA512: 'sha512' };

function assertDigits(digits: number): void {
  if (!Number.isInteger(digits) || digits < 6 || digits > 10) throw new TypeError(`digits must be an integer 6..10, got ${digits}`);
}

function counterBytes(counter: number | bigint): Buffer {
  const c = BigInt(counter);
  if (c < 0n || c > 0xffff_ffff_ffff_ffffn) throw new TypeError('counter out of range');
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(c);
  return b;
}

/** RFC 4226 §5.3: HMAC, dynamic truncation, modulo 10^digits, zero-padded. */
export function hotp(key: KeyObject, counter: number | bigint, digits = 6, algorithm: OtpAlgorithm = 'SHA1'): string {
  assertDigits(digits);
  const mac = createHmac(NODE_NAME[algorithm], key).update(counterBytes(counter)).digest();
  const offset = mac[mac.length - 1]! & 0x0f;
  const binary = mac.readUInt32BE(offset) & 0x7fff_ffff;
  return (binary % 10 ** digits).toString().padStart(digits, '0');
}

/** RFC 6238 §4: the time step T = floor((unixSeconds - t0) / period). */
export function timeStep(at: Date, periodSeconds: number, t0Seconds = 0): number {
  if (!Number.isInteger(periodSeconds) || periodSeconds <= 0) throw new TypeError('periodSeconds must be a positive integer');
  return Math.floor((Math.floor(at.getTime() / 1000) - t0Seconds) / periodSeconds);
}

export function totp(key: KeyObject, at: Date, periodSeconds = 30, digits = 6, algorithm: OtpAlgorithm = 'SHA1'): string {
  return hotp(key, timeStep(at, periodSeconds), digits, algorithm);
}

/**
 * Finds the counter/step in [from, to] whose code equals `code`. Every candidate is
 * computed and compared in full (no early exit), so the time taken does not say where in
 * the window a match was, or whether there was one. Returns the lowest match.
 */
export function findOtp(code: string, from: number, to: number, generate: (counter: number) => string): number | undefined {
  let found: number | undefined;
  const given = Buffer.from(code, 'utf8');
  for (let c = from; c <= to; c += 1) {
    if (c < 0) continue;
    const expected = Buffer.from(generate(c), 'utf8');
    // Lengths are public (the configured digit count); equal-length compare is constant-time.
    const equal = expected.length === given.length && timingSafeEqualBuffers(expected, given);
    if (equal && found === undefined) found = c;
  }
  return found;
}

function timingSafeEqualBuffers(a: Buffer, b: Buffer): boolean {
  let diff = 0;
  for (let i = 0; i < a.length; i += 1) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}
