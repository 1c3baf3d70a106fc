import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import type { VerifierClock } from '../verifier/index.ts';
import type { EventLog } from './events.ts';
import type { PaymentCodeSealer } from './sealer.ts';
import type { PcDb } from './store/database.ts';

/**
 * This service's own signing keys for signed QR codes (way 3): Ed25519 (EdDSA), the private
 * half sealed in the database, the public half published at /.well-known/jwks.json so smart
 * terminals can verify codes offline. They sign QR payloads and nothing else (the gateway's
 * keys sign step-up tokens; the client key, if any, signs client assertions).
 *
 * Rotation (`stepgate payment-code keys rotate`): a new key is published at once and signs
 * only after PUBLISH_LEAD_SECONDS, so every terminal that refreshes the JWKS within that time
 * (it is served with max-age 300) knows it before the first code it signs reaches a till.
 * The old key keeps verifying until an operator retires it (`keys retire KID`), which is
 * refused for the key that signs now.
 */
export const PUBLISH_LEAD_SECONDS = 600;
/** How often a running service looks for keys another process (the CLI) added or retired. */
export const RELOAD_INTERVAL_SECONDS = 60;

export interface QrSigningKey {
  kid: string;
  createdAt: number;
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export interface QrKeyView {
  kid: string;
  alg: string;
  status: 'active' | 'retired';
  createdAt: Date;
  retiredAt: Date | null;
  /** When it starts (or started) signing, if it is the newest key. */
  signsFrom: Date;
  signing: boolean;
}

function aad(kid: string): string {
  return `pc_signing_keys.private_sealed:${kid}`;
}

/**
 * Which of the active keys signs at `now`: the newest that has been published for the lead
 * time; the oldest while none has (a fresh database's first key signs at once).
 */
export function pickSigningKid(keys: readonly { kid: string; createdAt: number }[], now: number): string | undefined {
  const sorted = [...keys].sort((a, b) => b.createdAt - a.createdAt || (a.kid < b.kid ? 1 : -1));
  const ready = sorted.find((k) => k.createdAt + PUBLISH_LEAD_SECONDS * 1000 <= now);
  return (ready ?? sorted.at(-1))?.kid;
}

/** Creates a new active key (published at once, signing after the lead), audited. */
export async function createQrKey(db: PcDb, sealer: PaymentCodeSealer, clock: VerifierClock, events: EventLog, actor: string): Promise<string> {
  const { privateKey } = generateKeyPairSync('ed25519');
  const kid = `pcq-${randomBytes(8).toString('base64url')}`;
  const publicJwk = createPublicKey(privateKey).export({ format: 'jwk' });
  await db.transaction().execute(async (tx) => {
    await tx
      .insertInto('pc_signing_keys')
      .values({
        kid,
        alg: 'EdDSA',
        private_sealed: sealer.seal(privateKey.export({ type: 'pkcs8', format: 'der' }), aad(kid)),
        public_jwk: JSON.stringify({ ...publicJwk, kid, alg: 'EdDSA', use: 'sig' }),
        status: 'active',
        created_at: clock.now().getTime(),
        retired_at: null,
      })
      .execute();
    await events.append(tx, { type: 'signing_key.created', actor, subject: kid, data: { alg: 'EdDSA', use: 'signed_qr' } });
  });
  return kid;
}

export async function listQrKeys(db: PcDb, clock: VerifierClock): Promise<QrKeyView[]> {
  const rows = await db.selectFrom('pc_signing_keys').select(['kid', 'alg', 'status', 'created_at', 'retired_at']).orderBy('created_at').orderBy('kid').execute();
  const active = rows.filter((r) => r.status === 'active').map((r) => ({ kid: r.kid, createdAt: Number(r.created_at) }));
  const signing = pickSigningKid(active, clock.now().getTime());
  return rows.map((r) => ({
    kid: r.kid,
    alg: r.alg,
    status: r.status === 'active' ? 'active' : 'retired',
    createdAt: new Date(Number(r.created_at)),
    retiredAt: r.retired_at === null ? null : new Date(Number(r.retired_at)),
    signsFrom: new Date(Number(r.created_at) + PUBLISH_LEAD_SECONDS * 1000),
    signing: r.kid === signing,
  }));
}

export type RetireOutcome = 'retired' | 'unknown' | 'signing';

/**
 * Retires a key: it leaves the JWKS and its signed QR codes stop verifying (at once here,
 * within RELOAD_INTERVAL_SECONDS in running services). The key that signs now cannot be
 * retired — rotate first. Guarded update on the status, audited.
 */
export async function retireQrKey(db: PcDb, clock: VerifierClock, events: EventLog, kid: string, actor: string): Promise<RetireOutcome> {
  return db.transaction().execute(async (tx) => {
    const rows = await tx.selectFrom('pc_signing_keys').select(['kid', 'created_at']).where('status', '=', 'active').execute();
    if (!rows.some((r) => r.kid === kid)) return 'unknown';
    const now = clock.now().getTime();
    if (pickSigningKid(rows.map((r) => ({ kid: r.kid, createdAt: Number(r.created_at) })), now) === kid) return 'signing';
    const done = await tx.updateTable('pc_signing_keys').set({ status: 'retired', retired_at: now }).where('kid', '=', kid).where('status', '=', 'active').executeTakeFirst();
    if (Number(done.numUpdatedRows) !== 1) return 'unknown';
    await events.append(tx, { type: 'signing_key.retired', actor, subject: kid, data: { use: 'signed_qr' } });
    return 'retired';
  });
}

export class QrKeyRing {
  readonly #db: PcDb;
  readonly #sealer: PaymentCodeSealer;
  readonly #clock: VerifierClock;
  readonly #events: EventLog;
  /** The active keys as of the last load (retired ones are dropped on reload). */
  #keys = new Map<string, QrSigningKey>();
  #lastLoadAt = Number.NEGATIVE_INFINITY;
  #lastMissReloadAt = Number.NEGATIVE_INFINITY;

