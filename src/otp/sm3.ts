import { createHash, type Hash, type KeyObject } from 'node:crypto';

/**
 * GM/T 0021-2012 (GB/T 38556-2020) one-time passwords, SM3 variant (DESIGN.md §2). Pure,
 * no I/O, no clock.
 *
 *   ID = T (8 bytes BE) ‖ C (4 bytes BE) ‖ Q (ASCII), each only when the mode uses it,
 *        zero-padded on the right to at least 16 bytes
 *   S  = SM3(K ‖ ID)                      a plain hash, not an HMAC
 *   OD = Σ of the eight 32-bit BE words of S, mod 2^32
 *   P  = OD mod 10^N, zero-padded to N digits
 *
 * A token runs in one mode: time-based (T), event-based (C) or challenge-response (Q,
 * usually together with T). The factors a mode does not use take no part in ID.
 */

/** The moving factors of one computation; at least one must be present. */
export interface Sm3Factors {
  /** T: the time factor, floor(unix seconds / Tc) — see sm3TimeFactor. */
  time?: number | bigint;
  /** C: the event counter, 0..2^32-1. */
  counter?: number;
  /** Q: the challenge, ASCII (GM/T 0021 asks for at least 4 characters). */
  challenge?: string;
}

function assertDigits(digits: number): void {
  if (!Number.isInteger(digits) || digits < 6 || digits > 8) throw new TypeError(`SM3 OTP digits must be an integer 6..8, got ${digits}`);
}

/** ID = T ‖ C ‖ Q, zero-padded to at least 128 bits. */
export function sm3Id(factors: Sm3Factors): Buffer {
  const parts: Buffer[] = [];
  if (factors.time !== undefined) {
    const t = BigInt(factors.time);
    if (t < 0n || t > 0xffff_ffff_ffff_ffffn) throw new TypeError('SM3 time factor out of range');
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(t);
    parts.push(b);
  }
  if (factors.counter !== undefined) {
    if (!Number.isInteger(factors.counter) || factors.counter < 0 || factors.counter > 0xffff_ffff) throw new TypeError('SM3 event counter must be an integer 0..2^32-1');
    const b = Buffer.alloc(4);
    b.writeUInt32BE(factors.counter);
    parts.push(b);
  }
  if (factors.challenge !== undefined) {
    // The challenge is typed on the token's keypad: printable ASCII only.
    if (!/^[\x20-\x7e]+$/.test(factors.challenge)) throw new TypeError('SM3 challenge must be non-empty printable ASCII');
    parts.push(Buffer.from(factors.challenge, 'ascii'));
  }
  if (parts.length === 0) throw new TypeError('SM3 OTP needs at least one of time, counter, challenge');
  const id = Buffer.concat(parts);
  return id.length >= 16 ? id : Buffer.concat([id, Buffer.alloc(16 - id.length)]);
}

/** OD: the eight 32-bit big-endian words of S summed mod 2^32, then P = OD mod 10^digits. */
function truncate(s: Buffer, digits: number): string {
  let od = 0;
  for (let i = 0; i < 32; i += 4) od = (od + s.readUInt32BE(i)) >>> 0;
  return (od % 10 ** digits).toString().padStart(digits, '0');
}

/**
 * An SM3 hash state that has absorbed K. SM3 OTP is a plain hash of K ‖ ID, not an HMAC, so
 * the seed must leave its KeyObject; the exported copy is wiped at once, as every other
 * unsealed seed is (src/factors/totp/totp-factor.ts openTotpSecret).
 */
function keyedSm3(key: KeyObject): Hash {
  const raw = key.export();
  try {
    return createHash('sm3').update(raw);
  } finally {
    raw.fill(0);
  }
}

/** One SM3 OTP. The key is a KeyObject like every other OTP seed (see hotp.ts). */
export function sm3Otp(key: KeyObject, factors: Sm3Factors, digits = 6): string {
  assertDigits(digits);
  return truncate(keyedSm3(key).update(sm3Id(factors)).digest(), digits);
}

/**
 * A generator for a search window (findOtp): hashes K once and copies the hash state for
 * each candidate, so the seed is exported once per verification, not once per candidate.
 * `factorsFor(n)` maps a candidate (time step or counter) to the moving factors.
 */
export function sm3Generator(key: KeyObject, digits: number, factorsFor: (candidate: number) => Sm3Factors): (candidate: number) => string {
  assertDigits(digits);
  const keyed = keyedSm3(key);
  return (candidate) => truncate(keyed.copy().update(sm3Id(factorsFor(candidate))).digest(), digits);
}

/** T = floor((unix seconds − T0) / Tc). GM/T 0021 allows Tc up to 60 s; the standard's samples use Tc = 1. */
export function sm3TimeFactor(at: Date, periodSeconds: number, t0Seconds = 0): number {
  if (!Number.isInteger(periodSeconds) || periodSeconds <= 0) throw new TypeError('periodSeconds must be a positive integer');
  return Math.floor((Math.floor(at.getTime() / 1000) - t0Seconds) / periodSeconds);
}
