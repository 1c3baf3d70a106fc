import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { commands } from '../../src/cli/commands.ts';
import { main } from '../../src/main.ts';
import { firstRunSetupLink } from '../../src/flows/admin-setup.ts';
import { createUser } from '../../src/flows/users.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { testDialects } from '../helpers/stores.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PASSWORD = 'operator chosen passphrase 9';

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** `npx stepgate …` as an operator runs it: a separate process, configured only by STEPGATE_* variables. */
function runCli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('STEPGATE_'))) as Record<string, string>;
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, ['bin/stepgate.js', ...args], { cwd: ROOT, env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    proc.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    proc.once('exit', (status) => resolve({ status, stdout, stderr }));
  });
}

/** Runs the CLI in this process (for checks that need no database), capturing its output. */
async function runInProcess(argv: string[]): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const out = process.stdout.write.bind(process.stdout);
  const err = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((chunk: string | Uint8Array) => {
    stdout += chunk.toString();
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += chunk.toString();
    return true;
  }) as typeof process.stderr.write;
  try {
    const status = await main(argv);
    return { status, stdout, stderr };
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
}

describe('stepgate usage', () => {
  it('answers --help on every command group with the group\'s commands', async () => {
    // Every proper prefix of a command name is a group (`keys`, `payment-code api-keys`).
    const groups = [...new Set(commands.flatMap((c) => c.name.slice(0, -1).map((_, i) => c.name.slice(0, i + 1).join(' '))))];
    for (const required of ['keys', 'config', 'users', 'admin', 'clients', 'audit', 'policies']) assert.ok(groups.includes(required), required);
    for (const groupName of groups) {
      const group = groupName.split(' ');
      const members = commands.filter((c) => c.name.length > group.length && group.every((w, i) => c.name[i] === w));
      for (const flag of ['--help', '-h']) {
        const run = await runInProcess([...group, flag]);
        assert.equal(run.status, 0, `${groupName} ${flag}: ${run.stderr}`);
        assert.doesNotMatch(run.stdout + run.stderr, /unknown command/);
        for (const c of members) assert.ok(run.stdout.includes(c.name.join(' ')), `${groupName} ${flag} lists ${c.name.join(' ')}`);
      }
      // Without a sub-command: exit 2, and the list on stderr.
      const bare = await runInProcess(group);
      assert.equal(bare.status, 2, groupName);
      for (const c of members) assert.ok(bare.stderr.includes(c.name.join(' ')), `${groupName} alone lists ${c.name.join(' ')}`);
    }
    const wrong = await runInProcess(['keys', 'rotate-masterr']);
    assert.equal(wrong.status, 2);
    assert.match(wrong.stderr, /unknown command 'keys rotate-masterr'/);
    assert.match(wrong.stderr, /keys rotate-master/);
    // And through the real entry point.
    const real = await runCli(['keys', '--help']);
    assert.equal(real.status, 0, real.stderr);
    assert.match(real.stdout, /keys rotate-master/);
  });

  it('refuses a stray positional argument with exit 2 on every command, before doing anything', async () => {
    for (const c of commands) {
      const extra = Array.from({ length: (c.positionals ?? 0) + 1 }, (_, i) => `stray-${i}`);
      const run = await runInProcess([...c.name, ...extra]);
      assert.equal(run.status, 2, `${c.name.join(' ')} ${extra.join(' ')}: ${run.stderr}`);
      assert.match(run.stderr, new RegExp(`unexpected argument 'stray-${c.positionals ?? 0}'`), c.name.join(' '));
    }
    // `serve extra` as an operator types it: refused, no server started.
    const serve = await runCli(['serve', 'extra'], { STEPGATE_HTTP_PORT: '1' });
    assert.equal(serve.status, 2, serve.stderr);
    assert.match(serve.stderr, /unexpected argument 'extra'/);
  });

  it('an unreachable database is one line naming it (password masked) and exit 1, not a stack trace', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'stepgate-cli-'));
    try {
      for (const command of [['migrate'], ['audit', 'verify'], ['keys', 'list'], ['clients', 'list']]) {
        const run = await runCli(command, { STEPGATE_DATA_DIR: dataDir, STEPGATE_DATABASE_URL: 'postgres://stepgate:hunter2-secret@127.0.0.1:1/none', STEPGATE_MASTER_KEY: randomBytes(32).toString('base64') });
        assert.equal(run.status, 1, `${command.join(' ')}: ${run.stderr}`);
        const lines = run.stderr.trim().split('\n');
        assert.equal(lines.length, 1, `${command.join(' ')}: one line, got: ${run.stderr}`);
        assert.match(lines[0] as string, /cannot open the PostgreSQL database postgres:\/\/stepgate:\*\*\*@127\.0\.0\.1:1\/none: connection refused/);
        assert.doesNotMatch(run.stderr + run.stdout, /hunter2|\bat \w+ \(|node:internal/);
      }
      // A data directory that cannot be created (its parent is a file): one line, exit 1.
      const file = join(dataDir, 'a-file');
      writeFileSync(file, '');
      const sqlite = await runCli(['migrate'], { STEPGATE_DATA_DIR: join(file, 'data') });
      assert.equal(sqlite.status, 1, sqlite.stderr);
      assert.equal(sqlite.stderr.trim().split('\n').length, 1, sqlite.stderr);
      assert.match(sqlite.stderr, /^stepgate migrate: /);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('config check masks every secret: the master key, a database password, any *secret/*token/*key option', async () => {
    const key = randomBytes(32).toString('base64');
    const run = await runCli(['config', 'check'], { STEPGATE_DATABASE_URL: 'postgres://stepgate:hunter2-secret@db.internal:5432/stepgate', STEPGATE_MASTER_KEY: key });
    assert.equal(run.status, 0, run.stderr);
    assert.ok(!run.stdout.includes('hunter2') && !run.stdout.includes(key), run.stdout);
    const printed = JSON.parse(run.stdout) as { database: { url: string }; secrets: { masterKey: string } };
    assert.equal(printed.database.url, 'postgres://stepgate:***@db.internal:5432/stepgate');
    assert.equal(printed.secrets.masterKey, '***');
  });

  it('answers --help on every command', async () => {
    for (const c of commands) {
      const run = await runInProcess([...c.name, '--help']);
      assert.equal(run.status, 0, `${c.name.join(' ')}: ${run.stderr}`);
      assert.match(run.stdout, /Usage: stepgate /, c.name.join(' '));
    }
    // And through the real entry point, as `npx stepgate` runs it.
    const top = await runCli(['--help']);
    assert.equal(top.status, 0, top.stderr);
    for (const name of ['users create', 'admin create', 'audit verify', 'keys rotate-master']) assert.ok(top.stdout.includes(name), name);
  });

  it('never takes a password from argv, and refuses bad usage with exit 2 before touching a database', async () => {
    const cases: [string[], RegExp][] = [
      [['users', 'create', '--username', 'argv', '--password', PASSWORD], /refusing to read a password from the command line/],
      [['users', 'create', '--username', 'argv', `--password=${PASSWORD}`], /refusing/],
      [['admin', 'create', '--username', 'argv', '--password', PASSWORD], /refusing/],
      [['users', 'create', '--username', 'argv', '--password-env', 'UNSET_VAR_X'], /UNSET_VAR_X/],
      [['users', 'create', '--username', 'argv', '--password-env', 'NOT A NAME'], /NAME of an environment variable/],
      [['users', 'create', '--username', 'argv', '--password-env', 'PATH', '--roles', 'admin,root'], /unknown role 'root'/],
      [['users', 'create', '--username', 'argv', '--password-env', 'PATH', '--groups', 'a,,b'], /--groups/],
      [['users', 'create', '--password-env', 'PATH'], /--username is required/],
      [['users', 'create', '--username', 'argv', '--password-env', 'PATH', 'extra'], /unexpected argument/],
      [['admin', 'create', '--username', 'argv', '--password-env', 'PATH', '--roles', 'auditor'], /roles/],
    ];
    for (const [args, message] of cases) {
      const run = await runInProcess(args);
      assert.equal(run.status, 2, `${args.join(' ')}: ${run.stderr}`);
      assert.match(run.stderr, message, args.join(' '));
      assert.ok(!run.stderr.includes(PASSWORD) && !run.stdout.includes(PASSWORD), 'the password is never echoed');
    }
    // Without --password-env and without a terminal there is nobody to ask.
    const noTty = await runCli(['users', 'create', '--username', 'argv']);
    assert.equal(noTty.status, 2, noTty.stderr);
    assert.match(noTty.stderr, /no terminal/);
  });
});

for (const dialect of testDialects()) {
  describe(`operator CLI (${dialect})`, () => {
    let t: TestGateway;
    let env: Record<string, string>;
    before(async () => {
      t = await createTestGateway({ dialect });
      env = {
        STEPGATE_DATA_DIR: t.database.dataDir,
        STEPGATE_DATABASE_URL: t.database.url,
        STEPGATE_DATABASE_SCHEMA: t.database.schema,
        STEPGATE_MASTER_KEY: t.config.secrets.masterKey,
        NEW_USER_PASSWORD: PASSWORD,
      };
    });
    after(async () => {
      await t.close();
    });

    async function user(username: string) {
      return t.gw.store.db.selectFrom('users').selectAll().where('username', '=', username).executeTakeFirst();
    }

    it('users create: makes a user who can sign in, with roles and groups', async () => {
      const run = await runCli(['users', 'create', '--username', 'Teller.One', '--display-name', 'Teller One', '--roles', 'helpdesk,auditor', '--groups', 'tellers,branch-7', '--password-env', 'NEW_USER_PASSWORD'], env);
      assert.equal(run.status, 0, run.stderr);
      assert.match(run.stdout, /created user teller\.one \(usr_/);
      const row = await user('teller.one');
      assert.equal(row?.display_name, 'Teller One');
      assert.deepEqual(JSON.parse(row?.roles ?? ''), ['helpdesk', 'auditor']);
      assert.deepEqual(JSON.parse(row?.groups ?? ''), ['tellers', 'branch-7']);
      const login = await t.http().post('/v1/login').send({ username: 'teller.one', password: PASSWORD });
      assert.equal(login.status, 200);
      const event = await t.gw.store.db.selectFrom('audit_log').selectAll().where('type', '=', 'user.created').where('subject', '=', row?.id ?? '').executeTakeFirstOrThrow();
      assert.match(event.actor ?? '', /^cli/);
      assert.ok(!run.stdout.includes(PASSWORD) && !run.stderr.includes(PASSWORD));
    });

    it('users create --json prints the user as the API does', async () => {
      const run = await runCli(['users', 'create', '--username', 'jsonuser', '--password-env', 'NEW_USER_PASSWORD', '--json'], env);
      assert.equal(run.status, 0, run.stderr);
      const body = JSON.parse(run.stdout) as { user: { username: string; roles: string[]; id: string } };
      assert.equal(body.user.username, 'jsonuser');
      assert.deepEqual(body.user.roles, []);
      assert.equal((await user('jsonuser'))?.id, body.user.id);
    });

    it('refuses a weak password or a taken name with exit 1 and the field at fault', async () => {
      await createUser(t.gw, { username: 'taken', password: PASSWORD }, { actor: 'test' });
      const [weak, taken] = await Promise.all([
        runCli(['users', 'create', '--username', 'weakling', '--password-env', 'WEAK'], { ...env, WEAK: 'password1' }),
        runCli(['users', 'create', '--username', 'Taken', '--password-env', 'NEW_USER_PASSWORD'], env),
      ]);
      assert.equal(weak.status, 1, weak.stderr);
      assert.match(weak.stderr, /password_policy/);
      assert.match(weak.stderr, /\/password:/);
      assert.equal(await user('weakling'), undefined);
      assert.equal(taken.status, 1, taken.stderr);
      assert.match(taken.stderr, /conflict/);
      assert.match(taken.stderr, /\/username:/);
    });

    it('admin create: makes an administrator and voids a pending set-up link', async () => {
      const link = await firstRunSetupLink(t.gw);
      assert.ok(link !== undefined, 'no admin yet');
      const token = new URL(link).searchParams.get('token') ?? '';
      const run = await runCli(['admin', 'create', '--username', 'ops', '--display-name', 'Operations', '--password-env', 'NEW_USER_PASSWORD'], env);
      assert.equal(run.status, 0, run.stderr);
      assert.match(run.stdout, /created user ops .* roles admin/);
      assert.deepEqual(JSON.parse((await user('ops'))?.roles ?? ''), ['admin']);
      const setup = await t.http().post('/v1/setup').send({ token, username: 'late', password: PASSWORD });
      assert.equal(setup.body.code, 'setup_token_invalid');
      assert.equal(await firstRunSetupLink(t.gw), undefined);
      const login = await t.http().post('/v1/login').send({ username: 'ops', password: PASSWORD });
      assert.deepEqual(login.body.user.roles, ['admin']);
    });

    it('audit verify: exit 0 with the row count, exit 1 naming the first broken row', async () => {
      await t.gw.audit.append(t.gw.store.db, { type: 'test.appended' });
      const rows = (await t.gw.store.db.selectFrom('audit_log').select('seq').execute()).length;
      const ok = await runCli(['audit', 'verify'], env);
      assert.equal(ok.status, 0, ok.stderr);
      assert.match(ok.stdout, new RegExp(`intact: ${rows} rows`));

      const target = Math.max(1, rows - 1);
      const original = await t.gw.store.db.selectFrom('audit_log').select('data').where('seq', '=', target).executeTakeFirstOrThrow();
      await t.gw.store.db.updateTable('audit_log').set({ data: '{"edited":true}' }).where('seq', '=', target).execute();
      try {
        const brokenJson = await runCli(['audit', 'verify', '--json'], env);
        assert.equal(brokenJson.status, 1, brokenJson.stderr);
        assert.deepEqual(JSON.parse(brokenJson.stdout), { ok: false, rows: target - 1, brokenSeq: target, reason: 'hash_mismatch' });
      } finally {
        await t.gw.store.db.updateTable('audit_log').set({ data: original.data }).where('seq', '=', target).execute();
      }
      // Deleting the newest row is caught by the chain head.
      const last = await t.gw.store.db.selectFrom('audit_log').select('seq').orderBy('seq', 'desc').executeTakeFirstOrThrow();
      await t.gw.store.db.deleteFrom('audit_log').where('seq', '=', last.seq).execute();
      const truncated = await runCli(['audit', 'verify'], env);
      assert.equal(truncated.status, 1);
      assert.match(truncated.stdout, new RegExp(`BROKEN at seq ${Number(last.seq)}: head_mismatch`));
    });

    it('audit verify: exit 1 with a one-line reason when the database cannot be read', async () => {
      // An empty database: a fresh SQLite file, or a fresh PostgreSQL schema (dropped below).
      const schema = `${t.database.schema}_empty`.slice(0, 63);
      try {
        const run = await runCli(['audit', 'verify'], { ...env, STEPGATE_DATABASE_SCHEMA: schema, STEPGATE_DATA_DIR: join(t.database.dataDir, 'empty') });
        assert.equal(run.status, 1);
        assert.match(run.stderr, /cannot read the audit log/);
      } finally {
        if (dialect === 'postgres') await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(t.gw.store.db);
      }
    });
  });
}
