import type { Gateway } from '../gateway.ts';

// PLACEHOLDER (owned by the admin bootstrap work): returns the one-time set-up URL when no
// administrator exists yet, creating its token; undefined otherwise.
export async function firstRunSetupLink(_gw: Gateway): Promise<string | undefined> {
  return undefined;
}
