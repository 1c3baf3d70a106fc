import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCipheriv, createDecipheriv, createHash, createHmac, createSecretKey, type KeyObject, randomBytes } from 'node:crypto';

/**
 * Sealing at rest with AES-256-GCM under this service's own master key — the same approach
 * as the gateway's src/crypto/sealer.ts, written again here because this service imports
 * nothing from the gateway. A sealed value is `v1.<keyId>.<iv>.<ciphertext>.<tag>`
 * (base64url); the associated data binds it to its row and column, so a sealed seed copied
 * into another row does not unseal. `previous` keys unseal only (rotation).
 */
export class SealError extends Error {
  readonly code = 'seal_failed';
  constructor(message: string) {
    super(message);
    this.name = 'SealError';
  }
}

interface MasterKey {
  id: string;
  key: KeyObject;
}

function masterKeyFromBytes(bytes: Buffer): MasterKey {
  if (bytes.length !== 32) throw new TypeError('master key must be 32 bytes');
  const id = createHash('sha256').update('stepgate-payment-code-master-key-id').update(bytes).digest('base64url').slice(0, 12);
  return { id, key: createSecretKey(bytes) };
}

export class PaymentCodeSealer {
  readonly #current: MasterKey;
  readonly #byId: Map<string, MasterKey>;

  constructor(current: Buffer, previous: Buffer[] = []) {
    this.#current = masterKeyFromBytes(current);
    this.#byId = new Map([this.#current, ...previous.map(masterKeyFromBytes)].map((k) => [k.id, k]));
  }

  get keyId(): string {
    return this.#current.id;
  }

  seal(plaintext: Buffer | string, aad: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.#current.key, iv);
    cipher.setAAD(Buffer.from(aad, 'utf8'));
    const ct = Buffer.concat([cipher.update(typeof plaintext === 'string' ? Buffer.from(plaintext, 'utf8') : plaintext), cipher.final()]);
    return ['v1', this.#current.id, iv.toString('base64url'), ct.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.');
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

  /** A purpose-bound subkey (HMAC keys). Derived, never stored. */
  deriveKey(purpose: string): KeyObject {
    return createSecretKey(createHmac('sha256', this.#current.key).update(`stepgate-payment-code:${purpose}`).digest());
  }
}

export interface LoadedMasterKey {
  bytes: Buffer;
  origin: 'config' | 'generated-file' | 'existing-file';
  file?: string;
}

/**
 * From configuration (STEPGATE_PAYMENT_CODE_MASTER_KEY); in development only, a missing key
 * is generated into <dataDir>/master.key (0600) and the caller warns loudly.
 */
export function loadPaymentCodeMasterKey(configured: string, dataDir: string, mode: 'development' | 'production'): LoadedMasterKey {
  if (configured !== '') return { bytes: Buffer.from(configured, 'base64'), origin: 'config' };
  if (mode === 'production') throw new TypeError('production mode requires STEPGATE_PAYMENT_CODE_MASTER_KEY');
  const file = join(dataDir, 'master.key');
  const readExisting = (): LoadedMasterKey => {
    const bytes = Buffer.from(readFileSync(file, 'utf8').trim(), 'base64');
    if (bytes.length !== 32) throw new TypeError(`${file} does not hold a base64 32-byte key`);
    return { bytes, origin: 'existing-file', file };
  };
  if (existsSync(file)) return readExisting();
  mkdirSync(dataDir, { recursive: true });
  const bytes = randomBytes(32);
  try {
    writeFileSync(file, `${bytes.toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    // Another process starting at the same moment wrote it first: use theirs.
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return readExisting();
    throw err;
  }
  chmodSync(file, 0o600);
  return { bytes, origin: 'generated-file', file };
}
