import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { acsPercentEncode, canonicalQueryString, sha256Hex, signAcs3 } from '../../src/sms/acs3-signature.ts';

/**
 * Aliyun's published worked example for the V3 signature ("V3版本请求体&签名机制",
 * help.aliyun.com/zh/sdk/product-overview/v3-request-structure-and-signature): fixed key,
 * date, nonce and query give a published canonical-request hash and signature.
 */
describe('ACS3-HMAC-SHA256 (Aliyun V3 signature)', () => {
  const example = {
    method: 'POST',
    canonicalUri: '/',
    query: { ImageId: 'win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd', RegionId: 'cn-shanghai' },
    headers: {
      host: 'ecs.cn-shanghai.aliyuncs.com',
      'x-acs-action': 'RunInstances',
      'x-acs-version': '2014-05-26',
      'x-acs-date': '2023-10-26T10:22:32Z',
      'x-acs-signature-nonce': '3156853299f313e23d1673dc12e1703d',
      'x-acs-content-sha256': sha256Hex(''),
    },
    body: '',
  };

  it('reproduces the published worked example byte for byte', () => {
    const signed = signAcs3(example, { accessKeyId: 'YourAccessKeyId', accessKeySecret: 'YourAccessKeySecret' });
    assert.equal(
      signed.canonicalRequest,
      'POST\n/\nImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai\n' +
        'host:ecs.cn-shanghai.aliyuncs.com\nx-acs-action:RunInstances\n' +
        'x-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n' +
        'x-acs-date:2023-10-26T10:22:32Z\nx-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\nx-acs-version:2014-05-26\n\n' +
        'host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n' +
        'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    );
    assert.equal(signed.stringToSign, 'ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259');
    assert.equal(signed.signature, '06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0');
    assert.equal(
      signed.authorization,
      'ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0',
    );
  });

  it('signs header names case-insensitively, ignores headers that are not signed, and any change breaks the signature', () => {
    const base = signAcs3(example, { accessKeyId: 'id', accessKeySecret: 'secret' });
    const upper = signAcs3({ ...example, headers: { ...Object.fromEntries(Object.entries(example.headers).map(([k, v]) => [k.toUpperCase(), v])), accept: 'application/json' } }, { accessKeyId: 'id', accessKeySecret: 'secret' });
    assert.equal(upper.signature, base.signature);
    assert.notEqual(signAcs3({ ...example, query: { ...example.query, RegionId: 'cn-beijing' } }, { accessKeyId: 'id', accessKeySecret: 'secret' }).signature, base.signature);
    assert.notEqual(signAcs3(example, { accessKeyId: 'id', accessKeySecret: 'secret2' }).signature, base.signature);
    // content-type, when sent, is signed too.
    assert.match(signAcs3({ ...example, headers: { ...example.headers, 'Content-Type': 'application/json' } }, { accessKeyId: 'id', accessKeySecret: 's' }).signedHeaders, /^content-type;host;/);
  });

  it('percent-encodes as RFC 3986: space %20, * %2A, ~ kept, UTF-8 bytes upper-case', () => {
    assert.equal(acsPercentEncode("a b*c~d!'()"), 'a%20b%2Ac~d%21%27%28%29');
    assert.equal(acsPercentEncode('向 shop 支付'), '%E5%90%91%20shop%20%E6%94%AF%E4%BB%98');
    assert.equal(acsPercentEncode('{"code":"1"}'), '%7B%22code%22%3A%221%22%7D');
    assert.equal(canonicalQueryString({ b: '2', a: '1', A: '0' }), 'A=0&a=1&b=2');
  });
});
