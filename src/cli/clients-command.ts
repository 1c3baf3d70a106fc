import { readFileSync } from 'node:fs';
import { isAppError } from '../errors/app-error.ts';
import {
  CLIENT_AUTH_METHODS,
  type Client,
  type ClientAuthMethod,
  clientResource,
  createClient,
  disableClient,
  listClients,
  rotateClientSecret,
} from '../flows/clients.ts';
import type { Gateway } from '../gateway.ts';
import { cliActor, listOption, openCliGateway } from './cli-support.ts';
import { type Command, type CommandArgs, requireStringOption, stringOption, UsageError } from './command.ts';

/** Where a flow's field pointer came from on the command line. */
function optionFor(pointer: string): string {
  const item = (prefix: string, option: string): string => {
    const index = /^\/(\d+)/.exec(pointer.slice(prefix.length));
    return index === null ? option : `${option} (item ${Number(index[1]) + 1})`;
  };
  if (pointer.startsWith('/name')) return '--name';
  if (pointer.startsWith('/allowed_actions')) return item('/allowed_actions', '--actions');
  if (pointer.startsWith('/redirect_uris')) return item('/redirect_uris', '--redirect-uri');
  if (pointer.startsWith('/auth_method')) return '--auth';
  if (pointer.startsWith('/jwks')) return `--jwks-file at ${pointer.slice('/jwks'.length) || '/'}`;
  return pointer;
}

/** Runs a command body with an open gateway; domain errors become one readable line each. */
async function withGateway(args: CommandArgs, body: (gw: Gateway) => Promise<number>): Promise<number> {
  const gw = await openCliGateway(args.config());
  try {
    return await body(gw);
  } catch (err) {
    if (!isAppError(err)) throw err;
    args.err(`stepgate: ${err.code}: ${err.detail ?? err.title}`);
    for (const p of err.invalidParams ?? []) args.err(`  ${optionFor(p.pointer)}: ${p.reason}`);
    return err.code === 'validation_failed' ? 2 : 1;
  } finally {
    await gw.close();
  }
}

function describe(client: Client): string[] {
  return [
    `  name:            ${client.name}`,
    `  auth method:     ${client.authMethod}`,
    `  allowed actions: ${client.allowedActions.join(', ')}`,
    `  redirect URIs:   ${client.redirectUris.length === 0 ? '(none)' : client.redirectUris.join(' ')}`,
    `  status:          ${client.status}`,
  ];
}

function readJwksFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read --jwks-file ${file}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new UsageError(`--jwks-file ${file} is not JSON (expected a JWK Set: {"keys": [...]})`);
  }
}

function redirectUris(args: CommandArgs): string[] {
  const v = args.values['redirect-uri'];
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).filter((u): u is string => typeof u === 'string');
}

export const clientsCreateCommand: Command = {
  name: ['clients', 'create'],
  summary: 'Register a relying-service client; prints its id and (client_secret_basic) its secret, once.',
  usage: [
    'stepgate clients create --name NAME --actions A[,B…] [--redirect-uri URL]… [--auth METHOD] [--jwks-file FILE] [--json]',
    '',
    '  --name NAME          what the client is (shown to admins and in the audit log)',
    '  --actions A,B        actions it may request step-up for, e.g. payment_code.issue',
    '  --redirect-uri URL   an exact https redirect URI (repeat for several); http://localhost',
    '                       and http://127.0.0.1 are accepted in development mode only',
    `  --auth METHOD        ${CLIENT_AUTH_METHODS.join(' (default) | ')}`,
    '  --jwks-file FILE     private_key_jwt: the client\'s PUBLIC JWK Set ({"keys": [...]});',
    '                       EC P-256 (ES256), Ed25519 (EdDSA) or RSA >= 2048 (PS256)',
    '  --json               print exactly {"client_id":"…","client_secret":"…"} (no client_secret',
    '                       for private_key_jwt) for scripts',
    '',
    '  The secret is stored only as a hash: it is shown this once. Lost it? stepgate clients rotate-secret ID.',
  ].join('\n'),
  options: {
    name: { type: 'string' },
    actions: { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true },
    auth: { type: 'string' },
    'jwks-file': { type: 'string' },
    json: { type: 'boolean' },
  },
  async run(args) {
    if (args.positionals.length > 0) throw new UsageError(`unexpected argument ${args.positionals[0]}`);
    const name = requireStringOption(args, 'name');
    const actions = listOption(args, 'actions');
    if (actions === undefined) throw new UsageError('--actions is required');
    const auth = stringOption(args, 'auth') ?? 'client_secret_basic';
    if (!(CLIENT_AUTH_METHODS as readonly string[]).includes(auth)) throw new UsageError(`--auth must be one of ${CLIENT_AUTH_METHODS.join(', ')}`);
    const jwksFile = stringOption(args, 'jwks-file');
    if (auth === 'private_key_jwt' && jwksFile === undefined) throw new UsageError('--auth private_key_jwt needs --jwks-file FILE');
    if (auth !== 'private_key_jwt' && jwksFile !== undefined) throw new UsageError('--jwks-file is only for --auth private_key_jwt');
    const jwks = jwksFile === undefined ? undefined : readJwksFile(jwksFile);

    return withGateway(args, async (gw) => {
      const { client, clientSecret } = await createClient(
        gw,
        { name, actions, redirectUris: redirectUris(args), authMethod: auth as ClientAuthMethod, jwks },
        { actor: cliActor() },
      );
      if (args.values.json === true) {
        args.out(JSON.stringify(clientSecret === undefined ? { client_id: client.clientId } : { client_id: client.clientId, client_secret: clientSecret }));
        return 0;
      }
      args.out(`Client created: ${client.clientId}`);
      for (const line of describe(client)) args.out(line);
      if (clientSecret !== undefined) {
        args.out(`  client secret:   ${clientSecret}`);
        args.out('');
        args.out('Store the secret now: it is not kept and cannot be shown again.');
      }
      return 0;
    });
  },
};

