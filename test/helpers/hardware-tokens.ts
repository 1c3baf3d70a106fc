import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import { hasTool, unavailable } from './env.ts';

/**
 * Independent tools for hardware-token tests: python3-pskc writes the vendor files the
 * importer reads, oathtool computes the codes a real token would show.
 */

const PSKC_WRITER = fileURLToPath(new URL('../fixtures/pskc-write.py', import.meta.url));
const PYTHON = '/usr/bin/python3';

let pskcAvailable: boolean | undefined;

export function needPskc(t: TestContext): boolean {
  if (pskcAvailable === undefined) pskcAvailable = spawnSync(PYTHON, ['-c', 'import pskc'], { stdio: 'ignore' }).status === 0;
  if (pskcAvailable) return false;
  return unavailable(t, 'python3-pskc not installed (apt-get install python3-pskc)');
}

export function needOathtool(t: TestContext): boolean {
  if (hasTool('oathtool')) return false;
  return unavailable(t, 'oathtool not installed (apt-get install oathtool)');
}

export interface PskcToken {
  serial: string;
  secret_hex: string;
  algorithm?: 'hotp' | 'totp' | string;
  counter?: number;
  time_interval?: number;
  time_drift?: number;
  digits?: number;
  suite?: string;
  manufacturer?: string;
  start_date?: string;
  expiry_date?: string;
  key_usage?: string[];
  pin_usage?: string;
  /** Challenge-response keys (PSKC ChallengeFormat). */
  challenge_encoding?: string;
  challenge_min_length?: number;
  challenge_max_length?: number;
}

export interface PskcJob {
  encryption?: 'none' | 'psk' | 'pbkdf2';
  cipher?: string;
  key_hex?: string;
  password?: string;
  iterations?: number;
  fields?: string[];
  tokens?: PskcToken[];
  generate?: { count: number; prefix?: string; algorithm?: string };
  out?: string;
}

/** A PSKC file written by python-pskc. */
export function writePskc(job: PskcJob): Buffer {
  const r = spawnSync(PYTHON, [PSKC_WRITER], { input: JSON.stringify(job), maxBuffer: 1024 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`pskc-write.py failed: ${r.stderr.toString('utf8')}`);
  return r.stdout;
}

export function randomSeedHex(bytes = 20): string {
  return randomBytes(bytes).toString('hex');
}

function oath(args: string[]): string {
  const r = spawnSync('oathtool', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`oathtool ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim();
}

/** The HOTP code at `counter` (oathtool). */
export function oathHotp(seedHex: string, counter: number, digits = 6): string {
  return oath(['--hotp', `--counter=${counter}`, `--digits=${digits}`, seedHex]);
}

/** The TOTP code at a Unix time (oathtool). */
export function oathTotp(seedHex: string, unixSeconds: number, options: { period?: number; digits?: number; algorithm?: 'SHA1' | 'SHA256' | 'SHA512' } = {}): string {
  return oath([
    `--totp=${(options.algorithm ?? 'SHA1').toLowerCase()}`,
    `--time-step-size=${options.period ?? 30}s`,
    `--digits=${options.digits ?? 6}`,
    `--now=@${Math.floor(unixSeconds)}`,
    seedHex,
  ]);
}
