import { chmodSync, writeFileSync } from 'node:fs';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { API_KEY_ROLES, createApiKey, listApiKeys, revokeApiKey } from '../payment-code/api-keys.ts';
import { loadPaymentCodeConfig, type PaymentCodeConfig, PaymentCodeConfigError } from '../payment-code/config.ts';
import { EventLog, verifyEventChain } from '../payment-code/events.ts';
import { offlineCode, parseDeviceSeed } from '../payment-code/offline-otp.ts';
import { loadPaymentCodeMasterKey, PaymentCodeSealer } from '../payment-code/sealer.ts';
import { openConfiguredPaymentCodeStore, startPaymentCodeServer } from '../payment-code/service.ts';
import { createQrKey, listQrKeys, PUBLISH_LEAD_SECONDS, retireQrKey } from '../payment-code/signing-keys.ts';
import type { PaymentCodeStore } from '../payment-code/store/database.ts';
import type { ApiKeyRole } from '../payment-code/store/schema.ts';
import { systemClock } from '../verifier/index.ts';
import { cliActor } from './cli-support.ts';
import { type Command, type CommandArgs, requireStringOption, stringOption, UsageError } from './command.ts';

/**
 * The payment-code service's commands. They read the service's own configuration (the
 * `paymentCode` section and STEPGATE_PAYMENT_CODE_*), never the gateway's database.
 */

function paymentCodeConfig(args: CommandArgs): PaymentCodeConfig {
  return loadPaymentCodeConfig({ file: stringOption(args, 'config') });
}

/** Runs a command body; a configuration problem is one line and exit 2, like the gateway's. */
async function withConfig(args: CommandArgs, body: (config: PaymentCodeConfig) => Promise<number>): Promise<number> {
  let config: PaymentCodeConfig;
  try {
    config = paymentCodeConfig(args);
  } catch (err) {
    if (!(err instanceof PaymentCodeConfigError)) throw err;
    args.err(err.message);
    return 2;
  }
  return body(config);
}

async function withStore(args: CommandArgs, body: (store: PaymentCodeStore, config: PaymentCodeConfig) => Promise<number>): Promise<number> {
  return withConfig(args, async (config) => {
    const store = await openConfiguredPaymentCodeStore(config);
    try {
      await store.migrate();
      return await body(store, config);
    } finally {
      await store.close();
    }
  });
}

export const paymentCodeServiceCommand: Command = {
  name: ['payment-code-service'],
  summary: 'Run the reference payment-code service (its own process and database; talks to the gateway over HTTP).',
  usage: [
    'stepgate payment-code-service [--config FILE]',
    '',
    '  Reads the `paymentCode` section of the configuration and STEPGATE_PAYMENT_CODE_* (see',
    '  docs/payment-codes.md). Needs at least the gateway URL and this service\'s client id and',
    '  secret (or private key) at the gateway. Stops gracefully on SIGTERM/SIGINT.',
  ].join('\n'),
  options: {},
  async run(args) {
    return withConfig(args, async (config) => {
      let running: Awaited<ReturnType<typeof startPaymentCodeServer>>;
      try {
        running = await startPaymentCodeServer(config);
      } catch (err) {
        if (err instanceof PaymentCodeConfigError) {
          args.err(err.message);
          return 2;
        }
        throw err;
      }
      const { logger } = running.service;
      const port = Number(new URL(running.url).port);
      logger.info({ port, url: running.url, publicUrl: config.http.publicUrl, gateway: config.gateway.url, database: running.service.store.location, mode: config.mode }, 'payment-code service listening');
      if (config.mode === 'development' && config.demo.enabled) logger.info({ url: `${config.http.publicUrl}/demo` }, 'demo wallet (development only)');
      await new Promise<void>((resolve) => {
        const shutdown = (signal: string) => {
          logger.info({ signal }, 'shutting down');
          void running.stop().then(resolve);
        };
        process.once('SIGTERM', () => shutdown('SIGTERM'));
        process.once('SIGINT', () => shutdown('SIGINT'));
      });
      return 0;
    });
  },
};

/** `--time`: ISO 8601, or Unix seconds (optionally written `@1767225600`). */
export function parseTimeOption(raw: string): Date {
  const seconds = /^@?(\d{1,12})$/.exec(raw);
  const at = seconds !== null ? new Date(Number(seconds[1]) * 1000) : new Date(raw);
  if (Number.isNaN(at.getTime()) || (seconds === null && !/^\d{4}-\d{2}-\d{2}T/.test(raw))) {
    throw new UsageError('--time must be ISO 8601 (2026-01-01T12:00:00Z) or Unix seconds');
  }
  return at;
}

