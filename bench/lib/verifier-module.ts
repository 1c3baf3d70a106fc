// The verifier module in this process against its baseline, raw jose jwtVerify with an
// in-memory KeyObject, on the same tokens. One short pass of each (the first version of this
// scenario) swung 79–115 % between runs: JIT warm-up fell on whichever loop ran first and one
// GC or a neighbour's burst landed in one of two small CPU measurements. Now both are warmed
// up, then measured in several rounds (each a fresh replay store, so every verification
// really consumes its jti), each round in small blocks that alternate between the two, and
// the median of the per-round ratios is reported.
import { generateKeyPairSync, type KeyObject, randomUUID } from 'node:crypto';
import { exportJWK, jwtVerify, SignJWT } from 'jose';
import { createJwksCache, MemoryReplayStore, verifyStepUpToken } from '../../src/verifier/index.ts';
import { ACTION, CONTEXT } from './seed.ts';

export interface VerifierModuleResult {
  /** Median over the rounds. */
  verifierPerSecond: number;
  verifierPerCpuSecond: number;
  rawPerCpuSecond: number;
  /** Median of the per-round ratios (verifier per CPU-s / raw per CPU-s in the same round). */
  ratio: number;
  ratios: number[];
  tokens: number;
  rounds: number;
}

const BLOCK = 250;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
};

async function cpuTimed(run: () => Promise<void>): Promise<{ wall: number; cpu: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await run();
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / 1e6 };
}

export async function verifierModuleRates(tokenCount: number, rounds: number): Promise<VerifierModuleResult> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...(await exportJWK(publicKey)), kid: 'bench', alg: 'ES256' };
  // The verifier's own JWKS cache (what a relying service uses), fed once by an injected fetch.
  const jwks = createJwksCache({ jwksUri: 'http://127.0.0.1/.well-known/jwks.json', fetch: async () => new Response(JSON.stringify({ keys: [jwk] }), { status: 200, headers: { 'content-type': 'application/json' } }) });
  const tokens: string[] = [];
  for (let i = 0; i < tokenCount; i += 1) {
    tokens.push(await new SignJWT({ txn: 'stp_x', auth_time: Math.floor(Date.now() / 1000), acr: 'urn:stepgate:aal2', amr: ['otp'], authorization_details: [{ type: ACTION, ...CONTEXT }] })
      .setProtectedHeader({ alg: 'ES256', kid: 'bench', typ: 'stepup+jwt' }).setIssuer('http://gw').setSubject('usr_1').setAudience('cli_p').setJti(randomUUID()).setIssuedAt().setExpirationTime('10m').sign(privateKey));
  }
  const verifierPass = async (list: readonly string[], replayStore: MemoryReplayStore) => {
    for (const token of list) {
      await verifyStepUpToken(token, { issuer: 'http://gw', audience: 'cli_p', jwks, requiredAcr: 'urn:stepgate:aal2', expectedSubject: 'usr_1', expectedAction: ACTION, expectedContext: CONTEXT, replayStore });
    }
  };
  const rawPass = async (list: readonly string[]) => {
    for (const token of list) await jwtVerify(token, publicKey, { algorithms: ['ES256'] });
  };
  const warm = tokens.slice(0, Math.min(tokens.length, 2000));
  await verifierPass(warm, new MemoryReplayStore());
  await rawPass(warm);

  const ratios: number[] = [];
  const verifierRates: number[] = [];
  const verifierWallRates: number[] = [];
  const rawRates: number[] = [];
  for (let round = 0; round < rounds; round += 1) {
    // Small blocks, alternating: both sides see the same machine (a neighbour's burst, a
    // frequency change) within a fraction of a second of each other.
    let verifierCpu = 0;
    let verifierWall = 0;
    let rawCpu = 0;
    const replayStore = new MemoryReplayStore({ maxEntries: Math.max(100_000, tokens.length) });
    for (let i = 0; i < tokens.length; i += BLOCK) {
      const block = tokens.slice(i, i + BLOCK);
      const first = (i / BLOCK + round) % 2 === 0;
      for (const which of first ? (['verifier', 'raw'] as const) : (['raw', 'verifier'] as const)) {
        if (which === 'verifier') {
          const t = await cpuTimed(() => verifierPass(block, replayStore));
          verifierCpu += t.cpu;
          verifierWall += t.wall;
        } else {
          rawCpu += (await cpuTimed(() => rawPass(block))).cpu;
        }
      }
    }
    const v = tokens.length / verifierCpu;
    const r = tokens.length / rawCpu;
    verifierRates.push(v);
    verifierWallRates.push(tokens.length / verifierWall);
    rawRates.push(r);
    ratios.push(v / r);
  }
  return {
    verifierPerSecond: median(verifierWallRates),
    verifierPerCpuSecond: median(verifierRates),
    rawPerCpuSecond: median(rawRates),
    ratio: median(ratios),
    ratios,
    tokens: tokenCount,
    rounds,
  };
}

/**
 * Raw jose jwtVerify per CPU-second of this process over these tokens with an in-memory
 * public key: the baseline of the HTTP verifier row, measured right before and right after
 * that load (the mean of the two) instead of minutes earlier with the other baselines.
 */
export async function joseVerifyPerCpuSecond(tokens: readonly string[], publicKey: KeyObject): Promise<number> {
  for (const token of tokens.slice(0, 500)) await jwtVerify(token, publicKey, { algorithms: ['ES256'] });
  const t = await cpuTimed(async () => {
    for (const token of tokens) await jwtVerify(token, publicKey, { algorithms: ['ES256'] });
  });
  return tokens.length / t.cpu;
}
