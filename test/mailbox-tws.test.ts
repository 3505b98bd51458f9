import { afterEach, describe, expect, it } from 'vitest';
import { createBrokenTaxpayerRule, fakeMailboxMessages, startFakeTws, type FakeTws, type FakeTwsOptions, type FakeTwsStats } from '../src/mailbox/fake-tws.js';
import { formatRate, parseRate } from '../src/ratelimit/rate.js';
import { SlidingWindowLimiter } from '../src/mailbox/sliding-window.js';
import { createTwsClient, parseRetryAfter, TwsError, type TwsClientOptions } from '../src/mailbox/tws.js';

const TOKEN = 's3cret-token-Zq8';

const running: FakeTws[] = [];

afterEach(async () => {
  await Promise.all(running.splice(0).map((tws) => tws.close()));
});

async function fakeTws(options: FakeTwsOptions = {}): Promise<FakeTws> {
  const tws = await startFakeTws({ token: TOKEN, ...options });
  running.push(tws);
  return tws;
}

function clientFor(tws: FakeTws, options: Partial<TwsClientOptions> = {}) {
  return createTwsClient({ baseUrl: tws.url, token: TOKEN, ...options });
}

async function twsErrorOf(promise: Promise<unknown>): Promise<TwsError> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  if (!(error instanceof TwsError)) throw new Error(`expected a TwsError, got ${String(error)}`);
  return error;
}

