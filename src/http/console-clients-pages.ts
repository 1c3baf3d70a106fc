import { type Request, type Response, Router } from 'express';
import { AppError } from '../errors/app-error.ts';
import { findDuplicateMember } from '../verifier/strict-json.ts';
import { type ClientAuthMethod, createClient, disableClient, getClient, listClients, rotateClientSecret, setClientJwks } from '../flows/clients.ts';
import { revokeSigningKey, rotateSigningKey } from '../flows/signing-keys.ts';
import type { Gateway } from '../gateway.ts';
import { requireRole } from './authorize.ts';
import { actorOf, CONSOLE_PATH, consoleForm, type FormError, formField, noticeOf, reasonOf, renderConsole } from './console-support.ts';
import type { Views } from './pages-router.ts';

/**
 * Console: relying-service clients and the step-up signing keys. Admin and auditor read;
 * only an administrator changes anything, with a reason that goes into the audit record.
 * A client secret (new client or rotation) is shown once, on the answer to that POST.
 */

const admin = requireRole('admin');
const readers = requireRole('admin', 'auditor');

function lines(text: string): string[] {
  return text
    .split(/[\r\n,]+/)
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

function jwksField(req: Request): unknown {
  const text = formField(req, 'jwks').trim();
  if (text === '') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch {
    throw new AppError('validation_failed', { invalidParams: [{ pointer: '/jwks', reason: 'console.invalid.jwksJson' }] });
  }
  // As for a JSON body (the API's PUT …/jwks): a member given twice is refused, not "the last one wins".
  const duplicate = findDuplicateMember(text);
  if (duplicate !== undefined) {
    throw new AppError('duplicate_member', { invalidParams: [{ pointer: `/jwks${duplicate}`, reason: 'console.invalid.duplicateMember' }] });
  }
  return value;
}

export function consoleClientsPages(gw: Gateway, views: Views): Router {
  const router = Router();
  const base = `${CONSOLE_PATH}/clients`;

  async function renderClients(req: Request, res: Response, status: number, extra: { formError?: FormError; secret?: { clientId: string; secret: string } } = {}) {
    const clients = await listClients(gw);
    renderConsole(views, req, res, status, 'console/clients', {
      titleKey: 'console.clients.title',
      clients,
      values: { name: formField(req, 'name'), actions: formField(req, 'actions'), redirectUris: formField(req, 'redirectUris'), authMethod: formField(req, 'authMethod') || 'client_secret_basic', jwks: formField(req, 'jwks') },
      notice: noticeOf(req, ['disabled', 'jwks']),
      ...extra,
    });
  }

  router.get(base, readers, async (req, res) => {
    await renderClients(req, res, 200);
  });

  const rerender = (req: Request, res: Response, formError: FormError) => renderClients(req, res, formError.status, { formError });

  router.post(base, admin, consoleForm('create', async (req, res) => {
    const authMethod = formField(req, 'authMethod') as ClientAuthMethod;
    const reason = reasonOf(req);
    const { client, clientSecret } = await createClient(
      gw,
      { name: formField(req, 'name').trim(), actions: lines(formField(req, 'actions')), redirectUris: lines(formField(req, 'redirectUris')), authMethod, jwks: authMethod === 'private_key_jwt' ? jwksField(req) : undefined },
      { ...actorOf(req, res), reason },
    );
    await renderClients(req, res, 201, clientSecret === undefined ? {} : { secret: { clientId: client.clientId, secret: clientSecret } });
  }, rerender));

  router.post(`${base}/:id/rotate-secret`, admin, consoleForm('rotate', async (req, res) => {
    const reason = reasonOf(req);
    const { client, clientSecret } = await rotateClientSecret(gw, String(req.params.id), { ...actorOf(req, res), reason });
    await renderClients(req, res, 200, { secret: { clientId: client.clientId, secret: clientSecret } });
  }, rerender));

  router.post(`${base}/:id/jwks`, admin, consoleForm('jwks', async (req, res) => {
    const reason = reasonOf(req);
    const jwks = jwksField(req);
    if (jwks === undefined) throw new AppError('validation_failed', { invalidParams: [{ pointer: '/jwks', reason: 'console.invalid.jwksMissing' }] });
    await getClient(gw, String(req.params.id));
    await setClientJwks(gw, String(req.params.id), jwks, { ...actorOf(req, res), reason });
    res.redirect(303, `${base}?notice=jwks`);
  }, rerender));

  router.post(`${base}/:id/disable`, admin, consoleForm('disable', async (req, res) => {
    const reason = reasonOf(req);
    await disableClient(gw, String(req.params.id), { ...actorOf(req, res), reason });
    res.redirect(303, `${base}?notice=disabled`);
  }, rerender));

  // ---- signing keys ----

  const keysPath = `${CONSOLE_PATH}/keys`;

  async function renderKeys(req: Request, res: Response, status: number, extra: { formError?: FormError } = {}) {
    const [keys, active] = await Promise.all([gw.keys.publishedKeys(), gw.keys.activeKey()]);
    renderConsole(views, req, res, status, 'console/keys', {
      titleKey: 'console.keys.title',
      keys,
      activeKid: active.kid,
      activationSeconds: gw.keys.activationDelaySeconds,
      notice: noticeOf(req, ['rotated', 'revoked']),
      ...extra,
    });
  }

  router.get(keysPath, readers, async (req, res) => {
    await renderKeys(req, res, 200);
  });

  router.post(`${keysPath}/rotate`, admin, consoleForm('rotateKey', async (req, res) => {
    const alg = formField(req, 'alg');
    if (alg !== 'ES256' && alg !== 'EdDSA') throw new AppError('validation_failed', { invalidParams: [{ pointer: '/alg', reason: 'console.invalid.alg' }] });
    await rotateSigningKey(gw, alg, { ...actorOf(req, res), reason: reasonOf(req) });
    res.redirect(303, `${keysPath}?notice=rotated`);
  }, (req, res, formError) => renderKeys(req, res, formError.status, { formError })));

  // A compromised key: out of the JWKS at once, never signing again (src/stepup/signing-keys.ts).
  router.post(`${keysPath}/revoke`, admin, consoleForm('revokeKey', async (req, res) => {
    const kid = formField(req, 'kid');
    const reason = reasonOf(req);
    const revoked = await revokeSigningKey(gw, kid, { ...actorOf(req, res), reason });
    if (revoked === undefined) throw new AppError('validation_failed', { invalidParams: [{ pointer: '/kid', reason: 'console.invalid.kid' }] });
    res.redirect(303, `${keysPath}?notice=revoked`);
  }, (req, res, formError) => renderKeys(req, res, formError.status, { formError })));

  return router;
}
