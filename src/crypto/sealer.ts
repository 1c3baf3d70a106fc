import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, type KeyObject, createSecretKey } from 'node:crypto';

/**
 * Sealing of secrets at rest with AES-256-GCM. A sealed value is
 * `v1.<keyId>.<iv>.<ciphertext>.<tag>` (base64url parts). The key id lets the master key be
 * rotated: values sealed under an old key stay readable while `keys rotate-master` re-seals
 * them. The associated data binds a value to where it is stored (e.g. `factors.secret_sealed:<id>`),
 * so a sealed seed copied into another row does not unseal.
 */
export class SealError extends Error {
  readonly code = 'seal_failed';
  constructor(message: string) {
    super(message);
    this.name = 'SealError';
  }
}

export interface MasterKey {
  id: string;
  key: KeyObject;
}

/** The key id is a short fingerprint of the key, so it needs no separate bookkeeping. */
export function masterKeyFromBytes(bytes: Buffer): MasterKey {
  if (bytes.length !== 32) throw new TypeError('master key must be 32 bytes');
  const id = createHash('sha256').update('stepgate-master-key-id').update(bytes).digest('base64url').slice(0, 12);
  return { id, key: createSecretKey(bytes) };
}

export class Sealer {
  readonly #current: MasterKey;
  readonly #byId: Map<string, MasterKey>;

  /** `current` seals; `current` and `previous` unseal. */
  constructor(current: MasterKey, previous: MasterKey[] = []) {
    this.#current = current;
    this.#byId = new Map([current, ...previous].map((k) => [k.id, k]));
  }

  get currentKeyId(): string {
    return this.#current.id;
  }

  seal(plaintext: Buffer | string, aad: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.#current.key, iv);
    cipher.setAAD(Buffer.from(aad, 'utf8'));
    const ct = Buffer.concat([cipher.update(typeof plaintext === 'string' ? Buffer.from(plaintext, 'utf8') : plaintext), cipher.final()]);
    const tag = cipher.getAuthTag();
    return ['v1', this.#current.id, iv.toString('base64url'), ct.toString('base64url'), tag.toString('base64url')].join('.');
  }

  unseal(sealed: string, aad: string): Buffer {
    const parts = sealed.split('.');
    if (parts.length !== 5 || parts[0] !== 'v1') throw new SealError('not a sealed value');
    const [, keyId, ivB64, ctB64, tagB64] = parts as [string, string, string, string, string];
    const key = this.#byId.get(keyId);
    if (key === undefined) throw new SealError(`sealed under unknown master key ${keyId}`);
    const iv = Buffer.from(ivB64, 'base64url');
    const tag = Buffer.from(tagB64, 'base64url');
    if (iv.length !== 12 || tag.length !== 16) throw new SealError('malformed sealed value');
    const decipher = createDecipheriv('aes-256-gcm', key.key, iv);
    decipher.setAAD(Buffer.from(aad, 'utf8'));
    decipher.setAuthTag(tag);
    try {
      return Buffer.concat([decipher.update(Buffer.from(ctB64, 'base64url')), decipher.final()]);
    } catch {
      throw new SealError('sealed value failed authentication');
    }
  }

  /** Key id a sealed value was made with (for rotation). */
  static keyIdOf(sealed: string): string | undefined {
    const parts = sealed.split('.');
    return parts.length === 5 && parts[0] === 'v1' ? parts[1] : undefined;
  }

  /**
   * A purpose-bound subkey derived from the master key (HMAC keys for SMS codes, login
   * throttle keys…). Derived, never stored: rotating the master key changes it.
   */
  deriveKey(purpose: string): KeyObject {
    const bytes = createHmac('sha256', this.#current.key).update(`stepgate:${purpose}`).digest();
    return createSecretKey(bytes);
  }
}
