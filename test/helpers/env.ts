import { spawnSync } from 'node:child_process';
import type { TestContext } from 'node:test';

/**
 * Strict mode (CI: STEPGATE_TEST_STRICT=1): a test that would skip for a missing tool or a
 * missing PostgreSQL fails instead, so nothing is silently left untested.
 */
export const STRICT = process.env.STEPGATE_TEST_STRICT === '1';
export const TEST_DATABASE_URL = process.env.STEPGATE_TEST_DATABASE_URL ?? '';

/** Skip (locally) or fail (strict) with a one-line reason. Returns true when the test must stop. */
export function unavailable(t: TestContext, reason: string): boolean {
  if (STRICT) throw new Error(`strict mode: ${reason}`);
  t.skip(reason);
  return true;
}

const toolCache = new Map<string, boolean>();

export function hasTool(command: string): boolean {
  let found = toolCache.get(command);
  if (found === undefined) {
    found = spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
    toolCache.set(command, found);
  }
  return found;
}

/** For tests that need a system tool (oathtool, python3-jwt, chromium…). */
export function needTool(t: TestContext, command: string, debianPackage: string): boolean {
  if (hasTool(command)) return false;
  return unavailable(t, `${command} not installed (apt-get install ${debianPackage})`);
}
