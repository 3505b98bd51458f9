// Client for the TWS (tax web service) mailbox API: paged reads of one taxpayer's tax mailbox.
//
// Wire format (the fake in ./fake-tws.ts serves exactly this):
//   GET {baseUrl}/taxpayers/{taxpayerId}/mailbox?page={n ≥ 1}[&since={ISO 8601}]
//   Authorization: Bearer {token}
//   200 → { taxpayerId, page, pageSize, totalPages, messages: [{ id, subject, sender, category,
//           receivedAt (ISO 8601), read, body, attachments: [{ name, size, mimeType }] }] }
//   `since` is inclusive; messages come oldest first; a page past totalPages is empty.
//   Errors: 401 bad token, 403/404 taxpayer permanently unavailable, 429 with Retry-After, 5xx.
//
// Every failure is a TwsError whose `retryable` tells a queue job whether another attempt can help,
// except the caller's own abort: that rejects with the caller's signal.reason, untouched.

import { z } from 'zod';

export const TwsAttachmentSchema = z.object({
  name: z.string(),
  size: z.number().int().nonnegative(),
  mimeType: z.string(),
});

export const TwsMessageSchema = z.object({
  id: z.string().min(1),
  subject: z.string(),
  sender: z.string(),
  category: z.string(),
  receivedAt: z.iso.datetime({ offset: true }).transform((iso) => new Date(iso)),
  read: z.boolean(),
  body: z.string(),
  attachments: z.array(TwsAttachmentSchema),
});

export const TwsMailboxPageSchema = z.object({
  taxpayerId: z.string(),
  page: z.number().int().positive(),
  pageSize: z.number().int().positive(),
  totalPages: z.number().int().nonnegative(),
  messages: z.array(TwsMessageSchema),
});

export type TwsAttachment = z.output<typeof TwsAttachmentSchema>;
/** A parsed message: `receivedAt` is a Date. */
export type TwsMessage = z.output<typeof TwsMessageSchema>;
export type TwsMailboxPage = z.output<typeof TwsMailboxPageSchema>;
/** The JSON as it travels: `receivedAt` is an ISO string. */
export type TwsMessageWire = z.input<typeof TwsMessageSchema>;
export type TwsMailboxPageWire = z.input<typeof TwsMailboxPageSchema>;

export type TwsErrorKind =
  | 'rate-limited'
  | 'server'
  | 'timeout'
  | 'network'
  | 'malformed'
  | 'unauthorized'
  | 'forbidden'
  | 'not-found'
  | 'client';

const RETRYABLE_KINDS: ReadonlySet<TwsErrorKind> = new Set([
  'rate-limited',
  'server',
  'timeout',
  'network',
  'malformed',
]);

export class TwsError extends Error {
  override readonly name = 'TwsError';
  readonly kind: TwsErrorKind;
  readonly status?: number;
  readonly retryAfterMs?: number;
  readonly retryable: boolean;
  readonly taxpayerId: string;

  constructor(details: {
    kind: TwsErrorKind;
    message: string;
    taxpayerId: string;
    status?: number;
    retryAfterMs?: number;
    cause?: unknown;
  }) {
    super(details.message, details.cause === undefined ? undefined : { cause: details.cause });
    this.kind = details.kind;
    this.taxpayerId = details.taxpayerId;
    this.retryable = RETRYABLE_KINDS.has(details.kind);
    if (details.status !== undefined) this.status = details.status;
    if (details.retryAfterMs !== undefined) this.retryAfterMs = details.retryAfterMs;
  }
}

export interface TwsClientOptions {
  baseUrl: string;
  token: string;
  /** Per HTTP request, body included. Default 30 s. */
  requestTimeoutMs?: number;
  fetch?: typeof fetch;
}

export type TaxpayerId = string | number;

export interface FetchPageOptions {
  page: number;
  since?: Date;
  signal?: AbortSignal;
}

export interface FetchMailboxOptions {
  since?: Date;
  signal?: AbortSignal;
  /** Awaited before each request after the first (a job takes a rate-limit token per extra page). */
  beforeNextPage?: (page: number) => Promise<void>;
}

export interface TwsClient {
  fetchMailboxPage(taxpayerId: TaxpayerId, options: FetchPageOptions): Promise<TwsMailboxPage>;
  /** Yields page 1, 2, … until the last page the server announces. */
  fetchMailbox(taxpayerId: TaxpayerId, options?: FetchMailboxOptions): AsyncGenerator<TwsMailboxPage>;
  /** All messages of all pages, each message id once (a later page wins). */
  fetchAllMessages(taxpayerId: TaxpayerId, options?: FetchMailboxOptions): Promise<TwsMessage[]>;
}

export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

