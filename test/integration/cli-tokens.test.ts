import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { main } from '../../src/main.ts';
import { assignToken } from '../../src/flows/hardware-tokens.ts';
import { createUser } from '../../src/flows/users.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { needOathtool, needPskc, oathHotp, randomSeedHex, writePskc } from '../helpers/hardware-tokens.ts';
import { testDialects } from '../helpers/stores.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PSK = 'a1b2c3d4e5f60718293a4b5c6d7e8f90';
const FILE_PASSWORD = 'vendor said: correct horse';

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** `npx stepgate …` in its own process, configured only by STEPGATE_* variables. */
function runCli(args: string[], env: Record<string, string>): Promise<Run> {
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

/**
 * The same command run inside this process (faster than a new process; the process-level
 * checks above cover the real entry point). STEPGATE_* variables are set only for the call.
 */
async function runInProcess(argv: string[], env: Record<string, string>): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const out = process.stdout.write.bind(process.stdout);
  const err = process.stderr.write.bind(process.stderr);
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
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
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

for (const dialect of testDialects()) {
  describe(`stepgate tokens import (${dialect})`, () => {
    let t: TestGateway;
    let env: Record<string, string>;
    let userId: string;
    before(async () => {
      t = await createTestGateway({ dialect });
      userId = (await createUser(t.gw, { username: 'holder', password: 'a long enough passphrase 7' }, { actor: 'test' })).id;
      env = {
        STEPGATE_DATA_DIR: t.database.dataDir,
        STEPGATE_DATABASE_URL: t.database.url,
        STEPGATE_DATABASE_SCHEMA: t.database.schema,
        STEPGATE_MASTER_KEY: t.config.secrets.masterKey,
        VENDOR_PSK: PSK,
        VENDOR_PASSWORD: FILE_PASSWORD,
      };
    });
    after(async () => {
      await t.close();
    });

    function file(name: string, content: Buffer | string): string {
      const path = join(t.database.dataDir, name);
      writeFileSync(path, content);
      return path;
    }

    it('imports a PSK-encrypted and a PBKDF2 file; the tokens then accept oathtool codes', async (tc) => {
      if (needPskc(tc) || needOathtool(tc)) return;
      const seed = randomSeedHex();
      const psk = file('psk.pskc', writePskc({ encryption: 'psk', cipher: 'aes256-cbc', key_hex: PSK + PSK, tokens: [{ serial: 'CLI-1', secret_hex: seed, counter: 3 }] }));
      const run = await runCli(['tokens', 'import', psk, '--psk-hex-env', 'VENDOR_PSK2'], { ...env, VENDOR_PSK2: PSK + PSK });
      assert.equal(run.status, 0, run.stderr);
      assert.match(run.stdout, /^imported 1 tokens from psk\.pskc \(pskc, encryption psk\) in [\d.]+ s: import hwi_/);
      const pw = file('pw.pskc', writePskc({ encryption: 'pbkdf2', password: FILE_PASSWORD, iterations: 1000, tokens: [{ serial: 'CLI-2', secret_hex: randomSeedHex() }] }));
      const json = await runInProcess(['tokens', 'import', pw, '--password-env', 'VENDOR_PASSWORD', '--json'], env);
      assert.equal(json.status, 0, json.stderr);
      assert.equal(JSON.parse(json.stdout).import.token_count, 1);
      const view = await assignToken(t.gw, { actor: 'test', by: 'helpdesk' }, { serial: 'CLI-1', userId, code: oathHotp(seed, 3), reason: 'cli test' });
      assert.equal(view.state, 'assigned');
      const event = await t.gw.store.db.selectFrom('audit_log').select(['actor', 'data']).where('type', '=', 'hardware_token.imported').orderBy('seq').executeTakeFirstOrThrow();
      assert.match(event.actor ?? '', /^cli/);
      for (const r of [run, json]) assert.ok(!`${r.stdout}${r.stderr}`.includes(seed) && !`${r.stdout}${r.stderr}`.includes(PSK));
    });

    it('a wrong key and a wrong password: exit 1 with the same error; a bad CSV row is named by its line', async (tc) => {
      if (needPskc(tc)) return;
      const psk = file('psk2.pskc', writePskc({ encryption: 'psk', key_hex: PSK, tokens: [{ serial: 'CLI-3', secret_hex: randomSeedHex() }] }));
      const pw = file('pw2.pskc', writePskc({ encryption: 'pbkdf2', password: FILE_PASSWORD, iterations: 1000, tokens: [{ serial: 'CLI-4', secret_hex: randomSeedHex() }] }));
      const wrongKey = await runCli(['tokens', 'import', psk, '--psk-hex-env', 'WRONG'], { ...env, WRONG: PSK.replace('a1', 'a2') });
      const wrongPassword = await runInProcess(['tokens', 'import', pw, '--password-env', 'WRONG'], { ...env, WRONG: 'guess' });
      for (const r of [wrongKey, wrongPassword]) {
        assert.equal(r.status, 1);
        assert.match(r.stderr, /^stepgate tokens import: token_file_decryption_failed: /);
      }
      assert.equal(wrongKey.stderr, wrongPassword.stderr);
      const bad = file('bad.csv', `OK-9,${randomSeedHex()},hotp,6,0\nWEAK-9,abcdef,hotp,6,0\n`);
      const rejected = await runInProcess(['tokens', 'import', bad], env);
      assert.equal(rejected.status, 1);
      assert.match(rejected.stderr, /token_import_rejected/);
      // A CSV row is named by its line (a misplaced seed could be in any field, the serial's too).
      assert.match(rejected.stderr, /\/tokens\/1: weak_secret: line 2: /);
      const none = await t.gw.store.db.selectFrom('hardware_tokens').select('serial').where('serial', 'in', ['CLI-3', 'CLI-4', 'OK-9']).execute();
      assert.equal(none.length, 0);
    });

    it('bad usage exits 2; secrets are never taken from argv', async () => {
      const some = file('x.csv', 'X,00,hotp,6,0\n');
      for (const [args, message] of [
        [['tokens', 'import'], /exactly one FILE/],
        [['tokens', 'import', some, '--psk', PSK], /refusing to read a secret/],
        [['tokens', 'import', some, '--password', 'x'], /refusing to read a secret/],
        [['tokens', 'import', some, '--psk-hex-env', 'NOT_SET_ANYWHERE'], /NOT_SET_ANYWHERE/],
        [['tokens', 'import', some, '--psk-hex-env', 'VENDOR_PASSWORD'], /16 to 32 bytes as hex/],
        [['tokens', 'import', some, '--psk-hex-env', 'VENDOR_PSK', '--password-env', 'VENDOR_PASSWORD'], /not both/],
        [['tokens', 'import', some, '--format', 'xml'], /--format/],
        [['tokens', 'import', join(t.database.dataDir, 'missing.pskc')], /cannot read/],
      ] as [string[], RegExp][]) {
        const run = await runInProcess(args, env);
        assert.equal(run.status, 2, `${args.join(' ')}: ${run.stderr}`);
        assert.match(run.stderr, message);
        assert.ok(!run.stderr.includes(PSK));
      }
    });
  });
}
