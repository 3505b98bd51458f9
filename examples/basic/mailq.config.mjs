// Settings for `mailq` run from this folder. Flags and MAILQ_* env vars override these.
export default {
  databaseUrl: process.env.MAILQ_DATABASE_URL ?? 'mysql://root@127.0.0.1:3306/mailq_example',
  jobs: ['./jobs.mjs'],
  worker: { queues: ['emails'], concurrency: 10, tries: 3, timeout: '30s' },
};
