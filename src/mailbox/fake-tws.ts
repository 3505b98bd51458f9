// A real HTTP server that stands in for TWS in tests, the demo and `mailq fake-tws`.
//
// API (the wire format of ./tws.ts):
//   GET /taxpayers/:taxpayerId/mailbox?page=<n ≥ 1, default 1>&since=<ISO 8601, optional>
//     Authorization: Bearer <token>            (checked only when the fake has a token)
//     200 { taxpayerId, page, pageSize, totalPages (≥ 1), messages: [{ id, subject, sender,
//           category, receivedAt, read, body, attachments: [{ name, size, mimeType }] }] }
//         Messages are a pure function of (seed, taxpayerId), oldest first, ids "<taxpayerId>-<n>";
//         `since` keeps receivedAt ≥ since; a page past totalPages is empty.
//     400 { error }  bad page or since
//     401 { error }  missing or wrong token
//     403/404 { error }  a broken taxpayer, every time
//     429 { error }  over the rate limit (global, sliding window); Retry-After: <seconds>
//     500/502/503 { error }  transient, drawn per (taxpayer, page, attempt number), so retries recover
//     200 with a body that breaks the schema, for a malformed taxpayer
//   GET /_stats → FakeTwsStats as JSON (no token, no latency)
//
// Checks run in that order: token, rate limit, query, broken, transient, malformed. Every mailbox
// request lands in exactly one counter, so the counters add up to `requests`. Latency is added to
// every mailbox response, concurrently for concurrent requests.

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import { SlidingWindowLimiter } from './sliding-window.js';
import type { TwsMailboxPageWire, TwsMessageWire } from './tws.js';

const FakeTwsOptionsSchema = z.object({
  port: z.number().int().min(0).max(65_535).default(0),
  host: z.string().min(1).default('127.0.0.1'),
  latencyMs: z.number().nonnegative().default(0),
  errorRate: z.number().min(0).max(1).default(0),
  rateLimit: z.object({ limit: z.number().int().positive(), perMs: z.number().positive() }).optional(),
  brokenTaxpayers: z.union([z.array(z.string()), z.number().int().positive()]).optional(),
  malformedTaxpayers: z.array(z.string()).default([]),
  token: z.string().min(1).optional(),
  messagesPerTaxpayer: z.custom<(taxpayerId: string) => number>((value) => typeof value === 'function').optional(),
  pageSize: z.number().int().positive().default(50),
  seed: z.number().int().default(1),
});

export type FakeTwsOptions = z.input<typeof FakeTwsOptionsSchema>;

export interface FakeTwsCounts {
  requests: number;
  ok: number;
  rateLimited: number;
  serverErrors: number;
  unauthorized: number;
  notFound: number;
  forbidden: number;
  malformed: number;
  badRequests: number;
}

export interface FakeTwsStats extends FakeTwsCounts {
  perTaxpayer: Record<string, FakeTwsCounts>;
  /** Arrival time (epoch ms) of every mailbox request, in order. */
  requestTimes: number[];
}

export interface FakeTws {
  url: string;
  port: number;
  stats(): FakeTwsStats;
  resetStats(): void;
  close(): Promise<void>;
}

export async function startFakeTws(options: FakeTwsOptions = {}): Promise<FakeTws> {
  const settings = FakeTwsOptionsSchema.parse(options);
  const answer = createResponder(settings);
  const stats = new StatsRecorder();

  const server = http.createServer((request, response) => {
    handleRequest(request, response, answer, stats, settings.latencyMs).catch((error: unknown) => {
      if (!response.headersSent && !response.destroyed) {
        sendJson(response, { status: 500, body: { error: `fake TWS bug: ${String(error)}` } });
      }
    });
  });
  const port = await listen(server, settings.port, settings.host);

  let closing: Promise<void> | undefined;
  return {
    url: `http://${settings.host.includes(':') ? `[${settings.host}]` : settings.host}:${port}`,
    port,
    stats: () => stats.snapshot(),
    resetStats: () => stats.reset(),
    close: () => (closing ??= closeServer(server)),
  };
}

// ---------------------------------------------------------------------------------------------
// Deciding what to answer

type Settings = z.output<typeof FakeTwsOptionsSchema>;

