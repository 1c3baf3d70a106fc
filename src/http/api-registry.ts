import type { NextFunction, Request, RequestHandler, Response, Router } from 'express';
import { z } from 'zod';
import { AppError } from '../errors/app-error.ts';
import { parseInput } from './validate.ts';

/**
 * Every JSON route is declared once, with the zod schemas that validate it; the same
 * declarations generate /openapi.json, so the document cannot drift from the code.
 */
export type HttpMethod = 'get' | 'post' | 'put' | 'patch' | 'delete';
export type SecurityScheme = 'session' | 'clientBasic' | 'ticket' | 'none';

export interface ResponseSpec {
  description: string;
  schema?: z.ZodType;
}

export interface RouteSpec<B extends z.ZodType | undefined = z.ZodType | undefined, Q extends z.ZodType | undefined = z.ZodType | undefined> {
  method: HttpMethod;
  /** Express path, e.g. `/v1/admin/users/:id`. */
  path: string;
  summary: string;
  tag: string;
  security?: SecurityScheme[];
  body?: B;
  /**
   * A non-JSON body (a file upload), documented only: the route's own middleware parses it
   * (after authorisation, with its own size limit) and the handler reads `req.body`.
   */
  rawBody?: { contentTypes: string[]; description: string };
  query?: Q;
  responses: Record<number, ResponseSpec>;
}

type Out<S> = S extends z.ZodType ? z.output<S> : undefined;

export interface Parsed<B, Q> {
  body: Out<B>;
  query: Out<Q>;
}

export type ApiHandler<B, Q> = (req: Request, res: Response, input: Parsed<B, Q>) => Promise<void> | void;

export class ApiRegistry {
  readonly routes: RouteSpec[] = [];

  /**
   * Registers `handler` on `router` for the route, after the listed middleware (auth), with
   * body and query validated. Bodies must be JSON (415 otherwise).
   */
  route<B extends z.ZodType | undefined, Q extends z.ZodType | undefined>(
    router: Router,
    spec: RouteSpec<B, Q>,
    middleware: RequestHandler[],
    handler: ApiHandler<B, Q>,
  ): void {
    this.routes.push(spec as RouteSpec);
    const run = async (req: Request, res: Response, _next: NextFunction): Promise<void> => {
      let body: unknown;
      if (spec.body !== undefined) {
        const length = req.headers['content-length'];
        const hasBody = (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined;
        if (hasBody && !req.is('application/json')) {
          throw new AppError('unsupported_media_type', { detail: 'Send the body as application/json.' });
        }
        // No body at all is validated as `undefined`: optional bodies accept it, others say what is missing.
        body = parseInput(spec.body, hasBody ? req.body : undefined, 'body');
      }
      const query = spec.query === undefined ? undefined : parseInput(spec.query, { ...req.query }, 'query');
      await handler(req, res, { body, query } as Parsed<B, Q>);
    };
    router[spec.method](spec.path, ...middleware, run);
  }
}

function toOpenApiPath(path: string): string {
  return path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): unknown {
  return z.toJSONSchema(schema, { target: 'draft-2020-12', io, unrepresentable: 'any' });
}

const problemSchema = {
  type: 'object',
  required: ['type', 'title', 'status', 'code'],
  properties: {
    type: { type: 'string' },
    title: { type: 'string' },
    status: { type: 'integer' },
    code: { type: 'string', description: 'Stable machine-readable error code.' },
    detail: { type: 'string' },
    request_id: { type: 'string' },
    invalid_params: {
      type: 'array',
      items: {
        type: 'object',
        properties: { pointer: { type: 'string', description: 'JSON pointer to the field at fault' }, reason: { type: 'string' } },
      },
    },
  },
};

/** The security schemes; the session cookie's name is the one this mode sets (`__Host-` in production). */
function securitySchemes(sessionCookie: string): Record<Exclude<SecurityScheme, 'none'>, unknown> {
  return {
    session: { type: 'apiKey', in: 'cookie', name: sessionCookie, description: 'Session cookie from POST /v1/login. State-changing requests also need the X-CSRF-Token header.' },
    clientBasic: { type: 'http', scheme: 'basic', description: 'Relying-service client_secret_basic.' },
    ticket: { type: 'http', scheme: 'Ticket', description: 'One-time step-up ticket.' },
  };
}

/** What every JSON request body must be (RFC 8259 §8.1); see http/input-guard.ts. */
const UTF8_BODY = 'UTF-8 JSON without a byte order mark (RFC 8259 §8.1). A declared charset other than utf-8, a byte order mark (UTF-8\'s included) or a body in UTF-16, UTF-32 or UTF-7 is refused with 415 unsupported_media_type.';

export function buildOpenApi(registry: ApiRegistry, info: { version: string; serverUrl: string; sessionCookie: string }): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of registry.routes) {
    const p = toOpenApiPath(r.path);
    const op: Record<string, unknown> = {
      summary: r.summary,
      tags: [r.tag],
      operationId: `${r.method}${p.replace(/[{}]/g, '').replace(/[^A-Za-z0-9]+(.)/g, (_m, c: string) => c.toUpperCase())}`,
    };
    const params = [...r.path.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    if (r.query !== undefined) {
      const qs = jsonSchema(r.query, 'input') as { properties?: Record<string, unknown>; required?: string[] };
      for (const [name, schema] of Object.entries(qs.properties ?? {})) {
        params.push({ name, in: 'query', required: (qs.required ?? []).includes(name), schema: schema as { type: string } });
      }
    }
    if (params.length > 0) op.parameters = params;
    if (r.body !== undefined) {
      op.requestBody = { required: true, description: UTF8_BODY, content: { 'application/json': { schema: jsonSchema(r.body, 'input') } } };
    } else if (r.rawBody !== undefined) {
      const raw = r.rawBody;
      op.requestBody = { required: true, description: raw.description, content: Object.fromEntries(raw.contentTypes.map((t) => [t, { schema: { type: 'string', format: 'binary' } }])) };
    }
    const responses: Record<string, unknown> = {};
    for (const [status, resp] of Object.entries(r.responses)) {
      const content = Number(status) >= 400
        ? { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } }
        : resp.schema === undefined
          ? undefined
          : { 'application/json': { schema: jsonSchema(resp.schema, 'output') } };
      responses[status] = content === undefined ? { description: resp.description } : { description: resp.description, content };
    }
    if (r.body !== undefined && responses['400'] === undefined) {
      responses['400'] = { description: 'Malformed JSON (invalid_json), a member name given twice (duplicate_member), wrong types or unknown fields (validation_failed); invalid_params points at them.', content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } };
    }
    if (r.body !== undefined && responses['415'] === undefined) {
      responses['415'] = {
        description: 'unsupported_media_type: the body is not application/json, or not UTF-8 (a charset other than utf-8, a byte order mark — UTF-8\'s included — or UTF-16/32/7 bytes).',
        content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } },
      };
    }
    op.responses = responses;
    if (r.security !== undefined) op.security = r.security.filter((s) => s !== 'none').map((s) => ({ [s]: [] }));
    paths[p] ??= {};
    (paths[p] as Record<string, unknown>)[r.method] = op;
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Stepgate', version: info.version, description: 'Multi-factor step-up gateway for payment systems. Request bodies are UTF-8 (RFC 8259 §8.1): JSON and form bodies in another charset or starting with a byte order mark are refused with 415 unsupported_media_type.' },
    servers: [{ url: info.serverUrl }],
    paths,
    components: { schemas: { Problem: problemSchema }, securitySchemes: securitySchemes(info.sessionCookie) },
  };
}