export const paymentCodeGenerateCommand: Command = {
  name: ['payment-code', 'generate'],
  summary: 'Reference generator: the offline payment code a device seed makes at a given time.',
  usage: [
    "stepgate payment-code generate --seed 'pcs1:…' [--time ISO|UNIX_SECONDS]",
    '',
    '  --seed   the device seed string from provisioning (pcs1:<prefix>:<slot>:<period>:<BASE32>)',
    '  --time   the moment to make the code for (default: now)',
    '',
    '  Prints the 18 digits. The algorithm is in docs/payment-codes.md.',
  ].join('\n'),
  options: { seed: { type: 'string' }, time: { type: 'string' } },
  async run(args) {
    const seed = parseDeviceSeed(requireStringOption(args, 'seed'));
    if (seed === undefined) throw new UsageError('--seed is not a device seed (pcs1:<prefix>:<slot>:<period>:<BASE32 seed>)');
    const raw = stringOption(args, 'time');
    const at = raw === undefined ? systemClock.now() : parseTimeOption(raw);
    args.out(offlineCode(seed, at));
    return 0;
  },
};

export const paymentCodeApiKeysCreateCommand: Command = {
  name: ['payment-code', 'api-keys', 'create'],
  summary: 'Create an API key for a wallet back end or an acquirer (shown once).',
  usage: 'stepgate payment-code api-keys create --name NAME --role wallet|acquirer [--json] [--config FILE]',
  options: { name: { type: 'string' }, role: { type: 'string' }, json: { type: 'boolean' } },
  async run(args) {
    const name = requireStringOption(args, 'name');
    const role = requireStringOption(args, 'role');
    if (!API_KEY_ROLES.includes(role as ApiKeyRole)) throw new UsageError(`--role must be one of ${API_KEY_ROLES.join(', ')}`);
    if (name.trim().length === 0 || name.length > 100) throw new UsageError('--name must be 1–100 characters');
    return withStore(args, async (store) => {
      const created = await createApiKey(store.db, new EventLog(store.dialect, systemClock), systemClock, { name, role: role as ApiKeyRole }, cliActor());
      if (args.values.json === true) {
        args.out(JSON.stringify({ id: created.id, name: created.name, role: created.role, api_key: created.key }));
      } else {
        args.out(`Created ${created.role} key ${created.id} (${created.name}). The key is shown this once:\n\n  ${created.key}\n\nSend it as: Authorization: Bearer <key>`);
      }
      return 0;
    });
  },
};

export const paymentCodeApiKeysListCommand: Command = {
  name: ['payment-code', 'api-keys', 'list'],
  summary: 'List the API keys of the payment-code service (never the keys themselves).',
  usage: 'stepgate payment-code api-keys list [--json] [--config FILE]',
  options: { json: { type: 'boolean' } },
  async run(args) {
    return withStore(args, async (store) => {
      const keys = await listApiKeys(store.db);
      if (args.values.json === true) {
        args.out(JSON.stringify(keys.map((k) => ({ id: k.id, name: k.name, role: k.role, created_at: k.createdAt.toISOString(), revoked_at: k.revokedAt?.toISOString() ?? null }))));
      } else {
        for (const k of keys) args.out(`${k.id}  ${k.role.padEnd(8)}  ${k.revokedAt === null ? 'active ' : 'revoked'}  ${k.name}`);
      }
      return 0;
    });
  },
};

export const paymentCodeApiKeysRevokeCommand: Command = {
  name: ['payment-code', 'api-keys', 'revoke'],
  summary: 'Revoke an API key at once.',
  usage: 'stepgate payment-code api-keys revoke KEY_ID [--config FILE]',
  options: {},
  positionals: 1,
  async run(args) {
    if (args.positionals.length !== 1) throw new UsageError('give exactly one key id');
    const id = args.positionals[0] as string;
    return withStore(args, async (store) => {
      const done = await revokeApiKey(store.db, new EventLog(store.dialect, systemClock), systemClock, id, cliActor());
      args.out(done ? `revoked ${id}` : `${id}: no such active key`);
      return done ? 0 : 1;
    });
  },
};

