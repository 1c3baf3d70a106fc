import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import type { VerifierClock } from '../verifier/index.ts';
import type { EventLog } from './events.ts';
import type { PaymentCodeSealer } from './sealer.ts';
import type { PcDb } from './store/database.ts';

/**
 * This service's own signing key for signed QR codes (way 3): Ed25519 (EdDSA), the private
 * half sealed in the database, the public half published at /.well-known/jwks.json so smart
 * terminals can verify codes offline. It signs QR payloads and nothing else (the gateway's
 * keys sign step-up tokens; the client key, if any, signs client assertions).
 */
export interface QrSigningKey {
  kid: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
}

function aad(kid: string): string {
  return `pc_signing_keys.private_sealed:${kid}`;
}

export class QrKeyRing {
  readonly #db: PcDb;
  readonly #sealer: PaymentCodeSealer;
  readonly #clock: VerifierClock;
  readonly #events: EventLog;
  #active: QrSigningKey | undefined;
  readonly #keys = new Map<string, QrSigningKey>();
  #lastReloadAt = Number.NEGATIVE_INFINITY;

  constructor(db: PcDb, sealer: PaymentCodeSealer, clock: VerifierClock, events: EventLog) {
    this.#db = db;
    this.#sealer = sealer;
    this.#clock = clock;
    this.#events = events;
  }

  /** Loads the newest active key, creating the first one on a fresh database. */
  async init(): Promise<void> {
    await this.#load();
    if (this.#active !== undefined) return;
    const { privateKey } = generateKeyPairSync('ed25519');
    const kid = `pcq-${randomBytes(8).toString('base64url')}`;
    const publicJwk = createPublicKey(privateKey).export({ format: 'jwk' });
    await this.#db.transaction().execute(async (tx) => {
      await tx
        .insertInto('pc_signing_keys')
        .values({
          kid,
          alg: 'EdDSA',
          private_sealed: this.#sealer.seal(privateKey.export({ type: 'pkcs8', format: 'der' }), aad(kid)),
          public_jwk: JSON.stringify({ ...publicJwk, kid, alg: 'EdDSA', use: 'sig' }),
          status: 'active',
          created_at: this.#clock.now().getTime(),
          retired_at: null,
        })
        .execute();
      await this.#events.append(tx, { type: 'signing_key.created', actor: 'system', subject: kid, data: { alg: 'EdDSA', use: 'signed_qr' } });
    });
    // Two processes starting on a fresh database may each create one; both are published
    // and the newest signs, so either way works.
    await this.#load();
  }

  async #load(): Promise<void> {
    const rows = await this.#db.selectFrom('pc_signing_keys').selectAll().where('status', '=', 'active').orderBy('created_at', 'desc').orderBy('kid', 'desc').execute();
    for (const row of rows) {
      if (this.#keys.has(row.kid)) continue;
      const privateKey = createPrivateKey({ key: this.#sealer.unseal(row.private_sealed, aad(row.kid)), format: 'der', type: 'pkcs8' });
      this.#keys.set(row.kid, { kid: row.kid, privateKey, publicKey: createPublicKey(privateKey) });
    }
    const newest = rows[0];
    if (newest !== undefined) this.#active = this.#keys.get(newest.kid);
  }

  get active(): QrSigningKey {
    if (this.#active === undefined) throw new TypeError('QrKeyRing.init() has not run');
    return this.#active;
  }

  /** The public key for a kid; reloads once when another process created a key we have not seen. */
  async publicKey(kid: string): Promise<KeyObject | undefined> {
    if (!this.#keys.has(kid)) {
      // At most one reload per 10 s: QR codes with random kids must not become a database flood.
      const now = this.#clock.now().getTime();
      if (now - this.#lastReloadAt >= 10_000) {
        this.#lastReloadAt = now;
        await this.#load();
      }
    }
    return this.#keys.get(kid)?.publicKey;
  }

  async jwks(): Promise<{ keys: Record<string, unknown>[] }> {
    const rows = await this.#db.selectFrom('pc_signing_keys').select(['public_jwk']).where('status', '=', 'active').orderBy('created_at').orderBy('kid').execute();
    return { keys: rows.map((r) => JSON.parse(r.public_jwk) as Record<string, unknown>) };
  }
}
