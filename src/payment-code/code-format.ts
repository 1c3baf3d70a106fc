import { randomInt } from 'node:crypto';

/**
 * The 18-digit payment code (docs/payment-codes.md "Code layout"):
 *
 *   online  (way 1):  PP 1 RRRRRRRRRRRRRRR      prefix, kind 1, 15 random digits (CSPRNG)
 *   offline (way 2):  PP 2 SSSSSSS OOOOOOOO     prefix, kind 2, device slot, 8-digit TOTP
 *
 * 18 digits because cheap Code 128 scanners read them and acquirers route on the prefix;
 * the kind digit keeps the two spaces apart, so a random online code can never be mistaken
 * for an offline code of some device (and charge the wrong payer).
 */
export const CODE_LENGTH = 18;
export const SLOT_DIGITS = 7;
export const OFFLINE_OTP_DIGITS = 8;
export const KIND_ONLINE = '1';
export const KIND_OFFLINE = '2';

export type ParsedCode = { kind: 'online'; digits: string } | { kind: 'offline'; digits: string; slot: string; otp: string };

function digits(count: number): string {
  // randomInt is uniform (rejection sampling) but limited to ranges below 2^48: draw in pieces.
  let out = '';
  while (out.length < count) {
    const n = Math.min(8, count - out.length);
    out += String(randomInt(0, 10 ** n)).padStart(n, '0');
  }
  return out;
}

export function newOnlineCode(prefix: string): string {
  return `${prefix}${KIND_ONLINE}${digits(CODE_LENGTH - 3)}`;
}

export function newDeviceSlot(): string {
  return digits(SLOT_DIGITS);
}

export function offlineCodeDigits(prefix: string, slot: string, otp: string): string {
  return `${prefix}${KIND_OFFLINE}${slot}${otp}`;
}

/** Strips the blanks people type when they copy a grouped code; everything else must be digits. */
export function normaliseCode(text: string): string {
  return text.replaceAll(' ', '');
}

/** The code's parts, or undefined when it is not one of ours (wrong length, prefix or kind). */
export function parseCode(text: string, prefix: string): ParsedCode | undefined {
  const code = normaliseCode(text);
  if (!/^\d{18}$/.test(code) || !code.startsWith(prefix)) return undefined;
  const kind = code[2];
  if (kind === KIND_ONLINE) return { kind: 'online', digits: code };
  if (kind === KIND_OFFLINE) return { kind: 'offline', digits: code, slot: code.slice(3, 3 + SLOT_DIGITS), otp: code.slice(3 + SLOT_DIGITS) };
  return undefined;
}

/** `18 1234 5678 9012 3456`-style grouping for people (never for machines). */
export function groupCode(code: string): string {
  return `${code.slice(0, 2)} ${code.slice(2).replace(/(\d{4})(?=\d)/g, '$1 ')}`;
}
