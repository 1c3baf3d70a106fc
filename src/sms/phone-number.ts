import { type CountryCode, isSupportedCountry, parsePhoneNumberFromString } from 'libphonenumber-js/max';

/**
 * Phone numbers for SMS codes: parsed and validated with libphonenumber's full ("max")
 * metadata, which knows each region's number ranges and their types. Only numbers that can
 * receive SMS are accepted: MOBILE, and FIXED_LINE_OR_MOBILE for the regions (US, CA…)
 * whose plans do not tell the two apart. Extensions, premium-rate, toll-free, VoIP-only and
 * shared-cost numbers are refused.
 */
export interface MobileNumber {
  /** Canonical E.164, e.g. +8613800138000: the one form we store, compare and send to. */
  e164: string;
  /** ISO 3166-1 alpha-2 region libphonenumber assigns (CN, HK, US…). */
  region: string;
  /** Country calling code without "+", e.g. "86". */
  callingCode: string;
}

/** Why a number was refused: `format` (not a number / not valid), `not_mobile` (valid, but cannot take SMS). */
export type PhoneProblem = 'format' | 'not_mobile';

const MAX_INPUT = 32;
const SMS_TYPES = new Set(['MOBILE', 'FIXED_LINE_OR_MOBILE']);

/**
 * Parses what a user typed: E.164 with optional spaces, dashes, dots and parentheses, or a
 * national number of `defaultRegion` (empty: a leading "+" is required). Nothing is
 * extracted from surrounding text.
 */
export function parseMobileNumber(input: string, defaultRegion: string): MobileNumber | PhoneProblem {
  const text = input.trim();
  if (text === '' || text.length > MAX_INPUT || !/^\+?[0-9 ().-]+$/.test(text)) return 'format';
  if (!text.startsWith('+') && (defaultRegion === '' || !isSupportedCountry(defaultRegion))) return 'format';
  const parsed = parsePhoneNumberFromString(text, text.startsWith('+') ? { extract: false } : { defaultCountry: defaultRegion as CountryCode, extract: false });
  if (parsed === undefined || parsed.ext !== undefined || !parsed.isValid() || parsed.country === undefined) return 'format';
  const type = parsed.getType();
  if (type === undefined || !SMS_TYPES.has(type)) return 'not_mobile';
  return { e164: parsed.number, region: parsed.country, callingCode: parsed.countryCallingCode };
}

/**
 * For pages, listings and the audit log: +86 138****8000. At least half the national
 * number stays hidden: the first 3 digits are shown only for numbers of 11 digits or more.
 */
export function maskPhoneNumber(e164: string): string {
  const parsed = parsePhoneNumberFromString(e164, { extract: false });
  if (parsed === undefined) return '****';
  const national = parsed.nationalNumber;
  const head = national.length >= 11 ? national.slice(0, 3) : '';
  const tail = national.slice(-Math.min(4, Math.floor(national.length / 2)));
  return `+${parsed.countryCallingCode} ${head}${'*'.repeat(national.length - head.length - tail.length)}${tail}`;
}