type Outcome = keyof Omit<FakeTwsCounts, 'requests'>;

interface Reply {
  outcome: Outcome;
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

type Responder = (taxpayerId: string, query: URLSearchParams, authorization: string | undefined, now: number) => Reply;

function createResponder(settings: Settings): Responder {
  const limiter = settings.rateLimit ? new SlidingWindowLimiter(settings.rateLimit) : undefined;
  const brokenStatus = createBrokenTaxpayerRule(settings.brokenTaxpayers);
  const malformed = new Set(settings.malformedTaxpayers);
  const transient = createTransientFaults(settings.seed, settings.errorRate);
  const mailboxOptions = { seed: settings.seed, messagesPerTaxpayer: settings.messagesPerTaxpayer };

  return (taxpayerId, query, authorization, now) => {
    if (settings.token !== undefined && authorization !== `Bearer ${settings.token}`) {
      return errorReply('unauthorized', 401, 'missing or invalid token', { 'www-authenticate': 'Bearer' });
    }
    const admission = limiter?.tryAcquire(now);
    if (admission && !admission.allowed) {
      const retryAfterSeconds = Math.max(1, Math.ceil(admission.retryAfterMs / 1_000));
      return errorReply('rateLimited', 429, 'rate limit exceeded', { 'retry-after': String(retryAfterSeconds) });
    }
    const parsed = parseMailboxQuery(query);
    if ('error' in parsed) return errorReply('badRequests', 400, parsed.error);

    const broken = brokenStatus(taxpayerId);
    if (broken === 404) return errorReply('notFound', 404, `taxpayer ${taxpayerId} not found`);
    if (broken === 403) return errorReply('forbidden', 403, `access to taxpayer ${taxpayerId} is forbidden`);

    const failureStatus = transient(taxpayerId, parsed.page);
    if (failureStatus) return errorReply('serverErrors', failureStatus, 'temporary failure, try again');

    const page = fakeMailboxPage(taxpayerId, { ...mailboxOptions, ...parsed, pageSize: settings.pageSize });
    if (malformed.has(taxpayerId)) return { outcome: 'malformed', status: 200, body: corruptPage(page) };
    return { outcome: 'ok', status: 200, body: page };
  };
}

function errorReply(outcome: Outcome, status: number, error: string, headers?: Record<string, string>): Reply {
  return headers ? { outcome, status, body: { error }, headers } : { outcome, status, body: { error } };
}

function parseMailboxQuery(query: URLSearchParams): { page: number; since?: Date } | { error: string } {
  const pageText = query.get('page') ?? '1';
  const page = Number(pageText);
  if (!/^\d+$/.test(pageText) || page < 1) return { error: `page must be a positive integer, got "${pageText}"` };
  const sinceText = query.get('since');
  if (sinceText === null) return { page };
  const since = new Date(sinceText);
  if (Number.isNaN(since.getTime())) return { error: `since must be an ISO 8601 date, got "${sinceText}"` };
  return { page, since };
}

/**
 * Which taxpayers fail permanently, and how. A list: its entries alternate 404, 403, 404, …
 * A number N: every numeric id divisible by N; id/N odd → 404, even → 403 (10 → 404, 20 → 403).
 */
export function createBrokenTaxpayerRule(spec: string[] | number | undefined): (taxpayerId: string) => 403 | 404 | undefined {
  if (spec === undefined) return () => undefined;
  if (typeof spec === 'number') {
    return (taxpayerId) => {
      if (!/^\d+$/.test(taxpayerId)) return undefined;
      const id = Number(taxpayerId);
      if (id === 0 || id % spec !== 0) return undefined;
      return (id / spec) % 2 === 1 ? 404 : 403;
    };
  }
  const statusById = new Map(spec.map((id, index) => [id, index % 2 === 0 ? (404 as const) : (403 as const)]));
  return (taxpayerId) => statusById.get(taxpayerId);
}

const TRANSIENT_STATUSES = [500, 502, 503] as const;

/** Draws per (taxpayer, page, attempt), so the n-th retry of a request fails or not the same way every run. */
function createTransientFaults(seed: number, errorRate: number): (taxpayerId: string, page: number) => number | undefined {
  const attempts = new Map<string, number>();
  return (taxpayerId, page) => {
    if (errorRate === 0) return undefined;
    const key = `${taxpayerId}\u0000${page}`;
    const attempt = (attempts.get(key) ?? 0) + 1;
    attempts.set(key, attempt);
    const random = seededRandom(seed, 'transient', taxpayerId, page, attempt);
    if (random() >= errorRate) return undefined;
    return TRANSIENT_STATUSES[Math.floor(random() * TRANSIENT_STATUSES.length)];
  };
}

/** A page that is valid JSON but breaks the schema in one named place. */
function corruptPage(page: TwsMailboxPageWire): unknown {
  const [first, ...rest] = page.messages;
  if (!first) return { ...page, totalPages: 'unknown' };
  return { ...page, messages: [{ ...first, receivedAt: 'yesterday' }, ...rest] };
}

// ---------------------------------------------------------------------------------------------
// Deterministic mailbox content

export interface FakeMailboxOptions {
  seed?: number;
  messagesPerTaxpayer?: ((taxpayerId: string) => number) | undefined;
}

/** Messages are dated in the year before this instant, never relative to "now", so they never change. */
export const FAKE_TWS_EPOCH = Date.parse('2025-01-01T00:00:00.000Z');
const YEAR_MS = 365 * 24 * 3_600_000;
const DEFAULT_MAX_MESSAGES = 40;

const CATALOG = [
  { category: 'notificacion', subjects: ['Notificación de resolución de determinación', 'Notificación de orden de pago'] },
  { category: 'requerimiento', subjects: ['Requerimiento de información', 'Carta inductiva'] },
  { category: 'comunicado', subjects: ['Cronograma de vencimientos', 'Actualización de datos del contribuyente'] },
  { category: 'cobranza', subjects: ['Inicio de cobranza coactiva', 'Esquela de deuda pendiente'] },
] as const;

const SENDERS = [
  'Intendencia Regional',
  'Gerencia de Control de Deuda',
  'División de Auditoría',
  'Oficina de Atención al Contribuyente',
] as const;

/** The whole mailbox the fake serves for one taxpayer (before `since` and paging). */
export function fakeMailboxMessages(taxpayerId: string, options: FakeMailboxOptions = {}): TwsMessageWire[] {
  const seed = options.seed ?? 1;
  const count = options.messagesPerTaxpayer
    ? Math.max(0, Math.floor(options.messagesPerTaxpayer(taxpayerId)))
    : Math.floor(seededRandom(seed, 'count', taxpayerId)() * (DEFAULT_MAX_MESSAGES + 1));

  const drafts = Array.from({ length: count }, (_, index) => draftMessage(seed, taxpayerId, index));
  drafts.sort((a, b) => a.receivedAtMs - b.receivedAtMs);
  return drafts.map(({ receivedAtMs, ...draft }, index) => ({
    id: `${taxpayerId}-${index + 1}`,
    ...draft,
    receivedAt: new Date(receivedAtMs).toISOString(),
  }));
}

function draftMessage(seed: number, taxpayerId: string, index: number) {
  const random = seededRandom(seed, 'message', taxpayerId, index);
  const { category, subjects } = pick(random, CATALOG);
  const reference = `${new Date(FAKE_TWS_EPOCH).getUTCFullYear()}-${String(Math.floor(random() * 1e6)).padStart(6, '0')}`;
  const subject = `${pick(random, subjects)} N.º ${reference}`;
  return {
    subject,
    sender: pick(random, SENDERS),
    category,
    receivedAtMs: FAKE_TWS_EPOCH - Math.floor(random() * YEAR_MS),
    read: random() < 0.6,
    body: `Estimado contribuyente ${taxpayerId}: se ha depositado en su buzón el documento ${reference} (${subject}). Puede consultarlo en línea.`,
    attachments: Array.from({ length: Math.floor(random() * 3) }, (_, n) => ({
      name: `${category}-${reference}-${n + 1}.pdf`,
      size: 10_000 + Math.floor(random() * 2_000_000),
      mimeType: 'application/pdf',
    })),
  };
}

/** One page of the fake mailbox, as the server sends it. */
export function fakeMailboxPage(
  taxpayerId: string,
  options: FakeMailboxOptions & { page: number; pageSize: number; since?: Date | undefined },
): TwsMailboxPageWire {
  const sinceMs = options.since?.getTime() ?? -Infinity;
  const matching = fakeMailboxMessages(taxpayerId, options).filter((message) => Date.parse(message.receivedAt) >= sinceMs);
  const start = (options.page - 1) * options.pageSize;
  return {
    taxpayerId,
    page: options.page,
    pageSize: options.pageSize,
    totalPages: Math.max(1, Math.ceil(matching.length / options.pageSize)),
    messages: matching.slice(start, start + options.pageSize),
  };
}

function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)]!;
}

