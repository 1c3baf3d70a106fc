import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, type JWK } from 'jose';
import type { Clock } from '../clock.ts';
import type { Sealer } from '../crypto/sealer.ts';
import type { Db, Tx } from '../store/database.ts';

/**
 * Step-up token signing keys. Generated on first start and sealed in the database, so every
 * gateway process signs with the same key and publishes the same JWKS. Rotation makes a new
 * active key and keeps the old one published until every token it could have signed has
 * expired. Keys are imported once per process and cached.
 */
export type SigningAlg = 'ES256' | 'EdDSA';
export const SIGNING_ALGS: readonly SigningAlg[] = ['ES256', 'EdDSA'];

/** Longest token lifetime a policy may set; bounds how long a retired key stays published. */
export const MAX_TOKEN_TTL_SECONDS = 300;

/**
 * `Cache-Control: max-age` of /.well-known/jwks.json: how long a relying party (or a proxy)
 * may keep using a copy, so how long a revoked key can outlive its revocation there while
 * the gateway is reachable (docs/keys.md). Short, because that is the point; a JWKS fetch is
 * cheap, and a rotation does not wait for it (verifiers refetch on an unknown kid).
 */
export const JWKS_MAX_AGE_SECONDS = 60;

export interface ActiveKey {
  kid: string;
  alg: SigningAlg;
  privateKey: KeyObject;
}

export interface PublishedKey {
  kid: string;
  alg: SigningAlg;
  status: 'active' | 'retired';
  createdAt: Date;
  publishUntil: Date | null;
  jwk: JWK;
}

interface Snapshot {
  loadedAtMs: number;
  active: ActiveKey | undefined;
  published: PublishedKey[];
}

function aadFor(kid: string): string {
  return `signing_keys.private_sealed:${kid}`;
}

function generate(alg: SigningAlg): { privateKey: KeyObject; publicJwk: JWK } {
  const pair = alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519');
  const publicJwk = pair.publicKey.export({ format: 'jwk' }) as JWK;
  return { privateKey: pair.privateKey, publicJwk };
}

export interface SigningKeyRingOptions {
  db: Db;
  sealer: Sealer;
  clock: Clock;
  alg: SigningAlg;
  /** How often a process re-reads the key table (to pick up another process's rotation). */
  refreshSeconds: number;
}

export class SigningKeyRing {
  readonly #o: SigningKeyRingOptions;
  readonly #privateKeys = new Map<string, KeyObject>();
  #snapshot: Snapshot | undefined;
  #loading: Promise<Snapshot> | undefined;

  constructor(options: SigningKeyRingOptions) {
    this.#o = options;
  }

  /**
   * How long a retired key stays in the JWKS: it may still sign for one refresh interval
   * after the rotation (see #load), then its tokens live up to the longest TTL, plus every
   * cache that may still hold the old JWKS.
   */
  get retiredPublishSeconds(): number {
    return MAX_TOKEN_TTL_SECONDS + 2 * this.#o.refreshSeconds + JWKS_MAX_AGE_SECONDS;
  }

  /** When a key made now starts signing (it is published at once). */
  get activationDelaySeconds(): number {
    return this.#o.refreshSeconds;
  }

