import { randomBytes } from 'node:crypto';
import type { VerifierClock } from '../verifier/index.ts';
import { newDeviceSlot, OFFLINE_OTP_DIGITS } from './code-format.ts';
import { PaymentCodeError } from './errors.ts';
import type { EventLog } from './events.ts';
import { formatDeviceSeed, SEED_BYTES } from './offline-otp.ts';
import type { PaymentCodeSealer } from './sealer.ts';
import type { StepUpContext, StepUpGate } from './step-up.ts';
import type { PcDb, PcTx } from './store/database.ts';
import type { OfflineSeedsTable } from './store/schema.ts';

/**
 * Offline device seeds (way 2). After a step-up for `payment_code.offline_seed` the device
 * gets a 32-byte seed — shown this once, sealed at rest — and a device slot. With them it
 * makes codes without a network for `seedTtlSeconds`, at most `maxCodes` of them.
 * Provisioning a new seed for the same device revokes the old one; revocation (a lost
 * phone) takes effect at once, for every process, because redemption re-checks it in the
 * same statement that counts the code.
 */
export const OFFLINE_SEED_ACTION = 'payment_code.offline_seed';

export interface OfflineSeedDeps {
  db: PcDb;
  events: EventLog;
  clock: VerifierClock;
  gate: StepUpGate;
  sealer: PaymentCodeSealer;
  prefix: string;
  periodSeconds: number;
  seedTtlSeconds: number;
  maxCodes: number;
}

export interface SeedRequest {
  deviceId: string;
  amountLimit: string;
  currency: string;
  /** At most the configured cap; defaults to it. */
  maxCodes?: number | undefined;
}

/** What the user approves: the device, the per-code limit, how many codes, for how long, offline. */
export function seedStepUpContext(request: SeedRequest, d: Pick<OfflineSeedDeps, 'maxCodes' | 'seedTtlSeconds'>): StepUpContext {
  return {
    amount: request.amountLimit,
    currency: request.currency,
    deviceId: request.deviceId,
    maxCodes: request.maxCodes ?? d.maxCodes,
    validitySeconds: d.seedTtlSeconds,
    offline: true,
  };
}

export function seedBindingMessage(request: SeedRequest, d: Pick<OfflineSeedDeps, 'maxCodes' | 'seedTtlSeconds'>): string {
  const days = Math.round((d.seedTtlSeconds / 86_400) * 10) / 10;
  return `Offline payment codes on device ${request.deviceId}: up to ${request.maxCodes ?? d.maxCodes} codes of at most ${request.amountLimit} ${request.currency} each, for ${days} days`;
}

export function seedAad(id: string): string {
  return `pc_offline_seeds.seed_sealed:${id}`;
}

export interface ProvisionedSeed {
  seedId: string;
  /** The string the device stores (`pcs1:…`): returned this once. */
  deviceSeed: string;
  slot: string;
  prefix: string;
  periodSeconds: number;
  digits: number;
  subject: string;
  deviceId: string;
  amountLimit: string;
  currency: string;
  maxCodes: number;
  expiresAt: Date;
}

async function claimSlot(tx: PcTx, slot: string, seedId: string, nowMs: number, expiresAt: number): Promise<boolean> {
  const result = await tx
    .insertInto('pc_device_slots')
    .values({ slot, seed_id: seedId, expires_at: expiresAt })
    .onConflict((oc) => oc.column('slot').doUpdateSet({ seed_id: seedId, expires_at: expiresAt }).where('pc_device_slots.expires_at', '<=', nowMs))
    .executeTakeFirst();
  return Number(result.numInsertedOrUpdatedRows ?? 0) === 1;
}

/** Revokes these seeds inside `tx`, frees their slots and records one event each. */
async function revokeIn(tx: PcTx, d: OfflineSeedDeps, seeds: OfflineSeedsTable[], actor: string, reason: string): Promise<void> {
  const nowMs = d.clock.now().getTime();
  for (const seed of seeds) {
    const r = await tx.updateTable('pc_offline_seeds').set({ revoked_at: nowMs }).where('id', '=', seed.id).where('revoked_at', 'is', null).executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) continue;
    await tx.updateTable('pc_device_slots').set({ expires_at: nowMs }).where('slot', '=', seed.slot).where('seed_id', '=', seed.id).execute();
    await d.events.append(tx, { type: 'offline_seed.revoked', actor, subject: seed.subject, data: { seedId: seed.id, deviceId: seed.device_id, reason } });
  }
}

