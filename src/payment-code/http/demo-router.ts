import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Eta } from 'eta';
import express, { type Request, type Response, Router } from 'express';
import type { ApiKeyCaller } from '../api-keys.ts';
import { AMOUNT_PATTERN, amountUnits } from '../decimal.ts';
import { canonicalAmount } from '../../verifier/index.ts';
import { isPaymentCodeError, type PaymentCodeError } from '../errors.ts';
import { ISSUE_ACTION, issueBindingMessage, issueCode, issueStepUpContext, renderCode } from '../issue-code.ts';
import { OFFLINE_SEED_ACTION, provisionSeed, seedBindingMessage, seedStepUpContext } from '../offline-seeds.ts';
import { redeem } from '../redeem.ts';
import type { PaymentCodeService } from '../service.ts';
import { redeemBody, SUBJECT_PATTERN } from './api-router.ts';
import { demoLanguage, type Translate, translator } from './demo-i18n.ts';
import { requestIdOf } from './problem.ts';

/**
 * The demo wallet (development mode only; the app does not even mount it in production).
 * It plays wallet front end and back end in one: the browser picks a demo user, the page asks
 * this service for a code exactly as a wallet back end would — without a step-up first, so
 * it gets the 401 with `user_url` — sends the browser to the gateway's step-up page, and on
 * the way back asks again with `stepup_id`.
 *
 * A demo flow is bound to the browser that started it: a random nonce in an HttpOnly cookie,
 * whose hash is the step-up's owner. A stolen return URL (it carries the stepup_id) does not
 * show someone else the code.
 */
const VIEWS_DIR = fileURLToPath(new URL('../views/', import.meta.url));
const PUBLIC_DIR = fileURLToPath(new URL('../public/', import.meta.url));
const FLOW_COOKIE = 'pc_demo_flow';
const CSRF_COOKIE = 'pc_demo_csrf';
const DEMO_CURRENCY = 'CNY';
const DEMO_DEVICE = 'demo-browser';
const DEMO_TILL: ApiKeyCaller = { id: 'demo-till', name: 'Demo till', role: 'acquirer' };

function field(req: Request, name: string): string {
  const v = (req.body as Record<string, unknown> | undefined)?.[name];
  return typeof v === 'string' ? v.trim() : '';
}

function ownerFor(nonce: string): string {
  return `demo:${createHash('sha256').update(nonce).digest('base64url').slice(0, 32)}`;
}

function sameSecret(a: string, b: string): boolean {
  const x = createHash('sha256').update(a).digest();
  const y = createHash('sha256').update(b).digest();
  return timingSafeEqual(x, y) && a !== '';
}

