import { readFileSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { isAppError } from '../errors/app-error.ts';
import { importTokenFile } from '../flows/hardware-token-import.ts';
import { cliActor, openCliGateway, secretFromEnv } from './cli-support.ts';
import { type Command, stringOption, UsageError } from './command.ts';

/**
 * `stepgate tokens import FILE`: loads a vendor's PSKC or CSV file into the hardware-token
 * inventory, all tokens or none. The transport key or password comes from an environment
 * variable, never from the command line (shell history, ps).
 */
export const tokensImportCommand: Command = {
  name: ['tokens', 'import'],
  summary: 'Import hardware OTP tokens from a PSKC (RFC 6030) or CSV file: all or nothing.',
  usage: [
    'stepgate tokens import FILE [--password-env VAR | --psk-hex-env VAR] [--format pskc|csv] [--json] [--config FILE]',
    '',
    '  FILE            the vendor file; PSKC when it starts with "<", else CSV (or --format)',
    '  --password-env  name of the environment variable holding the PBKDF2 password of the file',
    '  --psk-hex-env   name of the environment variable holding the pre-shared transport key (hex)',
    '',
    '  A wrong password, a wrong key and a tampered file give the same error. When any token',
    '  is not acceptable nothing is imported and every such token is listed (PSKC: by serial,',
    '  CSV: by line and column; a value that could be a seed is never printed).',
    '  Exit 0 imported, 1 refused (the reasons are printed), 2 bad usage.',
    '  See docs/hardware-tokens.md for the formats.',
  ].join('\n'),
  options: {
    'password-env': { type: 'string' },
    'psk-hex-env': { type: 'string' },
    format: { type: 'string' },
    json: { type: 'boolean' },
    // Declared only to refuse them with a clear message.
    password: { type: 'string' },
    psk: { type: 'string' },
  },
  positionals: 1,
  async run(args) {
    if (args.values.password !== undefined || args.values.psk !== undefined) {
      throw new UsageError('refusing to read a secret from the command line (shell history, ps); use --password-env VAR or --psk-hex-env VAR');
    }
    if (args.positionals.length !== 1) throw new UsageError('give exactly one FILE');
    const file = args.positionals[0] as string;
    const format = stringOption(args, 'format');
    if (format !== undefined && format !== 'pskc' && format !== 'csv') throw new UsageError('--format is pskc or csv');
    if (args.values['password-env'] !== undefined && args.values['psk-hex-env'] !== undefined) throw new UsageError('give --password-env or --psk-hex-env, not both');
    const password = secretFromEnv(args, 'password-env');
    const pskHex = secretFromEnv(args, 'psk-hex-env')?.trim();
    if (pskHex !== undefined && !/^(?:[0-9a-fA-F]{2}){16,32}$/.test(pskHex)) throw new UsageError('the --psk-hex-env variable must hold 16 to 32 bytes as hex');
    const config = args.config();
    let data: Buffer;
    try {
      // Checked before reading, so a huge file is not loaded only to be refused.
      if (statSync(file).size > config.hardwareTokens.import.maxBytes) {
        args.err(`stepgate tokens import: token_file_too_large: ${file} is larger than hardwareTokens.import.maxBytes (${config.hardwareTokens.import.maxBytes})`);
        return 1;
      }
      data = readFileSync(file);
    } catch (err) {
      throw new UsageError(`cannot read ${file}: ${(err as Error).message}`);
    }
    const gw = await openCliGateway(config);
    try {
      const started = process.hrtime.bigint();
      const result = await importTokenFile(
        gw,
        { data, fileName: basename(file), format, password, psk: pskHex === undefined ? undefined : Buffer.from(pskHex, 'hex'), source: 'cli' },
        { actor: cliActor() },
      );
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (args.values.json === true) args.out(JSON.stringify({ import: { id: result.id, format: result.format, encryption: result.encryption, token_count: result.tokenCount, seconds } }));
      else args.out(`imported ${result.tokenCount} tokens from ${basename(file)} (${result.format}, encryption ${result.encryption}) in ${seconds.toFixed(1)} s: import ${result.id}`);
      return 0;
    } catch (err) {
      if (!isAppError(err)) throw err;
      if (args.values.json === true) args.out(JSON.stringify({ error: { code: err.code, detail: err.detail ?? err.title, problems: err.invalidParams ?? [] } }));
      args.err(`stepgate tokens import: ${err.code}: ${err.detail ?? err.title}`);
      for (const p of err.invalidParams ?? []) args.err(`  ${p.pointer === '' ? '(file)' : p.pointer}: ${p.reason}`);
      return 1;
    } finally {
      await gw.close();
    }
  },
};
