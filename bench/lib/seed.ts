import { randomBytes } from 'node:crypto';
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
export async function seedGateway(config: Config, users: number, log: (line: string) => void): Promise<Seeded> {
  const gw = await createGateway(config);
  try {
    const phc = await passwordServices(gw).hasher.hash(BENCH_PASSWORD);
    const now = Date.now();
    const existing = Number((await gw.store.db.selectFrom('users').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
    const batch = 2000;
    for (let start = existing; start < users; start += batch) {
      const n = Math.min(batch, users - start);
      const userRows: UsersTable[] = [];
      const factorRows: FactorsTable[] = [];
      for (let i = 0; i < n; i += 1) {
        const id = `usr_bench${String(start + i).padStart(8, '0')}`;
        userRows.push({ id, username: `u${start + i}`, display_name: `Bench ${start + i}`, roles: '[]', groups: '[]', status: 'active' as const, created_at: now, updated_at: now });
        factorRows.push({ id: newId('fac'), user_id: id, type: 'password', label: '', status: 'active' as const, secret_hash: phc, secret_sealed: null, params: '{}', counter: 0, failures: 0, locked_until: null, created_at: now, updated_at: now, last_used_at: null });
      }
      await gw.store.db.transaction().execute(async (tx) => {
        await tx.insertInto('users').values(userRows).execute();
        await tx.insertInto('factors').values(factorRows).execute();
      });
      if ((start / batch) % 50 === 0 && users > 10_000) log(`  seeded ${start + n} / ${users} users`);
    }
    const { client, clientSecret } = await createClient(gw, { name: 'bench payment-code service', actions: [ACTION], redirectUris: [] }, { actor: 'bench' });
    await savePolicySet(gw, [{ id: 'bench-password', action: ACTION, priority: 10, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1', tokenTtlSeconds: 120 }], { who: { actor: 'bench' } });
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