export const paymentCodeClientKeyCommand: Command = {
  name: ['payment-code', 'client-key'],
  summary: 'Make an Ed25519 key for private_key_jwt: writes the private JWK to a file (0600), prints the public JWKS to register.',
  usage: [
    'stepgate payment-code client-key --out FILE',
    '',
    '  Then: npx stepgate clients create --name payment-codes --auth private_key_jwt --jwks-file PUBLIC.json …',
    '  and set paymentCode.gateway.clientAuth: private_key_jwt, clientKeyFile: FILE.',
  ].join('\n'),
  options: { out: { type: 'string' } },
  async run(args) {
    const out = requireStringOption(args, 'out');
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const kid = `pc-client-${randomBytes(6).toString('base64url')}`;
    const privateJwk = { ...privateKey.export({ format: 'jwk' }), kid, alg: 'EdDSA', use: 'sig' };
    try {
      writeFileSync(out, `${JSON.stringify(privateJwk, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
    } catch (err) {
      args.err(`stepgate payment-code client-key: cannot write ${out} (${(err as NodeJS.ErrnoException).code ?? 'error'}); it must not exist yet`);
      return 1;
    }
    chmodSync(out, 0o600);
    args.out(JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid, alg: 'EdDSA', use: 'sig' }] }, null, 2));
    return 0;
  },
};

export const paymentCodeEventsVerifyCommand: Command = {
  name: ['payment-code', 'events', 'verify'],
  summary: "Check the payment-code service's event log hash chain; exit 1 naming the first broken row.",
  usage: 'stepgate payment-code events verify [--config FILE]',
  options: {},
  async run(args) {
    return withStore(args, async (store) => {
      const result = await verifyEventChain(store.db);
      if (result.ok) {
        args.out(`event chain intact: ${result.rows} events`);
        return 0;
      }
      args.err(`event chain broken at seq ${result.brokenSeq} (${result.reason}) after ${result.rows} good events`);
      return 1;
    });
  },
};

export const paymentCodeKeysRotateCommand: Command = {
  name: ['payment-code', 'keys', 'rotate'],
  summary: `New signed-QR signing key: published in the JWKS at once, signing after ${PUBLISH_LEAD_SECONDS / 60} minutes.`,
  usage: 'stepgate payment-code keys rotate [--json] [--config FILE]',
  options: { json: { type: 'boolean' } },
  async run(args) {
    return withStore(args, async (store, config) => {
      const sealer = new PaymentCodeSealer(loadPaymentCodeMasterKey(config.secrets.masterKey, config.dataDir, config.mode).bytes);
      const kid = await createQrKey(store.db, sealer, systemClock, new EventLog(store.dialect, systemClock), cliActor());
      const signsFrom = new Date(systemClock.now().getTime() + PUBLISH_LEAD_SECONDS * 1000).toISOString();
      if (args.values.json === true) args.out(JSON.stringify({ kid, signs_from: signsFrom }));
      else args.out(`created ${kid}: published now, signs from ${signsFrom}. Retire the old key once its last codes have expired: npx stepgate payment-code keys retire KID`);
      return 0;
    });
  },
};

export const paymentCodeKeysListCommand: Command = {
  name: ['payment-code', 'keys', 'list'],
  summary: 'List the signed-QR signing keys: which are published, which one signs.',
  usage: 'stepgate payment-code keys list [--json] [--config FILE]',
  options: { json: { type: 'boolean' } },
  async run(args) {
    return withStore(args, async (store) => {
      const keys = await listQrKeys(store.db, systemClock);
      if (args.values.json === true) {
        args.out(JSON.stringify(keys.map((k) => ({ kid: k.kid, alg: k.alg, status: k.status, signing: k.signing, created_at: k.createdAt.toISOString(), retired_at: k.retiredAt?.toISOString() ?? null }))));
      } else {
        for (const k of keys) args.out(`${k.kid}  ${k.alg}  ${k.status === 'retired' ? 'retired  ' : k.signing ? 'signing  ' : 'published'}  created ${k.createdAt.toISOString()}`);
      }
      return 0;
    });
  },
};

export const paymentCodeKeysRetireCommand: Command = {
  name: ['payment-code', 'keys', 'retire'],
  summary: 'Retire a signed-QR key: it leaves the JWKS and its codes stop verifying. Not the key that signs now.',
  usage: 'stepgate payment-code keys retire KID [--config FILE]',
  options: {},
  positionals: 1,
  async run(args) {
    if (args.positionals.length !== 1) throw new UsageError('give exactly one key id');
    const kid = args.positionals[0] as string;
    return withStore(args, async (store) => {
      const outcome = await retireQrKey(store.db, systemClock, new EventLog(store.dialect, systemClock), kid, cliActor());
      if (outcome === 'retired') {
        args.out(`retired ${kid}`);
        return 0;
      }
      args.err(outcome === 'signing' ? `${kid} signs now: rotate first and retire it after the new key has taken over` : `${kid}: no such active key`);
      return 1;
    });
  },
};

export const paymentCodeCommands: Command[] = [
  paymentCodeServiceCommand,
  paymentCodeGenerateCommand,
  paymentCodeApiKeysCreateCommand,
  paymentCodeApiKeysListCommand,
  paymentCodeApiKeysRevokeCommand,
  paymentCodeClientKeyCommand,
  paymentCodeEventsVerifyCommand,
  paymentCodeKeysRotateCommand,
  paymentCodeKeysListCommand,
  paymentCodeKeysRetireCommand,
];
