// Shared by the WebAuthn page scripts. @simplewebauthn/browser is served by the gateway
// itself (no CDN): the CSP allows scripts from 'self' only.
export {
  browserSupportsWebAuthn,
  browserSupportsWebAuthnAutofill,
  startAuthentication,
  startRegistration,
} from '/static/vendor/simplewebauthn/index.js';

/**
 * What went wrong in the browser, in the words the page shows. Browsers report both "the
 * user cancelled" and "the timeout ran out" as NotAllowedError; the elapsed time tells them
 * apart.
 */
export function browserFailure(err, startedAt, timeoutMs) {
  const name = (err && err.cause && err.cause.name) || (err && err.name) || '';
  if (name === 'NotAllowedError') return Date.now() - startedAt >= timeoutMs - 2000 ? 'timeout' : 'cancelled';
  if (name === 'AbortError') return 'cancelled';
  if (name === 'InvalidStateError') return 'exists';
  if (name === 'NotSupportedError' || name === 'SecurityError') return 'unsupported';
  return 'failed';
}

/** POST JSON; answers `{ ok, status, data }` (data: the JSON or problem+json body, or {}). */
export async function postJson(url, body, csrf) {
  const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
  if (csrf) headers['X-CSRF-Token'] = csrf;
  const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body), credentials: 'same-origin' });
  let data = {};
  try {
    data = await res.json();
  } catch {
    data = {};
  }
  return { ok: res.ok, status: res.status, data };
}

/** Shows one of the messages carried in the element's data-msg-* attributes. */
export function messenger(root, statusEl) {
  return (key, isError) => {
    const attr = `msg${key.charAt(0).toUpperCase()}${key.slice(1).replace(/-([a-z])/g, (_m, c) => c.toUpperCase())}`;
    statusEl.textContent = root.dataset[attr] || root.dataset.msgFailed || '';
    statusEl.className = isError ? 'error' : 'hint';
  };
}
