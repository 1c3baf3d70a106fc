import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import type { Response } from 'supertest';
import { z } from 'zod';
import { createApp } from '../../src/app.ts';
import { newId } from '../../src/crypto/ids.ts';
import { createClient } from '../../src/flows/clients.ts';
import { createSession } from '../../src/flows/sessions.ts';
import type { RouteSpec, SecurityScheme } from '../../src/http/api-registry.ts';
import { clientAssertionFields } from '../../src/http/client-auth.ts';
import { invalidParamsOf } from '../../src/http/validate.ts';
import { sessionCookieName } from '../../src/http/session.ts';
import type { Database } from '../../src/store/schema.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { makeUser, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * HTTP basics every endpoint shares: request ids, security headers, the problem+json error
 * format, and — swept generically over every JSON route with a body in the API registry (so
 * routes added later are covered without touching this file) — that malformed JSON, wrong
 * types, unknown fields, oversized and non-JSON bodies are a 4xx naming the field, never a
 * 5xx, and change nothing in the database.
 */

const PROBLEM = /^application\/problem\+json/;

interface ProblemBody {
  code: string;
  status: number;
  request_id?: string;
  invalid_params?: { pointer: string; reason: string }[];
}

/** What assertProblem needs of a response (supertest's, or rawRequest's). */
interface HttpResult {
  status: number;
  headers: object;
  text: string;
}

function header(res: HttpResult, name: string): unknown {
  return (res.headers as Record<string, unknown>)[name];
}

function assertProblem(res: HttpResult, label: string): ProblemBody {
  assert.ok(res.status >= 400 && res.status < 500, `${label}: expected 4xx, got ${res.status} ${res.text.slice(0, 300)}`);
  assert.match(String(header(res, 'content-type')), PROBLEM, `${label}: content-type`);
  const body = JSON.parse(res.text) as ProblemBody;
  assert.equal(typeof body.code, 'string', `${label}: problem has a code`);
  assert.equal(body.status, res.status, `${label}: problem status matches`);
  assert.equal(body.request_id, header(res, 'x-request-id'), `${label}: problem carries the request id`);
  return body;
}

function concretePath(path: string, params: Record<string, string> = {}): string {
  return path.replace(/:([A-Za-z0-9_]+)/g, (_m, name: string) => params[name] ?? `probe-${name}`);
}

/** The route's path parameter names (`:id` → `id`). */
function pathParams(path: string): string[] {
  return [...path.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1] as string);
}

interface JsonSchema {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  const?: unknown;
  enum?: unknown[];
}

function typesOf(schema: JsonSchema): Set<string> {
  const out = new Set<string>();
  if (typeof schema.type === 'string') out.add(schema.type);
  if (Array.isArray(schema.type)) for (const t of schema.type) out.add(t);
  for (const alt of [...(schema.anyOf ?? []), ...(schema.oneOf ?? [])]) for (const t of typesOf(alt)) out.add(t);
  if (schema.const !== undefined) out.add(typeof schema.const);
  for (const v of schema.enum ?? []) out.add(v === null ? 'null' : typeof v);
  if (out.has('integer')) out.add('number');
  return out;
}

/** A value of a JSON type the property does not accept, or undefined if it accepts anything. */
function wrongValueFor(schema: JsonSchema): unknown {
  const types = typesOf(schema);
  if (types.size === 0) return undefined;
  const candidates: [string, unknown][] = [
    ['boolean', true],
    ['number', 12345],
    ['string', 'wrong-type'],
    ['array', ['wrong', 'type']],
    ['object', { wrong: 'type' }],
    ['null', null],
  ];
  for (const [type, value] of candidates) if (!types.has(type)) return value;
  return undefined;
}

/** The pointers the route's body schema itself reports for `body` (what the server must name). */
function bodyIssuePointers(route: RouteSpec, body: unknown): string[] {
  const result = (route.body as z.ZodType).safeParse(body);
  return result.success ? [] : invalidParamsOf(result.error).map((p) => p.pointer);
}

/** Whether the schema rejects a wrong value for property `name` on its own (not left to a later check). */
function typedBySchema(route: RouteSpec, name: string): boolean {
  const shape = (route.body as unknown as { shape?: Record<string, z.ZodType> }).shape;
  const property = shape?.[name];
  if (property === undefined) return false;
  const wrong = wrongValueFor(bodySchemaOf(route).properties?.[name] ?? {});
  return wrong !== undefined && !property.safeParse(wrong).success;
}

function bodySchemaOf(route: RouteSpec): JsonSchema {
  return z.toJSONSchema(route.body as z.ZodType, { target: 'draft-2020-12', io: 'input', unrepresentable: 'any' }) as JsonSchema;
}

/** Who the sweep sends as, and which route security schemes that gets it past. */
interface Caller {
  name: string;
  headers: Record<string, string>;
  passes: SecurityScheme[];
  /** Path parameters that get this caller past its authentication (the step-up its ticket is for). */
  params?: Record<string, string>;
}

