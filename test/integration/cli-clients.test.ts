import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { exportJWK, generateKeyPair } from 'jose';
import { clientsCommands } from '../../src/cli/clients-command.ts';
import { COMMON_OPTIONS, type CommandArgs, UsageError } from '../../src/cli/command.ts';
import { listClients } from '../../src/flows/clients.ts';
import { createTestGateway, TEST_MASTER_KEY, type TestGateway } from '../helpers/gateway.ts';
import { createTestDatabase, type TestDatabase, testDialects } from '../helpers/stores.ts';

/**
 * The output contract (`clients create --json`, exit codes, --help) is checked on the real
 * binary, spawned like a script would; the many input cases run the same command objects
 * in-process (a spawn costs seconds of module loading), with main()'s exit-code rules.
 */
const BIN = fileURLToPath(new URL('../../bin/stepgate.js', import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function basic(id: string, secret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
}

for (const dialect of testDialects()) {
  describe(`stepgate clients CLI (${dialect})`, () => {
    let database: TestDatabase;
    let t: TestGateway;

    function stepgate(...args: string[]): Promise<Run> {
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        STEPGATE_DATA_DIR: database.dataDir,
        STEPGATE_DATABASE_URL: database.url,
        STEPGATE_DATABASE_SCHEMA: database.schema,
        STEPGATE_MASTER_KEY: TEST_MASTER_KEY,
        STEPGATE_LOG_LEVEL: 'warn',
      };
      return new Promise((resolve) => {
        execFile(process.execPath, [BIN, ...args], { env, timeout: 60_000 }, (err, stdout, stderr) => {
          const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
          resolve({ code, stdout, stderr });
        });
      });
    }

    /** `stepgate clients <sub> …` in this process, against the test gateway's database. */
    async function inProcess(sub: string, ...argv: string[]): Promise<Run> {
      const command = clientsCommands.find((c) => c.name[1] === sub);
      assert.ok(command !== undefined, sub);
      let stdout = '';
      let stderr = '';
      try {
        const { values, positionals } = parseArgs({ args: argv, options: { ...COMMON_OPTIONS, ...command.options }, allowPositionals: true, strict: true });
        const args: CommandArgs = {
          values,
          positionals,
          config: () => t.config,
          out: (line) => {
            stdout += `${line}\n`;
          },
          err: (line) => {
            stderr += `${line}\n`;
          },
        };
        return { code: await command.run(args), stdout, stderr };
      } catch (err) {
        if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
          return { code: 2, stdout, stderr: stderr + (err as Error).message };
        }
        throw err;
      }
    }

    before(async () => {
      database = await createTestDatabase(dialect);
      // The spawned CLI migrates the empty database itself.
      const first = await stepgate('clients', 'list', '--json');
      assert.equal(first.code, 0, first.stderr);
      assert.deepEqual(JSON.parse(first.stdout), { clients: [] });
      t = await createTestGateway({ dialect, database });
    });
    after(async () => {
      await t?.close();
      await database.drop();
    });

    it('clients create --json (the real binary) prints exactly {client_id, client_secret}, and they authenticate', async () => {
      const run = await stepgate('clients', 'create', '--name', 'Payment codes', '--actions', 'payment_code.issue,payment_code.offline_seed', '--redirect-uri', 'https://pay.example/a', '--redirect-uri', 'https://pay.example/b', '--json');
      assert.equal(run.code, 0, run.stderr);
      const lines = run.stdout.trim().split('\n');
      assert.equal(lines.length, 1, 'one line of JSON on stdout');
      const out = JSON.parse(lines[0] as string) as Record<string, unknown>;
      assert.deepEqual(Object.keys(out), ['client_id', 'client_secret']);
      assert.match(out.client_id as string, /^cli_[A-Za-z0-9_-]{22}$/);
      assert.match(out.client_secret as string, /^[A-Za-z0-9_-]{43}$/);

      const me = await t.http().get('/v1/clients/me').set('Authorization', basic(out.client_id as string, out.client_secret as string));
      assert.equal(me.status, 200, me.text);
      assert.deepEqual(me.body.allowed_actions, ['payment_code.issue', 'payment_code.offline_seed']);
      assert.deepEqual(me.body.redirect_uris, ['https://pay.example/a', 'https://pay.example/b']);
      const audit = await t.gw.store.db.selectFrom('audit_log').selectAll().where('subject', '=', out.client_id as string).execute();
      assert.equal(audit[0]?.type, 'client.created');
      assert.match(audit[0]?.actor ?? '', /^cli/);
    });

    it('the real binary: exit 2 and nothing on stdout for bad input, 1 for an unknown client, --help on every command', async () => {
      const before = (await listClients(t.gw)).length;
      const [bad, unknown, ...helps] = await Promise.all([
        stepgate('clients', 'create', '--name', 'x', '--actions', 'Bad Action', '--json'),
        stepgate('clients', 'rotate-secret', 'cli_nope', '--json'),
        ...['create', 'list', 'rotate-secret', 'disable'].map((c) => stepgate('clients', c, '--help')),
      ]);
      assert.equal(bad?.code, 2, bad?.stderr);
      assert.equal(bad?.stdout, '');
      assert.match(bad?.stderr ?? '', /validation_failed/);
      assert.match(bad?.stderr ?? '', /--actions \(item 1\)/);
      assert.equal(unknown?.code, 1, unknown?.stderr);
      assert.equal(unknown?.stdout, '');
      assert.match(unknown?.stderr ?? '', /not_found/);
      ['create', 'list', 'rotate-secret', 'disable'].forEach((c, i) => {
        assert.equal(helps[i]?.code, 0, c);
        assert.match(helps[i]?.stdout ?? '', new RegExp(`Usage: stepgate clients ${c}`));
      });
      assert.equal((await listClients(t.gw)).length, before);
    });

    it('prints a readable text without --json, with the secret and a warning', async () => {
      const run = await inProcess('create', '--name', 'Text output', '--actions', 'payment_code.issue');
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /Client created: cli_/);
      assert.match(run.stdout, /client secret: +[A-Za-z0-9_-]{43}/);
      assert.match(run.stdout, /cannot be shown again/);
    });

    it('creates a private_key_jwt client from a JWKS file, and refuses a file holding a private key', async () => {
      const pair = await generateKeyPair('ES256', { extractable: true });
      const publicFile = join(database.dataDir, 'public.jwks.json');
      const privateFile = join(database.dataDir, 'private.jwks.json');
      writeFileSync(publicFile, JSON.stringify({ keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'k1' }] }));
      writeFileSync(privateFile, JSON.stringify({ keys: [{ ...(await exportJWK(pair.privateKey)), kid: 'k1' }] }));
      const before = (await listClients(t.gw)).length;

      const bad = await inProcess('create', '--name', 'Leaky', '--actions', 'payment_code.issue', '--auth', 'private_key_jwt', '--jwks-file', privateFile, '--json');
      assert.equal(bad.code, 2);
      assert.equal(bad.stdout, '');
      assert.match(bad.stderr, /validation_failed/);
      assert.match(bad.stderr, /--jwks-file at \/keys\/0\/d/);
      assert.equal((await listClients(t.gw)).length, before);

      const ok = await inProcess('create', '--name', 'Signed', '--actions', 'payment_code.issue', '--auth', 'private_key_jwt', '--jwks-file', publicFile, '--json');
      assert.equal(ok.code, 0, ok.stderr);
      const out = JSON.parse(ok.stdout) as Record<string, unknown>;
      assert.deepEqual(Object.keys(out), ['client_id']);
      const stored = (await listClients(t.gw)).find((c) => c.clientId === out.client_id);
      assert.equal(stored?.authMethod, 'private_key_jwt');
    });

    it('refuses bad input with exit 2, naming the option, and creates nothing', async () => {
      const before = (await listClients(t.gw)).length;
      const cases: [string[], RegExp][] = [
        [['--actions', 'payment_code.issue'], /--name is required/],
        [['--name', 'x'], /--actions is required/],
        [['--name', 'x', '--actions', 'a.b,,c.d'], /without empty items/],
        [['--name', 'x', '--actions', 'Bad Action'], /--actions \(item 1\)/],
        [['--name', 'x', '--actions', 'a.b', '--redirect-uri', 'http://pay.example/cb'], /--redirect-uri \(item 1\): must be https/],
        [['--name', 'x', '--actions', 'a.b', '--redirect-uri', 'https://ok.example/', '--redirect-uri', 'https://pay.example'], /--redirect-uri \(item 2\): must be written in canonical form/],
        [['--name', 'x', '--actions', 'a.b', '--auth', 'client_secret_post'], /--auth must be one of/],
        [['--name', 'x', '--actions', 'a.b', '--auth', 'private_key_jwt'], /needs --jwks-file/],
        [['--name', 'x', '--actions', 'a.b', '--jwks-file', '/nonexistent'], /only for --auth private_key_jwt/],
        [['--name', 'x', '--actions', 'a.b', '--auth', 'private_key_jwt', '--jwks-file', '/nonexistent/file.json'], /cannot read --jwks-file/],
        [['--name', 'x', '--actions', 'a.b', '--bogus'], /Unknown option/],
        [['--name', 'x', '--actions', 'a.b', 'stray'], /unexpected argument/],
      ];
      for (const [args, message] of cases) {
        const run = await inProcess('create', ...args, '--json');
        assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
        assert.equal(run.stdout, '', args.join(' '));
        assert.match(run.stderr, message, args.join(' '));
      }
      assert.equal((await listClients(t.gw)).length, before);
    });

    it('lists clients, rotates a secret and disables a client', async () => {
      const created = JSON.parse((await inProcess('create', '--name', 'Rotate me', '--actions', 'a.b', '--json')).stdout) as { client_id: string; client_secret: string };
      const list = await inProcess('list', '--json');
      assert.equal(list.code, 0, list.stderr);
      const listed = (JSON.parse(list.stdout) as { clients: { client_id: string }[] }).clients;
      assert.ok(listed.some((c) => c.client_id === created.client_id));
      assert.ok(!list.stdout.includes(created.client_secret), 'list never shows a secret');
      const text = await inProcess('list');
      assert.match(text.stdout, new RegExp(`${created.client_id} +active +client_secret_basic +Rotate me`));

      const rotated = await inProcess('rotate-secret', created.client_id, '--json');
      assert.equal(rotated.code, 0, rotated.stderr);
      const out = JSON.parse(rotated.stdout) as Record<string, unknown>;
      assert.deepEqual(Object.keys(out), ['client_id', 'client_secret']);
      assert.equal(out.client_id, created.client_id);
      assert.equal((await t.http().get('/v1/clients/me').set('Authorization', basic(created.client_id, created.client_secret))).status, 401);
      assert.equal((await t.http().get('/v1/clients/me').set('Authorization', basic(created.client_id, out.client_secret as string))).status, 200);
      assert.equal((await inProcess('rotate-secret')).code, 2);

      const disabled = await inProcess('disable', created.client_id);
      assert.equal(disabled.code, 0, disabled.stderr);
      assert.match(disabled.stdout, /is disabled/);
      assert.equal((await t.http().get('/v1/clients/me').set('Authorization', basic(created.client_id, out.client_secret as string))).status, 401);
      const again = await inProcess('rotate-secret', created.client_id);
      assert.equal(again.code, 1);
      assert.match(again.stderr, /conflict/);
    });
  });
}
