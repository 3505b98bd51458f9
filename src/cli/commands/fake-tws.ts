import { parseDuration, formatDuration } from '../../duration.js';
import { MailqError } from '../../errors.js';
import { startFakeTws, type FakeTwsOptions } from '../../mailbox/fake-tws.js';
import { formatRate, parseRate } from '../../ratelimit/rate.js';
import { defineCommand } from '../command.js';
import { summaryTable } from '../output.js';
import { decimal, duration, integer, rate, text } from '../options.js';

export const fakeTwsCommand = defineCommand({
  command: 'fake-tws',
  describe: 'Serve a fake TWS mailbox API (deterministic mailboxes, latency, transient errors, 429s, broken taxpayers) until stopped',
  databaseOptional: true,
  builder: (yargs) =>
    yargs
      .option('port', integer('--port', { min: 0, max: 65_535, default: 8787, describe: 'Port (0 picks a free one)' }))
      .option('host', text('--host', { default: '127.0.0.1' }))
      .option('latency', duration('--latency', { timer: true, default: '1s', describe: 'Added to every mailbox response' }))
      .option('error-rate', decimal('--error-rate', { min: 0, max: 1, default: 0.02, describe: 'Share of requests that fail with a transient 5xx (0–1)' }))
      .option('rate-limit', rate('--rate-limit', { parse: parseRate, off: 'none', default: '100/min', describe: 'Requests allowed per window before 429 (or "none")' }))
      .option('broken', text('--broken', { default: '500', describe: 'Permanently broken taxpayers (404/403): ids divisible by N, a comma list of ids, or "none"' }))
      .option('malformed', text('--malformed', { describe: 'Comma list of taxpayer ids whose pages break the schema' }))
      .option('token', text('--token', { describe: 'Bearer token to require (default: MAILQ_TWS_TOKEN if set, else any)' }))
      .option('page-size', integer('--page-size', { min: 1, max: 10_000, default: 50 }))
      .option('seed', integer('--seed', { min: 0, default: 1, describe: 'Same seed, same mailboxes' })),
  async run(context, argv) {
    const options = fakeTwsOptions(argv, context.settings.tws.token);
    const tws = await startFakeTws(options);
    const { out } = context.output;
    out(`Fake TWS listening on ${tws.url}`);
    out(`  latency ${formatDuration(options.latencyMs ?? 0)}, transient errors ${(argv['error-rate'] * 100).toFixed(1)}%, rate limit ${options.rateLimit ? formatRate(options.rateLimit) : 'none'}, broken taxpayers: ${describeBroken(options.brokenTaxpayers)}`);
    out(`Point workers at it: MAILQ_TWS_URL=${tws.url} MAILQ_TWS_TOKEN=${options.token ? '<the token you gave>' : '<anything>'}`);
    out(`What it served: GET ${tws.url}/_stats. Stop with Ctrl-C.`);
    await untilSignal();
    const stats = tws.stats();
    await tws.close();
    out(
      summaryTable([
        ['Requests', stats.requests],
        ['OK', stats.ok],
        ['Rate limited (429)', stats.rateLimited],
        ['Transient errors (5xx)', stats.serverErrors],
        ['Not found / forbidden', `${stats.notFound} / ${stats.forbidden}`],
        ['Malformed', stats.malformed],
        ['Unauthorized', stats.unauthorized],
        ['Taxpayers served', Object.keys(stats.perTaxpayer).length],
      ]),
    );
  },
});

interface FakeTwsFlags {
  port: number;
  host: string;
  latency: string;
  'error-rate': number;
  'rate-limit': string;
  broken: string;
  malformed?: string;
  token?: string;
  'page-size': number;
  seed: number;
}

function fakeTwsOptions(argv: FakeTwsFlags, settingsToken: string | undefined): FakeTwsOptions {
  // Each value was checked when argv was parsed (../options.ts); here they only change shape.
  const usage = (message: string) => new MailqError(message, { exitCode: 2 });
  let latencyMs: number;
  let rateLimit: FakeTwsOptions['rateLimit'];
  try {
    latencyMs = parseDuration(argv.latency);
    rateLimit = argv['rate-limit'] === 'none' ? undefined : parseRate(argv['rate-limit']);
  } catch (error) {
    throw usage((error as Error).message);
  }
  const token = argv.token ?? settingsToken;
  return {
    port: argv.port,
    host: argv.host,
    latencyMs,
    errorRate: argv['error-rate'],
    rateLimit,
    brokenTaxpayers: parseBroken(argv.broken, usage),
    malformedTaxpayers: argv.malformed ? splitList(argv.malformed) : [],
    pageSize: argv['page-size'],
    seed: argv.seed,
    ...(token ? { token } : {}),
  };
}

function parseBroken(text: string, usage: (message: string) => Error): FakeTwsOptions['brokenTaxpayers'] {
  if (text === 'none' || text === '') return undefined;
  if (/^\d+$/.test(text)) {
    const every = Number(text);
    if (every < 1) throw usage('--broken N needs N ≥ 1');
    return every;
  }
  return splitList(text);
}

function describeBroken(spec: FakeTwsOptions['brokenTaxpayers']): string {
  if (spec === undefined) return 'none';
  if (typeof spec === 'number') return `ids divisible by ${spec}`;
  return spec.join(', ');
}

function splitList(text: string): string[] {
  return text.split(',').map((part) => part.trim()).filter(Boolean);
}

function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      resolve();
    };
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
}
