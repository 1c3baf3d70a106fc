import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';

/**
 * The relying-party settings every WebAuthn check uses, resolved once at start-up from the
 * `webauthn` config section. Misconfiguration is a TypeError here (the process does not
 * start), never a surprise at the first ceremony.
 */

/** COSE algorithm ids we accept: EdDSA, ES256, RS256 (house stack decision). */
export const SUPPORTED_ALGORITHM_IDS: readonly number[] = Object.freeze([-8, -7, -257]);

export type CounterRegressionPolicy = 'refuse' | 'flag-only';

export type AttestationPolicy =
  | { mode: 'none' }
  | {
      mode: 'direct';
      /** Lower-case AAGUIDs (8-4-4-4-12) whose attestation is accepted. */
      aaguids: ReadonlySet<string>;
      /** PEM trust anchors an attestation certificate chain must end in. */
      trustRoots: readonly string[];
    };

export interface WebAuthnSettings {
  rpId: string;
  rpName: string;
  /** Exact origins (scheme://host[:port]) a clientDataJSON may carry. */
  origins: readonly string[];
  counterRegression: CounterRegressionPolicy;
  attestation: AttestationPolicy;
  /** What the browser is told to wait for the user (ms in the options). */
  timeoutSeconds: number;
  /**
   * Set when nothing was configured and the public URL cannot host WebAuthn (an IP address,
   * plain http on a LAN name): the gateway still starts, the factor is simply not offered.
   */
  unavailable?: string;
}

export interface WebAuthnSettingsInput {
  rpId: string;
  rpName: string;
  origins: readonly string[];
  counterRegression: CounterRegressionPolicy;
  attestation: 'none' | 'direct';
  aaguidAllowList: readonly string[];
  trustRootsFile: string;
  timeoutSeconds: number;
}

const AAGUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const DOMAIN = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

function fail(key: string, reason: string): never {
  throw new TypeError(`config: webauthn.${key}: ${reason}`);
}

/** The origin of an URL string exactly as browsers serialise it, or a TypeError naming `key`. */
function originOf(value: string, key: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    fail(key, `${JSON.stringify(value)} is not an URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') fail(key, `${value}: only http(s) origins`);
  return url;
}

/** PEM certificates from a bundle file; each must parse. */
export function loadTrustRoots(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    fail('trustRootsFile', `${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const pems = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (pems.length === 0) fail('trustRootsFile', `${file} holds no PEM certificate`);
  for (const pem of pems) {
    try {
      new X509Certificate(pem);
    } catch {
      fail('trustRootsFile', `${file} holds a certificate that does not parse`);
    }
  }
  return pems;
}

/**
 * Resolves the section against the public URL: an empty RP ID is the public URL's host, an
 * empty origin list is the public URL's origin. Every origin must be secure (https, or http
 * on localhost as browsers allow) and its host must be the RP ID or a subdomain of it —
 * otherwise no browser would ever produce a credential we accept.
 */
export function resolveWebAuthnSettings(input: WebAuthnSettingsInput, publicUrl: string): WebAuthnSettings {
  if (input.rpId === '' && input.origins.length === 0) {
    try {
      return resolveStrict(input, publicUrl);
    } catch (err) {
      if (!(err instanceof TypeError)) throw err;
      const settings = resolveStrict({ ...input, rpId: 'localhost', origins: ['http://localhost'] }, 'http://localhost');
      return { ...settings, unavailable: err.message };
    }
  }
  return resolveStrict(input, publicUrl);
}

function resolveStrict(input: WebAuthnSettingsInput, publicUrl: string): WebAuthnSettings {
  const base = originOf(publicUrl, 'rpId (from http.publicUrl)');
  const rpId = input.rpId === '' ? base.hostname : input.rpId;
  if (!DOMAIN.test(rpId) && rpId !== 'localhost') fail('rpId', `${JSON.stringify(rpId)} must be a lower-case domain name without scheme or port`);
  if (/^\d+(\.\d+){3}$/.test(rpId)) fail('rpId', 'an IP address cannot be a WebAuthn RP ID');
  const rawOrigins = input.origins.length === 0 ? [base.origin] : input.origins;
  const origins: string[] = [];
  rawOrigins.forEach((value, i) => {
    const key = input.origins.length === 0 ? 'origins (from http.publicUrl)' : `origins.${i}`;
    const url = originOf(value, key);
    if (url.origin !== value && input.origins.length > 0) fail(key, `${value} must be an origin exactly (scheme://host[:port], no path or trailing slash): ${url.origin}`);
    const local = url.hostname === 'localhost' || url.hostname.endsWith('.localhost');
    if (url.protocol !== 'https:' && !local) fail(key, `${value}: browsers use WebAuthn only on https (or http://localhost)`);
    if (url.hostname !== rpId && !url.hostname.endsWith(`.${rpId}`)) fail(key, `${value} is not on the RP ID ${rpId} or a subdomain of it`);
    origins.push(url.origin);
  });
  let attestation: AttestationPolicy = { mode: 'none' };
  if (input.attestation === 'direct') {
    const aaguids = new Set<string>();
    input.aaguidAllowList.forEach((a, i) => {
      const lower = a.toLowerCase();
      if (!AAGUID.test(lower)) fail(`aaguidAllowList.${i}`, `${JSON.stringify(a)} is not an AAGUID (8-4-4-4-12 hex)`);
      aaguids.add(lower);
    });
    if (aaguids.size === 0) fail('aaguidAllowList', 'attestation "direct" needs at least one AAGUID');
    if (input.trustRootsFile === '') fail('trustRootsFile', 'attestation "direct" needs a PEM file of trust roots');
    attestation = { mode: 'direct', aaguids, trustRoots: loadTrustRoots(input.trustRootsFile) };
  }
  return {
    rpId,
    rpName: input.rpName,
    origins: Object.freeze(origins),
    counterRegression: input.counterRegression,
    attestation,
    timeoutSeconds: input.timeoutSeconds,
  };
}
