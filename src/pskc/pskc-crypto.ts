import { createDecipheriv, createHmac, pbkdf2Sync, timingSafeEqual } from 'node:crypto';

/**
 * The cryptography of RFC 6030 §6: pre-shared-key and PBKDF2 encryption of PSKC values,
 * and the HMAC `ValueMAC` over each encrypted value. Every failure is one `DecryptFailed`,
 * whatever went wrong (wrong key, wrong password, bad padding, bad MAC), so no caller can
 * tell a wrong key from a tampered file.
 */
export class DecryptFailed extends Error {
  constructor() {
    super('decryption failed');
    this.name = 'DecryptFailed';
  }
}

/** A value's cipher, from its `xenc:EncryptionMethod/@Algorithm` (xmlenc URIs; the fragment decides). */
export type CipherName = 'aes128-cbc' | 'aes192-cbc' | 'aes256-cbc' | 'kw-aes128' | 'kw-aes192' | 'kw-aes256';

export const KEY_LENGTH: Record<CipherName, number> = {
  'aes128-cbc': 16,
  'aes192-cbc': 24,
  'aes256-cbc': 32,
  'kw-aes128': 16,
  'kw-aes192': 24,
  'kw-aes256': 32,
};

const CIPHER_ALIASES: Record<string, CipherName> = {
  'aes128-cbc': 'aes128-cbc',
  'aes192-cbc': 'aes192-cbc',
  'aes256-cbc': 'aes256-cbc',
  'kw-aes128': 'kw-aes128',
  'kw-aes192': 'kw-aes192',
  'kw-aes256': 'kw-aes256',
  // XML Encryption 1.1 names for RFC 5649 (padded) key wrap.
  'kw-aes-128-pad': 'kw-aes128',
  'kw-aes-192-pad': 'kw-aes192',
  'kw-aes-256-pad': 'kw-aes256',
  'kw-aes128-pad': 'kw-aes128',
  'kw-aes192-pad': 'kw-aes192',
  'kw-aes256-pad': 'kw-aes256',
};

/** `http://www.w3.org/2001/04/xmlenc#aes128-cbc` → `aes128-cbc`; undefined when unsupported. */
export function cipherOf(uri: string | undefined): CipherName | undefined {
  if (uri === undefined) return undefined;
  const fragment = uri.slice(uri.lastIndexOf('#') + 1).toLowerCase();
  return CIPHER_ALIASES[fragment];
}

export type MacName = 'sha1' | 'sha224' | 'sha256' | 'sha384' | 'sha512';

/** `http://www.w3.org/2000/09/xmldsig#hmac-sha1` → `sha1`. */
export function macOf(uri: string | undefined): MacName | undefined {
  if (uri === undefined) return undefined;
  const m = /(?:^|#)hmac-sha-?(1|224|256|384|512)$/i.exec(uri.trim());
  return m === null ? undefined : (`sha${m[1]}` as MacName);
}

function cbcDecrypt(cipher: 'aes128-cbc' | 'aes192-cbc' | 'aes256-cbc', key: Buffer, value: Buffer): Buffer {
  // RFC 6030 §6.1: the IV is prepended to the ciphertext.
  if (value.length < 32 || value.length % 16 !== 0) throw new DecryptFailed();
  const decipher = createDecipheriv(cipher === 'aes128-cbc' ? 'aes-128-cbc' : cipher === 'aes192-cbc' ? 'aes-192-cbc' : 'aes-256-cbc', key, value.subarray(0, 16));
  try {
    return Buffer.concat([decipher.update(value.subarray(16)), decipher.final()]);
  } catch {
    throw new DecryptFailed();
  }
}

function unwrapWith(algorithm: string, key: Buffer, iv: Buffer, value: Buffer): Buffer | undefined {
  try {
    const decipher = createDecipheriv(algorithm, key, iv);
    return Buffer.concat([decipher.update(value), decipher.final()]);
  } catch {
    return undefined;
  }
}

/**
 * RFC 3394 key unwrap, or RFC 5649 when the value was padded (writers such as python-pskc
 * switch to 5649 for seeds that are not a multiple of 8 bytes). Both carry their own
 * integrity check, which is what fails for a wrong key.
 */
function keyUnwrap(cipher: 'kw-aes128' | 'kw-aes192' | 'kw-aes256', key: Buffer, value: Buffer): Buffer {
  if (value.length < 16 || value.length % 8 !== 0) throw new DecryptFailed();
  const bits = cipher.slice(-3);
  const plain =
    (value.length >= 24 ? unwrapWith(`id-aes${bits}-wrap`, key, Buffer.from('A6A6A6A6A6A6A6A6', 'hex'), value) : undefined) ??
    unwrapWith(`id-aes${bits}-wrap-pad`, key, Buffer.from('A65959A6', 'hex'), value);
  if (plain === undefined) throw new DecryptFailed();
  return plain;
}

export function decryptValue(cipher: CipherName, key: Buffer, value: Buffer): Buffer {
  if (key.length !== KEY_LENGTH[cipher]) throw new DecryptFailed();
  switch (cipher) {
    case 'aes128-cbc':
    case 'aes192-cbc':
    case 'aes256-cbc':
      return cbcDecrypt(cipher, key, value);
    default:
      return keyUnwrap(cipher, key, value);
  }
}

/**
 * RFC 6030 §6.1.1: ValueMAC = HMAC(MACKey, IV ‖ ciphertext), i.e. over the CipherValue as
 * stored. Compared in constant time; checked BEFORE the value is decrypted.
 */
export function checkValueMac(mac: MacName, macKey: Buffer, cipherValue: Buffer, valueMac: Buffer): void {
  const expected = createHmac(mac, macKey).update(cipherValue).digest();
  if (expected.length !== valueMac.length || !timingSafeEqual(expected, valueMac)) throw new DecryptFailed();
}

export type PrfName = 'sha1' | 'sha224' | 'sha256' | 'sha384' | 'sha512';

export interface Pbkdf2Params {
  salt: Buffer;
  iterations: number;
  keyLength: number;
  prf: PrfName;
}

/**
 * RFC 8018 PBKDF2 (RFC 6030 §6.2) over the password's UTF-8 bytes as typed (no normalisation:
 * the vendor's tool does none either). Iterations are bounded by the caller.
 */
export function pbkdf2Key(password: string, params: Pbkdf2Params): Buffer {
  return pbkdf2Sync(Buffer.from(password, 'utf8'), params.salt, params.iterations, params.keyLength, params.prf);
}