  async #newKeyRow(alg: SigningAlg) {
    const { privateKey, publicJwk } = generate(alg);
    const kid = await calculateJwkThumbprint(publicJwk, 'sha256');
    const jwk: JWK = { ...publicJwk, kid, alg, use: 'sig' };
    const der = privateKey.export({ format: 'der', type: 'pkcs8' });
    return {
      kid,
      alg,
      public_jwk: JSON.stringify(jwk),
      private_sealed: this.#o.sealer.seal(der, aadFor(kid)),
      status: 'active' as const,
      created_at: this.#o.clock.now().getTime(),
      retired_at: null,
      publish_until: null,
    };
  }

  /** Creates the first key if none is active. Safe when several processes start at once. */
  async ensureActiveKey(): Promise<void> {
    const existing = await this.#o.db.selectFrom('signing_keys').select('kid').where('status', '=', 'active').executeTakeFirst();
    if (existing !== undefined) return;
    const row = await this.#newKeyRow(this.#o.alg);
    // The partial unique index lets exactly one racing process insert the active key.
    await this.#o.db.insertInto('signing_keys').values(row).onConflict((oc) => oc.doNothing()).execute();
    this.#snapshot = undefined;
  }

  /**
   * `within` runs in the rotation's transaction (its audit record): if it fails, no key is
   * rotated, so a rotation never happens without its record.
   */
  async rotate(
    alg: SigningAlg = this.#o.alg,
    within?: (tx: Tx, rotated: { kid: string; retiredKid: string | undefined }) => Promise<void>,
  ): Promise<{ kid: string; retiredKid: string | undefined; publishUntil: Date | undefined }> {
    const row = await this.#newKeyRow(alg);
    const nowMs = this.#o.clock.now().getTime();
    const publishUntil = nowMs + this.retiredPublishSeconds * 1000;
    const retired = await this.#o.db.transaction().execute(async (tx) => {
      const old = await tx
        .updateTable('signing_keys')
        .set({ status: 'retired', retired_at: nowMs, publish_until: publishUntil })
        .where('status', '=', 'active')
        .returning('kid')
        .executeTakeFirst();
      await tx.insertInto('signing_keys').values(row).execute();
      await within?.(tx, { kid: row.kid, retiredKid: old?.kid });
      return old?.kid;
    });
    this.#snapshot = undefined;
    return { kid: row.kid, retiredKid: retired, publishUntil: retired === undefined ? undefined : new Date(publishUntil) };
  }

  /**
   * Withdraws a key at once — it is compromised, or suspected to be. Unlike a retired key it
   * leaves the JWKS now (not when its tokens have expired) and never signs again. When it is
   * the active key, a new key replaces it in the same transaction and signs at once: there is
   * no key to hand over to (relying services fetch the new one on its unknown kid). Other
   * processes follow within `refreshSeconds`; relying services when they next refresh their
   * JWKS. `within` runs in the transaction (its audit record). Undefined when no published
   * key has this kid.
   */
  async revoke(
    kid: string,
    within?: (tx: Tx, revoked: { kid: string; wasActive: boolean; newKid: string | undefined }) => Promise<void>,
  ): Promise<{ kid: string; wasActive: boolean; newKid: string | undefined } | undefined> {
    const nowMs = this.#o.clock.now().getTime();
    const replacement = await this.#newKeyRow(this.#o.alg);
    const result = await this.#o.db.transaction().execute(async (tx) => {
      const row = await tx.selectFrom('signing_keys').select(['status', 'publish_until']).where('kid', '=', kid).executeTakeFirst();
      if (row === undefined) return undefined;
      const wasActive = row.status === 'active';
      if (!wasActive && !(row.status === 'retired' && row.publish_until !== null && row.publish_until > nowMs)) return undefined;
      const moved = await tx
        .updateTable('signing_keys')
        .set(wasActive ? { status: 'revoked', retired_at: nowMs, publish_until: nowMs } : { status: 'revoked', publish_until: nowMs })
        .where('kid', '=', kid)
        .where('status', '=', row.status)
        .executeTakeFirst();
      // A rotation or another revocation changed the key meanwhile: nothing done, look again.
      if (Number(moved.numUpdatedRows) !== 1) return undefined;
      if (wasActive) await tx.insertInto('signing_keys').values(replacement).execute();
      const outcome = { kid, wasActive, newKid: wasActive ? replacement.kid : undefined };
      await within?.(tx, outcome);
      return outcome;
    });
    this.#privateKeys.delete(kid);
    this.#snapshot = undefined;
    return result;
  }

  async #load(): Promise<Snapshot> {
    const nowMs = this.#o.clock.now().getTime();
    const rows = await this.#o.db
      .selectFrom('signing_keys')
      .selectAll()
      // A revoked key never, whatever the clock of this process says about its publish_until.
      .where((eb) => eb.or([eb('status', '=', 'active'), eb.and([eb('status', '=', 'retired'), eb('publish_until', '>', nowMs)])]))
      .orderBy('created_at', 'desc')
      .execute();
    const published: PublishedKey[] = rows.map((row) => ({
      kid: row.kid,
      alg: row.alg,
      status: row.status === 'active' ? 'active' : 'retired',
      createdAt: new Date(row.created_at),
      publishUntil: row.publish_until === null ? null : new Date(row.publish_until),
      jwk: JSON.parse(row.public_jwk) as JWK,
    }));
    // Publish before use: a key younger than one refresh interval may not be in every
    // process's JWKS yet (nor in the relying services' caches that fetched from them), so
    // until then tokens are still signed with the key it replaced, which everyone publishes.
    // The very first key has no predecessor and is used at once.
    const seasonedBefore = nowMs - this.#o.refreshSeconds * 1000;
    const newestActive = rows.find((r) => r.status === 'active');
    const signer =
      newestActive === undefined || newestActive.created_at <= seasonedBefore
        ? newestActive
        : (rows.find((r) => r.status === 'retired' && r.retired_at !== null && r.retired_at > seasonedBefore) ?? newestActive);
    let active: ActiveKey | undefined;
    if (signer !== undefined) {
      let privateKey = this.#privateKeys.get(signer.kid);
      if (privateKey === undefined) {
        privateKey = createPrivateKey({ key: this.#o.sealer.unseal(signer.private_sealed, aadFor(signer.kid)), format: 'der', type: 'pkcs8' });
        this.#privateKeys.set(signer.kid, privateKey);
      }
      active = { kid: signer.kid, alg: signer.alg, privateKey };
    }
    return { loadedAtMs: nowMs, active, published };
  }

  async #current(): Promise<Snapshot> {
    const nowMs = this.#o.clock.now().getTime();
    const snap = this.#snapshot;
    if (snap !== undefined && nowMs - snap.loadedAtMs < this.#o.refreshSeconds * 1000 && nowMs >= snap.loadedAtMs) return snap;
    // One reload at a time; concurrent callers share it.
    this.#loading ??= this.#load().finally(() => {
      this.#loading = undefined;
    });
    this.#snapshot = await this.#loading;
    return this.#snapshot;
  }

  async activeKey(): Promise<ActiveKey> {
    let snap = await this.#current();
    if (snap.active === undefined) {
      await this.ensureActiveKey();
      snap = await this.#current();
    }
    if (snap.active === undefined) throw new Error('no active signing key');
    return snap.active;
  }

  /** Public keys for /.well-known/jwks.json: the active key and retired keys still within their publication window. */
  async publishedKeys(): Promise<PublishedKey[]> {
    const nowMs = this.#o.clock.now().getTime();
    return (await this.#current()).published.filter((k) => k.status === 'active' || (k.publishUntil !== null && k.publishUntil.getTime() > nowMs));
  }

  async jwks(): Promise<{ keys: JWK[] }> {
    return { keys: (await this.publishedKeys()).map((k) => k.jwk) };
  }

  /** Forget the cached snapshot (after a rotation by another process, in tests). */
  invalidate(): void {
    this.#snapshot = undefined;
  }
}
