import { hashToken, newSecretToken } from '../crypto/ids.ts';
import type { Gateway } from '../gateway.ts';
import type { Executor } from '../store/database.ts';
import { normaliseDevice } from './sessions.ts';
import { describeUserAgent } from './user-agent.ts';

/**
 * Sign-ins from a new browser (ASVS 5.0 V6.3.5: users are told of sign-ins from an unusual
 * client). A successful sign-in gives the browser a device cookie — a random 256-bit token,
 * kept in `known_devices` only as its SHA-256, per user. A sign-in whose cookie this user
 * has not signed in with before is audited as `login.new_device` (and so notified, when
 * `notifications.events` lists it, as it does by default) — unless it is the first sign-in
 * the gateway has seen for that user, which is nothing unusual. Nothing is decided on the
 * cookie: it skips no factor and opens nothing; a thief who copies it only avoids the
 * notification, as one who signs in from the victim's own browser would.
 */

export const NEW_DEVICE_EVENT = 'login.new_device';
/** Browsers remembered per user; the least recently used beyond this are forgotten. */
const MAX_DEVICES_PER_USER = 50;
/** A browser unseen this long is forgotten (maintenance); Chrome caps cookies at 400 days. */
export const DEVICE_MEMORY_SECONDS = 400 * 86_400;

const TOKEN = /^[A-Za-z0-9_-]{43}$/;

export interface SignInDevice {
  /** The device cookie the request carried, if any. */
  token?: string | undefined;
  userAgent: string | null;
  ip: string | null;
  requestId: string | null;
}

/**
 * Runs in the sign-in's transaction: recognises or remembers the browser, audits a new one.
 * Answers the device token the browser is to keep (the one it sent, or a new one).
 */
export async function recogniseDevice(gw: Gateway, tx: Executor, userId: string, device: SignInDevice, method: string): Promise<string> {
  const nowMs = gw.clock.now().getTime();
  const token = device.token !== undefined && TOKEN.test(device.token) ? device.token : newSecretToken();
  const hash = hashToken(token);
  const seen = await tx
    .updateTable('known_devices')
    .set({ last_seen_at: nowMs })
    .where('user_id', '=', userId)
    .where('device_hash', '=', hash)
    .returning('device_hash')
    .executeTakeFirst();
  if (seen !== undefined) return token;
  const others = await tx.selectFrom('known_devices').select('device_hash').where('user_id', '=', userId).limit(1).execute();
  // Bounded and without control characters, as a session keeps it.
  const { userAgent, ip } = normaliseDevice({ userAgent: device.userAgent, ip: device.ip });
  // Of two concurrent first sign-ins with one cookie, one inserts (and audits); the other finds it taken.
  const inserted = await tx
    .insertInto('known_devices')
    .values({ user_id: userId, device_hash: hash, user_agent: userAgent, first_seen_at: nowMs, last_seen_at: nowMs })
    .onConflict((oc) => oc.columns(['user_id', 'device_hash']).doNothing())
    .returning('device_hash')
    .executeTakeFirst();
  if (inserted !== undefined && others.length > 0) {
    await gw.audit.append(tx, {
      type: NEW_DEVICE_EVENT,
      actor: userId,
      subject: userId,
      ip,
      requestId: device.requestId,
      data: { method, device: describeUserAgent(userAgent) ?? null, user_agent: userAgent },
    });
    const keep = tx.selectFrom('known_devices').select('device_hash').where('user_id', '=', userId).orderBy('last_seen_at', 'desc').limit(MAX_DEVICES_PER_USER);
    await tx.deleteFrom('known_devices').where('user_id', '=', userId).where('device_hash', 'not in', keep).execute();
  }
  return token;
}

/** Forgets browsers nobody signed in from for DEVICE_MEMORY_SECONDS (maintenance). */
export async function forgetStaleDevices(gw: Gateway): Promise<void> {
  const cutoff = gw.clock.now().getTime() - DEVICE_MEMORY_SECONDS * 1000;
  await gw.store.db.deleteFrom('known_devices').where('last_seen_at', '<', cutoff).execute();
}