export async function provisionSeed(d: OfflineSeedDeps, input: { owner: string; subject: string; stepupId: string; request: SeedRequest; requestId?: string }): Promise<ProvisionedSeed> {
  const maxCodes = input.request.maxCodes ?? d.maxCodes;
  const context = seedStepUpContext(input.request, d);
  const verified = await d.gate.complete({ owner: input.owner, action: OFFLINE_SEED_ACTION, subject: input.subject, stepupId: input.stepupId, context });
  const { claims } = verified;
  const nowMs = d.clock.now().getTime();
  const expiresAtMs = nowMs + d.seedTtlSeconds * 1000;
  const seedId = `pcs_${randomBytes(16).toString('base64url')}`;
  const seed = randomBytes(SEED_BYTES);

  const slot = await d.db.transaction().execute(async (tx) => {
    if (!(await verified.finish(tx))) return undefined;
    // One seed per device: a new one replaces (revokes) the old.
    const previous = await tx
      .selectFrom('pc_offline_seeds')
      .selectAll()
      .where('subject', '=', claims.sub)
      .where('device_id', '=', input.request.deviceId)
      .where('revoked_at', 'is', null)
      .execute();
    await revokeIn(tx, d, previous, input.owner, 'replaced');
    let claimed: string | undefined;
    for (let attempt = 0; attempt < 16 && claimed === undefined; attempt++) {
      const candidate = newDeviceSlot();
      if (await claimSlot(tx, candidate, seedId, nowMs, expiresAtMs)) claimed = candidate;
    }
    if (claimed === undefined) throw new Error('no free device slot');
    await tx
      .insertInto('pc_offline_seeds')
      .values({
        id: seedId,
        owner: input.owner,
        subject: claims.sub,
        device_id: input.request.deviceId,
        slot: claimed,
        seed_sealed: d.sealer.seal(seed, seedAad(seedId)),
        amount_limit: input.request.amountLimit,
        currency: input.request.currency,
        max_codes: maxCodes,
        codes_used: 0,
        period_seconds: d.periodSeconds,
        failures: 0,
        failure_window: 0,
        stepup_id: claims.txn,
        token_jti: claims.jti,
        created_at: nowMs,
        expires_at: expiresAtMs,
        revoked_at: null,
      })
      .execute();
    await d.events.append(tx, {
      type: 'offline_seed.provisioned',
      actor: input.owner,
      subject: claims.sub,
      requestId: input.requestId ?? null,
      data: { seedId, stepupId: claims.txn, jti: claims.jti, acr: claims.acr, deviceId: input.request.deviceId, slot: claimed, maxCodes, amountLimit: input.request.amountLimit, currency: input.request.currency, expiresAt: expiresAtMs },
    });
    return claimed;
  });
  if (slot === undefined) throw new PaymentCodeError('replayed', { challenge: d.gate.challenge(OFFLINE_SEED_ACTION) });
  return {
    seedId,
    deviceSeed: formatDeviceSeed({ prefix: d.prefix, slot, periodSeconds: d.periodSeconds, seed }),
    slot,
    prefix: d.prefix,
    periodSeconds: d.periodSeconds,
    digits: OFFLINE_OTP_DIGITS,
    subject: claims.sub,
    deviceId: input.request.deviceId,
    amountLimit: input.request.amountLimit,
    currency: input.request.currency,
    maxCodes,
    expiresAt: new Date(expiresAtMs),
  };
}

export interface SeedView {
  seedId: string;
  subject: string;
  deviceId: string;
  slot: string;
  amountLimit: string;
  currency: string;
  maxCodes: number;
  codesUsed: number;
  status: 'active' | 'revoked' | 'expired';
  createdAt: Date;
  expiresAt: Date;
  revokedAt: Date | null;
}

function view(row: OfflineSeedsTable, nowMs: number): SeedView {
  return {
    seedId: row.id,
    subject: row.subject,
    deviceId: row.device_id,
    slot: row.slot,
    amountLimit: row.amount_limit,
    currency: row.currency,
    maxCodes: row.max_codes,
    codesUsed: row.codes_used,
    status: row.revoked_at !== null ? 'revoked' : row.expires_at <= nowMs ? 'expired' : 'active',
    createdAt: new Date(Number(row.created_at)),
    expiresAt: new Date(Number(row.expires_at)),
    revokedAt: row.revoked_at === null ? null : new Date(Number(row.revoked_at)),
  };
}

/** Revokes a seed this caller provisioned. Idempotent: revoking a revoked seed answers its state. */
export async function revokeSeed(d: OfflineSeedDeps, input: { owner: string; seedId: string; requestId?: string }): Promise<SeedView> {
  return d.db.transaction().execute(async (tx) => {
    const row = await tx.selectFrom('pc_offline_seeds').selectAll().where('id', '=', input.seedId).executeTakeFirst();
    if (row === undefined || row.owner !== input.owner) throw new PaymentCodeError('seed_not_found');
    await revokeIn(tx, d, [row], input.owner, 'requested');
    const fresh = await tx.selectFrom('pc_offline_seeds').selectAll().where('id', '=', input.seedId).executeTakeFirstOrThrow();
    return view(fresh, d.clock.now().getTime());
  });
}

export async function listSeeds(d: OfflineSeedDeps, input: { owner: string; subject: string }): Promise<SeedView[]> {
  const rows = await d.db
    .selectFrom('pc_offline_seeds')
    .selectAll()
    .where('owner', '=', input.owner)
    .where('subject', '=', input.subject)
    .orderBy('created_at', 'desc')
    .limit(100)
    .execute();
  const nowMs = d.clock.now().getTime();
  return rows.map((r) => view(r, nowMs));
}
