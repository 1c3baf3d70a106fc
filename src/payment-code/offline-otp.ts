import { createHmac, createSecretKey, type KeyObject, timingSafeEqual } from 'node:crypto';
import { OFFLINE_OTP_DIGITS, offlineCodeDigits, SLOT_DIGITS } from './code-format.ts';

/**
 * Offline payment codes (way 2), pure functions: no I/O, no clock of their own.
 *
 * The device holds a seed string `pcs1:<prefix>:<slot>:<periodSeconds>:<BASE32 SEED>`.
 * Its code at time t is
 *
 *   prefix ‖ "2" ‖ slot ‖ TOTP(seed, t)
 *
 * where TOTP is RFC 6238 with HMAC-SHA-256, 8 digits, time step `periodSeconds`, T0 = 0:
 * counter = floor(t / period) as 8 bytes big-endian, HMAC-SHA-256(seed, counter), dynamic
 * truncation (RFC 4226 §5.3) to 31 bits, mod 10^8, zero-padded. Plain RFC 6238, so any
 * TOTP implementation makes the same codes (`oathtool --totp=sha256 --digits=8 -s 30`).
 */
export const SEED_STRING_VERSION = 'pcs1';
export const SEED_BYTES = 32;

export interface DeviceSeed {
  prefix: string;
  slot: string;
  periodSeconds: number;
  /** The raw 32-byte seed. */
  seed: Buffer;
}

// ---- base32 (RFC 4648, upper case, no padding) -------------------------------------------

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

export function base32Encode(bytes: Buffer): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += ALPHABET[(value << (5 - bits)) & 31];
  return out;
}

export function base32Decode(text: string): Buffer | undefined {
  const clean = text.toUpperCase().replace(/=+$/, '');
  const out: number[] = [];
  let bits = 0;
  let value = 0;
  for (const ch of clean) {
    const v = ALPHABET.indexOf(ch);
    if (v < 0) return undefined;
    value = ((value << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

// ---- the seed string ------------------------------------------------------------------

export function formatDeviceSeed(seed: DeviceSeed): string {
  return [SEED_STRING_VERSION, seed.prefix, seed.slot, String(seed.periodSeconds), base32Encode(seed.seed)].join(':');
}

/** Parses a seed string; undefined when it is not one. */
export function parseDeviceSeed(text: string): DeviceSeed | undefined {
  const parts = text.trim().split(':');
  if (parts.length !== 5 || parts[0] !== SEED_STRING_VERSION) return undefined;
  const [, prefix = '', slot = '', period = '', secret = ''] = parts;
  if (!/^[1-9][0-9]$/.test(prefix) || !new RegExp(`^\\d{${SLOT_DIGITS}}$`).test(slot) || !/^\d{2,3}$/.test(period)) return undefined;
  const periodSeconds = Number(period);
  if (periodSeconds < 10 || periodSeconds > 300) return undefined;
  const seed = base32Decode(secret);
  if (seed === undefined || seed.length !== SEED_BYTES) return undefined;
  return { prefix, slot, periodSeconds, seed };
}

// ---- TOTP -------------------------------------------------------------------------------

export function timeStep(at: Date, periodSeconds: number): number {
  return Math.floor(at.getTime() / 1000 / periodSeconds);
}

/** RFC 4226 HOTP over a counter with HMAC-SHA-256, `OFFLINE_OTP_DIGITS` digits. */
export function otpAt(key: KeyObject, step: number): string {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha256', key).update(counter).digest();
  const offset = (mac[mac.length - 1] as number) & 0x0f;
  const binary = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(binary % 10 ** OFFLINE_OTP_DIGITS).padStart(OFFLINE_OTP_DIGITS, '0');
}

export function seedKey(seed: Buffer): KeyObject {
  return createSecretKey(seed);
}

/** The device's 18-digit code at `at` (the reference generator; the browser script does the same). */
export function offlineCode(device: DeviceSeed, at: Date): string {
  return offlineCodeDigits(device.prefix, device.slot, otpAt(seedKey(device.seed), timeStep(at, device.periodSeconds)));
}

/**
 * The time step whose OTP equals `otp`, searched in [now−1, now, now+1]; undefined when none.
 * All three candidates are computed and compared in constant time, whatever matches first.
 */
export function matchOfflineOtp(key: KeyObject, otp: string, at: Date, periodSeconds: number): number | undefined {
  if (!new RegExp(`^\\d{${OFFLINE_OTP_DIGITS}}$`).test(otp)) return undefined;
  const presented = Buffer.from(otp, 'ascii');
  const now = timeStep(at, periodSeconds);
  let matched: number | undefined;
  for (const step of [now - 1, now, now + 1]) {
    const equal = timingSafeEqual(Buffer.from(otpAt(key, step), 'ascii'), presented);
    if (equal && matched === undefined) matched = step;
  }
  return matched;
}
