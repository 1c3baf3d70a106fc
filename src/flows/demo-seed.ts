import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from '../config/load-config.ts';
import type { Gateway } from '../gateway.ts';
import { parsePolicyFile } from '../policy/policy-file.ts';
import { createClient, disableClient, listClients, rotateClientSecret } from './clients.ts';
import { getCurrentPolicySet, policyFactorTypes, savePolicySet } from './policies.ts';
import { createUser, findUserByUsername, type UserView } from './users.ts';

/**
 * Seeds the development demo (config/demo.yaml) into the gateway: demo users with their
 * factors, the payment-code service's client registration and the demo policy set. Data
 * driven: a new factor type joins the demo with one entry in DEMO_FACTOR_SEEDERS and one
 * line in the YAML file. Development mode only (the caller checks).
 */
export const DEFAULT_DEMO_FILE = fileURLToPath(new URL('../../config/demo.yaml', import.meta.url));
const ACTOR = { actor: 'demo' };

const factorSpec = z.looseObject({ type: z.string().regex(/^[a-z][a-z0-9_]{0,31}$/) });
export const demoFileSchema = z.strictObject({
  users: z
    .array(
      z.strictObject({
        username: z.string().min(1).max(64),
        displayName: z.string().max(100).optional(),
        factors: z.array(factorSpec).min(1),
      }),
    )
    .min(1)
    .max(20),
  client: z.strictObject({
    name: z.string().min(1).max(100),
    actions: z.array(z.string()).min(1),
  }),
  policies: z.string().min(1),
  paymentCode: z.strictObject({
    issueAcr: z.string(),
    offlineSeedAcr: z.string(),
  }),
});
export type DemoFile = z.infer<typeof demoFileSchema>;
type FactorSpec = z.infer<typeof factorSpec>;

export function readDemoFile(file: string = DEFAULT_DEMO_FILE): DemoFile & { dir: string } {
  let parsed: unknown;
  try {
    parsed = parseYaml(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ConfigError(file, `cannot read the demo file (${(err as Error).message.split('\n')[0]})`);
  }
  const result = demoFileSchema.safeParse(parsed);
  if (!result.success) {
    const issue = result.error.issues[0];
    throw new ConfigError(`${file}: ${issue?.path.join('.') ?? ''}`, issue?.message ?? 'invalid');
  }
  return { ...result.data, dir: dirname(file) };
}

// ---- credentials the demo made up -----------------------------------------------------------

function credentialsFile(gw: Gateway): string {
  return join(gw.config.dataDir, 'demo-credentials.json');
}

function readCredentials(gw: Gateway): Record<string, string> {
  const file = credentialsFile(gw);
  if (!existsSync(file)) return {};
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>;
  } catch {
    return {};
  }
}

function writeCredentials(gw: Gateway, credentials: Record<string, string>): void {
  const file = credentialsFile(gw);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(credentials, null, 2)}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
}

// ---- factor seeders ---------------------------------------------------------------------------

export interface SeedContext {
  gw: Gateway;
  username: string;
  displayName: string | undefined;
  /** The user, once created (the password seeder creates it: a gateway user always has a password). */
  user: UserView | undefined;
  credentials: Record<string, string>;
  /** Lines to show the developer (never logged). */
  notes: string[];
}

/** One per factor type: enrols `spec` for the demo user if it is not enrolled yet. */
export type DemoFactorSeeder = (ctx: SeedContext, spec: FactorSpec) => Promise<void>;

const passwordSpec = z.looseObject({ type: z.literal('password'), password: z.string().max(128).optional() });

export const DEMO_FACTOR_SEEDERS: Record<string, DemoFactorSeeder> = {
  async password(ctx, raw) {
    const spec = passwordSpec.parse(raw);
    if (ctx.user !== undefined) {
      const known = ctx.credentials[ctx.username] ?? spec.password;
      ctx.notes.push(`${ctx.username} / ${known === undefined || known === '' ? '(password as set before)' : known}`);
      return;
    }
    const password = spec.password !== undefined && spec.password !== '' ? spec.password : `demo-${randomBytes(9).toString('base64url')}`;
    ctx.user = await createUser(ctx.gw, { username: ctx.username, password, ...(ctx.displayName === undefined ? {} : { displayName: ctx.displayName }) }, ACTOR);
    if (spec.password === undefined || spec.password === '') ctx.credentials[ctx.username] = password;
    ctx.notes.push(`${ctx.username} / ${password}`);
  },
};

