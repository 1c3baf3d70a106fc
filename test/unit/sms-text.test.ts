import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { approvalSummary, enrolmentSummary, renderSmsText, sanitiseForSms } from '../../src/sms/sms-text.ts';

const PAYMENT = { action: 'payment_code.issue', context: { amount: '120.00', currency: 'CNY', payee: 'shop-42' }, bindingMessage: 'Pay 120.00 CNY to shop-42' };

describe('SMS texts', () => {
  it('say what is approved — amount and payee — in the user language, with the code and its validity', () => {
    const en = renderSmsText({ brand: 'Stepgate', locale: 'en', purpose: 'stepup', code: '042917', summary: approvalSummary('en', PAYMENT), minutes: 5 });
    assert.equal(en, 'Stepgate: code 042917 approves a payment of 120.00 CNY to shop-42. Valid for 5 min. Never share it; we will never ask for it.');
    const zh = renderSmsText({ brand: 'Stepgate', locale: 'zh-CN', purpose: 'stepup', code: '042917', summary: approvalSummary('zh-CN', PAYMENT), minutes: 5 });
    assert.equal(zh, '【Stepgate】验证码 042917，用于确认向 shop-42 支付 120.00 CNY，5分钟内有效。请勿告诉任何人，我们不会向您索取。');
  });

  it('never sends the code alone: without an amount the binding message, else the action, is shown', () => {
    assert.equal(approvalSummary('en', { action: 'x.y', context: {}, bindingMessage: 'Link device “Pixel 8”' }), 'Link device “Pixel 8”');
    assert.equal(approvalSummary('zh-CN', { action: 'payment_code.offline_seed', context: { deviceId: 'd1' }, bindingMessage: null }), '开通离线付款码');
    assert.equal(approvalSummary('en', { action: 'payment_code.offline_seed', context: {}, bindingMessage: null }), 'enabling offline payment codes');
    assert.equal(approvalSummary('en', { action: 'custom.thing', context: {}, bindingMessage: '   ' }), 'custom.thing');
    assert.equal(approvalSummary('en', { action: 'a', context: { amount: '9.90' }, bindingMessage: null }), 'a payment of 9.90');
    // A non-decimal "amount" is not presented as money.
    assert.equal(approvalSummary('en', { action: 'a', context: { amount: 'lots', payee: 'p' }, bindingMessage: 'bm' }), 'bm');
    for (const locale of ['en', 'zh-CN'] as const) {
      for (const purpose of ['stepup', 'enrolment'] as const) {
        const text = renderSmsText({ brand: 'B', locale, purpose, code: '123456', summary: purpose === 'stepup' ? approvalSummary(locale, PAYMENT) : enrolmentSummary(locale), minutes: 5 });
        assert.notEqual(text.replace(/\D/g, ''), '123456');
        assert.ok(text.length > 30 && text.includes('123456'));
      }
    }
  });

  it('strips control and bidi-override characters from relying-service text and bounds its length', () => {
    const summary = approvalSummary('en', { action: 'a', context: { amount: '1.00', currency: 'CNY', payee: 'evil\u202Eshop\nline2\u0000' }, bindingMessage: null });
    assert.equal(summary, 'a payment of 1.00 CNY to evil shop line2');
    assert.equal(sanitiseForSms('x'.repeat(100), 10), `${'x'.repeat(9)}…`);
    assert.equal([...sanitiseForSms('支'.repeat(100), 10)].length, 10);
    const long = approvalSummary('zh-CN', { action: 'a', context: { amount: '1.00', currency: 'CNY', payee: '很长的收款方名称'.repeat(10) }, bindingMessage: null });
    assert.ok([...long].length < 50, long);
  });
});