export const clientsListCommand: Command = {
  name: ['clients', 'list'],
  summary: 'List relying-service clients.',
  usage: 'stepgate clients list [--json] [--config FILE]',
  options: { json: { type: 'boolean' } },
  async run(args) {
    if (args.positionals.length > 0) throw new UsageError(`unexpected argument ${args.positionals[0]}`);
    return withGateway(args, async (gw) => {
      const clients = await listClients(gw);
      if (args.values.json === true) {
        args.out(JSON.stringify({ clients: clients.map(clientResource) }));
        return 0;
      }
      if (clients.length === 0) args.out('No clients. Create one: stepgate clients create --name NAME --actions payment_code.issue');
      for (const c of clients) {
        args.out(`${c.clientId}  ${c.status.padEnd(8)}  ${c.authMethod.padEnd(19)}  ${c.name}  [${c.allowedActions.join(', ')}]`);
      }
      return 0;
    });
  },
};

function oneClientId(args: CommandArgs): string {
  if (args.positionals.length !== 1) throw new UsageError('give exactly one client id');
  return args.positionals[0] as string;
}

export const clientsRotateSecretCommand: Command = {
  name: ['clients', 'rotate-secret'],
  summary: 'Issue a new client secret (the old one stops working at once); prints it once.',
  usage: [
    'stepgate clients rotate-secret CLIENT_ID [--json] [--config FILE]',
    '',
    '  --json  print exactly {"client_id":"…","client_secret":"…"}',
  ].join('\n'),
  options: { json: { type: 'boolean' } },
  positionals: 1,
  async run(args) {
    const clientId = oneClientId(args);
    return withGateway(args, async (gw) => {
      const { client, clientSecret } = await rotateClientSecret(gw, clientId, { actor: cliActor() });
      if (args.values.json === true) {
        args.out(JSON.stringify({ client_id: client.clientId, client_secret: clientSecret }));
        return 0;
      }
      args.out(`New secret for ${client.clientId} (${client.name}); the old one no longer works:`);
      args.out(`  client secret:   ${clientSecret}`);
      args.out('');
      args.out('Store the secret now: it is not kept and cannot be shown again.');
      return 0;
    });
  },
};

export const clientsDisableCommand: Command = {
  name: ['clients', 'disable'],
  summary: 'Disable a client: its credentials stop working at once.',
  usage: 'stepgate clients disable CLIENT_ID [--config FILE]',
  options: {},
  positionals: 1,
  async run(args) {
    const clientId = oneClientId(args);
    return withGateway(args, async (gw) => {
      const client = await disableClient(gw, clientId, { actor: cliActor() });
      args.out(`Client ${client.clientId} (${client.name}) is ${client.status}.`);
      return 0;
    });
  },
};

export const clientsCommands: Command[] = [clientsCreateCommand, clientsListCommand, clientsRotateSecretCommand, clientsDisableCommand];