async function statsOverHttp(tws: FakeTws): Promise<FakeTwsStats> {
  const response = await fetch(`${tws.url}/_stats`);
  expect(response.status).toBe(200);
  return (await response.json()) as FakeTwsStats;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('parseRate', () => {
  it.each([
    ['100/min', 100, 60_000],
    ['10/s', 10, 1_000],
    ['60/1m', 60, 60_000],
    ['5 / 2s', 5, 2_000],
    ['3/500ms', 3, 500],
    ['1000/hour', 1_000, 3_600_000],
    ['20/minutes', 20, 60_000],
  ])('parses %s', (text, limit, perMs) => {
    expect(parseRate(text)).toEqual({ limit, perMs });
  });

  it.each(['abc', '10', '/min', '0/s', '10/0s', '10/parsec', '-1/s', '1.5/s'])('rejects %s', (text) => {
    expect(() => parseRate(text)).toThrow(`Invalid rate "${text}"`);
  });

  it('says what a rate looks like', () => {
    expect(() => parseRate('fast')).toThrow('expected <count>/<period>, like 100/min, 10/s or 60/1m');
    expect(() => parseRate('0/s')).toThrow('greater than zero');
  });

  it('formats a rate back into text that parses to the same rate', () => {
    for (const text of ['100/min', '10/s', '5/2s', '3/500ms', '7/h']) {
      expect(parseRate(formatRate(parseRate(text)))).toEqual(parseRate(text));
    }
    expect(formatRate({ limit: 100, perMs: 60_000 })).toBe('100/min');
  });
});

describe('SlidingWindowLimiter', () => {
  it('admits `limit` events per window and says when the next slot frees up', () => {
    const limiter = new SlidingWindowLimiter({ limit: 2, perMs: 1_000 });
    expect(limiter.tryAcquire(0)).toEqual({ allowed: true });
    expect(limiter.tryAcquire(10)).toEqual({ allowed: true });
    expect(limiter.tryAcquire(20)).toEqual({ allowed: false, retryAfterMs: 980 });
    expect(limiter.tryAcquire(1_000)).toEqual({ allowed: true });
    expect(limiter.tryAcquire(1_005)).toEqual({ allowed: false, retryAfterMs: 5 });
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('2025-06-01T12:00:00Z');
  it('reads delay-seconds and HTTP-dates', () => {
    expect(parseRetryAfter('3', now)).toBe(3_000);
    expect(parseRetryAfter('Sun, 01 Jun 2025 12:00:05 GMT', now)).toBe(5_000);
    expect(parseRetryAfter('Sun, 01 Jun 2025 11:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter(null, now)).toBeUndefined();
  });
});

describe('fake TWS mailboxes through the client', () => {
  it('serves the same mailbox every time, across server restarts', async () => {
    const first = await fakeTws({ seed: 7 });
    const again = await clientFor(first).fetchAllMessages('1001');
    const once = await clientFor(first).fetchAllMessages('1001');
    await first.close();
    const restarted = await fakeTws({ seed: 7 });
    const afterRestart = await clientFor(restarted).fetchAllMessages('1001');

    expect(once.length).toBeGreaterThan(0);
    expect(again).toEqual(once);
    expect(afterRestart).toEqual(once);
    expect(await clientFor(restarted).fetchAllMessages('1002')).not.toEqual(once);
  });

  it('returns parsed, typed messages oldest first', async () => {
    const tws = await fakeTws({ messagesPerTaxpayer: () => 12 });
    const messages = await clientFor(tws).fetchAllMessages(42);
    expect(messages).toHaveLength(12);
    for (const message of messages) {
      expect(message.receivedAt).toBeInstanceOf(Date);
      expect(message.id).toMatch(/^42-\d+$/);
    }
    const times = messages.map((message) => message.receivedAt.getTime());
    expect(times).toEqual([...times].sort((a, b) => a - b));
  });

  it('pages through every message exactly once', async () => {
    const tws = await fakeTws({ messagesPerTaxpayer: () => 23, pageSize: 5 });
    const pages = [];
    for await (const page of clientFor(tws).fetchMailbox('7')) pages.push(page);

    expect(pages.map((page) => page.page)).toEqual([1, 2, 3, 4, 5]);
    expect(pages.map((page) => page.messages.length)).toEqual([5, 5, 5, 5, 3]);
    const ids = pages.flatMap((page) => page.messages.map((message) => message.id));
    expect(new Set(ids).size).toBe(23);
    expect(ids).toEqual(fakeMailboxMessages('7', { messagesPerTaxpayer: () => 23 }).map((message) => message.id));
    expect(tws.stats().ok).toBe(5);
  });

  it('filters by `since`, inclusively, across pages', async () => {
    const tws = await fakeTws({ messagesPerTaxpayer: () => 30, pageSize: 4 });
    const client = clientFor(tws);
    const all = await client.fetchAllMessages('55');
    const since = all[10]!.receivedAt;

    const recent = await client.fetchAllMessages('55', { since });
    expect(recent.map((message) => message.id)).toEqual(all.slice(10).map((message) => message.id));
    expect(recent.every((message) => message.receivedAt >= since)).toBe(true);

    const afterEverything = new Date(all.at(-1)!.receivedAt.getTime() + 1);
    const empty = await client.fetchMailboxPage('55', { page: 1, since: afterEverything });
    expect(empty).toMatchObject({ messages: [], totalPages: 1 });
  });

  it('exposes the expected mailbox so sync tests can check what got stored', () => {
    const messages = fakeMailboxMessages('300', { seed: 3 });
    expect(messages).toEqual(fakeMailboxMessages('300', { seed: 3 }));
    expect(messages.length).toBeLessThanOrEqual(40);
  });
});

describe('TWS errors', () => {
  it('a wrong token is unauthorized, permanent, and the token never shows', async () => {
    const tws = await fakeTws();
    const error = await twsErrorOf(clientFor(tws, { token: 'wrong-token-XYZ' }).fetchMailboxPage('1', { page: 1 }));
    expect(error).toMatchObject({ kind: 'unauthorized', status: 401, retryable: false, taxpayerId: '1' });
    expect(error.message).not.toContain('wrong-token-XYZ');
    expect(error.message).not.toContain(TOKEN);
    expect(error.message).toMatch(/401/);

    const anonymous = await fetch(`${tws.url}/taxpayers/1/mailbox`);
    expect(anonymous.status).toBe(401);
    expect((await statsOverHttp(tws)).unauthorized).toBe(2);
  });

  it('redacts the token even when the server echoes it back', async () => {
    const echoing: typeof fetch = async (_input, init) => {
      const authorization = new Headers(init?.headers).get('authorization');
      return new Response(JSON.stringify({ error: `bad header: ${authorization}` }), { status: 500 });
    };
    const client = createTwsClient({ baseUrl: 'http://tws.invalid', token: TOKEN, fetch: echoing });
    const error = await twsErrorOf(client.fetchMailboxPage('1', { page: 1 }));
    expect(error.kind).toBe('server');
    expect(error.message).toContain('Bearer [redacted]');
    expect(error.message).not.toContain(TOKEN);
  });

  it('broken taxpayers answer 404 or 403 every time, and that is permanent', async () => {
    const tws = await fakeTws({ brokenTaxpayers: ['b1', 'b2'] });
    const client = clientFor(tws);
    for (let attempt = 0; attempt < 3; attempt++) {
      expect(await twsErrorOf(client.fetchMailboxPage('b1', { page: 1 }))).toMatchObject({ kind: 'not-found', status: 404, retryable: false });
      expect(await twsErrorOf(client.fetchMailboxPage('b2', { page: 1 }))).toMatchObject({ kind: 'forbidden', status: 403, retryable: false });
    }
    expect(await client.fetchAllMessages('b3')).toBeDefined();
    expect(tws.stats()).toMatchObject({ notFound: 3, forbidden: 3, ok: 1, requests: 7 });
  });

  it('brokenTaxpayers: N breaks every Nth numeric taxpayer id', async () => {
    const tws = await fakeTws({ brokenTaxpayers: 10 });
    const client = clientFor(tws);
    expect((await twsErrorOf(client.fetchMailboxPage(10, { page: 1 }))).kind).toBe('not-found');
    expect((await twsErrorOf(client.fetchMailboxPage(20, { page: 1 }))).kind).toBe('forbidden');
    await expect(client.fetchMailboxPage(11, { page: 1 })).resolves.toMatchObject({ taxpayerId: '11' });

    const broken = createBrokenTaxpayerRule(10);
    expect(Array.from({ length: 50 }, (_, i) => String(i + 1)).filter((id) => broken(id))).toEqual(['10', '20', '30', '40', '50']);
  });

  it('429 is rate-limited and retryable, carries Retry-After, and the server counts it', async () => {
    const tws = await fakeTws({ rateLimit: { limit: 1, perMs: 60_000 } });
    const client = clientFor(tws);
    await client.fetchMailboxPage('1', { page: 1 });
    const error = await twsErrorOf(client.fetchMailboxPage('2', { page: 1 }));

    expect(error).toMatchObject({ kind: 'rate-limited', status: 429, retryable: true, taxpayerId: '2' });
    expect(error.retryAfterMs).toBeGreaterThan(0);
    expect(error.retryAfterMs).toBeLessThanOrEqual(60_000);
    const stats = await statsOverHttp(tws);
    expect(stats).toMatchObject({ requests: 2, ok: 1, rateLimited: 1 });
    expect(stats.perTaxpayer['2']).toMatchObject({ requests: 1, rateLimited: 1, ok: 0 });
  });

  it('errorRate 1 answers 5xx: server, retryable', async () => {
    const tws = await fakeTws({ errorRate: 1 });
    const error = await twsErrorOf(clientFor(tws).fetchMailboxPage('1', { page: 1 }));
    expect(error).toMatchObject({ kind: 'server', retryable: true });
    expect([500, 502, 503]).toContain(error.status);
    expect(tws.stats()).toMatchObject({ requests: 1, serverErrors: 1 });
  });

  it('transient errors are drawn per attempt: retries recover, identically on every run', async () => {
    async function outcomesOfRetrying(seed: number): Promise<string[]> {
      const tws = await fakeTws({ errorRate: 0.5, seed });
      const client = clientFor(tws);
      const outcomes: string[] = [];
      for (const taxpayerId of ['1', '2', '3', '4', '5', '6']) {
        for (let attempt = 1; ; attempt++) {
          const result = await client.fetchMailboxPage(taxpayerId, { page: 1 }).then(
            () => 'ok',
            (error: TwsError) => error.kind,
          );
          outcomes.push(`${taxpayerId}:${result}`);
          if (result === 'ok') break;
          expect(attempt).toBeLessThan(30);
        }
      }
      await tws.close();
      return outcomes;
    }
    const first = await outcomesOfRetrying(11);
    expect(first.filter((outcome) => outcome.endsWith(':server')).length).toBeGreaterThan(0);
    expect(first.filter((outcome) => outcome.endsWith(':ok'))).toHaveLength(6);
    expect(await outcomesOfRetrying(11)).toEqual(first);
  });

  it('a body that breaks the schema is malformed, retryable, and names the field', async () => {
    const tws = await fakeTws({ malformedTaxpayers: ['m1', 'empty'], messagesPerTaxpayer: (id) => (id === 'empty' ? 0 : 3) });
    const client = clientFor(tws);
    const error = await twsErrorOf(client.fetchMailboxPage('m1', { page: 1 }));
    expect(error).toMatchObject({ kind: 'malformed', retryable: true, status: undefined });
    expect(error.message).toContain('messages[0].receivedAt');

    const emptyError = await twsErrorOf(client.fetchMailboxPage('empty', { page: 1 }));
    expect(emptyError.message).toContain('totalPages');
    expect(tws.stats()).toMatchObject({ malformed: 2, ok: 0 });
  });

  it('a body that is not JSON is malformed', async () => {
    const htmlError: typeof fetch = async () => new Response('<html>gateway</html>', { status: 200 });
    const client = createTwsClient({ baseUrl: 'http://tws.invalid', token: TOKEN, fetch: htmlError });
    const error = await twsErrorOf(client.fetchMailboxPage('1', { page: 1 }));
    expect(error).toMatchObject({ kind: 'malformed', retryable: true });
    expect(error.message).toMatch(/not JSON/);
  });

  it('a page for another taxpayer is malformed rather than filed under the wrong one', async () => {
    const tws = await fakeTws({ messagesPerTaxpayer: () => 1 });
    const wrongTaxpayer: typeof fetch = (input, init) => fetch(String(input).replace('/taxpayers/1/', '/taxpayers/2/'), init);
    const error = await twsErrorOf(clientFor(tws, { fetch: wrongTaxpayer }).fetchMailboxPage('1', { page: 1 }));
    expect(error.kind).toBe('malformed');
    expect(error.message).toContain('taxpayerId');
  });

  it('a refused connection is a retryable network error', async () => {
    const gone = await startFakeTws();
    await gone.close();
    const error = await twsErrorOf(createTwsClient({ baseUrl: gone.url, token: TOKEN }).fetchMailboxPage('1', { page: 1 }));
    expect(error).toMatchObject({ kind: 'network', retryable: true });
    expect(error.message).toMatch(/ECONNREFUSED/);
  });

  it('other 4xx answers are permanent client errors', async () => {
    const tws = await fakeTws();
    const error = await twsErrorOf(clientFor(tws).fetchMailboxPage('1', { page: 0 }));
    expect(error).toMatchObject({ kind: 'client', status: 400, retryable: false });
    expect(error.message).toContain('page must be a positive integer');
  });
});

describe('latency, concurrency and timeouts', () => {
  const LATENCY_MS = 200;

  it('each request takes at least the latency', async () => {
    const tws = await fakeTws({ latencyMs: LATENCY_MS });
    const started = performance.now();
    await clientFor(tws).fetchMailboxPage('1', { page: 1 });
    // 1 ms of slack: timers and performance.now() round differently.
    expect(performance.now() - started).toBeGreaterThanOrEqual(LATENCY_MS - 1);
  });

  it('20 concurrent requests take about one latency, not twenty', async () => {
    const tws = await fakeTws({ latencyMs: LATENCY_MS });
    const client = clientFor(tws);
    const started = performance.now();
    await Promise.all(Array.from({ length: 20 }, (_, i) => client.fetchMailboxPage(String(i + 1), { page: 1 })));
    const elapsed = performance.now() - started;

    expect(elapsed).toBeGreaterThanOrEqual(LATENCY_MS - 1);
    expect(elapsed).toBeLessThan(LATENCY_MS * 3);
    expect(tws.stats()).toMatchObject({ requests: 20, ok: 20 });
  });

  it('a request slower than requestTimeoutMs is a retryable timeout', async () => {
    const tws = await fakeTws({ latencyMs: 2_000 });
    const started = performance.now();
    const error = await twsErrorOf(clientFor(tws, { requestTimeoutMs: 100 }).fetchMailboxPage('1', { page: 1 }));
    expect(error).toMatchObject({ kind: 'timeout', retryable: true });
    expect(error.message).toContain('100 ms');
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  it("the caller's abort surfaces as the caller's abort, not as a timeout", async () => {
    const tws = await fakeTws({ latencyMs: 2_000 });
    const client = clientFor(tws, { requestTimeoutMs: 10_000 });

    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const aborted = await client.fetchMailboxPage('1', { page: 1, signal: controller.signal }).catch((error: unknown) => error);
    expect(aborted).not.toBeInstanceOf(TwsError);
    expect(aborted).toMatchObject({ name: 'AbortError' });

    const jobTimeout = new Error('job timed out');
    const withReason = new AbortController();
    setTimeout(() => withReason.abort(jobTimeout), 50);
    await expect(client.fetchMailboxPage('1', { page: 1, signal: withReason.signal })).rejects.toBe(jobTimeout);
  });

  it('an already aborted signal sends nothing', async () => {
    const tws = await fakeTws();
    const pages = clientFor(tws).fetchMailbox('1', { signal: AbortSignal.abort() });
    await expect(pages.next()).rejects.toMatchObject({ name: 'AbortError' });
    expect(tws.stats().requests).toBe(0);
  });

  it('close() does not wait out the latency of requests in flight', async () => {
    const tws = await startFakeTws({ latencyMs: 5_000 });
    const inFlight = createTwsClient({ baseUrl: tws.url, token: TOKEN }).fetchMailboxPage('1', { page: 1 }).catch((error: unknown) => error);
    await sleep(50);
    const started = performance.now();
    await tws.close();
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(await inFlight).toMatchObject({ kind: 'network' });
  });
});

describe('rate limit, seen from the server', () => {
  it('N + k requests inside one window: exactly k are refused', async () => {
    const limit = 5;
    const extra = 3;
    const tws = await fakeTws({ rateLimit: { limit, perMs: 60_000 } });
    const client = clientFor(tws);
    const results = await Promise.all(
      Array.from({ length: limit + extra }, (_, i) =>
        client.fetchMailboxPage(String(i), { page: 1 }).then(
          () => 'ok',
          (error: TwsError) => error.kind,
        ),
      ),
    );

    expect(results.filter((result) => result === 'rate-limited')).toHaveLength(extra);
    const stats = await statsOverHttp(tws);
    expect(stats).toMatchObject({ requests: limit + extra, ok: limit, rateLimited: extra });
    expect(stats.requestTimes).toHaveLength(limit + extra);
  });

  it('admits requests again once the window has passed', async () => {
    const tws = await fakeTws({ rateLimit: parseRate('3/300ms') });
    const client = clientFor(tws);
    for (let i = 0; i < 3; i++) await client.fetchMailboxPage('1', { page: 1 });
    expect((await twsErrorOf(client.fetchMailboxPage('1', { page: 1 }))).kind).toBe('rate-limited');
    await sleep(350);
    await expect(client.fetchMailboxPage('1', { page: 1 })).resolves.toBeDefined();
    expect(tws.stats()).toMatchObject({ ok: 4, rateLimited: 1 });
  });

  it('resetStats starts the counters over', async () => {
    const tws = await fakeTws();
    await clientFor(tws).fetchMailboxPage('1', { page: 1 });
    tws.resetStats();
    expect(tws.stats()).toMatchObject({ requests: 0, ok: 0, perTaxpayer: {}, requestTimes: [] });
  });
});