export function demoRouter(svc: PaymentCodeService): Router {
  const router = Router();
  const eta = new Eta({ views: VIEWS_DIR, autoEscape: true, cache: false });
  // `label=usr_…`: the page offers the labels; the user id stays on the server.
  const demoUsers = new Map(svc.config.demo.users.map((entry) => [entry.slice(0, entry.indexOf('=')), entry.slice(entry.indexOf('=') + 1)]));
  const users = [...demoUsers.keys()];
  const returnUrl = `${svc.config.http.publicUrl}/demo/return`;
  const cookieBase = { httpOnly: true, sameSite: 'lax' as const, secure: svc.config.http.publicUrl.startsWith('https://'), path: '/demo' };

  function csrfToken(req: Request, res: Response): string {
    const existing = (req.cookies as Record<string, unknown> | undefined)?.[CSRF_COOKIE];
    if (typeof existing === 'string' && /^[A-Za-z0-9_-]{43}$/.test(existing)) return existing;
    const token = randomBytes(32).toString('base64url');
    res.cookie(CSRF_COOKIE, token, { ...cookieBase, sameSite: 'strict' });
    return token;
  }

  /** The translator for this request's language (?lang=, the cookie, Accept-Language). */
  function tr(req: Request, res: Response): Translate {
    const cached = (res.locals as { t?: Translate }).t;
    if (cached !== undefined) return cached;
    const lang = demoLanguage(req, res, '/demo');
    const t = translator(lang);
    Object.assign(res.locals, { t, lang });
    return t;
  }

  function render(req: Request, res: Response, status: number, template: string, data: Record<string, unknown>): void {
    const t = tr(req, res);
    const html = eta.render(template, { ...data, t, lang: (res.locals as { lang?: string }).lang, csrf: csrfToken(req, res) });
    res.setHeader('Cache-Control', 'no-store');
    res.status(status).type('html').send(html);
  }

  function explain(err: PaymentCodeError): { code: string; message: string } {
    return { code: err.code, message: err.detail ?? err.title };
  }

  /** Form posts must carry the CSRF cookie's value (double submit; the cookie is SameSite=Strict). */
  function checkCsrf(req: Request, res: Response): boolean {
    const cookie = (req.cookies as Record<string, unknown> | undefined)?.[CSRF_COOKIE];
    if (typeof cookie === 'string' && sameSecret(cookie, field(req, '_csrf'))) return true;
    render(req, res, 403, 'demo-message', { heading: tr(req, res)('message.form_expired'), error: { code: 'csrf_failed', message: tr(req, res)('message.form_expired_detail') } });
    return false;
  }

  /** The posted user (as a gateway user id) and amount, or a rendered error. */
  function formInput(req: Request, res: Response): { subject: string; amountLimit: string } | undefined {
    const username = field(req, 'username');
    const amountLimit = field(req, 'amountLimit');
    const subject = users.length > 0 ? demoUsers.get(username) : SUBJECT_PATTERN.test(username) ? username : undefined;
    const badUser = subject === undefined;
    // A person types "120" or "99.5": the form writes it as the binding spells CNY ("120.00").
    // More decimals than CNY has are refused, not rounded.
    const canonical = AMOUNT_PATTERN.test(amountLimit) ? canonicalAmount(amountLimit, DEMO_CURRENCY) : undefined;
    const badAmount = canonical === undefined || (amountUnits(canonical) ?? 0n) <= 0n;
    if (badUser || badAmount) {
      render(req, res, 400, 'demo', { users, error: { code: 'validation_failed', message: tr(req, res)(badUser ? 'message.pick_user' : 'message.bad_amount') } });
      return undefined;
    }
    return { subject, amountLimit: canonical };
  }

  /** Starts a flow: a fresh nonce in the cookie, the step-up at the gateway, the browser sent there. */
  async function start(req: Request, res: Response, begin: (owner: string) => Promise<never>): Promise<void> {
    const nonce = randomBytes(32).toString('base64url');
    try {
      await begin(ownerFor(nonce));
    } catch (err) {
      if (!isPaymentCodeError(err)) throw err;
      const url = err.code === 'step_up_required' ? err.challenge?.body?.user_url : undefined;
      if (typeof url === 'string') {
        res.cookie(FLOW_COOKIE, nonce, { ...cookieBase, maxAge: 15 * 60 * 1000 });
        res.redirect(303, url);
        return;
      }
      render(req, res, err.status, 'demo', { users, error: explain(err) });
    }
  }

  router.use('/demo/assets', express.static(PUBLIC_DIR, { index: false, maxAge: '5m' }));

  router.get('/demo', (req, res) => {
    render(req, res, 200, 'demo', { users, error: undefined });
  });

  router.post('/demo/pay', async (req, res) => {
    if (!checkCsrf(req, res)) return;
    const input = formInput(req, res);
    if (input === undefined) return;
    const payee = field(req, 'payee');
    const request = { amountLimit: input.amountLimit, currency: DEMO_CURRENCY, deviceId: DEMO_DEVICE, ...(payee === '' ? {} : { payee: payee.slice(0, 64) }) };
    await start(req, res, (owner) =>
      svc.gate.begin({
        owner,
        action: ISSUE_ACTION,
        subject: input.subject,
        context: issueStepUpContext(request),
        bindingMessage: issueBindingMessage(request),
        redirectUri: returnUrl,
        requestId: requestIdOf(res),
        pointerMap: (p) => p,
      }),
    );
  });

  router.post('/demo/offline', async (req, res) => {
    if (!checkCsrf(req, res)) return;
    const input = formInput(req, res);
    if (input === undefined) return;
    const request = { deviceId: DEMO_DEVICE, amountLimit: input.amountLimit, currency: DEMO_CURRENCY };
    await start(req, res, (owner) =>
      svc.gate.begin({
        owner,
        action: OFFLINE_SEED_ACTION,
        subject: input.subject,
        context: seedStepUpContext(request, svc.seedDeps),
        bindingMessage: seedBindingMessage(request, svc.seedDeps),
        redirectUri: returnUrl,
        requestId: requestIdOf(res),
        pointerMap: (p) => p,
      }),
    );
  });

  router.get('/demo/return', async (req, res) => {
    const stepupId = typeof req.query.stepup_id === 'string' ? req.query.stepup_id : '';
    if (req.query.error === 'access_denied') {
      render(req, res, 200, 'demo-message', { heading: tr(req, res)('message.declined'), error: undefined });
      return;
    }
    const nonce = (req.cookies as Record<string, unknown> | undefined)?.[FLOW_COOKIE];
    const record = /^stp_[A-Za-z0-9_-]{10,64}$/.test(stepupId) ? await svc.store.db.selectFrom('pc_stepups').selectAll().where('id', '=', stepupId).executeTakeFirst() : undefined;
    if (typeof nonce !== 'string' || record === undefined || !sameSecret(record.owner, ownerFor(nonce))) {
      render(req, res, 401, 'demo-message', { heading: tr(req, res)('message.elsewhere'), error: { code: 'step_up_unknown', message: tr(req, res)('message.elsewhere_detail') } });
      return;
    }
    const context = JSON.parse(record.context) as Record<string, string | number | boolean>;
    try {
      if (record.action === ISSUE_ACTION) {
        const request = { amountLimit: String(context.amount), currency: String(context.currency), deviceId: String(context.deviceId), payee: typeof context.payee === 'string' ? context.payee : undefined };
        const code = await renderCode(await issueCode(svc.issueDeps, { owner: record.owner, subject: record.subject, stepupId, request, requestId: requestIdOf(res) }), svc.issueDeps.observe);
        render(req, res, 200, 'demo-code', {
          code: {
            digits: code.code,
            display: code.codeGrouped,
            amountLimit: code.amountLimit,
            currency: code.currency,
            payee: code.payee,
            expiresAt: code.expiresAt.toISOString(),
            barcode: code.barcodePng.toString('base64'),
            qr: code.qrPng.toString('base64'),
            signedQr: code.signedQrPng.toString('base64'),
          },
        });
        return;
      }
      const request = { deviceId: String(context.deviceId), amountLimit: String(context.amount), currency: String(context.currency), maxCodes: Number(context.maxCodes) };
      const seed = await provisionSeed(svc.seedDeps, { owner: record.owner, subject: record.subject, stepupId, request, requestId: requestIdOf(res) });
      render(req, res, 200, 'demo-seed', {
        seed: { deviceSeed: seed.deviceSeed, expiresAt: seed.expiresAt.toISOString(), maxCodes: seed.maxCodes, amountLimit: seed.amountLimit, currency: seed.currency },
      });
    } catch (err) {
      if (!isPaymentCodeError(err)) throw err;
      render(req, res, err.status, 'demo-message', { heading: tr(req, res)('message.no_code'), error: explain(err) });
    }
  });

  router.post('/demo/till', async (req, res) => {
    if (!checkCsrf(req, res)) return;
    const t = tr(req, res);
    const parsed = redeemBody.safeParse({ code: field(req, 'code'), amount: field(req, 'amount'), merchant: field(req, 'merchant') || 'Demo till' });
    if (!parsed.success) {
      render(req, res, 400, 'demo-message', { heading: tr(req, res)('message.till_refused'), error: { code: 'validation_failed', message: tr(req, res)('message.bad_amount') } });
      return;
    }
    try {
      const r = await redeem(svc.redeemDeps, DEMO_TILL, parsed.data, requestIdOf(res));
      render(req, res, 200, 'demo-message', {
        heading: t('message.paid'),
        lines: [
          [t('message.amount'), `${r.amount} ${r.currency}`],
          [t('message.merchant'), r.merchant],
          [t('message.payer'), r.subject],
          [t('message.redemption'), r.redemptionId],
        ],
      });
    } catch (err) {
      if (!isPaymentCodeError(err)) throw err;
      render(req, res, err.status, 'demo-message', { heading: t('message.till_refused'), error: explain(err) });
    }
  });

  return router;
}
