/**
 * A copy of a configuration tree fit to print: every value that could be a secret is
 * masked, decided generically so options added later (SMS provider credentials, webhook
 * secrets…) are covered without being listed here:
 *   - a non-empty string under a key that names a secret (…password, …secret, …token,
 *     …key, …credential(s), apiKey, authToken, masterKey…);
 *   - the password in any URL's userinfo (`postgres://user:***@host/db`).
 */
export const MASK = '***';

/** Key names (case- and separator-insensitive) whose string value is a secret. */
export function isSecretKey(key: string): boolean {
  const k = key.toLowerCase().replace(/[^a-z0-9]/g, '');
  if (k.includes('password') || k.includes('passwd') || k.includes('secret') || k.includes('credential')) return true;
  return /(token|key|apikey|privatekey|passphrase|pin)$/.test(k);
}

const URL_WITH_USERINFO = /^([a-z][a-z0-9+.-]*:\/\/)([^/@\s]*)@/i;

/** The string with a URL's userinfo password replaced by the mask (user name kept). */
export function maskUrlPassword(value: string): string {
  const m = URL_WITH_USERINFO.exec(value);
  if (m === null) return value;
  const userinfo = m[2] as string;
  const colon = userinfo.indexOf(':');
  if (colon < 0) return value;
  return `${m[1]}${userinfo.slice(0, colon)}:${MASK}@${value.slice(m[0].length)}`;
}

export function maskSecrets(value: unknown, key = ''): unknown {
  if (typeof value === 'string') {
    if (value !== '' && isSecretKey(key)) return MASK;
    return maskUrlPassword(value);
  }
  if (Array.isArray(value)) return value.map((v) => maskSecrets(v, key));
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) out[k] = maskSecrets(v, k);
    return out;
  }
  return value;
}