/** mulberry32 seeded by a cyrb53-style hash of the parts: same parts, same sequence. */
function seededRandom(...parts: Array<string | number>): () => number {
  let state = hashParts(parts.join('\u0000'));
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

function hashParts(text: string): number {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ code, 2_654_435_761);
    h2 = Math.imul(h2 ^ code, 1_597_334_677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2_246_822_507) ^ Math.imul(h2 ^ (h2 >>> 13), 3_266_489_909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2_246_822_507) ^ Math.imul(h1 ^ (h1 >>> 13), 3_266_489_909);
  return (h1 ^ h2) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Stats

class StatsRecorder {
  private current = emptyStats();

  record(taxpayerId: string, outcome: Outcome, at: number): void {
    const perTaxpayer = (this.current.perTaxpayer[taxpayerId] ??= emptyCounts());
    for (const counts of [this.current, perTaxpayer]) {
      counts.requests++;
      counts[outcome]++;
    }
    this.current.requestTimes.push(at);
  }

  snapshot(): FakeTwsStats {
    return structuredClone(this.current);
  }

  reset(): void {
    this.current = emptyStats();
  }
}

function emptyCounts(): FakeTwsCounts {
  return { requests: 0, ok: 0, rateLimited: 0, serverErrors: 0, unauthorized: 0, notFound: 0, forbidden: 0, malformed: 0, badRequests: 0 };
}

function emptyStats(): FakeTwsStats {
  // A null prototype, so a taxpayer called "__proto__" is just another key.
  return { ...emptyCounts(), perTaxpayer: Object.create(null) as Record<string, FakeTwsCounts>, requestTimes: [] };
}

// ---------------------------------------------------------------------------------------------
// HTTP plumbing

const MAILBOX_PATH = /^\/taxpayers\/([^/]+)\/mailbox\/?$/;

async function handleRequest(
  request: http.IncomingMessage,
  response: http.ServerResponse,
  answer: Responder,
  stats: StatsRecorder,
  latencyMs: number,
): Promise<void> {
  const url = new URL(request.url ?? '/', 'http://fake-tws.invalid');
  if (url.pathname === '/_stats' && request.method === 'GET') {
    return sendJson(response, { status: 200, body: stats.snapshot() });
  }
  const match = MAILBOX_PATH.exec(url.pathname);
  if (!match || request.method !== 'GET') {
    return sendJson(response, { status: 404, body: { error: `no such endpoint: ${request.method} ${url.pathname}` } });
  }

  const taxpayerId = decodePathSegment(match[1]!);
  if (taxpayerId === undefined) {
    return sendJson(response, { status: 400, body: { error: `bad taxpayer id in ${url.pathname}` } });
  }
  const arrivedAt = Date.now();
  const reply = answer(taxpayerId, url.searchParams, request.headers.authorization, arrivedAt);
  stats.record(taxpayerId, reply.outcome, arrivedAt);
  if (latencyMs > 0) await sleep(latencyMs);
  // The client may have given up (its timeout) while we slept.
  if (!response.destroyed) sendJson(response, reply);
}

function decodePathSegment(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}

function sendJson(response: http.ServerResponse, reply: Pick<Reply, 'status' | 'body' | 'headers'>): void {
  const payload = JSON.stringify(reply.body);
  response.writeHead(reply.status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(payload),
    ...reply.headers,
  });
  response.end(payload);
}

function sleep(ms: number): Promise<void> {
  // Unref'd: an open connection keeps the process alive anyway, and a closed server should not.
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function listen(server: http.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.close((error) => (error ? reject(error) : resolve()));
    // In-flight requests are abandoned, not awaited: a test's teardown should not wait out latency.
    server.closeAllConnections();
  });
}
