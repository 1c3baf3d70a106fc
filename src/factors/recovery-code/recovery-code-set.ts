import { createHmac, createSecretKey, randomBytes, randomInt, timingSafeEqual } from 'node:crypto';

/**
 * A set of single-use recovery codes as stored in `factors.secret_hash`:
 * `rc1.<salt>.<hash 1>.….<hash n>` (base64url), a used code's slot left empty.
 *
 * Each code is 16 characters of Crockford base32 (80 bits from the CSPRNG), so a salted
 * HMAC-SHA-256 is enough: even at 10^10 guesses per second an offline search of one stolen
 * set takes ~10^5 years, while argon2 per code would cost ~10 × 20 ms of memory-hard work on
 * every attempt for no gain (slow hashes protect low-entropy secrets like passwords). The
 * random per-set salt keys the HMAC, so equal codes in two sets hash differently and no
 * precomputation helps.
 */

/** Crockford base32 without the look-alikes i, l, o, u (read back leniently: i/l → 1, o → 0). */
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';
export const RECOVERY_CODE_LENGTH = 16;
const VERSION = 'rc1';
const SALT_BYTES = 32;
const HASH_PREFIX = 'stepgate recovery code\u0000';

export interface RecoveryCodeSet {
  /** Shown to the user once, grouped `xxxx-xxxx-xxxx-xxxx`. */
  codes: string[];
  /** The stored form (secret_hash). */
  stored: string;
}

function hashCode(salt: Buffer, code: string): Buffer {
  return createHmac('sha256', createSecretKey(salt)).update(HASH_PREFIX + code, 'utf8').digest();
}

function group(code: string): string {
  return code.match(/.{4}/g)!.join('-');
}

export function generateRecoveryCodes(count: number): RecoveryCodeSet {
  if (!Number.isInteger(count) || count < 1 || count > 100) throw new TypeError('recovery code count must be 1..100');
  const salt = randomBytes(SALT_BYTES);
  const codes = new Set<string>();
  while (codes.size < count) {
    let code = '';
    for (let i = 0; i < RECOVERY_CODE_LENGTH; i += 1) code += ALPHABET[randomInt(ALPHABET.length)];
    codes.add(code);
  }
  const list = [...codes];
  const stored = [VERSION, salt.toString('base64url'), ...list.map((c) => hashCode(salt, c).toString('base64url'))].join('.');
  return { codes: list.map(group), stored };
}

/** What people type: any case, full-width forms (a Chinese IME), spaces and hyphens anywhere, i/l for 1 and o for 0. */
export function normaliseRecoveryCode(input: unknown): string | undefined {
  if (typeof input !== 'string' || input.length > 64) return undefined;
  const code = input.normalize('NFKC').toLowerCase().replace(/[\s-]/g, '').replace(/[il]/g, '1').replace(/o/g, '0');
  if (code.length !== RECOVERY_CODE_LENGTH) return undefined;
  for (const ch of code) if (!ALPHABET.includes(ch)) return undefined;
  return code;
}

interface ParsedSet {
  salt: Buffer;
  /** null: used. */
  hashes: (Buffer | null)[];
}

function parseSet(stored: string): ParsedSet | undefined {
  const [version, salt, ...hashes] = stored.split('.');
  if (version !== VERSION || salt === undefined || hashes.length === 0) return undefined;
  const saltBytes = Buffer.from(salt, 'base64url');
  if (saltBytes.length !== SALT_BYTES) return undefined;
  const parsed = hashes.map((h) => (h === '' ? null : Buffer.from(h, 'base64url')));
  if (parsed.some((h) => h !== null && h.length !== 32)) return undefined;
  return { salt: saltBytes, hashes: parsed };
}

export function remainingCodes(stored: string): number {
  return parseSet(stored)?.hashes.filter((h) => h !== null).length ?? 0;
}

export type RecoveryMatch = { ok: true; stored: string; remaining: number } | { ok: false };

/**
 * Looks the code up in the set; on a match returns the set with that code's slot emptied
 * (the flow writes it with a guarded update, so a code is used once). Every slot is compared
 * in constant time, used ones against a dummy, so the timing does not say which matched.
 */
export function useRecoveryCode(stored: string, input: unknown): RecoveryMatch {
  const set = parseSet(stored);
  if (set === undefined) throw new TypeError('unreadable recovery code set');
  const code = normaliseRecoveryCode(input);
  const given = hashCode(set.salt, code ?? '');
  const dummy = Buffer.alloc(32);
  let found = -1;
  set.hashes.forEach((h, i) => {
    const equal = timingSafeEqual(h ?? dummy, given);
    if (equal && h !== null && found === -1) found = i;
  });
  if (code === undefined || found === -1) return { ok: false };
  const hashes = set.hashes.map((h, i) => (i === found || h === null ? '' : h.toString('base64url')));
  return { ok: true, stored: [VERSION, set.salt.toString('base64url'), ...hashes].join('.'), remaining: hashes.filter((h) => h !== '').length };
}
