import { createHmac, KeyObject, randomBytes, sign } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CompactSign, exportJWK, exportSPKI, generateKeyPair, type CryptoKey, type JWK } from 'jose';

/**
 * Mints step-up tokens exactly in the gateway's format (DESIGN.md §1 "Token format") with
 * its own generated keys, so verifier tests need no gateway — and can also mint every kind of
 * broken or hostile token.
 */

export const TEST_ISSUER = 'https://gateway.stepgate.test';
export const TEST_AUDIENCE = 'client_payment_code';
export const TEST_SUBJECT = 'usr_alice';
export const TEST_ACTION = 'payment_code.issue';
export const TEST_CONTEXT = { amount: '120.00', currency: 'CNY', payee: 'shop-42', deviceId: 'dev-1' } as const;

export type MinterAlg = 'ES256' | 'EdDSA';

export interface SigningKey {
  kid: string;
  alg: MinterAlg;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  publicJwk: JWK;
}

export interface MintOptions {
  /** Merged over the default claims; a value of `undefined` removes the claim. */
  claims?: Record<string, unknown>;
  /** Merged over `{alg, kid, typ}`; a value of `undefined` removes the parameter. */
  header?: Record<string, unknown>;
  /** Sign with this key instead of the minter's first key. */
  key?: SigningKey;
}

export function b64uJson(value: unknown): string {
  return Buffer.from(JSON.stringify(value), 'utf8').toString('base64url');
}

function merge(base: Record<string, unknown>, over: Record<string, unknown> | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base, ...over };
  for (const [k, v] of Object.entries(out)) if (v === undefined) delete out[k];
  return out;
}

export async function generateSigningKey(alg: MinterAlg = 'ES256', kid = `key-${randomBytes(6).toString('hex')}`): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg === 'ES256' ? 'ES256' : 'Ed25519', { extractable: true });
  const jwk = await exportJWK(publicKey);
  return { kid, alg, privateKey, publicKey, publicJwk: { ...jwk, kid, alg: alg === 'ES256' ? 'ES256' : 'EdDSA', use: 'sig' } };
}

/** Signs header.payload with node:crypto directly: for headers jose itself refuses to produce (crit…). */
export function signRaw(header: Record<string, unknown>, payload: Record<string, unknown>, key: SigningKey): string {
  return signRawText(JSON.stringify(header), JSON.stringify(payload), key);
}

/** Signs header and payload given as JSON text: for JSON no serialiser writes (a member given twice). */
export function signRawText(header: string, payload: string, key: SigningKey): string {
  const input = `${Buffer.from(header, 'utf8').toString('base64url')}.${Buffer.from(payload, 'utf8').toString('base64url')}`;
  const privateKey = KeyObject.from(key.privateKey);
  const signature =
    key.alg === 'ES256' ? sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }) : sign(null, Buffer.from(input), privateKey);
  return `${input}.${signature.toString('base64url')}`;
}

/** The classic key-confusion forgery: HS256 with some public form of the key as the HMAC secret. */
export function hs256(header: Record<string, unknown>, payload: Record<string, unknown>, secret: string | Buffer): string {
  const input = `${b64uJson(header)}.${b64uJson(payload)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

/** An unsecured JWT: header.payload. with an empty signature. */
export function unsigned(header: Record<string, unknown>, payload: Record<string, unknown>): string {
  return `${b64uJson(header)}.${b64uJson(payload)}.`;
}

/** Public forms of a key an attacker might try as an HMAC secret. */
export async function publicKeySecrets(key: SigningKey): Promise<{ label: string; secret: string | Buffer }[]> {
  const pem = await exportSPKI(key.publicKey);
  const jwkJson = JSON.stringify(key.publicJwk);
  return [
    { label: 'SPKI PEM', secret: pem },
    { label: 'SPKI PEM without trailing newline', secret: pem.trimEnd() },
    { label: 'SPKI DER', secret: KeyObject.from(key.publicKey).export({ type: 'spki', format: 'der' }) },
    { label: 'JWK JSON', secret: jwkJson },
    { label: 'JWK x', secret: String(key.publicJwk.x) },
  ];
}

export class TokenMinter {
  readonly issuer: string;
  readonly audience: string;
  readonly keys: SigningKey[];
  readonly #now: () => Date;

  constructor(keys: SigningKey[], options: { issuer?: string; audience?: string; now: () => Date }) {
    this.keys = keys;
    this.issuer = options.issuer ?? TEST_ISSUER;
    this.audience = options.audience ?? TEST_AUDIENCE;
    this.#now = options.now;
  }

  static async create(options: { alg?: MinterAlg; kid?: string; issuer?: string; audience?: string; now: () => Date }): Promise<TokenMinter> {
    return new TokenMinter([await generateSigningKey(options.alg ?? 'ES256', options.kid)], options);
  }

  get key(): SigningKey {
    const key = this.keys[0];
    if (key === undefined) throw new Error('minter has no key');
    return key;
  }

  /** The JWKS the gateway would publish for these keys. */
  jwks(): { keys: JWK[] } {
    return { keys: this.keys.map((k) => k.publicJwk) };
  }

  defaultHeader(key: SigningKey = this.key): Record<string, unknown> {
    return { alg: key.alg, kid: key.kid, typ: 'stepup+jwt' };
  }

  defaultClaims(): Record<string, unknown> {
    const iat = Math.floor(this.#now().getTime() / 1000);
    return {
      iss: this.issuer,
      sub: TEST_SUBJECT,
      aud: this.audience,
      iat,
      exp: iat + 120,
      jti: `jti_${randomBytes(16).toString('base64url')}`,
      txn: `stp_${randomBytes(8).toString('hex')}`,
      auth_time: iat,
      acr: 'urn:stepgate:aal2',
      amr: ['pwd', 'otp', 'mfa'],
      authorization_details: [{ type: TEST_ACTION, ...TEST_CONTEXT }],
    };
  }

  /** Builds the header and claims a mint would sign (for hand-crafted variants). */
  parts(options: MintOptions = {}): { header: Record<string, unknown>; claims: Record<string, unknown> } {
    const key = options.key ?? this.key;
    return { header: merge(this.defaultHeader(key), options.header), claims: merge(this.defaultClaims(), options.claims) };
  }

  async mint(options: MintOptions = {}): Promise<string> {
    const key = options.key ?? this.key;
    const { header, claims } = this.parts(options);
    // jose refuses to sign with crit/b64 it does not understand; the attacker is not so polite.
    if ('crit' in header || 'b64' in header) return signRaw(header, claims, key);
    return new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
      .setProtectedHeader(header as { alg: string })
      .sign(key.privateKey);
  }
}

export interface JwksAnswer {
  status?: number;
  body: unknown;
  /** Send `body` as is instead of JSON-encoding it. */
  raw?: boolean;
  headers?: Record<string, string>;
}

export interface JwksServer {
  /** `http://127.0.0.1:<port>/.well-known/jwks.json` */
  url: string;
  /** How many requests reached the server. */
  readonly requests: number;
  /** Replace what the server answers (JSON body, or a raw status/body). */
  respond(answer: () => JwksAnswer): void;
  close(): Promise<void>;
}

/** Serves a JWKS from a local node:http server on 127.0.0.1, port 0, counting requests. */
export async function serveJwks(initial: () => unknown): Promise<JwksServer> {
  let answer: () => JwksAnswer = () => ({ body: initial() });
  let requests = 0;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    requests += 1;
    const { status = 200, body, raw = false, headers = {} } = answer();
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(raw ? String(body) : JSON.stringify(body));
    req.resume();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    get requests() {
      return requests;
    },
    respond(next) {
      answer = next;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}