function send(tg: TestGateway, route: RouteSpec, caller: Caller, path = concretePath(route.path, caller.params)) {
  return tg.http()[route.method](path).set(caller.headers);
}

/**
 * Sends exact bytes (supertest re-serialises a Buffer body when the type is JSON, which
 * would hide what a gzip-encoded request does).
 */
async function rawRequest(server: Server, method: string, path: string, headers: Record<string, string | number>, body: Buffer): Promise<HttpResult> {
  const { port } = server.address() as AddressInfo;
  return new Promise<HttpResult>((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers: { ...headers, 'content-length': body.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Row counts of every table: bad input must leave them all as they were. */
async function tableCounts(tg: TestGateway): Promise<Record<string, number>> {
  const tables = await tg.gw.store.db.introspection.getTables();
  const out: Record<string, number> = {};
  for (const { name } of tables) {
    if (name.startsWith('stepgate_migrations')) continue;
    const row = await tg.gw.store.db
      .selectFrom(name as keyof Database)
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    out[name] = Number(row.n);
  }
  return out;
}

async function auditRows(tg: TestGateway): Promise<number> {
  const row = await tg.gw.store.db.selectFrom('audit_log').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
  return Number(row.n);
}

/** Every row of every table (bad input must not even touch a counter or a last-seen time). */
async function tableSnapshot(tg: TestGateway): Promise<Record<string, string[]>> {
  const tables = await tg.gw.store.db.introspection.getTables();
  const out: Record<string, string[]> = {};
  for (const { name } of tables) {
    if (name.startsWith('stepgate_migrations')) continue;
    const rows = await tg.gw.store.db.selectFrom(name as keyof Database).selectAll().execute();
    out[name] = rows.map((r) => JSON.stringify(r)).sort();
  }
  return out;
}

/** Top-level property names of a body schema, across union alternatives. */
function propertyNames(schema: JsonSchema): string[] {
  const names = new Set(Object.keys(schema.properties ?? {}));
  for (const alt of [...(schema.anyOf ?? []), ...(schema.oneOf ?? [])]) for (const n of Object.keys(alt.properties ?? {})) names.add(n);
  return [...names];
}

function queryNames(route: RouteSpec): string[] {
  if (route.query === undefined) return [];
  const schema = z.toJSONSchema(route.query as z.ZodType, { target: 'draft-2020-12', io: 'input', unrepresentable: 'any' }) as JsonSchema;
  return Object.keys(schema.properties ?? {});
}

function pointersOf(body: ProblemBody): string[] {
  return (body.invalid_params ?? []).map((p) => p.pointer);
}

function basicHeader(id: string, secret: string): string {
  return `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`;
}

for (const dialect of testDialects()) {
  describe(`HTTP basics: ${dialect}`, () => {
    let tg: TestGateway;
    let routes: RouteSpec[];
    let server: Server;
    const callers: Caller[] = [{ name: 'anonymous', headers: {}, passes: ['none'] }];

    before(async () => {
      tg = await createTestGateway({ dialect });
      routes = createApp(tg.gw).api.routes;
      server = createServer(tg.app).listen(0, '127.0.0.1');
      await once(server, 'listening');
      // A fresh session holding every role, so the sweep reaches the validation of session routes too.
      const nowMs = tg.clock.now().getTime();
      const userId = newId('usr');
      await tg.gw.store.db
        .insertInto('users')
        .values({ id: userId, username: 'sweep-admin', display_name: 'Sweep', roles: JSON.stringify(['admin', 'helpdesk', 'auditor']), groups: '[]', status: 'active', created_at: nowMs, updated_at: nowMs })
        .execute();
      const session = await createSession(tg.gw, userId, ['pwd']);
      callers.push({
        name: 'admin session',
        headers: { Cookie: `${sessionCookieName(tg.config)}=${session.sessionId}`, 'X-CSRF-Token': session.csrfToken },
        passes: ['none', 'session'],
      });
      // A relying service (client_secret_basic), so client-authenticated routes are proven too.
      const { client, clientSecret } = await createClient(tg.gw, { name: 'Sweep client', actions: ['payment.code'] }, { actor: 'test' });
      assert.ok(clientSecret !== undefined);
      const basic = Buffer.from(`${encodeURIComponent(client.clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64');
      callers.push({ name: 'relying client', headers: { Authorization: `Basic ${basic}` }, passes: ['none', 'clientBasic'] });
      // A pending step-up and its ticket, so the ticket routes (status, verify, challenge) are proven too.
      await setPolicies(tg.gw, [{ id: 'sweep', action: 'payment.code', priority: 10, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1', tokenTtlSeconds: 120 }]);
      await makeUser(tg.gw, 'sweep-user');
      const created = await tg.http().post('/v1/stepup').set('Authorization', `Basic ${basic}`).send({ subject: 'sweep-user', action: 'payment.code', context: { amount: '1.00', currency: 'CNY' } });
      assert.equal(created.status, 201, created.text);
      callers.push({ name: 'step-up ticket', headers: { Authorization: `Ticket ${created.body.ticket as string}` }, passes: ['none', 'ticket'], params: { id: created.body.stepup_id as string } });
    });
    after(async () => {
      server.close();
      await tg.close();
    });

    describe('request ids', () => {
      it('every response carries X-Request-Id, success and error alike', async () => {
        const ids = new Set<string>();
        for (const res of [await tg.http().get('/healthz'), await tg.http().get('/no/such/route'), await tg.http().post('/v1/login').type('json').send('{')]) {
          const id = res.headers['x-request-id'];
          assert.match(String(id), /^[A-Za-z0-9._-]{8,64}$/);
          ids.add(String(id));
        }
        assert.equal(ids.size, 3, 'ids are unique');
      });

      it('honours a sane incoming X-Request-Id and replaces an unsafe one', async () => {
        const sane = await tg.http().get('/healthz').set('X-Request-Id', 'proxy-req-12345678');
        assert.equal(sane.headers['x-request-id'], 'proxy-req-12345678');
        const unsafe = await tg.http().get('/healthz').set('X-Request-Id', 'evil\tvalue with spaces; injected=1');
        assert.notEqual(unsafe.headers['x-request-id'], 'evil\tvalue with spaces; injected=1');
        assert.match(String(unsafe.headers['x-request-id']), /^[A-Za-z0-9._-]{8,64}$/);
        const tooLong = await tg.http().get('/healthz').set('X-Request-Id', 'a'.repeat(200));
        assert.notEqual(tooLong.headers['x-request-id'], 'a'.repeat(200));
      });
    });

    describe('security headers', () => {
      it('sends helmet headers: CSP with frame-ancestors none, nosniff, no X-Powered-By', async () => {
        for (const res of [await tg.http().get('/healthz'), await tg.http().get('/no/such/route')]) {
          const csp = String(res.headers['content-security-policy']);
          assert.match(csp, /frame-ancestors 'none'/);
          assert.match(csp, /default-src 'self'/);
          assert.match(csp, /object-src 'none'/);
          assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
          assert.equal(res.headers['x-content-type-options'], 'nosniff');
          assert.ok(res.headers['x-frame-options'] !== undefined);
          assert.equal(res.headers['referrer-policy'], 'no-referrer');
          assert.equal(res.headers['x-powered-by'], undefined);
        }
      });

      it('sends HSTS in production mode only', async () => {
        assert.equal((await tg.http().get('/healthz')).headers['strict-transport-security'], undefined);
        const prod = await createTestGateway({ database: tg.database, config: { mode: 'production', http: { publicUrl: 'https://mfa.example.com' } } });
        try {
          const res = await prod.http().get('/healthz');
          assert.match(String(res.headers['strict-transport-security']), /max-age=\d+/);
          assert.match(String(res.headers['content-security-policy']), /upgrade-insecure-requests/);
          // The benchmark's echo route: loadConfig refuses it in production (test/unit/config.test.ts),
          // and a config that got past it some other way does not make an app either.
          assert.equal((await prod.http().post('/v1/echo').send({ a: 1 })).status, 404);
          assert.throws(() => createApp({ ...prod.gw, config: { ...prod.gw.config, http: { ...prod.gw.config.http, echoRoute: true } } } as typeof prod.gw), /http\.echoRoute/);
        } finally {
          await prod.close();
        }
      });
    });

    describe('errors', () => {
      it('an unknown route is a 404 problem+json', async () => {
        for (const [method, path] of [['get', '/no/such/route'], ['post', '/v1/no-such-thing'], ['delete', '/v1']] as const) {
          const res = await tg.http()[method](path);
          assert.equal(res.status, 404);
          assert.equal(assertProblem(res, `${method} ${path}`).code, 'not_found');
        }
      });

      it('a body the parser rejects is a 4xx even on an unknown route, and never reaches a handler', async () => {
        const res = await tg.http().post('/no/such/route').type('json').send('{"a":');
        assert.equal(res.status, 400);
        assert.equal(assertProblem(res, 'malformed on unknown route').code, 'invalid_json');
      });

      it('unsupported charsets and content encodings are 415, a compressed body over the limit is 413', async () => {
        const latin = await tg.http().post('/v1/login').set('Content-Type', 'application/json; charset=latin1').send('{}');
        assert.equal(latin.status, 415);
        assert.equal(assertProblem(latin, 'latin1').code, 'unsupported_media_type');
        const unknownEncoding = await tg.http().post('/v1/login').set('Content-Type', 'application/json').set('Content-Encoding', 'x-custom').send('{}');
        assert.equal(unknownEncoding.status, 415);
        assert.equal(assertProblem(unknownEncoding, 'x-custom encoding').code, 'unsupported_media_type');
        // The limit applies after inflation: a small gzip body that inflates far past it is 413.
        const json = { 'content-type': 'application/json', 'content-encoding': 'gzip' };
        const fine = await rawRequest(server, 'POST', '/v1/login', json, gzipSync('{"unexpected_field":1}'));
        assert.equal(fine.status, 400, 'a gzip body is inflated and validated');
        assert.equal(assertProblem(fine, 'gzip').code, 'validation_failed');
        const bomb = gzipSync(Buffer.from(`{"a":"${'0'.repeat(4 * tg.config.http.bodyLimitBytes)}"}`));
        assert.ok(bomb.length < tg.config.http.bodyLimitBytes / 10);
        const inflated = await rawRequest(server, 'POST', '/v1/login', json, bomb);
        assert.equal(inflated.status, 413);
        assert.equal(assertProblem(inflated, 'gzip bomb').code, 'payload_too_large');
        const garbage = await rawRequest(server, 'POST', '/v1/login', json, Buffer.from('not gzip at all'));
        assert.equal(assertProblem(garbage, 'corrupt gzip').code, 'invalid_request');
      });

      it('an oversized form body is 413 as well', async () => {
        const res = await tg.http().post('/login').type('form').send(`a=${'x'.repeat(tg.config.http.bodyLimitBytes + 10)}`);
        assert.equal(res.status, 413);
        assert.equal(assertProblem(res, 'form').code, 'payload_too_large');
      });
    });

    describe('every JSON route with a body', () => {
      it('the registry lists the routes this sweep covers', () => {
        const withBody = routes.filter((r) => r.body !== undefined);
        // The foundation ships POST /v1/login at least; if it is missing the sweep proves nothing.
        assert.ok(
          withBody.some((r) => r.method === 'post' && r.path === '/v1/login'),
          `POST /v1/login is not registered; routes with a body: ${withBody.map((r) => `${r.method} ${r.path}`).join(', ') || 'none'}`,
        );
      });

      for (const callerName of ['anonymous', 'admin session', 'relying client', 'step-up ticket']) {
        it(`bad bodies are 4xx problem+json naming the field and change nothing (${callerName})`, async (t) => {
          const found = callers.find((c) => c.name === callerName);
          if (found === undefined) throw new TypeError(`no caller ${callerName}`);
          const caller: Caller = found;
          const countsBefore = await tableCounts(tg);
          const auditBefore = await auditRows(tg);
          const proven: string[] = [];
          for (const route of routes.filter((r) => r.body !== undefined)) {
            const label = `${route.method.toUpperCase()} ${route.path} (${caller.name})`;
            const security = route.security ?? ['none'];
            // Whether this caller gets past the route's authentication to its validation.
            const reachable = security.some((s) => caller.passes.includes(s));
            const schema = bodySchemaOf(route);
            const properties = schema.properties ?? {};

            // The body parser runs before any route: these answers do not depend on auth.
            const malformed = await send(tg, route, caller).type('json').send('{"oops": ');
            assert.equal(malformed.status, 400, `${label}: malformed JSON`);
            assert.equal(assertProblem(malformed, `${label}: malformed JSON`).code, 'invalid_json');

            // A member given twice is refused, not "last one wins" (a parser differential): at
            // the top level, nested, and spelled differently with an escape; the pointer names it.
            const member = Object.keys(properties).find((n) => !(n in clientAssertionFields)) ?? 'probe';
            const duplicates: [string, string][] = [
              [`{${JSON.stringify(member)}:"1.00",${JSON.stringify(member)}:"9999.00"}`, `/${member.replaceAll('~', '~0').replaceAll('/', '~1')}`],
              ['{"context":{"amount":"1.00","currency":"CNY","\\u0061mount":"9999.00"}}', '/context/amount'],
              ['{"items":[{"a":1},{"b":{"c":1,"c":2}}]}', '/items/1/b/c'],
            ];
            for (const [text, pointer] of duplicates) {
              const duplicated = await send(tg, route, caller).type('json').send(text);
              assert.equal(duplicated.status, 400, `${label}: duplicate ${pointer}: ${duplicated.text.slice(0, 300)}`);
              const problem = assertProblem(duplicated, `${label}: duplicate ${pointer}`);
              assert.equal(problem.code, 'duplicate_member', `${label}: duplicate ${pointer}`);
              assert.deepEqual(pointersOf(problem), [pointer], `${label}: duplicate ${pointer}`);
            }

            const huge = await send(tg, route, caller).type('json').send(JSON.stringify({ padding: 'x'.repeat(tg.config.http.bodyLimitBytes) }));
            assert.equal(huge.status, 413, `${label}: oversized body`);
            assert.equal(assertProblem(huge, `${label}: oversized body`).code, 'payload_too_large');

            const plain = await send(tg, route, caller).type('text/plain').send('{"username":"a"}');
            const plainProblem = assertProblem(plain, `${label}: text/plain`);
            if (reachable) {
              assert.equal(plain.status, 415, `${label}: text/plain`);
              assert.equal(plainProblem.code, 'unsupported_media_type');
            }

            const array = await send(tg, route, caller).type('json').send('[{"username":"a"}]');
            const arrayProblem = assertProblem(array, `${label}: JSON array`);
            const unknownField = await send(tg, route, caller).type('json').send('{"__proto__":{"isAdmin":true},"unexpected_field":1}');
            const unknownProblem = assertProblem(unknownField, `${label}: unknown field`);
            const wrong: Record<string, unknown> = {};
            for (const [name, propSchema] of Object.entries(properties)) {
              // The private_key_jwt fields select the client authentication method itself:
              // sending them next to Basic credentials is (rightly) a 401 before validation.
              if (name in clientAssertionFields) continue;
              const value = wrongValueFor(propSchema);
              if (value !== undefined) wrong[name] = value;
            }
            const wrongTypes = Object.keys(wrong).length > 0 ? await send(tg, route, caller).type('json').send(JSON.stringify(wrong)) : undefined;
            const wrongProblem = wrongTypes === undefined ? undefined : assertProblem(wrongTypes, `${label}: wrong types`);
            const deep = await send(tg, route, caller).type('json').send(`${'['.repeat(5000)}${']'.repeat(5000)}`);
            assertProblem(deep, `${label}: deeply nested`);

            if (!reachable) continue;
            assert.equal(array.status, 400, `${label}: JSON array`);
            assert.equal(arrayProblem.code, 'validation_failed');
            assert.ok((arrayProblem.invalid_params ?? []).some((p) => p.pointer === ''), `${label}: array points at the root`);

            assert.equal(unknownField.status, 400, `${label}: unknown field`);
            assert.equal(unknownProblem.code, 'validation_failed');
            const unknownPointers = (unknownProblem.invalid_params ?? []).map((p) => p.pointer);
            if (schema.properties !== undefined) {
              assert.ok(unknownPointers.includes('/unexpected_field'), `${label}: unknown field named, got ${unknownPointers.join(' ')}`);
              assert.ok(unknownPointers.includes('/__proto__'), `${label}: __proto__ rejected as unknown, got ${unknownPointers.join(' ')}`);
            } else {
              // A union body: zod reports the alternative it could not pick (the discriminator).
              assert.ok(unknownPointers.length > 0, `${label}: the field at fault is named`);
            }

            if (wrongTypes !== undefined && wrongProblem !== undefined) {
              // Every field the route's own schema rejects must be named in the answer. (A field
              // the schema leaves open — z.unknown() checked later by the flow — may be reported
              // by that later check instead; the answer above is still a 4xx problem.)
              const expected = bodyIssuePointers(route, wrong);
              if (expected.length > 0) {
                assert.equal(wrongTypes.status, 400, `${label}: wrong types`);
                assert.equal(wrongProblem.code, 'validation_failed');
                const pointers = (wrongProblem.invalid_params ?? []).map((p) => p.pointer);
                for (const pointer of expected) {
                  assert.ok(pointers.includes(pointer), `${label}: wrong type at ${pointer} is named (got ${pointers.join(' ')})`);
                }
                // Proves more than the schema: each field we broke and the schema checks is named.
                for (const name of Object.keys(wrong)) {
                  if (expected.some((e) => e === `/${name}` || e.startsWith(`/${name}/`))) continue;
                  assert.ok(!typedBySchema(route, name), `${label}: ${name} is typed by the schema but not reported`);
                }
              }
            }
            proven.push(label);
          }
          assert.deepEqual(await tableCounts(tg), countsBefore, 'bad requests changed no table');
          assert.equal(await auditRows(tg), auditBefore, 'bad requests appended no audit event');
          assert.ok(proven.length > 0, `no route's validation was reachable as ${caller.name}`);
          t.diagnostic(`validation proven as ${caller.name}: ${proven.map((l) => l.replace(/ \(.*\)$/, '')).join(', ')}`);
        });
      }
    });

    describe('every route with query or path parameters', () => {
      it('wrong, repeated and unknown query parameters and absurd path parameters are 4xx problem+json naming the parameter', async () => {
        const countsBefore = await tableCounts(tg);
        const proven: string[] = [];
        for (const route of routes.filter((r) => r.query !== undefined || pathParams(r.path).length > 0)) {
          const security = route.security ?? ['none'];
          const caller = callers.find((c) => security.some((s) => c.passes.includes(s))) ?? (callers[0] as Caller);
          const label = `${route.method.toUpperCase()} ${route.path} (${caller.name})`;
          const base = concretePath(route.path, caller.params);
          if (route.query !== undefined) {
            const unknown = await send(tg, route, caller, `${base}?unexpected_param=1`);
            const unknownProblem = assertProblem(unknown, `${label}: unknown query parameter`);
            if (!(route.query as z.ZodType).safeParse({ unexpected_param: '1' }).success) {
              assert.equal(unknownProblem.code, 'validation_failed', `${label}: unknown query parameter`);
              assert.ok(pointersOf(unknownProblem).includes('/unexpected_param'), `${label}: unknown query parameter named (${pointersOf(unknownProblem).join(' ')})`);
            }
            for (const name of queryNames(route)) {
              // Not percent-encoded UTF-8: the parser made U+FFFD of it (or kept it literally).
              for (const broken of ['%', '%ZZ', '%E0%A4']) {
                const res = await send(tg, route, caller, `${base}?${name}=a${broken}`);
                const problem = assertProblem(res, `${label}: ${broken} in query ${name}`);
                assert.equal(problem.code, 'validation_failed', `${label}: ${broken} in query ${name}`);
                assert.deepEqual(pointersOf(problem), [`/${name}`], `${label}: ${broken} in query ${name}`);
              }
              const repeated = await send(tg, route, caller, `${base}?${name}=1&${name}=2`);
              assert.equal(repeated.status, 400, `${label}: repeated ${name}`);
              assert.ok(pointersOf(assertProblem(repeated, `${label}: repeated ${name}`)).includes(`/${name}`), `${label}: repeated ${name} is named`);
              const huge = await send(tg, route, caller, `${base}?${name}=${'9'.repeat(3000)}`);
              if (huge.status >= 400) assertProblem(huge, `${label}: huge ${name}`);
              else assert.ok(huge.status < 300, `${label}: huge ${name} is refused or harmless`);
            }
          }
          for (const name of pathParams(route.path)) {
            const absurd = concretePath(route.path, { ...caller.params, [name]: `${'z'.repeat(300)}..%2F..%2Fetc` });
            assertProblem(await send(tg, route, caller, absurd), `${label}: absurd ${name}`);
            // Not percent-encoded UTF-8: express answered a bare 400 invalid_request naming nothing.
            for (const broken of ['%', '%E0%A4', '%FF']) {
              const res = await send(tg, route, caller, concretePath(route.path, { ...caller.params, [name]: `a${broken}` }));
              const problem = assertProblem(res, `${label}: ${broken} in ${name}`);
              assert.equal(problem.code, 'validation_failed', `${label}: ${broken} in ${name}`);
              assert.deepEqual(pointersOf(problem), [`/${name}`], `${label}: ${broken} in ${name}`);
            }
          }
          proven.push(label);
        }
        assert.deepEqual(await tableCounts(tg), countsBefore, 'bad parameters changed no table');
        assert.ok(proven.some((l) => l.includes('/v1/stepup/:id') && l.includes('step-up ticket')), 'the ticket routes were reached');
      });
    });

    describe('control characters in any input', () => {
      it('NUL and control characters in bodies, queries, path parameters and Basic credentials are 400 naming the field, before anything is read or written', async () => {
        const before = await tableSnapshot(tg);
        const auditBefore = await auditRows(tg);
        const checked: string[] = [];
        const expectField = (res: HttpResult, label: string, pointer: string) => {
          assert.equal(res.status, 400, `${label}: ${res.text.slice(0, 300)}`);
          const problem = assertProblem(res, label);
          assert.equal(problem.code, 'validation_failed', label);
          assert.ok(pointersOf(problem).includes(pointer), `${label}: names ${pointer} (got ${pointersOf(problem).join(' ')})`);
          checked.push(label);
        };
        for (const route of routes) {
          const security = route.security ?? ['none'];
          const reaching = callers.find((c) => security.some((s) => c.passes.includes(s)));
          // Anonymous too: the refusal comes before authentication, so nobody gets further.
          for (const caller of new Set([callers[0] as Caller, ...(reaching === undefined ? [] : [reaching])])) {
            const label = `${route.method.toUpperCase()} ${route.path} (${caller.name})`;
            const base = concretePath(route.path, caller.params);
            if (route.body !== undefined) {
              for (const name of propertyNames(bodySchemaOf(route))) {
                expectField(await send(tg, route, caller).type('json').send(JSON.stringify({ [name]: 'a\u0000b' })), `${label}: NUL in ${name}`, `/${name}`);
                if (!/password/i.test(name)) {
                  expectField(await send(tg, route, caller).type('json').send(JSON.stringify({ [name]: 'a\u0007b' })), `${label}: BEL in ${name}`, `/${name}`);
                }
              }
              expectField(await send(tg, route, caller).type('json').send(JSON.stringify({ nested_probe: { deep: ['fine', 'a\u0000'] } })), `${label}: nested NUL`, '/nested_probe/deep/1');
              expectField(await send(tg, route, caller).type('json').send(JSON.stringify({ 'key\u0000': 1 })), `${label}: NUL in a field name`, '/key\u0000');
            }
            for (const name of [...queryNames(route), 'probe']) {
              for (const bad of ['%00', '%07', '%7F', '%0A']) expectField(await send(tg, route, caller, `${base}?${name}=a${bad}b`), `${label}: ${bad} in query ${name}`, `/${name}`);
            }
            for (const name of pathParams(route.path)) {
              for (const bad of ['%00', '%1B']) {
                expectField(await send(tg, route, caller, concretePath(route.path, { ...caller.params, [name]: `a${bad}b` })), `${label}: ${bad} in path ${name}`, `/${name}`);
              }
            }
          }
        }
        // Basic credentials with control characters, raw or form-encoded (RFC 6749 §2.3.1), are
        // malformed client credentials: the one 401 invalid_client of client authentication.
        for (const [id, secret] of [['a\u0000b', 'secret'], ['a%00b', 'secret'], ['client', 'se\u0007cret']] as const) {
          const res = await tg.http().get('/v1/clients/me').set('Authorization', basicHeader(id, secret));
          assert.equal(res.status, 401, `Basic ${JSON.stringify(id)}: ${res.text}`);
          assert.equal(assertProblem(res, 'Basic with a control character').code, 'invalid_client');
        }
        // The cases the audit found, spelled out.
        expectField(await tg.http().post('/v1/login').send({ username: 'a\u0000b', password: 'whatever it is 1' }), 'login username NUL', '/username');
        expectField(await tg.http().post('/v1/login').send({ username: 'sweep-user', password: 'pass\u0000word' }), 'login password NUL', '/password');
        // Form bodies on pages: the login, set-up and step-up forms.
        expectField(await tg.http().post('/login').type('form').send('username=a%00b&password=x&_login_csrf=y'), 'login form', '/username');
        expectField(await tg.http().post('/setup').type('form').send('token=t%00&csrf=c&username=u&password=p&password_confirm=p'), 'set-up form', '/token');
        const ticketCaller = callers.find((c) => c.name === 'step-up ticket') as Caller;
        expectField(await tg.http().post(`/stepup/${ticketCaller.params?.id}/verify`).type('form').send('factor=password&password=%00'), 'step-up page form', '/password');
        // A page path segment (not an API parameter) is refused too.
        assertProblem(await tg.http().get('/stepup/stp_%00abc'), 'page path with NUL');

        assert.deepEqual(await tableSnapshot(tg), before, 'no row was read-and-charged, written or touched');
        assert.equal(await auditRows(tg), auditBefore, 'nothing audited');
        assert.ok(checked.some((l) => l.includes('/v1/stepup/:id/verify') && l.includes('step-up ticket')));
        assert.ok(checked.some((l) => l.includes('/v1/admin/users/:id/unlock')));
      });

      it('a password may hold other control characters (only NUL is never valid), and a cookie holding one is ignored', async () => {
        const odd = await tg.http().post('/v1/login').send({ username: 'sweep-user', password: 'tab\there\u0007bell' });
        assert.equal(odd.status, 401, odd.text);
        assert.equal(assertProblem(odd, 'odd password').code, 'invalid_credentials');
        const admin = callers.find((c) => c.name === 'admin session') as Caller;
        const cookie = await tg.http().get('/v1/me').set('Cookie', 'stepgate_session=abc%00def');
        assert.equal(cookie.status, 401, 'a NUL cookie is no session, and no 500');
        const ok = await tg.http().get('/v1/me').set(admin.headers);
        assert.equal(ok.status, 200);
      });
    });

    describe('text that is not Unicode', () => {
      it('a body that is not valid UTF-8, or a string or field name holding a lone surrogate, is 400 naming the field, before anything is read or written', async () => {
        const before = await tableSnapshot(tg);
        const auditBefore = await auditRows(tg);
        const admin = callers.find((c) => c.name === 'admin session') as Caller;
        const json = { 'content-type': 'application/json' };
        // 0xFF never occurs in UTF-8; the parser used to decode it to U+FFFD and carry on.
        const badBytes = Buffer.concat([Buffer.from('{"username":"sweep-'), Buffer.from([0xff, 0xc0, 0x80]), Buffer.from('user","password":"whatever it is 1"}')]);
        for (const [path, headers] of [['/v1/login', json], ['/v1/admin/users', { ...json, ...admin.headers }]] as const) {
          const res = await rawRequest(server, 'POST', path, headers, badBytes);
          const problem = assertProblem(res, `${path}: invalid UTF-8`);
          assert.equal(problem.code, 'invalid_json');
          assert.deepEqual(pointersOf(problem), ['']);
        }
        const form = await rawRequest(server, 'POST', '/login', { 'content-type': 'application/x-www-form-urlencoded' }, Buffer.concat([Buffer.from('username=a'), Buffer.from([0xfe]), Buffer.from('&password=x')]));
        assert.equal(assertProblem(form, 'form: invalid UTF-8').code, 'invalid_request');
        // Declared in another charset it is not decoded at all: JSON is UTF-8 (RFC 8259 §8.1; test/integration/json-utf8-only.test.ts).
        const utf16 = await rawRequest(server, 'POST', '/v1/login', { 'content-type': 'application/json; charset=utf-16le' }, Buffer.from('{"x":1}', 'utf16le'));
        assert.equal(assertProblem(utf16, 'utf-16').code, 'unsupported_media_type');
        // A lone surrogate is valid JSON but not Unicode: stored as UTF-8 it would come back as U+FFFD.
        const lone: [string, string, Record<string, string>, string][] = [
          ['/v1/login', '{"username":"\\ud800x","password":"whatever it is 1"}', {}, '/username'],
          ['/v1/login', '{"username":"sweep-user","password":"pass\\udc00word 1"}', {}, '/password'],
          ['/v1/admin/users', '{"username":"lone","password":"a long password 42","display_name":"\\ud83d"}', admin.headers, '/display_name'],
          ['/v1/admin/users', '{"username":"lone","password":"a long password 42","groups":["ok","\\udfff"]}', admin.headers, '/groups/1'],
        ];
        for (const [path, body, headers, pointer] of lone) {
          const res = await tg.http().post(path).set(headers).type('json').send(body);
          const problem = assertProblem(res, `${path} ${pointer}: lone surrogate`);
          assert.equal(problem.code, 'validation_failed');
          assert.deepEqual(pointersOf(problem), [pointer]);
        }
        const key = await tg.http().post('/v1/login').type('json').send('{"a\\ud800":1}');
        assert.deepEqual(pointersOf(assertProblem(key, 'lone surrogate in a field name')), ['/a\ufffd']);
        assert.deepEqual(await tableSnapshot(tg), before, 'nothing read-and-charged or written');
        assert.equal(await auditRows(tg), auditBefore, 'nothing audited');
      });
    });

    describe('operations endpoints', () => {
      it('/healthz answers 200', async () => {
        const res = await tg.http().get('/healthz');
        assert.equal(res.status, 200);
        assert.deepEqual(res.body, { status: 'ok' });
      });

      it('/readyz answers 200 with the database, 503 problem+json when it is unreachable', async () => {
        const ok = await tg.http().get('/readyz');
        assert.equal(ok.status, 200);
        assert.deepEqual(ok.body, { status: 'ready', database: dialect });
        const store = tg.gw.store as { ping: () => Promise<void> };
        const ping = store.ping;
        store.ping = async () => {
          throw new Error('connection refused');
        };
        try {
          const down = await tg.http().get('/readyz');
          assert.equal(down.status, 503);
          assert.equal(assertProblem5xx(down), 'service_unavailable');
        } finally {
          store.ping = ping;
        }
      });

      it('/readyz answers 503 once a WAL fdatasync of the SQLite file has failed (every write is refused until restart)', async () => {
        const stats = tg.gw.store.commitStats;
        if (dialect !== 'sqlite') {
          assert.equal(stats, undefined, 'PostgreSQL has no WAL sync of its own to fail');
          return;
        }
        assert.ok(stats !== undefined);
        assert.equal(stats.failedFlushes, 0);
        // What the driver records when an fdatasync fails (the refusal itself: sqlite-group-commit.test.ts).
        stats.failedFlushes = 1;
        try {
          const down = await tg.http().get('/readyz');
          assert.equal(down.status, 503);
          assert.equal(assertProblem5xx(down), 'service_unavailable');
          assert.match((await tg.http().get('/metrics')).text, /^stepgate_store_wal_sync_failures 1$/m);
        } finally {
          stats.failedFlushes = 0;
        }
        assert.equal((await tg.http().get('/readyz')).status, 200);
      });

      it('/metrics exposes the HTTP latency histogram by route template, and login outcomes', async () => {
        await tg.http().get('/healthz');
        await tg.http().get(`/no/such/${newId('x')}`);
        const res = await tg.http().get('/metrics');
        assert.equal(res.status, 200);
        assert.match(String(res.headers['content-type']), /^text\/plain/);
        assert.match(res.text, /# TYPE stepgate_http_request_duration_seconds histogram/);
        assert.match(res.text, /stepgate_http_request_duration_seconds_bucket\{[^}]*route="\/healthz"[^}]*\}/);
        assert.match(res.text, /# TYPE stepgate_login_total counter/);
        // Unmatched paths share one label: an attacker cannot blow up the series count.
        assert.doesNotMatch(res.text, /route="\/no\/such/);
        assert.match(res.text, /route="unmatched"/);
      });
    });
  });
}

/** 5xx is allowed only where the route declares it (readiness); still problem+json with a code. */
function assertProblem5xx(res: Response): string {
  assert.match(String(res.headers['content-type']), PROBLEM);
  const body = JSON.parse(res.text) as { code: string; status: number };
  assert.equal(body.status, res.status);
  return body.code;
}
