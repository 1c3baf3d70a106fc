import type { Config } from '../../config/schema.ts';
import { resolveWebAuthnSettings, type WebAuthnSettings } from './settings.ts';
import { createWebAuthnFactor, type WebAuthnFactor } from './webauthn-factor.ts';

export * from './ceremony.ts';
export * from './credential.ts';
export { resolveWebAuthnSettings, loadTrustRoots, SUPPORTED_ALGORITHM_IDS, type WebAuthnSettings, type AttestationPolicy, type CounterRegressionPolicy } from './settings.ts';
export { createWebAuthnFactor, type WebAuthnFactor, type WebAuthnInput, type WebAuthnChange, type WebAuthnChallengeState } from './webauthn-factor.ts';

export interface WebAuthnServices {
  settings: WebAuthnSettings;
  factor: WebAuthnFactor;
}

const byConfig = new WeakMap<object, WebAuthnServices>();

/**
 * The settings and factor module for a configuration, built once per configuration object.
 * Throws TypeError for a bad `webauthn` section (origins off the RP ID, unreadable trust
 * roots…): call it at start-up.
 */
export function webauthnServicesFor(config: Pick<Config, 'webauthn' | 'http'>): WebAuthnServices {
  let s = byConfig.get(config);
  if (s === undefined) {
    const settings = resolveWebAuthnSettings(config.webauthn, config.http.publicUrl);
    s = { settings, factor: createWebAuthnFactor({ settings }) };
    byConfig.set(config, s);
  }
  return s;
}
