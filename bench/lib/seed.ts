import { createHmac, createSecretKey, randomBytes } from 'node:crypto';
import { sealTotpSecret } from '../../src/factors/totp/index.ts';
import { tokenCodeGenerator, tokenStep, type TokenCodeParams } from '../../src/otp/index.ts';
import type { Config } from '../../src/config/schema.ts';
import { createClient } from '../../src/flows/clients.ts';
import { savePolicySet } from '../../src/flows/policies.ts';
import { passwordServices } from '../../src/flows/users.ts';
import { createGateway, type Gateway } from '../../src/gateway.ts';
import { hashToken, newId } from '../../src/crypto/ids.ts';
import type { FactorsTable, StepUpsTable, UsersTable } from '../../src/store/schema.ts';

export const BENCH_PASSWORD = 'bench passphrase for load 7';
export const ACTION = 'payment_code.issue';
export const CONTEXT = { amount: '88.00', currency: 'CNY', payee: 'shop-bench', deviceId: 'dev-bench' };
/** Above 100.00 the bench policy asks for TOTP (the payment-code flow), at or below for a password. */
export const TOTP_CONTEXT = { amount: '500.00', currency: 'CNY', payee: 'shop-bench', deviceId: 'dev-bench' };
export const TOTP_PARAMS: TokenCodeParams = { kind: 'totp', algorithm: 'SHA1', digits: 6, periodSeconds: 30 };
const TOTP_SEED_KEY = createSecretKey(Buffer.from('stepgate bench totp seeds'));

/** The TOTP secret of bench user n: derived, so a million users need no list in memory. */
export function benchTotpSecret(n: number): Buffer {
  return createHmac('sha1', TOTP_SEED_KEY).update(String(n)).digest();
}

/** The code user n's authenticator shows now (our own generator; oathtool agrees in the tests). */
export function benchTotpCode(n: number, at = new Date()): string {
  return tokenCodeGenerator(createSecretKey(benchTotpSecret(n)), TOTP_PARAMS)(tokenStep(TOTP_PARAMS, at));
}

export const benchUserId = (n: number) => `usr_bench${String(n).padStart(8, '0')}`;

export interface Seeded {
  users: number;
  clientId: string;
  clientSecret: string;
  basic: string;
}

/**
 * Seeds users straight into the database (one argon2 hash shared by all: hashing a million
 * passwords would take hours and measures nothing), a client, and a password policy.
 */
