import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createApp } from '../../src/app.ts';
import type { RouteSpec } from '../../src/http/api-registry.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';

/**
 * /openapi.json is generated from the same registry (and zod schemas) that route and
 * validate requests, so it cannot drift. These checks hold for every route, including
 * the ones added after this file was written.
 */

interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  additionalProperties?: boolean | Schema;
  items?: Schema | Schema[];
  prefixItems?: Schema[];
  anyOf?: Schema[];
  oneOf?: Schema[];
  allOf?: Schema[];
  $ref?: string;
  [key: string]: unknown;
}

interface Operation {
  operationId?: string;
  summary?: string;
  tags?: string[];
  parameters?: { name: string; in: string; required?: boolean; schema?: unknown }[];
  requestBody?: { required?: boolean; content?: Record<string, { schema?: Schema }> };
  responses?: Record<string, { description?: string; content?: Record<string, { schema?: Schema }> }>;
  security?: Record<string, unknown[]>[];
}

interface OpenApiDocument {
  openapi: string;
  info: { title: string; version: string };
  servers?: { url: string }[];
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Schema>; securitySchemes?: Record<string, unknown> };
}

function openApiPath(path: string): string {
  return path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

/** Every object schema inside `schema` (nested properties, array items, alternatives). */
function objectSchemas(schema: Schema, pointer = ''): { pointer: string; schema: Schema }[] {
  const out: { pointer: string; schema: Schema }[] = [];
  const types = Array.isArray(schema.type) ? schema.type : [schema.type];
  if (types.includes('object') || schema.properties !== undefined) out.push({ pointer, schema });
  for (const [name, sub] of Object.entries(schema.properties ?? {})) out.push(...objectSchemas(sub, `${pointer}/${name}`));
  const items = Array.isArray(schema.items) ? schema.items : schema.items === undefined ? [] : [schema.items];
  for (const sub of [...items, ...(schema.prefixItems ?? [])]) out.push(...objectSchemas(sub, `${pointer}/*`));
  for (const sub of [...(schema.anyOf ?? []), ...(schema.oneOf ?? []), ...(schema.allOf ?? [])]) out.push(...objectSchemas(sub, pointer));
  if (typeof schema.additionalProperties === 'object') out.push(...objectSchemas(schema.additionalProperties, `${pointer}/*`));
  return out;
}

function refsIn(value: unknown, out: string[] = []): string[] {
  if (Array.isArray(value)) for (const v of value) refsIn(v, out);
  else if (typeof value === 'object' && value !== null) {
    for (const [k, v] of Object.entries(value)) {
      if (k === '$ref' && typeof v === 'string') out.push(v);
      else refsIn(v, out);
    }
  }
  return out;
}

describe('OpenAPI document', () => {
  let tg: TestGateway;
  let routes: RouteSpec[];
  let doc: OpenApiDocument;

  before(async () => {
    tg = await createTestGateway();
    routes = createApp(tg.gw).api.routes;
    const res = await tg.http().get('/openapi.json');
    assert.equal(res.status, 200);
    assert.match(String(res.headers['content-type']), /^application\/json/);
    doc = res.body as OpenApiDocument;
  });
  after(async () => {
    await tg.close();
  });

  it('is OpenAPI 3.1 with info, the public URL as server, and the Problem schema', () => {
    assert.match(doc.openapi, /^3\.1\.\d+$/);
    assert.equal(doc.info.title, 'Stepgate');
    assert.match(doc.info.version, /^\d+\.\d+\.\d+/);
    assert.deepEqual(doc.servers, [{ url: tg.config.http.publicUrl }]);
    const problem = doc.components.schemas.Problem;
    assert.ok(problem);
    assert.deepEqual([...(problem.required as string[])].sort(), ['code', 'status', 'title', 'type']);
  });

  it('lists every registered route with its method, and nothing else', () => {
    assert.ok(routes.length > 0);
    for (const r of routes) {
      const op = doc.paths[openApiPath(r.path)]?.[r.method];
      assert.ok(op, `${r.method.toUpperCase()} ${r.path} is missing from /openapi.json`);
      assert.equal(op.summary, r.summary);
      assert.deepEqual(op.tags, [r.tag]);
    }
    const documented = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m} ${p}`));
    assert.deepEqual(documented.sort(), routes.map((r) => `${r.method} ${openApiPath(r.path)}`).sort());
  });

  it('operation ids are unique and path parameters are declared', () => {
    const ids = new Set<string>();
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        assert.ok(op.operationId, `${method} ${path} has an operationId`);
        assert.ok(!ids.has(op.operationId), `duplicate operationId ${op.operationId}`);
        ids.add(op.operationId);
        const declared = (op.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name).sort();
        const inPath = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]).sort();
        assert.deepEqual(declared, inPath, `${method} ${path}: path parameters`);
        assert.ok(Object.keys(op.responses ?? {}).length > 0, `${method} ${path} documents its responses`);
      }
    }
  });

  it('request bodies are JSON schemas that reject unknown fields (additionalProperties: false), at every depth', () => {
    const withBody = routes.filter((r) => r.body !== undefined);
    assert.ok(withBody.length > 0, 'no route with a body is registered');
    for (const r of withBody) {
      const label = `${r.method.toUpperCase()} ${r.path}`;
      const op = doc.paths[openApiPath(r.path)]?.[r.method];
      assert.equal(op?.requestBody?.required, true, `${label}: body required`);
      const schema = op?.requestBody?.content?.['application/json']?.schema;
      assert.ok(schema, `${label}: application/json schema`);
      // An object, or a (discriminated) union whose alternatives are all objects.
      const alternatives = [...(schema.oneOf ?? []), ...(schema.anyOf ?? [])];
      if (schema.type !== 'object') {
        assert.ok(alternatives.length > 0, `${label}: the body is an object`);
        for (const alt of alternatives) assert.equal(alt.type, 'object', `${label}: every alternative of the body is an object`);
      }
      for (const { pointer, schema: obj } of objectSchemas(schema)) {
        // A free-form map (additionalProperties: {schema}) is allowed where a route means it;
        // an object that silently accepts any field is not.
        assert.notEqual(obj.additionalProperties, undefined, `${label}: object at '${pointer}' must set additionalProperties (use z.strictObject)`);
        assert.notEqual(obj.additionalProperties, true, `${label}: object at '${pointer}' accepts unknown fields`);
      }
      assert.ok(op?.responses?.['400'], `${label}: documents the 400 for bad bodies`);
    }
  });

  it('error responses are problem+json and every $ref resolves', () => {
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        for (const [status, resp] of Object.entries(op.responses ?? {})) {
          if (Number(status) < 400) continue;
          assert.ok(resp.content?.['application/problem+json'], `${method} ${path} ${status} is problem+json`);
        }
      }
    }
    for (const ref of refsIn(doc.paths)) {
      assert.match(ref, /^#\/components\/schemas\/[A-Za-z0-9_.-]+$/);
      assert.ok(doc.components.schemas[ref.split('/').pop() as string], `${ref} resolves`);
    }
  });

  it('security requirements name declared schemes', () => {
    const schemes = Object.keys(doc.components.securitySchemes ?? {});
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        for (const requirement of op.security ?? []) {
          for (const name of Object.keys(requirement)) assert.ok(schemes.includes(name), `${method} ${path}: unknown security scheme ${name}`);
        }
      }
    }
  });
});