export function createTwsClient(options: TwsClientOptions): TwsClient {
  const baseUrl = parseBaseUrl(options.baseUrl);
  if (!options.token) throw new Error('TWS token is empty');
  const requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  if (!(requestTimeoutMs > 0)) throw new Error(`TWS requestTimeoutMs must be positive, got ${requestTimeoutMs}`);
  const fetchImpl = options.fetch ?? globalThis.fetch;
  // Server-supplied text (an error body, a parse error quoting it) could echo the token back.
  const redact = (text: string) => text.split(options.token).join('[redacted]');

  async function fetchMailboxPage(taxpayerId: TaxpayerId, pageOptions: FetchPageOptions) {
    const id = String(taxpayerId);
    const url = mailboxUrl(baseUrl, id, pageOptions);
    const request = `TWS request for taxpayer ${id} (GET ${url.pathname}${url.search})`;
    const fail: FailFactory = (kind, message, extra = {}) =>
      new TwsError({ kind, taxpayerId: id, message: `${request} ${redact(message)}`, ...extra });

    pageOptions.signal?.throwIfAborted();
    const timeout = AbortSignal.timeout(requestTimeoutMs);
    const signal = pageOptions.signal ? AbortSignal.any([pageOptions.signal, timeout]) : timeout;

    let response: Response;
    let text: string;
    try {
      response = await fetchImpl(url, {
        headers: { authorization: `Bearer ${options.token}`, accept: 'application/json' },
        signal,
      });
      text = await response.text();
    } catch (error) {
      // The caller's abort (a job timeout, a shutdown) is theirs to interpret, not a TWS failure.
      if (pageOptions.signal?.aborted) throw pageOptions.signal.reason;
      if (timeout.aborted) throw fail('timeout', `timed out after ${requestTimeoutMs} ms`);
      throw fail('network', `failed: ${networkReason(error)}`, { cause: error });
    }

    if (!response.ok) throw errorForStatus(response, text, fail);
    return parsePage(text, id, fail);
  }

  async function* fetchMailbox(taxpayerId: TaxpayerId, mailboxOptions: FetchMailboxOptions = {}) {
    const { beforeNextPage, ...pageOptions } = mailboxOptions;
    for (let page = 1; ; page++) {
      if (page > 1) await beforeNextPage?.(page);
      const result = await fetchMailboxPage(taxpayerId, { ...pageOptions, page });
      yield result;
      if (page >= result.totalPages) return;
    }
  }

  async function fetchAllMessages(taxpayerId: TaxpayerId, mailboxOptions: FetchMailboxOptions = {}) {
    // Offset paging can repeat a message when new mail arrives mid-read; the id map absorbs that.
    const byId = new Map<string, TwsMessage>();
    for await (const page of fetchMailbox(taxpayerId, mailboxOptions)) {
      for (const message of page.messages) byId.set(message.id, message);
    }
    return [...byId.values()];
  }

  return { fetchMailboxPage, fetchMailbox, fetchAllMessages };
}

type FailFactory = (
  kind: TwsErrorKind,
  message: string,
  extra?: { status?: number; retryAfterMs?: number; cause?: unknown },
) => TwsError;

/** fetch() reports "fetch failed" and hides the useful part (ECONNREFUSED, …) in its cause. */
function networkReason(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  return error.cause instanceof Error ? error.cause.message : error.message;
}

function parseBaseUrl(baseUrl: string): URL {
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch {
    throw new Error(`TWS base URL "${baseUrl}" is not a valid URL`);
  }
  // Resolve paths relative to a base that may carry a prefix such as /api/v1.
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  return url;
}

function mailboxUrl(baseUrl: URL, taxpayerId: string, options: FetchPageOptions): URL {
  const url = new URL(`taxpayers/${encodeURIComponent(taxpayerId)}/mailbox`, baseUrl);
  if (options.since) url.searchParams.set('since', options.since.toISOString());
  url.searchParams.set('page', String(options.page));
  return url;
}

function errorForStatus(response: Response, body: string, fail: FailFactory): TwsError {
  const status = response.status;
  const answered = `answered ${status}${describeBody(body)}`;
  const retryAfterMs = parseRetryAfter(response.headers.get('retry-after'));
  const withRetryAfter = retryAfterMs === undefined ? { status } : { status, retryAfterMs };
  if (status === 429) return fail('rate-limited', answered, withRetryAfter);
  if (status >= 500) return fail('server', answered, withRetryAfter);
  if (status === 408) return fail('timeout', answered, withRetryAfter);
  if (status === 401) return fail('unauthorized', `${answered}; check the TWS token`, { status });
  if (status === 403) return fail('forbidden', answered, { status });
  if (status === 404) return fail('not-found', answered, { status });
  return fail('client', answered, { status });
}

const MAX_BODY_IN_MESSAGE = 200;

function describeBody(body: string): string {
  const text = errorFieldOf(body) ?? body.trim();
  if (!text) return '';
  return `: ${text.length > MAX_BODY_IN_MESSAGE ? `${text.slice(0, MAX_BODY_IN_MESSAGE)}…` : text}`;
}

function errorFieldOf(body: string): string | undefined {
  try {
    const parsed: unknown = JSON.parse(body);
    if (parsed && typeof parsed === 'object' && 'error' in parsed && typeof parsed.error === 'string') {
      return parsed.error;
    }
  } catch {
    // Not JSON: the raw text is the description.
  }
  return undefined;
}

function parsePage(text: string, taxpayerId: string, fail: FailFactory): TwsMailboxPage {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw fail('malformed', `returned a body that is not JSON: ${(error as Error).message}`);
  }
  const result = TwsMailboxPageSchema.safeParse(json);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw fail('malformed', `returned a malformed mailbox page: ${formatPath(issue.path)}: ${issue.message}`);
  }
  // Messages filed under the wrong taxpayer would be worse than no messages.
  if (result.data.taxpayerId !== taxpayerId) {
    const got = result.data.taxpayerId;
    throw fail('malformed', `returned a malformed mailbox page: taxpayerId: expected "${taxpayerId}", got "${got}"`);
  }
  return result.data;
}

function formatPath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return '(root)';
  return path
    .map((key, index) => (typeof key === 'number' ? `[${key}]` : `${index === 0 ? '' : '.'}${String(key)}`))
    .join('');
}

/** Retry-After is either delay-seconds or an HTTP-date; anything else is ignored. */
export function parseRetryAfter(header: string | null | undefined, now: number = Date.now()): number | undefined {
  if (!header) return undefined;
  const value = header.trim();
  if (/^\d+$/.test(value)) return Number(value) * 1_000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
