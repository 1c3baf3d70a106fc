import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { masterKeyFromBytes, type MasterKey } from './sealer.ts';

export interface MasterKeySource {
  key: MasterKey;
  /** `env` (STEPGATE_MASTER_KEY / config) or `generated-file` (development only). */
  origin: 'config' | 'generated-file' | 'existing-file';
  file?: string;
}

/**
 * The master key comes from configuration (STEPGATE_MASTER_KEY). In development only, a
 * missing key is generated into <dataDir>/master.key with mode 0600; the caller warns loudly.
 */
export function loadMasterKey(configured: string, dataDir: string, mode: 'development' | 'production'): MasterKeySource {
  if (configured !== '') return { key: masterKeyFromBytes(Buffer.from(configured, 'base64')), origin: 'config' };
  if (mode === 'production') throw new TypeError('production mode requires STEPGATE_MASTER_KEY');
  const file = join(dataDir, 'master.key');
  if (existsSync(file)) {
    const bytes = Buffer.from(readFileSync(file, 'utf8').trim(), 'base64');
    if (bytes.length !== 32) throw new TypeError(`${file} does not hold a base64 32-byte key`);
    return { key: masterKeyFromBytes(bytes), origin: 'existing-file', file };
  }
  // Private like the database next to it (store/database.ts): 0700 when we create it.
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const bytes = randomBytes(32);
  writeFileSync(file, `${bytes.toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
  chmodSync(file, 0o600);
  return { key: masterKeyFromBytes(bytes), origin: 'generated-file', file };
}
