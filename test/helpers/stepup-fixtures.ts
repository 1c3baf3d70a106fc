import type { AddressInfo } from 'node:net';
import { createServer, type Server } from 'node:http';
import type { Express } from 'express';
import type { Gateway } from '../../src/gateway.ts';
import { createClient } from '../../src/flows/clients.ts';
import { createUser } from '../../src/flows/users.ts';
import type { PolicyInput } from '../../src/policy/policy-schema.ts';
import { policyDocumentSchema } from '../../src/policy/policy-schema.ts';

/** Stores a new policy-set version directly (the admin API and CLI do the same through the flow). */
export async function setPolicies(gw: Gateway, policies: PolicyInput[]): Promise<number> {
  const doc = policyDocumentSchema.parse({ policies });
  const current = await gw.store.db.selectFrom('policy_sets').select('version').orderBy('version', 'desc').limit(1).executeTakeFirst();
  const version = (current?.version ?? 0) + 1;
  await gw.store.db
    .insertInto('policy_sets')
    .values({ version, document: JSON.stringify(doc), created_at: gw.clock.now().getTime(), created_by: 'test', comment: '' })
    .execute();
  return version;
}

export const PASSWORD = 'correct horse battery staple 42';

export async function makeUser(gw: Gateway, username: string, password = PASSWORD) {
  return createUser(gw, { username, password }, { actor: 'test' });
}

export async function makeClient(gw: Gateway, name: string, actions: string[], redirectUris: string[] = []) {
  const { client, clientSecret } = await createClient(gw, { name, actions, redirectUris }, { actor: 'test' });
  if (clientSecret === undefined) throw new Error('no secret');
  return { clientId: client.clientId, secret: clientSecret, basic: `Basic ${Buffer.from(`${encodeURIComponent(client.clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64')}` };
}

/** Serves an app on 127.0.0.1 (real HTTP, for JWKS fetches and cross-process tests). */
export async function listen(app: Express): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  const server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
