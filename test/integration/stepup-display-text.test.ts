import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { makeClient, makeUser, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

// The payee and every other text bound into a step-up: nothing invisible or reordering, NFC
// required, and a payee mixing Latin with Cyrillic or Greek flagged on the step-up page.
const ACTION = 'payment_code.issue';
const CONTEXT = { amount: '88.00', currency: 'CNY', deviceId: 'dev-1' };

for (const dialect of testDialects()) {
  describe(`display text in a step-up (${dialect})`, () => {
    let tg: TestGateway;
    let pay: Awaited<ReturnType<typeof makeClient>>;

    before(async () => {
      tg = await createTestGateway({ dialect });
      await setPolicies(tg.gw, [{ id: 'pwd', action: ACTION, priority: 1, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' }]);
      await makeUser(tg.gw, 'carol');
      pay = await makeClient(tg.gw, 'pay', [ACTION]);
    });
    after(async () => {
      await tg.close();
    });

    const create = (context: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
      tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'carol', action: ACTION, context: { ...CONTEXT, ...context }, ...extra });
    const count = async () => Number((await tg.gw.store.db.selectFrom('stepups').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);

    it('refuses invisible and bidirectional characters and non-NFC text in the payee, any context text and the binding message: 400, the pointer, nothing written', async () => {
      const before = await count();
      const bad = ['\u200b', '\u200c', '\u200d', '\u200e', '\u200f', '\u202a', '\u202e', '\u2066', '\u2069', '\ufeff', '\u00ad', '\u2060', '\u{e0041}', '\u0007'];
      for (const ch of bad) {
        for (const [body, pointer] of [
          [{ context: { payee: `shop${ch}42` } }, '/context/payee'],
          [{ context: { memo: `gift${ch}` } }, '/context/memo'],
          [{ context: {}, binding_message: `Pay 88.00 CNY to shop${ch}42` }, '/binding_message'],
        ] as const) {
          const res = await create(body.context, 'binding_message' in body ? { binding_message: body.binding_message } : {});
          assert.equal(res.status, 400, `${JSON.stringify(ch)} at ${pointer}: ${res.text}`);
          assert.match(res.headers['content-type'] ?? '', /^application\/problem\+json/);
          assert.equal(res.body.code, 'validation_failed');
          assert.deepEqual(res.body.invalid_params.map((p: { pointer: string }) => p.pointer), [pointer], res.text);
        }
      }
      // Two payees that look the same are one binding: the decomposed spelling is refused.
      for (const nfd of ['Cafe\u0301 42', '\u1100\u1161\u11a8 Mart', '\u212bngstr\u00f6m AB']) {
        const res = await create({ payee: nfd });
        assert.equal(res.status, 400, res.text);
        assert.deepEqual(res.body.invalid_params.map((p: { pointer: string; reason: string }) => p.pointer), ['/context/payee']);
        assert.match(res.body.invalid_params[0].reason, /NFC/);
      }
      assert.equal(await count(), before);
      const ok = await create({ payee: 'Caf\u00e9 42' }, { binding_message: 'Pay 88.00 CNY to Caf\u00e9 42' });
      assert.equal(ok.status, 201, ok.text);
    });

    async function page(context: Record<string, unknown>, lang = 'en', bindingMessage = 'Pay 88.00 CNY') {
      const created = await create(context, { binding_message: bindingMessage });
      assert.equal(created.status, 201, created.text);
      const url = new URL(created.body.user_url as string);
      const browser = tg.agent();
      const first = await browser.get(url.pathname + url.search).set('Accept-Language', lang);
      assert.equal(first.status, 303);
      const shown = await browser.get(first.headers.location!).set('Accept-Language', lang);
      assert.equal(shown.status, 200);
      return shown.text;
    }

    it('the step-up page flags a payee mixing Latin and Cyrillic, marking the Cyrillic letter; zh-CN too', async () => {
      const html = await page({ payee: 'p\u0430ypal <b>' });
      assert.match(html, /<dd class="payee mixed-scripts">p<mark class="script-mix" title="Cyrillic">\u0430<\/mark>ypal &lt;b&gt;<\/dd>/);
      assert.match(html, /class="warning script-warning" role="alert">Check the payee carefully: its name mixes Latin and Cyrillic letters/);
      assert.ok(!html.includes('<b>'), 'still escaped');
      const zh = await page({ payee: '\u0391pple Store' }, 'zh-CN');
      assert.match(zh, /<mark class="script-mix" title="希腊">\u0391<\/mark>pple Store/);
      assert.match(zh, /请仔细核对收款方：名称混用了拉丁和希腊字母/);
    });

    it('a Chinese payee with Latin letters, or one script alone, is shown plainly', async () => {
      for (const payee of ['星巴克 Starbucks 42号店', 'Caf\u00e9 M\u00fcller', '\u0421\u0431\u0435\u0440\u0431\u0430\u043d\u043a']) {
        const html = await page({ payee }, 'zh-CN', `向 ${payee} 支付 88.00 CNY`);
        assert.ok(html.includes(`<dd class="payee">${payee}</dd>`), `${payee}: ${html.slice(html.indexOf("<dl>"), html.indexOf("</dl>"))}`);
        assert.ok(!html.includes('script-mix') && !html.includes('script-warning'), payee);
      }
    });

    it('a binding message mixing scripts is marked too', async () => {
      const html = await page({ payee: 'shop-42' }, 'en', 'Pay 88.00 CNY to p\u0430ypal');
      assert.match(html, /<p class="binding">Pay 88.00 CNY to p<mark class="script-mix" title="Cyrillic">\u0430<\/mark>ypal<\/p>/);
      assert.match(html, /Check this request carefully: it mixes Latin and Cyrillic letters/);
    });
  });
}
