import { defineCommand } from '../command.js';
import { json, table } from '../output.js';
import { databaseLabel } from '../context.js';
import { name } from '../options.js';

export const doctorCommand = defineCommand({
  command: 'doctor',
  describe: 'Check the server and schema: version, SKIP LOCKED, migrations, claim index and plan, lock settings',
  builder: (yargs) =>
    yargs
      .option('queue', name('--queue', { what: 'queue', describe: 'Queue whose claim is EXPLAINed (default: the first of --queue / settings)' }))
      .option('json', { type: 'boolean', default: false }),
  async run(context, argv) {
    const queue = argv.queue ?? context.settings.worker.queues[0];
    const report = await (await context.mailq()).doctor({ queue });
    if (argv.json) context.output.out(json({ database: databaseLabel(context), ...report }));
    else {
      context.output.out(`Database: ${databaseLabel(context)}`);
      context.output.out(table(['check', 'status', 'value', 'detail'], report.checks.map((check) => [check.name, check.status.toUpperCase(), check.value, check.detail])));
      context.output.out(report.ok ? 'All checks passed.' : 'Some checks failed: see above.');
    }
    return report.ok ? 0 : 1;
  },
});
