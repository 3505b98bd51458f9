import { defineCommand } from '../command.js';
import { MailqError } from '../../errors.js';
import { TOKEN_ENV } from '../../dashboard/access.js';
import { startDashboard } from '../../dashboard/server.js';
import { decimal, integer, text } from '../options.js';
import { waitForStopSignal } from '../stop-signal.js';

export const dashboardCommand = defineCommand({
  command: 'dashboard',
  describe: 'Serve the web dashboard (queues, workers, batches, failed jobs, rate limits) and /metrics',
  builder: (yargs) =>
    yargs
      .option('port', integer('--port', { min: 0, max: 65_535, default: 8080, describe: 'Port to listen on (0: any free one)' }))
      .option('host', text('--host', { maxLength: 255, default: '127.0.0.1', describe: `Address to bind; any but loopback needs a token` }))
      .option('token', text('--token', { describe: `Access token (better: ${TOKEN_ENV}, which stays out of ps)` }))
      .option('refresh', decimal('--refresh', { min: 0.5, max: 86_400, default: 2, describe: 'Seconds between the page’s refreshes (0.5 to 86400)' })),
  async run(context, argv) {
    const token = argv.token ?? (process.env[TOKEN_ENV] || undefined);
    const mq = await context.mailq();
    // Said once here, not as an "internal error" on every refresh of the page.
    const { pending } = await mq.migrationStatus();
    if (pending.length > 0) throw new MailqError(`the queue's tables are not up to date: run \`mailq migrate\` first (pending: ${pending.join(', ')})`);
    const dashboard = await startDashboard(mq, { host: argv.host, port: argv.port, token, refreshMs: Math.max(0.5, argv.refresh) * 1000, logger: context.logger });
    context.output.out(`Dashboard on ${dashboard.url}/${token ? ' (open it once as /?token=<your token>; the page keeps it in a cookie)' : ''}; metrics on ${dashboard.url}/metrics. Ctrl-C stops it.`);
    await waitForStopSignal();
    await dashboard.close();
  },
});
