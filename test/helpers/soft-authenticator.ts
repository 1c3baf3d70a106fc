import { createHash, generateKeyPairSync, type KeyObject, randomBytes, sign } from 'node:crypto';

/**
 * A software WebAuthn authenticator for server-level tests: it builds authenticator data,
 * attestation objects and clientDataJSON byte by byte and signs with node:crypto keys, so a
 * test can produce exactly the (bad) response it needs — wrong origin, UP=0, BS without BE,
 * a counter that goes backwards — which no real browser would let us make.
 * Nothing here comes from the library under test (its own CBOR encoder included).
 */

// ---- a minimal CBOR encoder (RFC 8949: the major types WebAuthn uses) -------------------------

export type Cbor = number | string | Uint8Array | Cbor[] | Map<Cbor, Cbor>;

function head(major: number, n: number): Buffer {
  if (n < 24) return Buffer.from([(major << 5) | n]);
  if (n < 0x100) return Buffer.from([(major << 5) | 24, n]);
  if (n < 0x10000) {
    const b = Buffer.alloc(3);
    b[0] = (major << 5) | 25;
    b.writeUInt16BE(n, 1);
    return b;
  }
  const b = Buffer.alloc(5);
  b[0] = (major << 5) | 26;
  b.writeUInt32BE(n, 1);
  return b;
}

export function cbor(value: Cbor): Buffer {
  if (typeof value === 'number') return value >= 0 ? head(0, value) : head(1, -1 - value);
  if (typeof value === 'string') {
    const bytes = Buffer.from(value, 'utf8');
    return Buffer.concat([head(3, bytes.length), bytes]);
  }
  if (value instanceof Uint8Array) return Buffer.concat([head(2, value.length), Buffer.from(value)]);
  if (Array.isArray(value)) return Buffer.concat([head(4, value.length), ...value.map(cbor)]);
  const parts: Buffer[] = [head(5, value.size)];
  for (const [k, v] of value) parts.push(cbor(k), cbor(v));
  return Buffer.concat(parts);
}

// ---- keys -------------------------------------------------------------------------------------

export type Alg = -7 | -8 | -257 | -35;

export interface SoftKey {
  alg: Alg;
  privateKey: KeyObject;
  cose: Buffer;
}

export function softKey(alg: Alg = -7): SoftKey {
  if (alg === -7) {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = publicKey.export({ format: 'jwk' });
    const cose = cbor(new Map<Cbor, Cbor>([[1, 2], [3, -7], [-1, 1], [-2, Buffer.from(jwk.x!, 'base64url')], [-3, Buffer.from(jwk.y!, 'base64url')]]));
    return { alg, privateKey, cose };
  }
  if (alg === -35) {
    // ES384: a valid key the gateway must refuse (not in supportedAlgorithmIDs).
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const jwk = publicKey.export({ format: 'jwk' });
    const cose = cbor(new Map<Cbor, Cbor>([[1, 2], [3, -35], [-1, 2], [-2, Buffer.from(jwk.x!, 'base64url')], [-3, Buffer.from(jwk.y!, 'base64url')]]));
    return { alg, privateKey, cose };
  }
  if (alg === -8) {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const jwk = publicKey.export({ format: 'jwk' });
    return { alg, privateKey, cose: cbor(new Map<Cbor, Cbor>([[1, 1], [3, -8], [-1, 6], [-2, Buffer.from(jwk.x!, 'base64url')]])) };
  }
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = publicKey.export({ format: 'jwk' });
  return { alg, privateKey, cose: cbor(new Map<Cbor, Cbor>([[1, 3], [3, -257], [-1, Buffer.from(jwk.n!, 'base64url')], [-2, Buffer.from(jwk.e!, 'base64url')]])) };
}

export function signWith(key: { alg: Alg; privateKey: KeyObject }, data: Buffer): Buffer {
  if (key.alg === -8) return sign(null, data, key.privateKey);
  return sign(key.alg === -35 ? 'sha384' : 'sha256', data, key.privateKey);
}

// ---- authenticator data -----------------------------------------------------------------------

export interface FlagBits {
  up?: boolean;
  uv?: boolean;
  be?: boolean;
  bs?: boolean;
}

export function authData(rpId: string, flags: FlagBits, counter: number, attested?: { aaguid: Buffer; credentialId: Buffer; cose: Buffer }): Buffer {
  let f = 0;
  if (flags.up ?? true) f |= 0x01;
  if (flags.uv ?? true) f |= 0x04;
  if (flags.be ?? false) f |= 0x08;
  if (flags.bs ?? false) f |= 0x10;
  if (attested !== undefined) f |= 0x40;
  const count = Buffer.alloc(4);
  count.writeUInt32BE(counter >>> 0);
  const parts: Buffer[] = [createHash('sha256').update(rpId).digest(), Buffer.from([f]), count];
  if (attested !== undefined) {
    const len = Buffer.alloc(2);
    len.writeUInt16BE(attested.credentialId.length);
    parts.push(attested.aaguid, len, attested.credentialId, attested.cose);
  }
  return Buffer.concat(parts);
}