async function seedUsers(gw: Gateway, demo: DemoFile): Promise<{ notes: string[]; users: { username: string; id: string }[] }> {
  const credentials = readCredentials(gw);
  const before = JSON.stringify(credentials);
  const notes: string[] = [];
  const users: { username: string; id: string }[] = [];
  for (const u of demo.users) {
    const ctx: SeedContext = { gw, username: u.username, displayName: u.displayName, user: await findUserByUsername(gw, u.username), credentials, notes };
    // The password comes first: it creates the user the other factors belong to.
    const factors = [...u.factors].sort((a, b) => (a.type === 'password' ? -1 : b.type === 'password' ? 1 : 0));
    for (const spec of factors) {
      const seeder = DEMO_FACTOR_SEEDERS[spec.type];
      if (seeder === undefined) throw new ConfigError('demo.users.factors', `no demo seeder for factor type "${spec.type}" (add one to DEMO_FACTOR_SEEDERS in src/flows/demo-seed.ts)`);
      await seeder(ctx, spec);
    }
    if (ctx.user === undefined) throw new ConfigError('demo.users.factors', `${u.username}: a demo user needs a password factor`);
    users.push({ username: ctx.user.username, id: ctx.user.id });
  }
  if (JSON.stringify(credentials) !== before) writeCredentials(gw, credentials);
  return { notes, users };
}

// ---- client and policies ----------------------------------------------------------------------

export interface DemoClient {
  clientId: string;
  clientSecret: string;
}

/** The demo client, registered once; its secret is rotated on every start (it is stored only as a hash). */
async function seedClient(gw: Gateway, demo: DemoFile, redirectUri: string): Promise<DemoClient> {
  const wanted = { actions: [...demo.client.actions].sort(), redirectUris: [redirectUri] };
  const existing = (await listClients(gw)).filter((c) => c.name === demo.client.name && c.status === 'active');
  for (const c of existing) {
    const same = c.authMethod === 'client_secret_basic' && JSON.stringify([...c.allowedActions].sort()) === JSON.stringify(wanted.actions) && JSON.stringify(c.redirectUris) === JSON.stringify(wanted.redirectUris);
    if (same) {
      const { clientSecret } = await rotateClientSecret(gw, c.clientId, ACTOR);
      return { clientId: c.clientId, clientSecret };
    }
    // The service moved (another port) or the demo's actions changed: replace the registration.
    await disableClient(gw, c.clientId, ACTOR);
  }
  const { client, clientSecret } = await createClient(gw, { name: demo.client.name, actions: demo.client.actions, redirectUris: [redirectUri] }, ACTOR);
  if (clientSecret === undefined) throw new TypeError('demo client has no secret');
  return { clientId: client.clientId, clientSecret };
}

/** Applies the demo policy set unless someone other than the seeders changed the policies. */
async function seedPolicies(gw: Gateway, demo: DemoFile & { dir: string }): Promise<string> {
  const file = resolve(demo.dir, demo.policies);
  const parsed = parsePolicyFile(readFileSync(file, 'utf8'), { factorTypes: policyFactorTypes(gw) });
  if (!parsed.ok) throw new ConfigError(file, parsed.errors.map((e) => `${e.pointer}: ${e.reason}`).join('; '));
  const current = await getCurrentPolicySet(gw);
  if (current.version > 0 && current.createdBy !== 'config' && current.createdBy !== 'demo') {
    return `policies: version ${current.version} was stored by ${current.createdBy ?? 'someone'}, so the demo set is not applied over it (to use it: npx stepgate policies apply ${relative(process.cwd(), file) || file})`;
  }
  const saved = await savePolicySet(gw, parsed.policies, { who: ACTOR, comment: `demo policies (${demo.policies})` });
  return saved.changed ? `policies: demo set stored as version ${saved.version}` : `policies: demo set in force (version ${saved.version})`;
}

export interface SeededDemo {
  client: DemoClient;
  /** `username / password` lines for the developer's terminal. */
  credentials: string[];
  /** The demo users as gateway user ids. */
  users: { username: string; id: string }[];
  policies: string;
}

export async function seedDemo(gw: Gateway, demo: DemoFile & { dir: string }, paymentCodeUrl: string): Promise<SeededDemo> {
  if (gw.config.mode !== 'development') throw new TypeError('the demo is seeded in development mode only');
  const { notes, users } = await seedUsers(gw, demo);
  const policies = await seedPolicies(gw, demo);
  const client = await seedClient(gw, demo, `${paymentCodeUrl}/demo/return`);
  return { client, credentials: notes, users, policies };
}
