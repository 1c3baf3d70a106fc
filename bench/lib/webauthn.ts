// WebAuthn assertion verification in process: the gateway's ceremony (src/factors/webauthn:
// its checks, then the signature with the credential's cached KeyObject) over assertions made
// by the test suite's software authenticator, each with its own challenge and a rising
// counter, per CPU-second.
import { newChallenge, type StoredCredential, verifyAssertion, verifyRegistration } from '../../src/factors/webauthn/ceremony.ts';
import { resolveWebAuthnSettings } from '../../src/factors/webauthn/settings.ts';
import { SoftCredential } from '../../test/helpers/soft-authenticator.ts';

const RP = 'pay.example.com';
const ORIGIN = 'https://pay.example.com';

export async function webauthnAssertionRate(count: number): Promise<{ perSecond: number; perCpuSecond: number; ops: number }> {
  const settings = resolveWebAuthnSettings(
    { rpId: RP, rpName: 'Bench Pay', origins: [ORIGIN], counterRegression: 'refuse', attestation: 'none', aaguidAllowList: [], trustRootsFile: '', timeoutSeconds: 120 },
    ORIGIN,
  );
  const cred = new SoftCredential({ counter: 1 });
  const regChallenge = newChallenge();
  const reg = await verifyRegistration(settings, { response: cred.register({ challenge: regChallenge, origin: ORIGIN, rpId: RP }), expectedChallenge: regChallenge });
  if (!reg.ok) throw new Error(`bench credential not registered: ${JSON.stringify(reg)}`);
  let stored: StoredCredential = { credentialId: reg.credential.credentialId, publicKey: reg.credential.publicKey, counter: reg.credential.counter, backupEligible: reg.credential.backupEligible, backedUp: reg.credential.backedUp, transports: reg.credential.transports };
  const assertions = Array.from({ length: count }, () => {
    const challenge = newChallenge();
    return { challenge, response: cred.assert({ challenge, origin: ORIGIN, rpId: RP }) };
  });
  // Warm-up: the library is loaded on first use.
  const first = assertions.shift();
  if (first !== undefined) {
    const r = await verifyAssertion(settings, { response: first.response, expectedChallenge: first.challenge, credential: stored });
    if (!r.ok) throw new Error(`bench assertion refused: ${r.reason}`);
    stored = { ...stored, counter: r.newCounter };
  }
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (const a of assertions) {
    const r = await verifyAssertion(settings, { response: a.response, expectedChallenge: a.challenge, credential: stored });
    if (!r.ok) throw new Error(`bench assertion refused: ${r.reason}`);
    stored = { ...stored, counter: r.newCounter };
  }
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(cpu0);
  return { perSecond: assertions.length / wall, perCpuSecond: assertions.length / ((c.user + c.system) / 1e6), ops: assertions.length };
}
