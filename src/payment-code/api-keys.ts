import { createHash, randomBytes } from 'node:crypto';
import type { VerifierClock } from '../verifier/index.ts';
import { PaymentCodeError } from './errors.ts';
import type { EventLog } from './events.ts';
import type { PcDb } from './store/database.ts';
import type { ApiKeyRole } from './store/schema.ts';

/**
 * Callers of this service: wallet back ends (issue codes, provision and revoke offline seeds)
 * and acquirers / POS systems (redeem codes). Each has an API key of 256 random bits, shown
 * once, stored only as its SHA-256 (at that entropy a fast hash is as strong as a slow one).
 * Sent as `Authorization: Bearer pck_…`.
 */
export const API_KEY_ROLES: readonly ApiKeyRole[] = ['wallet', 'acquirer'];
const KEY_FORMAT = /^pck_[A-Za-z0-9_-]{43}$/;

export interface ApiKeyCaller {
  id: string;
  name: string;
  role: ApiKeyRole;
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('base64url');
}

export interface CreatedApiKey extends ApiKeyCaller {
  /** The key itself: available this once. */
  key: string;
}

export async function createApiKey(db: PcDb, events: EventLog, clock: VerifierClock, input: { name: string; role: ApiKeyRole }, actor: string): Promise<CreatedApiKey> {
  const name = input.name.normalize('NFC').trim();
  if (name === '' || name.length > 100) throw new TypeError('API key name must be 1–100 characters');
  if (!API_KEY_ROLES.includes(input.role)) throw new TypeError(`role must be one of ${API_KEY_ROLES.join(', ')}`);
  const id = `key_${randomBytes(9).toString('base64url')}`;
  const key = `pck_${randomBytes(32).toString('base64url')}`;
  await db.transaction().execute(async (tx) => {
    await tx.insertInto('pc_api_keys').values({ id, name, role: input.role, key_hash: hashApiKey(key), created_at: clock.now().getTime(), revoked_at: null }).execute();
    await events.append(tx, { type: 'api_key.created', actor, subject: id, data: { name, role: input.role } });
  });
  return { id, name, role: input.role, key };
}

export async function listApiKeys(db: PcDb): Promise<{ id: string; name: string; role: ApiKeyRole; createdAt: Date; revokedAt: Date | null }[]> {
  const rows = await db.selectFrom('pc_api_keys').select(['id', 'name', 'role', 'created_at', 'revoked_at']).orderBy('created_at').execute();
  return rows.map((r) => ({ id: r.id, name: r.name, role: r.role, createdAt: new Date(Number(r.created_at)), revokedAt: r.revoked_at === null ? null : new Date(Number(r.revoked_at)) }));
}

/** Revokes at once; true when this call revoked it. */
export async function revokeApiKey(db: PcDb, events: EventLog, clock: VerifierClock, id: string, actor: string): Promise<boolean> {
  return db.transaction().execute(async (tx) => {
    const r = await tx.updateTable('pc_api_keys').set({ revoked_at: clock.now().getTime() }).where('id', '=', id).where('revoked_at', 'is', null).executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) return false;
    await events.append(tx, { type: 'api_key.revoked', actor, subject: id });
    return true;
  });
}

const BEARER = /^Bearer +(\S+) *$/i;

/**
 * The caller of a request, or 401 `unauthorized` (missing, malformed, unknown or revoked key:
 * one answer for all), or 403 `forbidden` (a valid key of the other role).
 */
export async function authenticateApiKey(db: PcDb, header: string | undefined, role: ApiKeyRole): Promise<ApiKeyCaller> {
  const key = header === undefined || header.length > 512 ? undefined : BEARER.exec(header)?.[1];
  if (key === undefined || !KEY_FORMAT.test(key)) throw new PaymentCodeError('unauthorized');
  // The lookup is by the hash of the presented key: no secret is compared byte by byte.
  const row = await db.selectFrom('pc_api_keys').select(['id', 'name', 'role', 'revoked_at']).where('key_hash', '=', hashApiKey(key)).executeTakeFirst();
  if (row === undefined || row.revoked_at !== null) throw new PaymentCodeError('unauthorized');
  if (row.role !== role) throw new PaymentCodeError('forbidden', { detail: `This endpoint needs a ${role} key.` });
  return { id: row.id, name: row.name, role: row.role };
}