export async function seedGateway(config: Config, users: number, log: (line: string) => void, options: { totpUsers?: number } = {}): Promise<Seeded> {
  const gw = await createGateway(config);
  try {
    const phc = await passwordServices(gw).hasher.hash(BENCH_PASSWORD);
    const now = Date.now();
    const existing = Number((await gw.store.db.selectFrom('users').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
    // SQLite allows 32,766 bound variables per statement: 1,000 users with two factors of 14 columns.
    const batch = 1000;
    for (let start = existing; start < users; start += batch) {
      const n = Math.min(batch, users - start);
      const userRows: UsersTable[] = [];
      const factorRows: FactorsTable[] = [];
      for (let i = 0; i < n; i += 1) {
        const id = `usr_bench${String(start + i).padStart(8, '0')}`;
        userRows.push({ id, username: `u${start + i}`, display_name: `Bench ${start + i}`, roles: '[]', groups: '[]', status: 'active' as const, created_at: now, updated_at: now });
        factorRows.push({ id: newId('fac'), user_id: id, type: 'password', label: '', status: 'active' as const, secret_hash: phc, secret_sealed: null, params: '{}', counter: 0, failures: 0, locked_until: null, created_at: now, updated_at: now, last_used_at: null });
        if (start + i < (options.totpUsers ?? 0)) {
          const facId = newId('fac');
          factorRows.push({
            id: facId, user_id: id, type: 'totp', label: 'bench app', status: 'active' as const, secret_hash: null, secret_sealed: sealTotpSecret(gw.sealer, facId, benchTotpSecret(start + i)),
            params: JSON.stringify({ algorithm: 'SHA1', digits: 6, period: 30 }), counter: 0, failures: 0, locked_until: null, created_at: now, updated_at: now, last_used_at: null,
          });
        }
      }
      await gw.store.db.transaction().execute(async (tx) => {
        await tx.insertInto('users').values(userRows).execute();
        await tx.insertInto('factors').values(factorRows).execute();
      });
      if ((start / batch) % 100 === 0 && users > 10_000) log(`  seeded ${start + n} / ${users} users`);
    }
    const { client, clientSecret } = await createClient(gw, { name: 'bench payment-code service', actions: [ACTION], redirectUris: [] }, { actor: 'bench' });
    await savePolicySet(
      gw,
      [
        { id: 'bench-password', action: ACTION, priority: 10, when: { amount: { lte: '100.00', currency: 'CNY' } }, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1', tokenTtlSeconds: 120 },
        { id: 'bench-totp', action: ACTION, priority: 20, require: { anyOf: [['totp']] }, acr: 'urn:stepgate:aal2', tokenTtlSeconds: 120 },
      ],
      { who: { actor: 'bench' } },
    );
    const secret = clientSecret ?? '';
    return { users, clientId: client.clientId, clientSecret: secret, basic: `Basic ${Buffer.from(`${client.clientId}:${secret}`).toString('base64')}` };
  } finally {
    await gw.close();
  }
}

/** Completed step-ups waiting for their token: what the token endpoint consumes, one per request. */
export async function seedCompletedStepUps(gw: Gateway, clientId: string, count: number, users: number): Promise<string[]> {
  const now = Date.now();
  const ids: string[] = [];
  for (let start = 0; start < count; start += 1000) {
    const rows: StepUpsTable[] = [];
    for (let i = start; i < Math.min(count, start + 1000); i += 1) {
      const id = newId('stp');
      ids.push(id);
      rows.push({
        id, client_id: clientId, user_id: `usr_bench${String(i % users).padStart(8, '0')}`, action: ACTION, context: JSON.stringify(CONTEXT), amount: CONTEXT.amount, currency: CONTEXT.currency,
        binding_message: null, redirect_uri: null, state: null, status: 'completed' as const, policy_id: 'bench-password', policy_version: 1, requirement: JSON.stringify({ anyOf: [['password']] }),
        acr: 'urn:stepgate:aal1', token_ttl_seconds: 120, max_age_seconds: 0, ticket_hash: hashToken(randomBytes(16).toString('hex')), attempts: 1, max_attempts: 5,
        proven: JSON.stringify([{ type: 'password', factorId: 'fac_x', amr: ['pwd'], at: now }]), amr: '["pwd"]', version: 1, created_at: now, expires_at: now + 290_000,
        completed_at: now, auth_time: now, token_issued_at: null, token_jti: null, last_polled_at: null, poll_interval_seconds: 0,
      });
    }
    await gw.store.db.insertInto('stepups').values(rows).execute();
  }
  return ids;
}

/** Pending TOTP step-ups for users [from, to), straight into the database (creating them is the create scenario). */
export async function seedPendingTotpStepUps(gw: Gateway, clientId: string, from: number, to: number): Promise<{ id: string; ticket: string; user: number }[]> {
  const nowMs = Date.now();
  const version = (await gw.store.db.selectFrom('policy_sets').select('version').orderBy('version', 'desc').limit(1).executeTakeFirstOrThrow()).version;
  const out: { id: string; ticket: string; user: number }[] = [];
  const rows: StepUpsTable[] = [];
  for (let n = from; n < to; n += 1) {
    const id = newId('stp');
    const ticket = randomBytes(32).toString('base64url');
    out.push({ id, ticket, user: n });
    rows.push({
      id, client_id: clientId, user_id: benchUserId(n), action: ACTION, context: JSON.stringify(TOTP_CONTEXT), amount: TOTP_CONTEXT.amount, currency: TOTP_CONTEXT.currency,
      binding_message: null, redirect_uri: null, state: null, status: 'pending', policy_id: 'bench-totp', policy_version: version, requirement: JSON.stringify({ anyOf: [['totp']] }),
      acr: 'urn:stepgate:aal2', token_ttl_seconds: 120, max_age_seconds: 0, ticket_hash: hashToken(ticket), attempts: 0, max_attempts: 5, proven: '[]', amr: '[]', version: 0,
      created_at: nowMs, expires_at: nowMs + 290_000, completed_at: null, auth_time: null, token_issued_at: null, token_jti: null, last_polled_at: null, poll_interval_seconds: 0,
    });
  }
  for (let i = 0; i < rows.length; i += 500) await gw.store.db.insertInto('stepups').values(rows.slice(i, i + 500)).execute();
  return out;
}
