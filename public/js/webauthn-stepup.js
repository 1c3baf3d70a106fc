// Step-up page: "Use fingerprint". Options come from the gateway (a challenge bound to this
// step-up), the browser asks the authenticator (user verification required), and the
// answer goes back to the gateway, which checks everything.
import { browserFailure, browserSupportsWebAuthn, messenger, postJson, startAuthentication } from './webauthn-common.js';

const root = document.getElementById('webauthn-stepup');
if (root) {
  const button = document.getElementById('webauthn-use');
  const show = messenger(root, document.getElementById('webauthn-status'));
  const id = root.dataset.stepupId;
  const csrf = { _stepup_csrf: root.dataset.stepupCsrf };
  const sessionCsrf = root.dataset.sessionCsrf || undefined;
  const problemMessage = {
    factor_invalid: 'failed',
    factor_not_allowed: 'not-registered',
    factor_locked: 'locked',
    attempts_exhausted: 'exhausted',
    challenge_attempts_exhausted: 'exhausted',
    stepup_expired: 'expired',
    stepup_not_pending: 'expired',
    challenge_cooldown: 'wait',
    challenge_required: 'timeout',
  };
  const fromProblem = (data) => problemMessage[data && data.code] || 'failed';

  if (!browserSupportsWebAuthn()) {
    show('unsupported', true);
  } else {
    button.hidden = false;
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        show('waiting', false);
        const started = await postJson(`/stepup/${id}/webauthn/challenge`, csrf, sessionCsrf);
        if (!started.ok) {
          show(fromProblem(started.data), true);
          return;
        }
        const options = started.data.options;
        const t0 = Date.now();
        let credential;
        try {
          credential = await startAuthentication({ optionsJSON: options });
        } catch (err) {
          show(browserFailure(err, t0, options.timeout || 60000), true);
          return;
        }
        show('checking', false);
        const verified = await postJson(`/stepup/${id}/webauthn/verify`, { ...csrf, credential }, sessionCsrf);
        if (!verified.ok) {
          show(fromProblem(verified.data), true);
          return;
        }
        show('done', false);
        window.location.assign(verified.data.redirect);
      } catch {
        show('failed', true);
      } finally {
        button.disabled = false;
      }
    });
  }
}