  constructor(db: PcDb, sealer: PaymentCodeSealer, clock: VerifierClock, events: EventLog) {
    this.#db = db;
    this.#sealer = sealer;
    this.#clock = clock;
    this.#events = events;
  }

  /** Loads the active keys, creating the first one on a fresh database. */
  async init(): Promise<void> {
    await this.#load();
    if (this.#keys.size > 0) return;
    await createQrKey(this.#db, this.#sealer, this.#clock, this.#events, 'system');
    // Two processes starting on a fresh database may each create one; both are published
    // and the oldest signs until the lead passes, so either way works.
    await this.#load();
  }

  async #load(): Promise<void> {
    const rows = await this.#db.selectFrom('pc_signing_keys').selectAll().where('status', '=', 'active').execute();
    const next = new Map<string, QrSigningKey>();
    for (const row of rows) {
      const known = this.#keys.get(row.kid);
      if (known !== undefined) {
        next.set(row.kid, known);
        continue;
      }
      const privateKey = createPrivateKey({ key: this.#sealer.unseal(row.private_sealed, aad(row.kid)), format: 'der', type: 'pkcs8' });
      next.set(row.kid, { kid: row.kid, createdAt: Number(row.created_at), privateKey, publicKey: createPublicKey(privateKey) });
    }
    this.#keys = next;
    this.#lastLoadAt = this.#clock.now().getTime();
  }

  async #refresh(): Promise<void> {
    if (this.#clock.now().getTime() - this.#lastLoadAt >= RELOAD_INTERVAL_SECONDS * 1000) await this.#load();
  }

  /** The key that signs now (see pickSigningKid); picks up rotations within the reload interval. */
  async signingKey(): Promise<QrSigningKey> {
    await this.#refresh();
    const kid = pickSigningKid([...this.#keys.values()], this.#clock.now().getTime());
    const key = kid === undefined ? undefined : this.#keys.get(kid);
    if (key === undefined) throw new TypeError('QrKeyRing has no active key (init() has not run)');
    return key;
  }

  /** The public key for a kid; reloads once when another process created a key we have not seen. */
  async publicKey(kid: string): Promise<KeyObject | undefined> {
    await this.#refresh();
    if (!this.#keys.has(kid)) {
      // At most one reload per 10 s: QR codes with random kids must not become a database flood.
      const now = this.#clock.now().getTime();
      if (now - this.#lastMissReloadAt >= 10_000) {
        this.#lastMissReloadAt = now;
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
