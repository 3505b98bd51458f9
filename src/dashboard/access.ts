import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import type { Context, MiddlewareHandler } from 'hono';
import { getCookie, setCookie } from 'hono/cookie';
import { ConfigError } from '../errors.js';

/** The environment variable that carries the token, so it stays out of `ps` and shell history. */
export const TOKEN_ENV = 'MAILQ_DASHBOARD_TOKEN';
/** The header the page sends its anti-CSRF token in; a cross-site form cannot set a header. */
export const CSRF_HEADER = 'x-mailq-csrf';
const TOKEN_COOKIE = 'mailq_dashboard';
const MIN_TOKEN_LENGTH = 16;

/** 127.0.0.0/8, ::1 and `localhost`: addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (bare === 'localhost') return true;
  if (isIP(bare) === 4) return bare.startsWith('127.');
  return bare === '::1' || bare === '::ffff:127.0.0.1';
}

/**
 * Any address beyond this machine needs a token, and one long enough not to be guessed. Throws a
 * ConfigError (exit code 2) that says how to give one.
 */
export function checkBinding(host: string, token: string | undefined, what = 'the dashboard'): void {
  if (token !== undefined && token.length < MIN_TOKEN_LENGTH) {
    throw new ConfigError(`the ${what} token must be at least ${MIN_TOKEN_LENGTH} characters (e.g. \`openssl rand -hex 24\`)`);
  }
  if (!token && !isLoopback(host)) {
    throw new ConfigError(`refusing to serve ${what} on ${host} without a token: anyone who reaches it could retry and delete jobs. Pass --token or set ${TOKEN_ENV}, or bind to 127.0.0.1`);
  }
}

/**
 * Every request carries the token: `Authorization: Bearer <token>` (Prometheus, scripts) or the
 * cookie set when a browser first opens `/?token=<token>` (then sent back to `/` so the token
 * leaves the address bar and the history). No token configured: everything passes (loopback only).
 */
export function requireToken(token: string | undefined): MiddlewareHandler {
  if (!token) return async (_context, next) => next();
  const expected = digest(token);
  const matches = (given: string | undefined) => given !== undefined && timingSafeEqual(digest(given), expected);
  return async (context, next) => {
    const fromQuery = context.req.query('token');
    if (fromQuery !== undefined && context.req.method === 'GET' && matches(fromQuery)) {
      setCookie(context, TOKEN_COOKIE, token, { httpOnly: true, sameSite: 'Strict', path: '/' });
      return context.redirect(context.req.path, 303);
    }
    const bearer = /^Bearer\s+(.+)$/i.exec(context.req.header('authorization') ?? '')?.[1];
    if (matches(bearer) || matches(getCookie(context, TOKEN_COOKIE))) return next();
    return refuse(context, 401, 'a token is needed: open /?token=… once, or send Authorization: Bearer …');
  };
}

/**
 * State-changing requests: POST only, with this process's anti-CSRF token in a header, and, when
 * the browser says where the request comes from, from this very origin.
 */
export function requireCsrf(csrfToken: string): MiddlewareHandler {
  const expected = digest(csrfToken);
  return async (context, next) => {
    if (context.req.method === 'GET' || context.req.method === 'HEAD') return next();
    if (context.req.method !== 'POST') return refuse(context, 405, 'only GET and POST');
    const origin = context.req.header('origin');
    const host = context.req.header('host');
    if (origin !== undefined && origin !== `http://${host}` && origin !== `https://${host}`) return refuse(context, 403, 'cross-site request refused');
    if (context.req.header('sec-fetch-site') === 'cross-site') return refuse(context, 403, 'cross-site request refused');
    const given = context.req.header(CSRF_HEADER);
    if (given === undefined || !timingSafeEqual(digest(given), expected)) return refuse(context, 403, 'missing or wrong anti-CSRF token: reload the page');
    return next();
  };
}

/**
 * On a loopback address, only loopback Host names: a web page whose name an attacker re-points
 * at 127.0.0.1 (DNS rebinding) would otherwise read the dashboard as its own origin.
 */
export function requireLoopbackHost(boundHost: string): MiddlewareHandler {
  if (!isLoopback(boundHost)) return async (_context, next) => next();
  return async (context, next) => {
    const host = context.req.header('host') ?? '';
    const name = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.split(':')[0]!;
    if (!isLoopback(name)) return refuse(context, 403, `unexpected Host header '${host}'`);
    return next();
  };
}

/** A fresh anti-CSRF token per process: the page gets it embedded; a cross-site page cannot read it. */
export function newCsrfToken(): string {
  return randomBytes(24).toString('base64url');
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

function refuse(context: Context, status: 401 | 403 | 405, error: string): Response {
  return context.json({ error }, status);
}
