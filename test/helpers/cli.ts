import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { TestGateway } from './gateway.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** `npx stepgate …` as an operator runs it: a separate process, configured only by STEPGATE_* variables. */
export function runCli(args: string[], env: Record<string, string> = {}): Promise<CliRun> {
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

/** The STEPGATE_* environment that points a CLI process at a test gateway's database. */
export function cliEnv(tg: TestGateway, extra: Record<string, string> = {}): Record<string, string> {
  return {
    STEPGATE_DATA_DIR: tg.database.dataDir,
    STEPGATE_DATABASE_URL: tg.database.url,
    STEPGATE_DATABASE_SCHEMA: tg.database.schema,
    STEPGATE_MASTER_KEY: tg.config.secrets.masterKey,
    STEPGATE_LOG_LEVEL: 'warn',
    ...extra,
  };
}
