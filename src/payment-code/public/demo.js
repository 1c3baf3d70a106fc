// The demo wallet's only script: a countdown for online codes, and the offline code
// generator (the same algorithm as `stepgate payment-code generate`, docs/payment-codes.md):
// code = prefix ‖ "2" ‖ slot ‖ TOTP-SHA256(seed, now, 8 digits, period).

// Texts come translated from the page (data-t-* attributes, the service's catalogues).
function label(el, attribute, fallback, params) {
  const text = el.getAttribute(attribute) ?? fallback;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

function countdown() {
  for (const el of document.querySelectorAll('[data-expires-at]')) {
    const expiresAt = Date.parse(el.getAttribute('data-expires-at'));
    const tick = () => {
      const left = Math.max(0, Math.round((expiresAt - Date.now()) / 1000));
      el.textContent = left > 0 ? label(el, 'data-t-valid', 'Valid for {s} s', { s: left }) : label(el, 'data-t-expired', 'Expired: ask for a new code', {});
      el.classList.toggle('expired', left === 0);
      if (left > 0) setTimeout(tick, 1000);
    };
    tick();
  }
}

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32Decode(text) {
  const out = [];
  let bits = 0;
  let value = 0;
  for (const ch of text.toUpperCase()) {
    const v = ALPHABET.indexOf(ch);
    if (v < 0) throw new Error('bad base32');
    value = ((value << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return new Uint8Array(out);
}

function parseSeed(text) {
  const [version, prefix, slot, period, secret] = text.split(':');
  if (version !== 'pcs1') throw new Error('not a pcs1 seed');
  return { prefix, slot, period: Number(period), key: base32Decode(secret) };
}

async function otp(key, step) {
  const cryptoKey = await crypto.subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const counter = new DataView(new ArrayBuffer(8));
  counter.setUint32(0, Math.floor(step / 2 ** 32));
  counter.setUint32(4, step >>> 0);
  const mac = new Uint8Array(await crypto.subtle.sign('HMAC', cryptoKey, counter.buffer));
  const offset = mac[mac.length - 1] & 0x0f;
  const binary = ((mac[offset] & 0x7f) << 24) | (mac[offset + 1] << 16) | (mac[offset + 2] << 8) | mac[offset + 3];
  return String(binary % 1e8).padStart(8, '0');
}

async function offlineGenerator() {
  const box = document.querySelector('[data-device-seed]');
  if (box === null) return;
  const seedText = box.getAttribute('data-device-seed');
  // The page showed the seed once; the device keeps it (a real wallet: secure storage).
  localStorage.setItem('stepgate-demo-device-seed', seedText);
  const seed = parseSeed(seedText);
  const codeEl = box.querySelector('[data-offline-code]');
  const leftEl = box.querySelector('[data-offline-countdown]');
  const tick = async () => {
    const now = Date.now() / 1000;
    const step = Math.floor(now / seed.period);
    const code = `${seed.prefix}2${seed.slot}${await otp(seed.key, step)}`;
    codeEl.textContent = code.replace(/^(\d{2})(\d{4})(\d{4})(\d{4})(\d{4})$/, '$1 $2 $3 $4 $5');
    leftEl.textContent = label(box, 'data-t-next', 'Next code in {s} s', { s: Math.ceil((step + 1) * seed.period - now) });
    setTimeout(tick, 1000);
  };
  await tick();
}

document.addEventListener('DOMContentLoaded', () => {
  countdown();
  offlineGenerator().catch((err) => {
    const box = document.querySelector('[data-offline-code]');
    const holder = document.querySelector('[data-device-seed]');
    if (box !== null) box.textContent = label(holder ?? box, 'data-t-cannot', 'Cannot make codes here: {message}', { message: err.message });
  });
});