export function clientData(type: string, challenge: string, origin: string, extra: Record<string, unknown> = {}): Buffer {
  return Buffer.from(JSON.stringify({ type, challenge, origin, crossOrigin: false, ...extra }), 'utf8');
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest();
const b64 = (b: Buffer) => b.toString('base64url');

export function aaguidBytes(aaguid: string): Buffer {
  return Buffer.from(aaguid.replace(/-/g, ''), 'hex');
}

// ---- the authenticator ------------------------------------------------------------------------

export interface RegisterOptions {
  challenge: string;
  origin: string;
  rpId: string;
  flags?: FlagBits;
  aaguid?: string;
  /** `none` (default), `packed-self` (signed by the credential key) or `packed-x5c` (certificate chain). */
  format?: 'none' | 'packed-self' | 'packed-x5c';
  /** For packed-x5c: the attestation key and its DER certificate chain (leaf first). */
  attestation?: { privateKey: KeyObject; alg: Alg; chain: Buffer[] };
  type?: string;
  transports?: string[];
}

export interface AssertOptions {
  challenge: string;
  origin: string;
  rpId: string;
  flags?: FlagBits;
  /** Signature counter to report; by default one more than the last one reported. */
  counter?: number;
  type?: string;
  /** Corrupt the signature. */
  badSignature?: boolean;
  clientDataExtra?: Record<string, unknown>;
  userHandle?: string;
}

/** One credential on a software authenticator. */
export class SoftCredential {
  readonly id: Buffer;
  readonly key: SoftKey;
  counter: number;
  backupEligible: boolean;

  constructor(options: { alg?: Alg; counter?: number; backupEligible?: boolean } = {}) {
    this.id = randomBytes(32);
    this.key = softKey(options.alg ?? -7);
    this.counter = options.counter ?? 0;
    this.backupEligible = options.backupEligible ?? false;
  }

  get credentialId(): string {
    return b64(this.id);
  }

  /** A RegistrationResponseJSON (what @simplewebauthn/browser's startRegistration returns). */
  register(o: RegisterOptions): Record<string, unknown> {
    const flags = { be: this.backupEligible, ...o.flags };
    const data = authData(o.rpId, flags, this.counter, { aaguid: aaguidBytes(o.aaguid ?? '00000000-0000-0000-0000-000000000000'), credentialId: this.id, cose: this.key.cose });
    const cd = clientData(o.type ?? 'webauthn.create', o.challenge, o.origin);
    const format = o.format ?? 'none';
    let attStmt = new Map<Cbor, Cbor>();
    if (format === 'packed-self') {
      attStmt = new Map<Cbor, Cbor>([['alg', this.key.alg], ['sig', signWith(this.key, Buffer.concat([data, sha256(cd)]))]]);
    } else if (format === 'packed-x5c') {
      const att = o.attestation;
      if (att === undefined) throw new TypeError('packed-x5c needs an attestation key and chain');
      attStmt = new Map<Cbor, Cbor>([['alg', att.alg], ['sig', signWith(att, Buffer.concat([data, sha256(cd)]))], ['x5c', att.chain]]);
    }
    const attestationObject = cbor(new Map<Cbor, Cbor>([['fmt', format === 'none' ? 'none' : 'packed'], ['attStmt', attStmt], ['authData', data]]));
    return {
      id: this.credentialId,
      rawId: this.credentialId,
      type: 'public-key',
      response: { clientDataJSON: b64(cd), attestationObject: b64(attestationObject), transports: o.transports ?? ['internal'] },
      clientExtensionResults: {},
      authenticatorAttachment: 'platform',
    };
  }

  /** An AuthenticationResponseJSON (what startAuthentication returns). */
  assert(o: AssertOptions): Record<string, unknown> {
    const counter = o.counter ?? (this.counter === 0 ? 0 : this.counter + 1);
    this.counter = Math.max(this.counter, counter);
    const data = authData(o.rpId, { be: this.backupEligible, ...o.flags }, counter);
    const cd = clientData(o.type ?? 'webauthn.get', o.challenge, o.origin, o.clientDataExtra);
    const signature = signWith(this.key, Buffer.concat([data, sha256(cd)]));
    if (o.badSignature === true) signature.writeUInt8(signature.readUInt8(signature.length - 5) ^ 0x01, signature.length - 5);
    return {
      id: this.credentialId,
      rawId: this.credentialId,
      type: 'public-key',
      response: { clientDataJSON: b64(cd), authenticatorData: b64(data), signature: b64(signature), ...(o.userHandle === undefined ? {} : { userHandle: o.userHandle }) },
      clientExtensionResults: {},
      authenticatorAttachment: 'platform',
    };
  }
}
