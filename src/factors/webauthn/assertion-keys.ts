import { createPublicKey, type JsonWebKey, type KeyObject, verify } from 'node:crypto';

/**
 * Public keys of WebAuthn credentials as node:crypto `KeyObject`s, made once per stored COSE
 * key and kept in a bounded LRU. @simplewebauthn/server imports the COSE key into WebCrypto on
 * every assertion; that import (and the async WebCrypto round trip) cost more than the
 * signature check itself.
 *
 * The cache is keyed by the stored COSE key exactly as stored (its base64url text), not by
 * credential id: the `KeyObject` is a pure function of those bytes, so an entry can never
 * answer for a key other than the one it was made from. A credential registered again (new
 * key, same or new id) simply looks up its new bytes; the old entry ages out.
 *
 * Only the three shapes we register are handled here, each with exactly the parameters the
 * library would use: EC2 P-256 with alg -7 (ECDSA, SHA-256, DER signature), OKP Ed25519 with
 * alg -8, RSA with alg -257 (PKCS#1 v1.5, SHA-256). Any other key, or one node:crypto will not
 * import, is `unsupported`: the caller hands it to the library's own verification unchanged.
 */

export type AssertionKey = { kind: 'es256' | 'ed25519' | 'rs256'; key: KeyObject };

/** COSE labels (RFC 9052 §7, RFC 9053). */
const KTY = 1;
const ALG = 3;
const CRV = -1; // EC2, OKP
const X = -2; // EC2, OKP
const Y = -3; // EC2
const N = -1; // RSA
const E = -2; // RSA

function bytes(value: unknown, length?: number): Buffer | undefined {
  if (!(value instanceof Uint8Array) || value.byteLength === 0) return undefined;
  if (length !== undefined && value.byteLength !== length) return undefined;
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

/** The key a decoded COSE map stands for, when it is one of our three shapes; undefined otherwise. */
export function assertionKeyFromCose(cose: unknown): AssertionKey | undefined {
  if (!(cose instanceof Map)) return undefined;
  const kty = cose.get(KTY);
  const alg = cose.get(ALG);
  let jwk: JsonWebKey;
  let kind: AssertionKey['kind'];
  if (kty === 2 && alg === -7 && cose.get(CRV) === 1) {
    const x = bytes(cose.get(X), 32);
    const y = bytes(cose.get(Y), 32);
    if (x === undefined || y === undefined) return undefined;
    jwk = { kty: 'EC', crv: 'P-256', x: x.toString('base64url'), y: y.toString('base64url') };
    kind = 'es256';
  } else if (kty === 1 && alg === -8 && cose.get(CRV) === 6) {
    const x = bytes(cose.get(X), 32);
    if (x === undefined) return undefined;
    jwk = { kty: 'OKP', crv: 'Ed25519', x: x.toString('base64url') };
    kind = 'ed25519';
  } else if (kty === 3 && alg === -257) {
    const n = bytes(cose.get(N));
    const e = bytes(cose.get(E));
    if (n === undefined || e === undefined) return undefined;
    jwk = { kty: 'RSA', n: n.toString('base64url'), e: e.toString('base64url') };
    kind = 'rs256';
  } else {
    return undefined;
  }
  try {
    // Checks the point is on the curve / the modulus parses, as WebCrypto's import would.
    return { kind, key: createPublicKey({ key: jwk, format: 'jwk' }) };
  } catch {
    return undefined;
  }
}

/** The signature check itself: `data` is authenticatorData || SHA-256(clientDataJSON). */
export function verifyWithAssertionKey(k: AssertionKey, data: Buffer, signature: Buffer): boolean {
  try {
    return verify(k.kind === 'ed25519' ? null : 'sha256', data, k.key, signature);
  } catch {
    return false;
  }
}

/** Default bound: a few thousand active credentials per gateway process stay warm (~1 KB each). */
export const ASSERTION_KEY_CACHE_SIZE = 4096;

export class AssertionKeyCache {
  readonly maxEntries: number;
  readonly #entries = new Map<string, AssertionKey | 'unsupported'>();

  constructor(maxEntries: number = ASSERTION_KEY_CACHE_SIZE) {
    if (!Number.isInteger(maxEntries) || maxEntries < 1) throw new TypeError('AssertionKeyCache: maxEntries must be a positive integer');
    this.maxEntries = maxEntries;
  }

  get size(): number {
    return this.#entries.size;
  }

  /**
   * The key for a stored COSE public key (base64url). `decode` is the library's COSE decoder
   * (loaded lazily by the caller); it may throw, which makes the key `unsupported`.
   */
  get(publicKey: string, decode: (cose: Uint8Array<ArrayBuffer>) => unknown): AssertionKey | 'unsupported' {
    const hit = this.#entries.get(publicKey);
    if (hit !== undefined) {
      // Most recently used goes last; eviction takes the first.
      this.#entries.delete(publicKey);
      this.#entries.set(publicKey, hit);
      return hit;
    }
    let made: AssertionKey | 'unsupported' = 'unsupported';
    try {
      made = assertionKeyFromCose(decode(Buffer.from(publicKey, 'base64url'))) ?? 'unsupported';
    } catch {
      made = 'unsupported';
    }
    this.#entries.set(publicKey, made);
    if (this.#entries.size > this.maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done !== true) this.#entries.delete(oldest.value);
    }
    return made;
  }

  clear(): void {
    this.#entries.clear();
  }
}
