// STEPGATE_TEST_DATABASE_URL=postgres://… flock /tmp/stepgate-bench.lock npx node --disable-warning=ExperimentalWarning bench/stepup-not-found-timing.ts [sqlite|postgres]
//
// In process: what the token and cancel routes do for a step-up id that is not the caller's —
// loadStepUpForClient for an unknown id and for another client's — and, for contrast, the
// read-then-compare it replaced (which read and parsed the other client's row); and the
// ticket check of the user-side routes for an unknown id and for a wrong ticket. µs per call,
// median of 15 interleaved rounds of 2,000.
import { createTestGateway } from '../test/helpers/gateway.ts';
import { makeClient, makeUser, setPolicies } from '../test/helpers/stepup-fixtures.ts';
import { loadStepUpForClient } from '../src/flows/stepup-token.ts';
import { authorizeTicket, loadStepUp } from '../src/flows/verify-stepup-factor.ts';
const dialect = (process.argv[2] ?? 'sqlite') as 'sqlite' | 'postgres';
const tg = await createTestGateway({ dialect, config: { log: { level: 'warn' } } });
await setPolicies(tg.gw, [{ id: 'p', action: 'payment.code', priority: 10, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1', tokenTtlSeconds: 120 }]);
await makeUser(tg.gw, 'u');
const pay = await makeClient(tg.gw, 'pay', ['payment.code']);
const other = await makeClient(tg.gw, 'other', ['payment.code']);
const created = await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'u', action: 'payment.code', context: { amount: '1.00', currency: 'CNY' }, binding_message: 'Pay 1.00 CNY' });
const id = created.body.stepup_id as string;
const unknown = `stp_${'x'.repeat(24)}`;
async function time(n: number, fn: () => Promise<unknown>) {
  const t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await fn().catch(() => undefined);
  return Number(process.hrtime.bigint() - t) / n / 1000;
}
const old = async (sid: string) => { const s = await loadStepUp(tg.gw, sid); if (s === undefined || s.clientId !== other.clientId) throw new Error('x'); };
const r: Record<string, number[]> = { unknown: [], otherClient: [], oldUnknown: [], oldOtherClient: [], ticketUnknownId: [], ticketWrong: [] };
const wrongTicket = 'w'.repeat(43);
for (let round = 0; round < 15; round++) {
  r.unknown!.push(await time(2000, () => loadStepUpForClient(tg.gw, unknown, other.clientId)));
  r.otherClient!.push(await time(2000, () => loadStepUpForClient(tg.gw, id, other.clientId)));
  r.oldUnknown!.push(await time(2000, () => old(unknown)));
  r.oldOtherClient!.push(await time(2000, () => old(id)));
  r.ticketUnknownId!.push(await time(2000, () => authorizeTicket(tg.gw, unknown, wrongTicket)));
  r.ticketWrong!.push(await time(2000, () => authorizeTicket(tg.gw, id, wrongTicket)));
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[7]!;
for (const [k, v] of Object.entries(r)) console.log(`${dialect} ${k.padEnd(15)} ${med(v).toFixed(1)} µs  [${v.map((x) => x.toFixed(1)).join(', ')}]`);
await tg.close();
